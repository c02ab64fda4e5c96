"""Write files so that a reader never sees half of one: write a temporary sibling, flush, then
``os.replace`` it over the target (atomic on POSIX and Windows within one folder)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

# mkstemp creates 0600 files; give finished files the usual mode (0666 less the umask).
# Read once at import (os.umask can only be read by setting it, which is not thread-safe).
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target``.

    On any exception the temporary file is removed and ``target`` is left as it was.
    ``suffix`` keeps an extension some writers need (e.g. ``.nii.gz`` for nibabel).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid in the name: what a killed child process left can be told apart.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=suffix + ".part",
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def remove_partial_files(folder: str | os.PathLike, pid: int) -> list[Path]:
    """Remove the temporary files process ``pid`` (gone: killed mid-write) left in ``folder``
    with :func:`atomic_path`; returns them."""
    gone = []
    for path in Path(folder).glob(f".*.{int(pid)}.*.part"):
        with contextlib.suppress(OSError):
            path.unlink()
            gone.append(path)
    return gone


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """``open()`` a temporary sibling of ``target`` for writing; replace ``target`` on success."""
    with atomic_path(target) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(target: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    with atomic_open(target, "w", encoding=encoding, newline="") as fh:
        fh.write(text)
    return Path(target)


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool = True):
    """An exclusive advisory lock on ``path`` (a lock file, created if needed) shared by
    threads and processes: another one building the same cache entry waits. With
    ``wait=False`` it yields False at once when someone else holds it (True when taken)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: threads are still serialised per key
        yield True
        return
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
