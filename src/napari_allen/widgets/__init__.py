"""Qt dock widgets: thin views that run work in napari thread workers."""
