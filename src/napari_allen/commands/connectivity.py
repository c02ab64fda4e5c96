"""``napari-allen search-connectivity``, ``average-projections``, ``fetch-connectivity`` and
``threshold-projection`` (the Connectivity dock's Search, Average, Load and Threshold).

Progress goes to stderr, tables (CSV) to stdout or files; volumes are written as gzip NRRD
(Allen's own layout: x fastest = AP, µm spacing) and/or MetaImage per group.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from napari_allen.commands._common import (
    CLIENT_OPTIONS,
    ProgressPrinter,
    cancel_on_sigint,
    client_from_args,
)
from napari_allen.parsing import parse_region_groups, split_list
from napari_allen.progress import CancelToken
from napari_allen.space import NRRD_RESOLUTIONS


def _add_search_arguments(parser: argparse.ArgumentParser, *, near: bool = False) -> None:
    if near:
        parser.add_argument("--near", nargs=3, type=float, metavar=("AP", "DV", "ML"),
                            default=None, help="rank experiments by the distance of their "
                            "injection to this CCF point (µm); --structures then optional")
    parser.add_argument("--structures", "-s", nargs="+", required=not near,
                        help="injection structure acronyms or ids (a parent such as VIS "
                             "includes its descendants); comma or space separated")
    parser.add_argument("--line", default="any",
                        help="transgenic line filter: 'any' (default), 'wild type' or a "
                             "line name such as Syt6-Cre_KI148")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--primary", dest="any_injection", action="store_false",
                       help="match the primary injection structure (default, as AllenSDK's "
                            "get_experiments and brain_street_view)")
    which.add_argument("--any-injection", dest="any_injection", action="store_true",
                       help="match any injection structure of an experiment, not only its "
                            "primary one")
    parser.set_defaults(any_injection=False)
    parser.add_argument("--target", nargs="+", default=None,
                        help="only experiments projecting to these target structures")


def _search(args: argparse.Namespace, client):
    from napari_allen.workflows.connectivity import search_experiments, search_near

    if getattr(args, "near", None) is not None:
        return search_near(client, args.near, structures=split_list(args.structures) or None,
                           line=args.line)
    if not args.structures:
        raise ValueError("give --structures (or --near AP DV ML)")
    return search_experiments(client, split_list(args.structures), line=args.line,
                              primary_structure_only=not args.any_injection,
                              target_domain=split_list(args.target) or None)


def _search_command(args: argparse.Namespace) -> int:
    frame = _search(args, client_from_args(args))
    print(f"{len(frame)} experiments", file=sys.stderr)
    text = _csv_ready(frame).to_csv(index=False)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _csv_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists (injection structures) as '/'-joined ids like Allen's experiments.json."""
    out = frame.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
            out[col] = out[col].map(
                lambda v: "/".join(str(x) for x in v) if isinstance(v, (list, tuple, np.ndarray))
                else v)
    return out


def slug(text: str) -> str:
    """A file-name-safe version of a group name (``'AP 5800 µm'`` -> ``'AP_5800um'``)."""
    text = text.replace("µm", "um").replace(" um", "um")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "group"


def write_nrrd(path: Path, data: np.ndarray, resolution: float) -> None:
    """Write a float32 ``[AP, DV, ML]`` grid as gzip NRRD with Allen's header fields."""
    import nrrd

    header = {
        "type": "float",
        "space": "left-posterior-superior",  # what Allen writes (it is really PIR)
        "space directions": np.diag([float(resolution)] * 3),
        "kinds": ["domain"] * 3,
        "endian": "little",
        "encoding": "gzip",
        "space origin": np.zeros(3),
    }
    tmp = path.with_name(path.name + ".part")
    nrrd.write(str(tmp), np.asarray(data, dtype="<f4"), header, index_order="F")
    tmp.replace(path)


def _average_command(args: argparse.Namespace) -> int:
    from napari_allen.analysis.projections import AveragingOptions
    from napari_allen.workflows.connectivity import average_experiments

    client = client_from_args(args)
    options = AveragingOptions(
        normalization="injection_volume" if args.normalize == "injection-volume" else "none",
        subtract_hemisphere=args.subtract_hemisphere,
        ipsilateral=None if args.ipsilateral == "own" else args.ipsilateral,
        hemisphere_output=args.hemisphere_output,
        group_by=args.group_by,
        bins=args.bins,
        region_groups=parse_region_groups(args.region_group) or None,
    )
    experiments = _search(args, client)
    if args.limit:
        experiments = experiments.head(args.limit)
    if experiments.empty:
        print("no experiments match the search", file=sys.stderr)
        return 1
    print(f"averaging {len(experiments)} experiments", file=sys.stderr)
    result = average_experiments(client, experiments, options, resolution=args.resolution,
                                 source=args.source, progress=ProgressPrinter())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for group in result.groups:
        stem = f"{args.prefix}_{slug(group.info.name)}"
        written = []
        if args.format in ("nrrd", "both"):
            write_nrrd(out / f"{stem}.nrrd", group.mean, result.resolution)
            written.append(f"{stem}.nrrd")
        if args.format in ("mhd", "both"):
            _write_metaimage(out / f"{stem}.mhd", group.mean, result.resolution)
            written.append(f"{stem}.mhd")
        rows.append({"group": group.info.index, "name": group.info.name,
                     "n_experiments": group.n_experiments,
                     "center_um": group.info.center_um, "low_um": group.info.low_um,
                     "high_um": group.info.high_um, "files": ";".join(written),
                     "experiment_ids": "/".join(str(e) for e in group.experiment_ids)})
    pd.DataFrame(rows).to_csv(out / f"{args.prefix}_groups.csv", index=False)
    result.table.to_csv(out / f"{args.prefix}_metadata.csv", index=False)
    for exp_id, reason in result.skipped.items():
        print(f"skipped experiment {exp_id}: {reason}", file=sys.stderr)
    print(f"wrote {len(result.groups)} group volume(s) and {args.prefix}_metadata.csv to {out}",
          file=sys.stderr)
    return 0


def _write_metaimage(path: Path, data: np.ndarray, resolution: float) -> None:
    from napari_allen.io.export import to_metaimage
    from napari_allen.io.volume import GridVolume

    to_metaimage(GridVolume(data=np.asarray(data, dtype=np.float32), resolution=resolution,
                            kind="projection_density"), path)


def _user_errors(handler):
    """Report bad input (unknown acronym, impossible option) as one line, exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (ValueError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"napari-allen {args.command}: error: {message}", file=sys.stderr)
            return 2

    return run


def register(subparsers) -> None:
    """Add ``search-connectivity`` and ``average-projections`` to the CLI."""
    search = subparsers.add_parser(
        "search-connectivity", parents=[CLIENT_OPTIONS],
        help="find connectivity experiments (CSV to stdout)",
        description="Search Allen connectivity experiments by injection structure, line and "
                    "target, or by distance to a CCF point (--near); prints a CSV table.")
    _add_search_arguments(search, near=True)
    search.add_argument("--out", "-o", default=None, help="write the CSV here, not stdout")
    search.set_defaults(func=_user_errors(_search_command))

    avg = subparsers.add_parser(
        "average-projections", parents=[CLIENT_OPTIONS],
        help="average projection density over found experiments",
        description="Search experiments, download their projection density (cached) and "
                    "average it per group in constant memory; writes one volume per group "
                    "plus <prefix>_metadata.csv and <prefix>_groups.csv.")
    _add_search_arguments(avg)
    avg.add_argument("--normalize", choices=("none", "injection-volume"), default="none",
                     help="divide each experiment by its injection volume (mm³)")
    avg.add_argument("--subtract-hemisphere", action="store_true",
                     help="subtract the mirrored (contralateral) hemisphere")
    avg.add_argument("--ipsilateral", choices=("right", "left", "own"), default="right",
                     help="side every injection is flipped to before subtracting")
    avg.add_argument("--hemisphere-output", choices=("injected-half", "antisymmetric"),
                     default="injected-half",
                     help="with --subtract-hemisphere: injected-half (default, as "
                          "brain_street_view's fetch_connectivity_data: the injected half "
                          "holds ipsilateral minus mirrored contralateral, the other half is "
                          "0) or antisymmetric (the other half holds the same difference "
                          "negated and mirrored, so the map reads symmetric about the midline)")
    avg.add_argument("--group-by", choices=("none", "ap", "ml", "dv", "regions"),
                     default="none", help="group experiments by injection coordinate or region")
    avg.add_argument("--bins", type=int, default=5,
                     help="equal-width bins for --group-by ap/ml/dv (empty bins dropped)")
    avg.add_argument("--region-group", action="append", metavar="NAME=ACR[,ACR]",
                     help="a region group for --group-by regions (repeat for each group)")
    avg.add_argument("--resolution", type=int, choices=NRRD_RESOLUTIONS, default=100,
                     help="grid resolution in µm (NRRD source)")
    avg.add_argument("--source", choices=("nrrd", "grid"), default="nrrd",
                     help="NRRD download_file images, or the 100 µm grid zip density.raw")
    avg.add_argument("--format", choices=("nrrd", "mhd", "both"), default="nrrd",
                     help="output volume format")
    avg.add_argument("--limit", type=int, default=0, help="use at most N experiments")
    avg.add_argument("--prefix", default="connectivity", help="output file name prefix")
    avg.add_argument("--out", "-o", required=True, help="output folder")
    avg.set_defaults(func=_user_errors(_average_command))

    fetch = subparsers.add_parser(
        "fetch-connectivity", parents=[CLIENT_OPTIONS],
        help="download experiments' volumes (what the dock's Load does)",
        description="Download (cached) connectivity volumes of the given experiments and write "
                    "them as gzip NRRD (Allen's layout) into --out: <id>_<image>_<res>.nrrd.")
    fetch.add_argument("--experiments", nargs="+", required=True, help="experiment ids")
    fetch.add_argument("--images", nargs="+", default=["projection_density"],
                       help="projection_density, injection_density, injection_fraction, ...")
    fetch.add_argument("--resolution", type=int, choices=NRRD_RESOLUTIONS, default=100)
    fetch.add_argument("--source", choices=("nrrd", "grid"), default="nrrd")
    fetch.add_argument("--out", "-o", required=True, help="output folder")
    fetch.set_defaults(func=_user_errors(_fetch_command))

    thr = subparsers.add_parser(
        "threshold-projection", parents=[CLIENT_OPTIONS],
        help="significant projections inside a target region",
        description="Threshold a projection volume (an experiment id, or a NRRD/grid file on a "
                    "CCF grid) inside target regions; writes the mask (gzip NRRD, 1 = "
                    "significant) and the per-structure table (CSV).")
    thr.add_argument("source", help="experiment id or volume file")
    thr.add_argument("--image", default="projection_density",
                     help="with an experiment id: which image (default projection_density)")
    thr.add_argument("--resolution", type=int, choices=NRRD_RESOLUTIONS, default=100,
                     help="with an experiment id: grid resolution in µm")
    thr.add_argument("--regions", nargs="+", default=["root"],
                     help="target structures (descendants included; default root = brain)")
    thr.add_argument("--method", default="percentile",
                     help="percentile (default), absolute, zscore or relative")
    thr.add_argument("--value", type=float, default=95.0,
                     help="percentile (0-100), absolute value, z-score or fraction of the max")
    thr.add_argument("--mask", default=None, help="write the mask NRRD here")
    thr.add_argument("--table", default="-", help="per-structure CSV ('-' = stdout)")
    thr.set_defaults(func=_user_errors(_threshold_command))


def _fetch_command(args: argparse.Namespace) -> int:
    from napari_allen.workflows.connectivity import load_experiments

    try:
        ids = [int(e) for e in split_list(args.experiments)]
    except ValueError:
        raise ValueError(f"--experiments takes ids, got {args.experiments}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    resolution = 100 if args.source == "grid" else args.resolution
    with cancel_on_sigint(CancelToken()) as token:
        for exp, image, vol in load_experiments(
                client_from_args(args), [{"id": e} for e in ids], split_list(args.images),
                resolution, source=args.source, progress=ProgressPrinter(), cancel=token):
            path = out / f"{exp['id']}_{image}_{resolution}.nrrd"
            write_nrrd(path, np.asarray(vol.data), vol.resolution)
            print(path, file=sys.stderr)
    return 0


def _threshold_command(args: argparse.Namespace) -> int:
    from napari_allen.workflows.threshold import threshold_in_regions

    source = str(args.source)
    if Path(source).exists():
        from napari_allen.io import read_volumes

        volumes = [v for v in read_volumes(source) if not v.is_labels]
        if not volumes:
            raise ValueError(f"{source}: no volume found")
        vol = volumes[0]
    elif source.isdigit():
        from napari_allen.workflows.connectivity import load_volume

        vol = load_volume(client_from_args(args), int(source), args.image, args.resolution)
    else:
        raise ValueError(f"{source} is neither a file nor an experiment id")
    result = threshold_in_regions(np.asarray(vol.data), vol.resolution,
                                  regions=split_list(args.regions), method=args.method,
                                  value=args.value, progress=ProgressPrinter())
    print(result.summary(), file=sys.stderr)
    if args.mask:
        write_nrrd(Path(args.mask), result.mask.astype(np.float32), result.resolution)
        print(f"wrote {args.mask}", file=sys.stderr)
    if args.table == "-":
        result.table.to_csv(sys.stdout, index=False, float_format="%.6g")
    else:
        result.table.to_csv(args.table, index=False, float_format="%.6g")
        print(f"wrote {args.table}", file=sys.stderr)
    return 0
