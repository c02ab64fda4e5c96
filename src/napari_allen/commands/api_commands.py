"""``napari-allen search-ish``, ``download`` and ``cache-info``: API work from the terminal.

Data (CSV) goes to stdout, progress and messages to stderr. All commands honour
``NAPARI_ALLEN_API_URL`` (e.g. a ``napari-allen local-api`` server) and ``NAPARI_ALLEN_CACHE``.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

from ..io.atomic import atomic_write_text
from ..progress import CancelToken
from ..space import ISH_VOLUMES, SECTION_PLANES
from ._common import (
    CLIENT_OPTIONS,
    ProgressPrinter,
    cancel_on_sigint,
    client_from_args,
    format_size,
    gene_pattern,
    importing_meanwhile,
)

METADATA_CSV = "metadata.csv"


def register(subparsers) -> None:
    """Add the API sub-commands to the ``napari-allen`` parser."""
    p = subparsers.add_parser(
        "search-ish", parents=[CLIENT_OPTIONS],
        help="list adult mouse ISH experiments of genes (CSV on stdout)",
        description="Adult mouse ISH experiments (SectionDataSets) of the genes; acronyms are "
                    "case-insensitive and accept * wildcards.")
    p.add_argument("genes", nargs="+", metavar="GENE", type=gene_pattern)
    p.add_argument("--plane", choices=SECTION_PLANES)
    p.set_defaults(func=search_ish_command)

    d = subparsers.add_parser(
        "download", parents=[CLIENT_OPTIONS],
        help="download 200 µm ISH grids into a folder (resumable)",
        description="Download ISH grid zips (<id>_<volume>_200um.zip) into OUT with "
                    f"{METADATA_CSV} recording success per experiment. Re-running skips "
                    "complete files, so an interrupted job resumes.")
    # One of --experiments / --genes / --plane (checked in the handler: --plane is also a
    # filter for --genes, so argparse's exclusive groups cannot express it).
    which = d.add_mutually_exclusive_group()
    which.add_argument("--experiments", nargs="+", type=int, metavar="ID")
    which.add_argument("--genes", nargs="+", metavar="GENE", type=gene_pattern)
    d.add_argument("--plane", choices=SECTION_PLANES,
                   help="alone: every ISH experiment of the plane; with --genes: a filter")
    d.add_argument("--out", required=True, type=Path, metavar="DIR")
    d.add_argument("--volume", choices=ISH_VOLUMES, default="energy")
    d.add_argument("--jobs", type=int, default=8, metavar="N",
                   help="concurrent downloads (default 8)")
    d.set_defaults(func=download_command)

    c = subparsers.add_parser("cache-info", parents=[CLIENT_OPTIONS],
                              help="show the cache folder and its size")
    c.set_defaults(func=cache_info_command)

    p = subparsers.add_parser(
        "cache-prune", parents=[CLIENT_OPTIONS],
        help="trim the decoded-grid cache (least recently used first)",
        description="Remove decoded grids (inflated 25/10 µm payloads) from the cache, least "
                    "recently used first, until it holds at most --max (default: its cap, "
                    "NAPARI_ALLEN_CACHE_MAX or a quarter of the free disk). Downloads and "
                    "metadata are kept. --max 0 empties it.")
    p.add_argument("--max", dest="max_size", metavar="SIZE",
                   help="target size, e.g. 2GB, 500MB or 0 (default: the cap)")
    p.set_defaults(func=cache_prune_command)


def search_ish_command(args) -> int:
    client = client_from_args(args)
    frame = client.search_ish(args.genes, plane=args.plane)
    frame.to_csv(sys.stdout, index=False)
    print(f"{len(frame)} experiments", file=sys.stderr)
    return 0


def cache_info_command(args) -> int:
    from ..io._decode import decoded_cache_info

    info = client_from_args(args).cache_info()
    print(f"cache folder: {info['folder']}")
    print(f"metadata:     {format_size(info['metadata_bytes'])}")
    print(f"files:        {info['files']} ({format_size(info['file_bytes'])})")
    print(f"total:        {format_size(info['total_bytes'])}")
    decoded = decoded_cache_info(info["folder"])
    cap = "unknown" if decoded["max_bytes"] is None else format_size(decoded["max_bytes"])
    print(f"decoded:      {decoded['entries']} grids ({format_size(decoded['bytes'])}, "
          f"cap {cap}; napari-allen cache-prune trims it)")
    return 0


def cache_prune_command(args) -> int:
    from ..config import cache_dir
    from ..io._decode import decoded_cache_info, parse_size, prune_decoded_cache

    try:
        target = None if args.max_size is None else parse_size(args.max_size)
    except ValueError as exc:
        print(f"cache-prune: --max: {exc}", file=sys.stderr)
        return 2
    folder = cache_dir(args.cache_dir)  # --cache-dir, else the environment's (as the client)
    removed, freed = prune_decoded_cache(folder, target)
    info = decoded_cache_info(folder)
    print(f"removed {removed} decoded grids ({format_size(freed)}); "
          f"{info['entries']} left ({format_size(info['bytes'])})")
    return 0


def _listing(client, args) -> tuple[list[str], list[dict]]:
    """The experiments to download as ``(columns, rows)``, with whatever metadata is known
    (gene, plane, ...). ``--experiments`` needs no query and no pandas (process start counts
    in a batch download: pandas alone takes ~1 s to import)."""
    if args.experiments:
        return ["experiment_id"], [{"experiment_id": int(i)}
                                   for i in dict.fromkeys(args.experiments)]
    if args.genes:
        frame = client.search_ish(args.genes, plane=args.plane)
    else:
        frame = client.ish_plane_listing(args.plane)
    frame = frame.drop_duplicates(subset="experiment_id").reset_index(drop=True)
    return [str(c) for c in frame.columns], frame.to_dict("records")


def _cell(value) -> object:
    """A CSV cell as pandas' ``to_csv`` writes it: missing values (None, NaN, NA) empty."""
    if value is None:
        return ""
    try:
        if isinstance(value, float) and math.isnan(value):
            return ""
        if value != value:  # NaN of numpy types
            return ""
    except TypeError:  # pandas.NA: truth value is ambiguous
        return ""
    return value


def _metadata_csv(columns: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(row.get(key)) for key in columns})
    return buffer.getvalue()


def download_command(args) -> int:
    from ..api.batch import OK_STATUSES, GridRequest, download_rows

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
    client = client_from_args(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    columns, listing = _listing(client, args)
    status_columns = ["status", "path", "bytes", "error", "success", "volume"]
    columns = columns + [c for c in status_columns if c not in columns]
    if not listing:
        print("download: no matching experiments", file=sys.stderr)
        atomic_write_text(out / METADATA_CSV, _metadata_csv(columns, []))
        return 1
    ids = [int(row["experiment_id"]) for row in listing]
    requests = [GridRequest(i, (args.volume,), dest=out / f"{i}_{args.volume}_200um.zip")
                for i in ids]
    print(f"{len(requests)} experiments -> {out} ({args.jobs} jobs)", file=sys.stderr)
    token = CancelToken()
    # The grid-zip verifier's readers (numpy) are imported during the first round trips.
    verifier = ("napari_allen.io.gridzip", "napari_allen.io.metaimage")
    with cancel_on_sigint(token), importing_meanwhile(*verifier):
        results = download_rows(client, requests, jobs=args.jobs, progress=ProgressPrinter(),
                                cancel=token)
    cancelled = token.cancelled
    meta = [{**row, "status": res["status"], "path": Path(res["path"]).name if res["path"] else "",
             "bytes": res["bytes"], "error": res["error"],
             "success": res["status"] in OK_STATUSES, "volume": args.volume}
            for row, res in zip(listing, results, strict=True)]
    atomic_write_text(out / METADATA_CSV, _metadata_csv(columns, meta))
    ok = sum(row["success"] for row in meta)
    counts: dict[str, int] = {}
    for res in results:
        counts[res["status"]] = counts.get(res["status"], 0) + 1
    failed = counts.get("failed", 0)
    print(f"{ok}/{len(meta)} complete: {counts.get('downloaded', 0)} downloaded, "
          f"{counts.get('verified', 0)} verified, {counts.get('refetched', 0)} "
          f"re-fetched (damaged on disk), {failed} failed; metadata in {out / METADATA_CSV}",
          file=sys.stderr)
    for kind, verb in (("refetched", "re-fetched"), ("failed", "failed")):
        for res in [r for r in results if r["status"] == kind][:10]:
            print(f"  {verb} {res['experiment_id']}: {res['error']}", file=sys.stderr)
    if cancelled:
        print("cancelled: run the same command again to resume", file=sys.stderr)
        return 130
    return 0 if failed == 0 else 1
