"""napari-allen: the Allen Mouse Brain Atlas in napari.

The package root imports nothing heavy (no Qt, no napari) so that readers,
the API client and the command line start fast and headless.
"""

try:
    from ._version import version as __version__
except ImportError:  # running from a source tree without setuptools_scm
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
