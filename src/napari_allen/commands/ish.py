"""Gene-expression (ISH) sub-commands of ``napari-allen``.

- ``plane-store``: every ISH experiment of a plane (or of a gene list) into a Zarr store;
  resumable (re-run completes it), concurrent (``--jobs``), progress on stderr.
- ``correlate``: Allen's structure-similarity script: structures x experiments matrix,
  structure-structure correlation, top pairs; writes ``PREFIX.structures.json``,
  ``PREFIX.connections.json``, ``PREFIX.correlations.json`` and CSVs.
- ``gene-correlation``: voxel-level gene x gene correlation over a plane store with dask
  (``--scheduler tcp://host:port`` runs it on a dask distributed cluster); CSV on stdout.
- ``genes-at``: genes of a plane store ranked at a CCF point or in a structure; CSV on stdout.
- ``expression-table``: per-structure expression (rolled up) of one experiment or grid file,
  CSV on stdout.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from napari_allen.analysis.methods import DEFAULT_METHOD, METHODS
from napari_allen.commands._common import (
    CLIENT_OPTIONS,
    ProgressPrinter,
    cancel_on_sigint,
    client_from_args,
    gene_pattern,
    importing_meanwhile,
)
from napari_allen.parsing import split_list
from napari_allen.progress import CancelToken
from napari_allen.space import ISH_VOLUMES, SECTION_PLANES


def register(subparsers) -> None:
    """Add ``plane-store``, ``correlate``, ``gene-correlation``, ``genes-at`` and
    ``expression-table``."""
    p = subparsers.add_parser(
        "plane-store", parents=[CLIENT_OPTIONS],
        help="download every ISH experiment of a plane into a Zarr store",
        description="Download the 200 µm grids of every ISH experiment of a plane (or of a "
                    "gene list) into STORE.zarr (experiment x AP x DV x ML). Re-running the "
                    "same command resumes an interrupted or partly failed download.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--plane", choices=SECTION_PLANES)
    which.add_argument("--genes", nargs="+", type=gene_pattern,
                       help="gene acronyms (wildcards *), any plane "
                       "unless --only-plane is given")
    p.add_argument("--only-plane", choices=SECTION_PLANES, default=None,
                   help="with --genes: restrict to one plane")
    p.add_argument("--out", required=True, type=Path, help="the store folder (STORE.zarr)")
    p.add_argument("--jobs", type=int, default=8, help="concurrent downloads (default 8)")
    p.add_argument("--volume", choices=ISH_VOLUMES, default="energy")
    p.add_argument("--keep-zips", action="store_true",
                   help="keep the downloaded zips in the cache too")
    p.set_defaults(func=_plane_store)

    c = subparsers.add_parser(
        "correlate", parents=[CLIENT_OPTIONS],
        help="structure-structure expression correlation (Allen's script)",
        description="Build the structures x experiments expression matrix, correlate "
                    "structures ignoring missing values and keep the TOP_N most correlated "
                    "pairs; writes PREFIX.{structures,connections,correlations}.json and CSV.")
    chosen = c.add_mutually_exclusive_group()
    chosen.add_argument("--plane", choices=SECTION_PLANES)
    chosen.add_argument("--genes", nargs="+", type=gene_pattern,
                        help="gene acronyms (wildcards *)")
    chosen.add_argument("--experiments", nargs="+", help="SectionDataSet ids")
    c.add_argument("--only-plane", choices=SECTION_PLANES, default=None,
                   help="with --genes: restrict to one plane")
    c.add_argument("--top-n", type=int, default=2000, help="pairs to keep, approx. (2000)")
    c.add_argument("--out", required=True, help="output prefix (e.g. out or out.json)")
    c.add_argument("--source", choices=("unionize", "grids"), default="unionize",
                   help="StructureUnionize expression_energy (default) or 200 µm grids")
    c.add_argument("--csv", action="store_true",
                   help="also write PREFIX.connections.csv and PREFIX.correlations.csv "
                        "(acronym-labelled; the JSON files are the script's)")
    c.add_argument("--first", type=int, default=None, metavar="N",
                   help="with --plane: only the first N data sets of the listing, as the "
                        "script's <nprobes> argument")
    c.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help="numpy_ma_legacy (default): numpy.ma.corrcoef as numpy computed it "
                        "until 2.1, what Allen's script computed when published (whole-row "
                        "means, pairwise-complete standard deviations); numpy_ma: "
                        "numpy.ma.corrcoef since numpy 2.1 (whole-row standard deviations, "
                        "can leave [-1, 1]); pairwise: pairwise-complete Pearson (pandas, R)")
    c.add_argument("--store", type=Path, default=None,
                   help="read the grids from this plane store (implies --source grids; "
                        "alone: every experiment in the store)")
    c.add_argument("--scheduler", default=None,
                   help="dask distributed scheduler address for --store computations")
    c.add_argument("--jobs", type=int, default=8,
                   help="concurrent requests (StructureUnionize queries or grid downloads)")
    c.set_defaults(func=_correlate)

    g = subparsers.add_parser(
        "gene-correlation", parents=[CLIENT_OPTIONS],
        help="voxel-level gene x gene correlation over a plane store",
        description="Pairwise-complete Pearson correlation between the experiments of a plane "
                    "store over the annotated brain voxels, with dask. CSV on stdout: one row "
                    "per (seed, experiment) pair, strongest first.")
    g.add_argument("store", type=Path)
    g.add_argument("--seeds", nargs="+", required=True,
                   help="gene acronyms or experiment ids to correlate with every experiment")
    g.add_argument("--top", type=int, default=50, help="rows per seed (default 50)")
    g.add_argument("--scheduler", default=None, help="dask distributed scheduler address")
    g.set_defaults(func=_gene_correlation)

    a = subparsers.add_parser(
        "genes-at", parents=[CLIENT_OPTIONS],
        help="which genes of a plane store are high at a point or in a structure",
        description="Rank the experiments (genes) of a plane store by their energy at the "
                    "200 µm voxel containing a CCF point, in the structure containing it "
                    "(--mode structure), or averaged over a named structure. CSV on stdout, "
                    "highest first.")
    a.add_argument("store", type=Path)
    a.add_argument("--at", nargs=3, type=float, metavar=("AP", "DV", "ML"), default=None,
                   help="CCF point in µm")
    a.add_argument("--structure", default=None,
                   help="structure acronym or id (rolled up); overrides --at")
    a.add_argument("--mode", choices=("voxel", "structure"), default="voxel",
                   help="with --at: the voxel's value or the mean of its structure")
    a.add_argument("--top", type=int, default=50, help="rows to print (default 50)")
    a.set_defaults(func=_genes_at)

    e = subparsers.add_parser(
        "expression-table", parents=[CLIENT_OPTIONS],
        help="per-structure expression of one experiment or grid file",
        description="Mean/std/max expression per structure (hierarchy rolled up) as CSV.")
    e.add_argument("source", help="a SectionDataSet id or a grid file/zip/folder")
    e.add_argument("--volume", choices=ISH_VOLUMES, default="energy")
    e.add_argument("--no-rollup", action="store_true",
                   help="each structure's own voxels only (no descendants)")
    e.set_defaults(func=_expression_table)


# --- handlers ---------------------------------------------------------------------------
def _plane_store(args: argparse.Namespace) -> int:
    from napari_allen.workflows.plane_download import download_plane

    genes = split_list(args.genes) or None
    plane = args.plane or args.only_plane
    # Ctrl-C cancels cleanly: finished volumes stay recorded, a re-run resumes.
    with cancel_on_sigint(CancelToken()) as token:
        result = download_plane(client_from_args(args), args.out, plane=plane, genes=genes,
                                volume=args.volume, jobs=args.jobs, keep_zips=args.keep_zips,
                                progress=ProgressPrinter(), cancel=token)
    print(result.summary(), file=sys.stderr)
    for row in result.failed.itertuples(index=False):
        print(f"failed {row.experiment_id} {row.gene}: {row.error}", file=sys.stderr)
    if not result.complete:
        print("some experiments are missing: run the same command again to complete the store",
              file=sys.stderr)
        return 1
    return 0


def _correlate(args: argparse.Namespace) -> int:
    from napari_allen.workflows.structure_similarity import run_structure_similarity

    if not (args.plane or args.genes or args.experiments or args.store):
        print("napari-allen correlate: error: give --plane, --genes, --experiments or --store",
              file=sys.stderr)
        return 2
    try:
        experiments = [int(e) for e in split_list(args.experiments)]
    except ValueError:
        print(f"napari-allen correlate: error: --experiments takes ids, got {args.experiments}",
              file=sys.stderr)
        return 2
    client = client_from_args(args)
    from napari_allen.api import metacache

    # While the experiments and their unionizes are fetched: what the matrix, the correlation
    # and the files need, and the metadata cache's module first (the first query needs it).
    # Not pandas: the script's JSON files are written without it (only --csv imports it).
    # The cache's first-use costs are paid while the first requests are on their way.
    later = ("requests_cache", metacache.warm_up, "numpy", "napari_allen.analysis.correlation")
    with cancel_on_sigint(CancelToken()) as token, importing_meanwhile(*later):
        try:
            outcome = run_structure_similarity(
                client, experiments=experiments,
                genes=split_list(args.genes), plane=args.plane or args.only_plane,
                first=args.first, source="grids" if args.store else args.source,
                method=args.method,
                top_n=args.top_n, store=args.store, scheduler=args.scheduler, jobs=args.jobs,
                progress=ProgressPrinter(), cancel=token)
        except ValueError as exc:
            print(f"napari-allen correlate: error: {exc}", file=sys.stderr)
            return 2
    # The client is done with: its metadata cache closes (SQLite folds the write-ahead log of
    # the responses into the database, 20-40 ms of I/O without the interpreter lock) while the
    # files are written.
    closing = threading.Thread(target=client.close, name="napari-allen-close-cache")
    closing.start()
    try:
        paths = outcome.write(args.out, csv=args.csv)
    finally:
        closing.join()
    print(outcome.summary(), file=sys.stderr)
    for path in paths.values():
        print(path, file=sys.stderr)
    return 0


def _gene_correlation(args: argparse.Namespace) -> int:
    from napari_allen.workflows.store_queries import correlated_genes

    try:
        frame = correlated_genes(args.store, split_list(args.seeds), top=args.top,
                                 scheduler=args.scheduler, progress=ProgressPrinter())
    except ValueError as exc:
        print(f"napari-allen gene-correlation: error: {exc}", file=sys.stderr)
        return 1
    frame.to_csv(sys.stdout, index=False)
    return 0


def _genes_at(args: argparse.Namespace) -> int:
    from napari_allen.workflows.store_queries import genes_at

    if args.at is None and not args.structure:
        print("napari-allen genes-at: error: give --at AP DV ML or --structure ACRONYM",
              file=sys.stderr)
        return 2
    try:
        answer = genes_at(args.store, point_um=args.at, structure=args.structure,
                          mode=args.mode, top=args.top, progress=ProgressPrinter())
    except (ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"napari-allen genes-at: error: {message}", file=sys.stderr)
        return 2
    print(f"top genes at {answer.where}", file=sys.stderr)
    answer.ranked.to_csv(sys.stdout, index=False, float_format="%.6g")
    return 0


def _expression_table(args: argparse.Namespace) -> int:
    from napari_allen.workflows.ish import grid_from_source, structure_table

    try:
        grid = grid_from_source(client_from_args(args), str(args.source), args.volume,
                                progress=ProgressPrinter())
        table = structure_table(grid.data, rollup=not args.no_rollup)
    except ValueError as exc:
        print(f"napari-allen: error: {args.source}: {exc}" if str(args.source) not in
              str(exc) else f"napari-allen: error: {exc}", file=sys.stderr)
        return 1
    table.to_csv(sys.stdout, index=False, float_format="%.6g")
    return 0
