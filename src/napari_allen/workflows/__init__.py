"""Workflows: the plugin's multi-step jobs as Qt-free functions (fetch through ``api``, read with
``io``/``atlas``, compute with ``analysis``), shared by the dock widgets and the command line.

Each takes ``progress=``/``cancel=`` keywords (:mod:`napari_allen.progress`).
"""

#: Where the structure-similarity matrix comes from (``plane_download.SOURCES``): here, without
#: the HTTP stack, so the Gene expression dock can list them at construction (~0.5 s less freeze).
MATRIX_SOURCES: tuple[str, ...] = ("unionize", "grids")
