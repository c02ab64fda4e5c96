"""Per-volume arithmetic of projection averages and the running sum they feed.

An averaged experiment adds ``P / injection volume`` (optionally minus its mirror image) to its
group's sum. Done naively that is five full-volume passes and two copies per experiment; here it
is computed as :class:`Part` s, the pieces of the processed volume that are not zero, each made
in one or two passes over half the volume (brain_street_view's ``injected_half`` output is zero
on the other half: nothing to add there). Parts are plain numpy (the GIL is released), so
prefetch threads compute them while the main thread only sums (:class:`RunningMean`).

Volumes are ``[AP, DV, ML]``; parts cover an ML range of the grid (a ``slice`` of the last axis,
possibly reversed: the mirror half). Allen's no-data value (negative, -1) and NaN are missing:
NaN in a part's values, counted per voxel by the running sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_allen.space import grid_midline_index

SIDES: tuple[str, ...] = ("left", "right")
#: What hemisphere subtraction keeps: brain_street_view's output (the injected half holds
#: ``P - mirror(P)``, the other half is 0) or the full antisymmetric map (the other half holds
#: the negative, mirrored).
HEMISPHERE_OUTPUTS: tuple[str, ...] = ("injected_half", "antisymmetric")


def as_float_volume(volume, *, copy: bool = True) -> np.ndarray:
    """A float32 ``[AP, DV, ML]`` array with Allen's no-data values (negative) set to NaN.

    ``copy=False`` reuses ``volume``'s memory when it already is a writable float32 ndarray.
    """
    arr = np.asarray(volume)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3-D [AP, DV, ML] volume, got shape {arr.shape}")
    out = arr.astype(np.float32, copy=copy)
    if not out.flags.writeable:
        out = out.copy()
    _mark_missing(out)
    return out


def _mark_missing(arr: np.ndarray) -> bool:
    """Set negative values (Allen's -1 = no data) to NaN in place; True if any value is now
    NaN. One reduction when the array has no missing value (NaN fails ``>= 0`` too)."""
    if arr.size == 0 or arr.min() >= 0:
        return False
    np.copyto(arr, np.float32(np.nan), where=np.less(arr, 0))
    return True


def injection_side(ml_um: float, resolution: float, n_ml: int) -> str:
    """``'right'`` or ``'left'``: the hemisphere of an ML coordinate (µm).

    Allen's PIR axes put high ML (z) on the right. The boundary is the plane the grid is
    mirrored about (index ``(n_ml - 1) / 2``), so side and mirroring always agree.
    """
    if not np.isfinite(ml_um):
        raise ValueError("injection ML coordinate is missing (NaN)")
    midline_um = grid_midline_index(n_ml) * float(resolution)
    return "right" if float(ml_um) > midline_um else "left"


@dataclass(frozen=True)
class Part:
    """A non-zero piece of a processed volume: ``sign * values`` over the ML indices ``ml`` of
    the grid (``values`` is float32 ``[AP, DV, len(ml)]``; NaN = missing). ``values`` None: a
    piece that is 0 wherever it has data and only its missing voxels count (the midline plane
    of an odd grid after hemisphere subtraction): ``missing`` is then its mask."""

    ml: slice
    values: np.ndarray | None
    sign: int = 1
    missing: np.ndarray | None = None


def _check_hemisphere_args(ipsilateral: str | None, output: str) -> None:
    if ipsilateral is not None and ipsilateral not in SIDES:
        raise ValueError(f"ipsilateral must be 'left', 'right' or None, not {ipsilateral!r}")
    if output not in HEMISPHERE_OUTPUTS:
        raise ValueError(f"output must be one of {HEMISPHERE_OUTPUTS}, not {output!r}")


def _scaled(src: np.ndarray, scale: float | None, order: str) -> np.ndarray:
    """``src / scale`` (``src`` when None) as a new float32 array; Allen's no-data -> NaN.
    Divides in float32, as ``float32 array / float`` does (brain_street_view's rounding)."""
    out = np.empty(src.shape, dtype=np.float32, order=order)
    if scale is None:
        np.copyto(out, src, casting="unsafe")
    else:
        np.divide(src, np.float32(scale), out=out, dtype=np.float32, casting="unsafe")
    _mark_missing(out)
    return out


def _order(arr: np.ndarray) -> str:
    return "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"


def volume_parts(
    volume,
    *,
    scale: float | None = None,
    injection_ml_um: float | None = None,
    resolution: float = 100.0,
    subtract: bool = False,
    ipsilateral: str | None = "right",
    output: str = "injected_half",
) -> list[Part]:
    """The processed volume ``volume / scale`` (no division when None), with ``subtract``
    hemisphere subtraction as :func:`subtract_hemisphere` defines it, as parts.

    ``volume`` is read, never written (a read-only memory map is fine) and need not be
    float32: values are converted to float32 first, then divided by ``scale`` in float32.
    Without subtraction the single part is the whole volume (a new float32 array).
    """
    src = np.asarray(volume)
    if src.ndim != 3:
        raise ValueError(f"expected a 3-D [AP, DV, ML] volume, got shape {src.shape}")
    order = _order(src)
    if not subtract:
        return [Part(slice(None), _scaled(src, scale, order))]
    _check_hemisphere_args(ipsilateral, output)
    if injection_ml_um is None:
        raise ValueError("hemisphere subtraction needs the injection ML coordinate")
    n_ml = src.shape[2]
    side = injection_side(injection_ml_um, resolution, n_ml)
    half = n_ml // 2
    near, far = src[:, :, :half], src[:, :, ::-1][:, :, :half]  # index j and n-1-j
    if ipsilateral is not None and side != ipsilateral:
        near, far = far, near  # the ML-flipped volume's halves
    injected_left = (ipsilateral or side) == "left"
    # D[j] = V[j] - V[n-1-j] of the (flipped) normalised volume: each side rounded to float32
    # before the subtraction, exactly as normalising the whole volume first would.
    diff = _scaled(near, scale, order)
    mirror = _scaled(far, scale, order)
    np.subtract(diff, mirror, out=diff)
    del mirror
    left = slice(0, half)
    right = slice(n_ml - 1, n_ml - 1 - half if n_ml - 1 - half >= 0 else None, -1)
    if output == "antisymmetric":
        parts = [Part(left, diff, 1), Part(right, diff, -1)]
    else:  # the injected half holds D; the other half is 0 (brain_street_view)
        parts = [Part(left, diff, 1) if injected_left else Part(right, diff, -1)]
    if n_ml % 2:  # the midline plane of an odd grid: 0 where it has data
        plane = np.asarray(src[:, :, half], dtype=np.float32)
        gone = ~(plane >= 0)
        if gone.any():
            parts.append(Part(slice(half, half + 1), None, 1, gone[:, :, None]))
    return parts


def mark_missing(parts: Sequence[Part]) -> list[Part]:
    """Parts ready to add: NaN values set to 0 in place with their mask in ``missing`` (shared
    by parts sharing values). Costs one reduction per values array without missing voxels."""
    masks: dict[int, np.ndarray | None] = {}
    out = []
    for part in parts:
        if part.values is None:
            out.append(part)
            continue
        key = id(part.values)
        if key not in masks:
            mask = None
            # NaN anywhere makes the minimum NaN: one cheap reduction when nothing is missing.
            if part.values.size and np.isnan(part.values.min()):
                nan = np.isnan(part.values)
                if nan.any():
                    part.values[nan] = 0.0
                    mask = nan
            masks[key] = mask
        out.append(Part(part.ml, part.values, part.sign, masks[key]))
    return out


def assemble(parts: Sequence[Part], shape: Sequence[int], order: str = "F") -> np.ndarray:
    """The whole float32 volume the parts describe (0 outside them, NaN where missing)."""
    out = np.zeros(tuple(shape), dtype=np.float32, order=order)
    _write_parts(out, parts)
    return out


def _write_parts(out: np.ndarray, parts: Sequence[Part]) -> None:
    """Write ``parts`` into ``out`` (zero where no part writes): values (negated for sign -1),
    then NaN where missing."""
    for part in parts:
        region = out[:, :, part.ml]
        if part.values is not None:
            if part.sign < 0:
                np.negative(part.values, out=region)
            else:
                region[...] = part.values
        if part.missing is not None:
            region[np.broadcast_to(part.missing, region.shape)] = np.nan


def subtract_hemisphere(
    volume: np.ndarray,
    injection_ml_um: float,
    resolution: float,
    *,
    ipsilateral: str | None = "right",
    output: str = "antisymmetric",
    inplace: bool = False,
) -> np.ndarray:
    """Ipsilateral minus contralateral signal, mirrored about the midline.

    The volume is first flipped along ML when its injection (``injection_ml_um``, µm) is not
    on the ``ipsilateral`` side (``'right'``, ``'left'``, or None to keep each experiment's own
    side), so that every experiment's injection ends up on the same side. Then
    ``D = P - mirror(P)``: positive where the injected side projects more than the other
    hemisphere. With ``output='antisymmetric'`` ``D`` fills both halves and is antisymmetric
    about the midline (``D[..., i] = -D[..., n-1-i]``, the midline plane itself is 0 on odd
    grids); with ``output='injected_half'`` (brain_street_view's ``fetch_connectivity_data``)
    only the injected half holds ``D`` and the other half is 0. NaN (no data) on either side
    gives NaN in ``D``.

    ``inplace=True`` overwrites ``volume`` (a writable float ndarray whose no-data voxels are
    already NaN) and returns it; otherwise a float32 copy is made with -1 -> NaN.
    """
    _check_hemisphere_args(ipsilateral, output)
    v = volume if inplace else as_float_volume(volume)
    parts = volume_parts(v, injection_ml_um=injection_ml_um, resolution=resolution,
                         subtract=True, ipsilateral=ipsilateral, output=output)
    v[...] = 0.0
    _write_parts(v, parts)
    return v


class RunningMean:
    """Voxel-wise mean of a stream of equally shaped volumes in constant memory.

    Holds one float64 sum (exact enough for thousands of volumes) and, only once a volume with
    missing voxels (NaN) arrives, a per-voxel count of missing values (uint16, widened to
    uint32 past 65,535 volumes). Peak memory: 2 float32 volumes for the sum, half a volume
    for the counts, plus the volume being added.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(int(s) for s in shape)
        self._sum: np.ndarray | None = None  # created by the first add, in its memory order
        self._order = "C"
        self._missing: np.ndarray | None = None
        self.n = 0

    def add(self, volume: np.ndarray, *, consume: bool = False) -> None:
        """Add one volume. ``consume=True`` allows overwriting ``volume`` (saves a copy)."""
        v = np.asarray(volume)
        if v.shape != self.shape:
            raise ValueError(f"volume shape {v.shape} does not match the average's {self.shape}")
        if not (consume and v.flags.writeable) and v.size and np.isnan(v.min()):
            v = v.copy(order="K")  # its NaN are set to 0 below: not in the caller's array
        self.add_parts(mark_missing([Part(slice(None), v)]), self.shape)

    def add_parts(self, parts: Sequence[Part], shape: Sequence[int]) -> None:
        """Add one volume given as parts (:func:`volume_parts` then :func:`mark_missing`: no
        NaN left in the values) of a volume of ``shape``; the rest of it is 0."""
        if tuple(shape) != self.shape:
            raise ValueError(f"volume shape {tuple(shape)} does not match the average's "
                             f"{self.shape}")
        if self._sum is None:
            # The sum takes the volumes' memory order (Fortran for Allen grids): adding
            # arrays of different orders is several times slower than adding alike ones.
            first = next((p.values for p in parts if p.values is not None), None)
            self._order = _order(first) if first is not None else "C"
            self._sum = np.zeros(self.shape, dtype=np.float64, order=self._order)
        for part in parts:
            region = self._sum[:, :, part.ml]
            if part.values is not None:
                (np.subtract if part.sign < 0 else np.add)(region, part.values, out=region)
            if part.missing is not None:
                if self._missing is None:
                    self._missing = np.zeros(self.shape, dtype=np.uint16, order=self._order)
                elif self.n >= np.iinfo(self._missing.dtype).max:
                    self._missing = self._missing.astype(np.uint32)
                counts = self._missing[:, :, part.ml]
                np.add(counts, part.missing, out=counts, casting="unsafe")
        self.n += 1

    def counts(self) -> np.ndarray | int:
        """Number of valid values per voxel (an int when no voxel was ever missing)."""
        if self._missing is None:
            return self.n
        return self.n - self._missing.astype(np.int64)

    def mean(self) -> np.ndarray:
        """float32 mean; NaN where no volume had data (or nothing was added)."""
        out = np.empty(self.shape, dtype=np.float32, order=self._order)
        with np.errstate(invalid="ignore", divide="ignore"):
            if self._missing is None:
                if self.n == 0 or self._sum is None:
                    out[...] = np.nan
                else:
                    np.divide(self._sum, self.n, out=out, casting="unsafe")
                return out
            # Turn the missing counts into valid counts in place (and back) to avoid
            # full-size temporaries: n - (n - m) = m.
            missing = self._missing
            np.subtract(self.n, missing, out=missing, casting="unsafe")
            try:
                # Missing voxels were added as 0, so 0 / 0 gives NaN where nothing was valid.
                np.divide(self._sum, missing, out=out, casting="unsafe")
            finally:
                np.subtract(self.n, missing, out=missing, casting="unsafe")
        return out
