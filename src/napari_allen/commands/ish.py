"""Gene-expression (ISH) sub-commands of ``napari-allen``.

- ``plane-store``: every ISH experiment of a plane (or of a gene list) into a Zarr store;
  resumable (re-run completes it), concurrent (``--jobs``), progress on stderr.
- ``correlate``: Allen's structure-similarity script: structures x experiments matrix,
  structure-structure correlation, top pairs; writes ``PREFIX.structures.json``,
  ``PREFIX.connections.json``, ``PREFIX.correlations.json`` and CSVs.
- ``gene-correlation``: voxel-level gene x gene correlation over a plane store with dask
  (``--scheduler tcp://host:port`` runs it on a dask distributed cluster); CSV on stdout.
- ``expression-table``: per-structure expression (rolled up) of one experiment or grid file,
  CSV on stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from napari_allen.analysis.correlation import DEFAULT_METHOD, METHODS
from napari_allen.commands._common import (
    CLIENT_OPTIONS,
    ProgressPrinter,
    cancel_on_sigint,
    client_from_args,
    gene_pattern,
)
from napari_allen.parsing import split_list
from napari_allen.progress import CancelToken
from napari_allen.space import ISH_VOLUMES, SECTION_PLANES


def register(subparsers) -> None:
    """Add ``plane-store``, ``correlate``, ``gene-correlation`` and ``expression-table``."""
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
    with cancel_on_sigint(CancelToken()) as token:
        try:
            outcome = run_structure_similarity(
                client_from_args(args), experiments=experiments,
                genes=split_list(args.genes), plane=args.plane or args.only_plane,
                first=args.first, source="grids" if args.store else args.source,
                method=args.method,
                top_n=args.top_n, store=args.store, scheduler=args.scheduler, jobs=args.jobs,
                progress=ProgressPrinter(), cancel=token)
        except ValueError as exc:
            print(f"napari-allen correlate: error: {exc}", file=sys.stderr)
            return 2
    paths = outcome.write(args.out, csv=args.csv)
    print(outcome.summary(), file=sys.stderr)
    for path in paths.values():
        print(path, file=sys.stderr)
    return 0


def _gene_correlation(args: argparse.Namespace) -> int:
    from napari_allen.analysis.correlation import dask_gene_correlation
    from napari_allen.atlas.annotation import grid_annotation
    from napari_allen.io.plane_store import open_plane_store

    store = open_plane_store(args.store)
    table = store.table
    seeds: list[int] = []
    for key in split_list(args.seeds):
        if key.isdigit() and int(key) in set(table["experiment_id"].astype(int)):
            seeds.append(store.index_of(int(key)))
            continue
        hits = np.flatnonzero(table["gene"].astype(str).str.lower() == key.lower())
        if not hits.size:
            print(f"napari-allen: error: {key} is neither a gene nor an experiment of "
                  f"{args.store}", file=sys.stderr)
            return 1
        seeds.extend(int(h) for h in hits)
    brain = np.asarray(grid_annotation().data) > 0
    corr = dask_gene_correlation(store.to_dask(missing_as_nan=False), seeds=seeds,
                                 voxel_mask=brain, scheduler=args.scheduler,
                                 progress=ProgressPrinter())
    genes = table["gene"] if "gene" in table.columns else pd.Series([""] * len(table))
    frames = []
    for row, seed in enumerate(seeds):
        frame = pd.DataFrame({
            "seed_experiment_id": int(table["experiment_id"].iloc[seed]),
            "seed_gene": genes.iloc[seed],
            "experiment_id": table["experiment_id"].astype(int),
            "gene": genes,
            "r": corr[row],
        })
        frame = frame[frame["experiment_id"] != frame["seed_experiment_id"]]
        frame = frame.dropna(subset=["r"]).sort_values("r", ascending=False, kind="stable")
        frames.append(frame.head(args.top))
    pd.concat(frames).to_csv(sys.stdout, index=False)
    return 0


def _expression_table(args: argparse.Namespace) -> int:
    from napari_allen.analysis.expression import structure_expression
    from napari_allen.atlas.annotation import grid_annotation

    source = str(args.source)
    if Path(source).exists():
        from napari_allen.io import read_volumes

        volumes = [v for v in read_volumes(source) if not v.is_labels]
        chosen = [v for v in volumes if v.kind == args.volume] or volumes
        if not chosen:
            print(f"napari-allen: error: {source}: no expression grid found", file=sys.stderr)
            return 1
        grid = chosen[0]
    elif source.isdigit():
        (grid,) = client_from_args(args).grid_volumes(int(source), (args.volume,),
                                         progress=ProgressPrinter())
    else:
        print(f"napari-allen: error: {source} is neither a file nor an experiment id",
              file=sys.stderr)
        return 1
    annotation = np.asarray(grid_annotation().data)
    data = np.asarray(grid.data)
    if data.shape != annotation.shape:
        print(f"napari-allen: error: {source}: grid {data.shape} is not the 200 µm ISH grid "
              f"{annotation.shape}", file=sys.stderr)
        return 1
    table = structure_expression(data, annotation, rollup=not args.no_rollup)
    table.to_csv(sys.stdout, index=False, float_format="%.6g")
    return 0
