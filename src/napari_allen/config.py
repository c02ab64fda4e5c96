"""User-level settings shared by the API client, the CLI and the widgets.

Environment variables (read at call time, so tests can redirect them):

- ``NAPARI_ALLEN_API_URL``: base URL of the Allen API (default ``https://api.brain-map.org``);
  point it at ``napari-allen local-api`` to work against the local server.
- ``NAPARI_ALLEN_CACHE``: the cache folder (default: the platform's user cache dir).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_API_URL = "https://api.brain-map.org"
API_URL_ENV = "NAPARI_ALLEN_API_URL"
CACHE_ENV = "NAPARI_ALLEN_CACHE"


def api_base_url(override: str | None = None) -> str:
    """The API base URL without a trailing slash: ``override``, the env variable, or Allen's."""
    url = override or os.environ.get(API_URL_ENV) or DEFAULT_API_URL
    return url.rstrip("/")


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache folder (created on demand): ``override``, ``$NAPARI_ALLEN_CACHE``, or the
    platform user cache dir (e.g. ``~/.cache/napari-allen`` on Linux)."""
    if override is not None:
        path = Path(override)
    elif os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV])
    else:
        from platformdirs import user_cache_dir

        path = Path(user_cache_dir("napari-allen", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path
