"""Where a downloaded file came from, kept in a small JSON sidecar next to it.

The download cache writes ``<file>.source.json`` (``url``, and ``synthetic: true`` when the
server marked the bytes as generated, as the local Allen API server does); the grid readers merge
it into a volume's metadata, so a layer shows where its data came from and never passes off
synthetic test data as Allen's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import atomic_write_text

SIDECAR_SUFFIX = ".source.json"
#: The response header with which the local Allen API server marks generated data.
SYNTHETIC_HEADER = "X-Napari-Allen-Synthetic"


def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_provenance(path: str | os.PathLike, info: dict) -> Path:
    """Write ``info`` (JSON-serialisable) as the sidecar of ``path`` (atomically)."""
    return atomic_write_text(sidecar_path(path), json.dumps(info, sort_keys=True))


def read_provenance(path: str | os.PathLike) -> dict:
    """Where ``path`` came from (``source_url``, ``synthetic``) from its manifest entry
    (:mod:`.manifest`) or, for files of older versions, its sidecar; ``{}`` if unknown.

    Raises :class:`AllenFormatError` when the file has an entry it no longer matches
    (truncated, edited or swapped since it was downloaded): such a file is never opened."""
    from ..errors import AllenFormatError
    from .manifest import DAMAGED, check_file

    result = check_file(path)
    if result.status == DAMAGED:
        source = f" from {result.entry.url}" if result.entry and result.entry.url else ""
        raise AllenFormatError(path, f"{result.reason}; this is not the file napari-allen "
                               f"downloaded{source}: download it again (napari-allen "
                               "download re-fetches damaged files)")
    entry = result.entry if result.ok else None
    if entry is not None:
        out: dict = {"source_url": entry.url} if entry.url else {}
        if entry.synthetic:
            out["synthetic"] = True
        return out
    try:
        info = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(info, dict):
        return {}
    out = {}
    if isinstance(info.get("url"), str):
        out["source_url"] = info["url"]
    if info.get("synthetic") is True:
        out["synthetic"] = True
    return out
