"""``napari-allen export``: turn Allen grids into files any tool opens (the "how do I open
energy.raw" problem), without napari.

Any input the plugin reads works: a ``grid_data`` zip, an unzipped folder, ``energy.mhd``, a
bare ``energy.raw`` or an Allen NRRD. Each volume becomes one CSV (AP, DV, ML in µm, value,
structure), NIfTI (RAS affine, CCF or MICe world space) or Allen MetaImage file in ``--out``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

FORMATS = {"csv": ".csv", "nifti": ".nii.gz", "mhd": ".mhd"}


def register(subparsers) -> None:
    """Add ``export`` to the ``napari-allen`` command line."""
    p = subparsers.add_parser(
        "export", help="convert Allen grids (zip, .mhd/.raw, NRRD) to CSV, NIfTI or MetaImage",
        description=__doc__.split("\n\n", 1)[1])
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="Allen grid files or folders")
    p.add_argument("--to", choices=sorted(FORMATS), required=True, help="output format")
    p.add_argument("--out", type=Path, default=Path("."), help="output folder (default: .)")
    p.add_argument("--space", choices=("ccf", "mice"), default="ccf",
                   help="NIfTI world space: CCFv3 (default) or the MICe-centred space")
    p.add_argument("--no-data", choices=("keep", "nan"), default="keep",
                   help="NIfTI: keep Allen's -1 for no data (default) or write NaN")
    p.add_argument("--no-structures", action="store_true",
                   help="CSV: skip the structure id/acronym columns (faster)")
    p.set_defaults(func=export_command)


def output_name(volume_name: str) -> str:
    """A file-name stem from a layer name: ``"Nrp1 energy (exp 74272479)"`` ->
    ``"Nrp1_energy_exp_74272479"``."""
    return re.sub(r"[^A-Za-z0-9.\-]+", "_", volume_name).strip("_") or "grid"


def export_command(args: argparse.Namespace) -> int:
    from napari_allen.atlas.annotation import annotation_for
    from napari_allen.atlas.ontology import Ontology
    from napari_allen.io import read_volumes
    from napari_allen.io.export import to_csv, to_metaimage, to_nifti

    args.out.mkdir(parents=True, exist_ok=True)
    for source in args.inputs:
        for vol in read_volumes(source):
            target = args.out / (output_name(vol.name) + FORMATS[args.to])
            if args.to == "csv":
                annotation = None if args.no_structures else annotation_for(vol)
                written = [to_csv(vol, target, annotation=annotation,
                                  ontology=None if annotation is None else Ontology.default())]
            elif args.to == "nifti":
                written = [to_nifti(vol, target, space=args.space, no_data=args.no_data)]
            else:
                written = to_metaimage(vol, target)
            for path in written:
                print(path)
            print(f"{source}: {vol.name} -> {written[0].name}", file=sys.stderr)
    return 0
