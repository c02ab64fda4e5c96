"""Qt dock widgets: thin views that run work in napari thread workers."""

from superqt.utils import ensure_main_thread

from napari_allen.layers.multiscale import set_main_thread_caller

# Multiscale layers whose pyramid finishes converting in the background refresh on the GUI
# thread (layers/ holds no Qt, so the way to reach that thread is installed from here).
set_main_thread_caller(lambda fn: ensure_main_thread(fn)())
