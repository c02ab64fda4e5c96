"""The manifest: what every file napari-allen wrote under a final name must still be.

Each folder the project writes into (download folder, cache, decoded cache, plane store) keeps
a hidden append-only log ``.napari-allen-manifest.jsonl``: one JSON object per line, keyed by the
file's path relative to that folder (POSIX separators), the last line for a name wins::

    {"name": "energy_200um.zip", "size": 123, "sha256": "...", "url": "http://...",
     "synthetic": false, "mtime_ns": 1700000000000000000, "inode": 42}

Writers record the entry just *before* they rename the finished temporary file into place
(size, mtime and inode survive ``os.replace``), so a file under its final name always has an
entry; a crash between the two leaves an entry that the old file (if any) fails to match, which
means "fetch again", never "trust". Appending one short line with ``O_APPEND`` is atomic on
local POSIX file systems, so threads and processes share one log without a lock file; a torn or
garbage line (a crash, an edit) is skipped.

:meth:`Manifest.check` is the reuse test: the size always; the SHA-256 only when the file
changed since it was recorded (other mtime or inode: touched, copied over, swapped by
``os.replace``) or when asked (``deep=True``). A bit flipped in place with the mtime restored
by hand is only caught by a deep check (``napari-allen download --verify-all``). Files derived
from a verified file (the decoded cache's grids, inflated from a verified download) are
recorded without a SHA-256: hashing them would only re-check their source; once their stat
changes they are rebuilt from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from .atomic import atomic_write_text

MANIFEST_NAME = ".napari-allen-manifest.jsonl"
HASH_CHUNK = 1 << 20  # 1 MiB reads: hashing stays at constant memory for any file size

# check() outcomes
VERIFIED = "verified"  # the file is what was recorded
MISSING = "missing"  # no file
UNRECORDED = "unrecorded"  # a file without an entry (older version, foreign file)
DAMAGED = "damaged"  # size or content differs from the entry: fetch again, never open


@dataclass(frozen=True)
class Entry:
    """A manifest line: the file's size (bytes), SHA-256 (hex), where it came from, and the
    stat fields that let an unchanged file skip re-hashing. ``sha256`` is '' for a file
    derived from another verified file (a decoded grid): it is trusted while its stat is
    unchanged and rebuilt, never re-hashed, once it changed."""

    name: str
    size: int
    sha256: str
    url: str = ""
    synthetic: bool = False
    mtime_ns: int = 0
    inode: int = 0

    @classmethod
    def from_json(cls, data: object) -> Entry | None:
        """An entry from a parsed line, or None when the line is not a valid entry."""
        if not isinstance(data, dict):
            return None
        try:
            name, size, digest = data["name"], data["size"], data["sha256"]
        except KeyError:
            return None
        if not (isinstance(name, str) and name and isinstance(size, int) and size >= 0
                and isinstance(digest, str) and len(digest) in (0, 64)):
            return None
        url = data.get("url", "")
        ints = [data.get(k, 0) for k in ("mtime_ns", "inode")]
        if not isinstance(url, str) or not all(isinstance(v, int) for v in ints):
            return None
        return cls(name, size, digest.lower(), url, data.get("synthetic") is True, *ints)


@dataclass(frozen=True)
class Check:
    """The result of :meth:`Manifest.check`: ``status`` (VERIFIED, MISSING, UNRECORDED,
    DAMAGED), a human ``reason`` for DAMAGED, and the entry if there is one."""

    status: str
    reason: str = ""
    entry: Entry | None = None

    @property
    def ok(self) -> bool:
        return self.status == VERIFIED


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


class _Log:
    """The parsed state of one manifest file, re-read incrementally as it grows."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, Entry] = {}
        self.offset = 0
        self.inode = -1
        self.lines = 0


_logs: dict[str, _Log] = {}
_logs_guard = threading.Lock()


class Manifest:
    """The manifest of one folder (see the module docstring). Thread-safe."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST_NAME
        key = os.path.abspath(self.path)
        with _logs_guard:
            self._log = _logs.setdefault(key, _Log())

    @classmethod
    def for_file(cls, path: str | os.PathLike) -> tuple[Manifest, str]:
        """The manifest of ``path``'s own folder and the name it is recorded under."""
        path = Path(path)
        return cls(path.parent), path.name

    # --- reading ----------------------------------------------------------------------
    def _refresh(self) -> None:
        log = self._log
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            log.entries, log.offset, log.inode, log.lines = {}, 0, -1, 0
            return
        if st.st_ino != log.inode or st.st_size < log.offset:  # rewritten: read from scratch
            log.entries, log.offset, log.inode, log.lines = {}, 0, st.st_ino, 0
        if st.st_size == log.offset:
            return
        with open(self.path, "rb") as fh:
            fh.seek(log.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a line still being appended is read next time
        for line in data[:end].splitlines():
            try:
                # An entry is ~300 B: longer lines are garbage (and could nest deep enough
                # to exhaust the JSON parser's recursion).
                entry = Entry.from_json(json.loads(line)) if len(line) < 65536 else None
            except (ValueError, RecursionError):
                entry = None
            if entry is not None:
                log.entries[entry.name] = entry
                log.lines += 1
        log.offset += end

    def get(self, name: str) -> Entry | None:
        """The recorded entry for ``name`` (relative POSIX path), or None."""
        with self._log.lock:
            try:
                self._refresh()
            except OSError:
                return None
            return self._log.entries.get(_norm(name))

    def entries(self) -> dict[str, Entry]:
        with self._log.lock:
            with contextlib.suppress(OSError):
                self._refresh()
            return dict(self._log.entries)

    # --- writing ----------------------------------------------------------------------
    def record(self, name: str, file: str | os.PathLike | None = None, *, url: str = "",
               synthetic: bool = False, sha256: str | None = None) -> Entry:
        """Record ``file`` (default: ``folder/name``) as ``name``: its size, SHA-256 (computed
        when None; '' records a derived file without one), mtime and inode. Pass the
        temporary file about to be renamed to ``folder/name``; the rename keeps the recorded
        stat fields valid."""
        name = _norm(name)
        file = Path(file) if file is not None else self.folder / name
        digest = sha256_file(file) if sha256 is None else sha256
        st = os.stat(file)
        entry = Entry(name, st.st_size, digest, url, bool(synthetic), st.st_mtime_ns,
                      st.st_ino)
        self._append(entry)
        return entry

    def _append(self, entry: Entry) -> None:
        line = (json.dumps(asdict(entry), separators=(",", ":")) + "\n").encode()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        with self._log.lock:
            try:
                fd = os.open(self.path, flags, 0o666)
            except FileNotFoundError:  # a new folder (usually it holds the file just written)
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, flags, 0o666)
            try:
                os.write(fd, line)  # one write: atomic against other appenders
            finally:
                os.close(fd)
            # Our own line is parsed again by the next _refresh (harmless): re-reading the log
            # here would make every writer of a 400-file batch re-parse the others' lines.
            self._log.entries[entry.name] = entry
            self._log.lines += 1
            if self._log.lines > 64 and self._log.lines > 4 * len(self._log.entries):
                with contextlib.suppress(OSError):
                    self._refresh()  # other processes' lines first: compaction keeps them
                self._compact()

    def _compact(self) -> None:
        """Rewrite the log with one line per name (caller holds the lock). An appender in
        another process racing with this loses its line; its file is then UNRECORDED, which
        reuse treats as "verify the format again", never as trusted."""
        text = "".join(json.dumps(asdict(e), separators=(",", ":")) + "\n"
                       for e in self._log.entries.values())
        atomic_write_text(self.path, text)
        self._log.entries, self._log.offset, self._log.inode, self._log.lines = {}, 0, -1, 0
        self._refresh()

    def forget(self, name: str) -> None:
        """Drop ``name``'s entry (the file was deleted on purpose)."""
        name = _norm(name)
        with self._log.lock:
            with contextlib.suppress(OSError):
                self._refresh()
            if self._log.entries.pop(name, None) is not None:
                self._compact()

    # --- the reuse test ---------------------------------------------------------------
    def check(self, name: str, *, deep: bool = False) -> Check:
        """Is ``folder/name`` still the file that was recorded? (see the module docstring)"""
        name = _norm(name)
        path = self.folder / name
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return Check(MISSING)
        except OSError as exc:
            return Check(DAMAGED, f"cannot be read ({exc.strerror or exc})")
        entry = self.get(name)
        if entry is None:
            return Check(UNRECORDED)
        if st.st_size != entry.size:
            return Check(DAMAGED, f"has {st.st_size} bytes, {entry.size} were recorded", entry)
        if not deep and st.st_ino == entry.inode and st.st_mtime_ns == entry.mtime_ns:
            return Check(VERIFIED, entry=entry)
        if not entry.sha256:  # a derived file: nothing to compare its bytes with
            return Check(DAMAGED, "changed since it was written (a derived file: rebuilt, "
                         "not trusted)", entry)
        try:
            digest = sha256_file(path)
        except OSError as exc:
            return Check(DAMAGED, f"cannot be read ({exc.strerror or exc})", entry)
        if digest != entry.sha256:
            return Check(DAMAGED, "content differs from the recorded SHA-256 (changed or "
                         "replaced since it was written)", entry)
        if (st.st_ino, st.st_mtime_ns) != (entry.inode, entry.mtime_ns):
            # Same bytes, new stat (touched or copied): record it so the next check is cheap.
            entry = Entry(name, entry.size, digest, entry.url, entry.synthetic,
                          st.st_mtime_ns, st.st_ino)
            with contextlib.suppress(OSError):
                self._append(entry)
        return Check(VERIFIED, entry=entry)


# --- whole-file digests known without reading the file again ----------------------------
_digests: dict[tuple, str] = {}
_digests_lock = threading.Lock()


def _identity(st: os.stat_result) -> tuple:
    """What says a file is unchanged (the manifest's own test: same inode, size, mtime)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def remember_digest(path: str | os.PathLike, sha256: str) -> None:
    """Note the SHA-256 of ``path``'s whole content, computed while it was written (a
    download hashes the bytes it streams), so its content key needs no second read. Kept
    per (device, inode, size, mtime): a rename keeps it, any change to the file drops it."""
    st = os.stat(path)
    with _digests_lock:
        if len(_digests) > 4096:
            _digests.clear()
        _digests[_identity(st)] = str(sha256)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of ``path``'s whole content, read once per process and file version:
    remembered (:func:`remember_digest`), or from the file's manifest entry while the file
    still matches it (size, inode, mtime: the download cache's own reuse test), else hashed."""
    st = os.stat(path)
    ident = _identity(st)
    with _digests_lock:
        digest = _digests.get(ident)
    if digest is None:
        result = check_file(path)
        if result.ok and result.entry is not None and result.entry.sha256:
            digest = result.entry.sha256
        else:
            digest = sha256_file(path)
        with _digests_lock:
            if len(_digests) > 4096:
                _digests.clear()
            _digests[ident] = digest
    return digest



def _norm(name: str) -> str:
    name = str(name)
    if name and "/" not in name and os.sep not in name and name not in (".", ".."):
        return name  # a plain file name (the usual case): nothing to normalise
    pure = PurePosixPath(name.replace(os.sep, "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"manifest names are relative paths inside the folder, got {name!r}")
    return pure.as_posix()


def check_file(path: str | os.PathLike, *, deep: bool = False) -> Check:
    """:meth:`Manifest.check` for a file recorded in its own folder's manifest."""
    manifest, name = Manifest.for_file(path)
    return manifest.check(name, deep=deep)


def record_file(path: str | os.PathLike, tmp: str | os.PathLike | None = None, *,
                url: str = "", synthetic: bool = False, sha256: str | None = None) -> Entry:
    """Record ``path`` in its folder's manifest; ``tmp`` = the finished temporary file that
    is about to be renamed to ``path`` (record first, then rename)."""
    manifest, name = Manifest.for_file(path)
    return manifest.record(name, tmp, url=url, synthetic=synthetic, sha256=sha256)


def recorded_entry(path: str | os.PathLike) -> Entry | None:
    """The entry of ``path`` if the file still has the recorded size (cheap), else None."""
    manifest, name = Manifest.for_file(path)
    entry = manifest.get(name)
    try:
        if entry is None or os.stat(path).st_size != entry.size:
            return None
    except OSError:
        return None
    return entry


def forget_file(path: str | os.PathLike) -> None:
    """Drop ``path``'s entry from its folder's manifest (the file was removed on purpose)."""
    manifest, name = Manifest.for_file(path)
    manifest.forget(name)
