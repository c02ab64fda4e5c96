"""Allen file formats: MetaImage grids, grid zips, NRRD, exports (no Qt, no network)."""
