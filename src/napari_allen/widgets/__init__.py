"""Qt dock widgets: thin views that run work in napari thread workers."""

from napari_allen.widgets.main_thread import install as _install_main_thread_caller

# Multiscale layers whose pyramid finishes converting in the background refresh on the GUI
# thread (layers/ holds no Qt, so the way to reach that thread is installed from here, and by
# npe2's on_activate hook when no dock is ever opened).
_install_main_thread_caller()
