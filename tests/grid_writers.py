"""Writing small Allen-style grid files for tests (independent of the package's writers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_mhd(folder: Path, name: str, data: np.ndarray, etype: str = "MET_FLOAT",
              res: int = 25) -> Path:
    """``folder/name.mhd`` + ``name.raw``: ``data`` ``[AP, DV, ML]`` stored x-fastest (Fortran
    order), little-endian, ``res`` µm voxels; returns the ``.mhd`` path."""
    (folder / f"{name}.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        f"ElementSpacing = {res} {res} {res}\nDimSize = {' '.join(map(str, data.shape))}\n"
        f"ElementType = {etype}\nElementDataFile = {name}.raw\n")
    (folder / f"{name}.raw").write_bytes(np.asarray(data).tobytes(order="F"))
    return folder / f"{name}.mhd"
