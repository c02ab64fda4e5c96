"""Builders of napari LayerDataTuples ``(data, kwargs, layer_type)`` (no Qt)."""
