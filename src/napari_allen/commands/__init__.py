"""Sub-commands of the ``napari-allen`` command line, one module per area."""
