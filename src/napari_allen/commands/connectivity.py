"""``napari-allen search-connectivity`` and ``napari-allen average-projections``.

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

from napari_allen.commands._common import CLIENT_OPTIONS, ProgressPrinter, client_from_args
from napari_allen.parsing import split_list
from napari_allen.space import NRRD_RESOLUTIONS


def _add_search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--structures", "-s", nargs="+", required=True,
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
    from napari_allen.workflows.connectivity import search_experiments

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


def _parse_region_groups(values: list[str] | None) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for value in values or []:
        name, sep, acronyms = value.partition("=")
        if not sep or not name.strip() or not acronyms.strip():
            raise SystemExit(f"--region-group expects NAME=ACR[,ACR...], got {value!r}")
        groups[name.strip()] = split_list([acronyms])
    return groups


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
        group_by=args.group_by,
        bins=args.bins,
        region_groups=_parse_region_groups(args.region_group) or None,
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
                    "target; prints a CSV table.")
    _add_search_arguments(search)
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
