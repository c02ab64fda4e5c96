"""Workflows: the plugin's multi-step jobs as Qt-free functions (fetch through ``api``, read with
``io``/``atlas``, compute with ``analysis``), shared by the dock widgets and the command line.

Each takes ``progress=``/``cancel=`` keywords (:mod:`napari_allen.progress`).
"""
