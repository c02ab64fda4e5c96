"""Pure numpy/pandas computations on Allen grids and tables (no Qt, no network)."""
