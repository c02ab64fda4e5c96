"""Names of the structure-correlation definitions and the script's TOP_N, importable without
numpy or pandas: command-line parsers and docks list them before any computation (see
:mod:`.correlation` for what each definition computes)."""

METHODS: tuple[str, ...] = ("numpy_ma_legacy", "numpy_ma", "pairwise")
DEFAULT_METHOD = "numpy_ma_legacy"
DEFAULT_TOP_N = 2000
