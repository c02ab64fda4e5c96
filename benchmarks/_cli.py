"""Time one ``napari-allen`` command as a whole process, for benchmarks.

Process start and imports count, as they do for the scripts the command is compared with.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def time_cli(args: list[str], url: str, cache: Path, *, timeout: float = 3600) -> float:
    """Run ``napari-allen ARGS`` against the API at ``url`` with its cache in ``cache``;
    return the wall time in seconds. A non-zero exit raises with the end of its stderr."""
    env = dict(os.environ, NAPARI_ALLEN_API_URL=url, NAPARI_ALLEN_CACHE=str(cache))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "napari_allen.cli", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"napari-allen {args[0]} failed:\n{proc.stderr[-3000:]}")
    return seconds
