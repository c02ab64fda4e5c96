"""``napari-allen search-ish``, ``download`` and ``cache-info``: API work from the terminal.

Data (CSV) goes to stdout, progress and messages to stderr. All commands honour
``NAPARI_ALLEN_API_URL`` (e.g. a ``napari-allen local-api`` server) and ``NAPARI_ALLEN_CACHE``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from ..progress import CancelToken, Progress

VOLUME_CHOICES = ("energy", "density", "intensity")
METADATA_CSV = "metadata.csv"


def register(subparsers) -> None:
    """Add the API sub-commands to the ``napari-allen`` parser."""
    p = subparsers.add_parser(
        "search-ish", help="list adult mouse ISH experiments of genes (CSV on stdout)",
        description="Adult mouse ISH experiments (SectionDataSets) of the genes; acronyms are "
                    "case-insensitive and accept * wildcards.")
    p.add_argument("genes", nargs="+", metavar="GENE")
    p.add_argument("--plane", choices=("coronal", "sagittal"))
    _common(p)
    p.set_defaults(func=search_ish_command)

    d = subparsers.add_parser(
        "download", help="download 200 µm ISH grids into a folder (resumable)",
        description="Download ISH grid zips (<id>_<volume>_200um.zip) into OUT with "
                    f"{METADATA_CSV} recording success per experiment. Re-running skips "
                    "complete files, so an interrupted job resumes.")
    # One of --experiments / --genes / --plane (checked in the handler: --plane is also a
    # filter for --genes, so argparse's exclusive groups cannot express it).
    which = d.add_mutually_exclusive_group()
    which.add_argument("--experiments", nargs="+", type=int, metavar="ID")
    which.add_argument("--genes", nargs="+", metavar="GENE")
    d.add_argument("--plane", choices=("coronal", "sagittal"),
                   help="alone: every ISH experiment of the plane; with --genes: a filter")
    d.add_argument("--out", required=True, type=Path, metavar="DIR")
    d.add_argument("--volume", choices=VOLUME_CHOICES, default="energy")
    d.add_argument("--jobs", type=int, default=8, metavar="N",
                   help="concurrent downloads (default 8)")
    _common(d)
    d.set_defaults(func=download_command)

    c = subparsers.add_parser("cache-info", help="show the cache folder and its size")
    _common(c)
    c.set_defaults(func=cache_info_command)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--offline", action="store_true",
                        help="answer from the cache only (no network)")
    parser.add_argument("--retries", type=int, default=5, metavar="N",
                        help="retries per request on transient errors (default 5)")


def _client(args):
    from ..api.client import AllenClient

    return AllenClient(offline=getattr(args, "offline", False),
                       retries=max(0, getattr(args, "retries", 5)))


def search_ish_command(args) -> int:
    client = _client(args)
    frame = client.search_ish(args.genes, plane=args.plane)
    frame.to_csv(sys.stdout, index=False)
    print(f"{len(frame)} experiments", file=sys.stderr)
    return 0


def cache_info_command(args) -> int:
    info = _client(args).cache_info()
    print(f"cache folder: {info['folder']}")
    print(f"metadata:     {_size(info['metadata_bytes'])}")
    print(f"files:        {info['files']} ({_size(info['file_bytes'])})")
    print(f"total:        {_size(info['total_bytes'])}")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _listing(client, args) -> pd.DataFrame:
    """The experiments to download, with whatever metadata is known (gene, plane, ...)."""
    if args.experiments:
        return pd.DataFrame({"experiment_id": list(dict.fromkeys(args.experiments))})
    if args.genes:
        frame = client.search_ish(args.genes, plane=args.plane)
    else:
        frame = client.ish_plane_listing(args.plane)
    return frame.drop_duplicates(subset="experiment_id").reset_index(drop=True)


class _Printer:
    """Progress lines on stderr: rewritten in place on a terminal, about 1/s otherwise."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._final_shown = False
        self._lock = threading.Lock()

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        with self._lock:
            final = p.total is not None and p.done >= p.total
            if final and self._final_shown:
                return
            if not final and now - self._last < (0.1 if self.tty else 1.0):
                return
            self._last = now
            self._final_shown = final
            line = (f"[{p.done}/{p.total if p.total is not None else '?'}] "
                    f"{_size(p.bytes_done)} downloaded, {p.failed} failed")
            if self.tty:
                self.stream.write("\r" + line.ljust(60) + ("\n" if final else ""))
            else:
                self.stream.write(line + "\n")
            self.stream.flush()


@contextlib.contextmanager
def _cancel_on_sigint(token: CancelToken):
    """Ctrl-C sets the token (workers stop at their next chunk and clean up) instead of
    killing the process mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        print("\ncancelling...", file=sys.stderr)
        token.cancel()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def download_command(args) -> int:
    from ..api.batch import BatchCancelled, GridRequest, download_many

    if args.jobs < 1:
        print("download: --jobs must be at least 1", file=sys.stderr)
        return 2
    if not (args.experiments or args.genes or args.plane):
        print("download: give --experiments ID..., --genes GENE... or --plane PLANE",
              file=sys.stderr)
        return 2
    if args.experiments and args.plane:
        print("download: --plane cannot be combined with --experiments", file=sys.stderr)
        return 2
    client = _client(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    listing = _listing(client, args)
    if listing.empty:
        print("download: no matching experiments", file=sys.stderr)
        _write_csv_atomic(listing.assign(status=[], path=[], error=[]), out / METADATA_CSV)
        return 1
    ids = [int(i) for i in listing["experiment_id"]]
    requests = [GridRequest(i, (args.volume,), dest=out / f"{i}_{args.volume}_200um.zip")
                for i in ids]
    print(f"{len(requests)} experiments -> {out} ({args.jobs} jobs)", file=sys.stderr)
    token = CancelToken()
    cancelled = False
    with _cancel_on_sigint(token):
        try:
            results = download_many(client, requests, jobs=args.jobs, progress=_Printer(),
                                    cancel=token)
        except BatchCancelled as exc:
            results, cancelled = exc.results, True
    status = results[["status", "path", "bytes", "error"]].copy()
    status["path"] = [Path(p).name if p else "" for p in status["path"]]
    status["success"] = results["status"].isin(["downloaded", "cached"]).to_numpy()
    meta = pd.concat([listing.reset_index(drop=True), status.reset_index(drop=True)], axis=1)
    meta["volume"] = args.volume
    _write_csv_atomic(meta, out / METADATA_CSV)
    ok = int(meta["success"].sum())
    failed = int((results["status"] == "failed").sum())
    print(f"{ok}/{len(meta)} complete, {failed} failed; metadata in {out / METADATA_CSV}",
          file=sys.stderr)
    for _, row in results[results["status"] == "failed"].head(10).iterrows():
        print(f"  {row['experiment_id']}: {row['error']}", file=sys.stderr)
    if cancelled:
        print("cancelled: run the same command again to resume", file=sys.stderr)
        return 130
    return 0 if failed == 0 else 1
