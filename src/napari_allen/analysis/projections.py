"""Connectivity projection analysis: streaming group averages, hemisphere subtraction,
grouping of experiments, thresholds inside target regions, per-structure tables, injection sites.

All volumes are ``[AP, DV, ML]`` arrays on one CCF grid (voxel ``i`` centred at ``i * res`` µm,
see :mod:`napari_allen.space`); coordinates are µm. Allen's ``-1`` (no data) is treated
as missing (NaN) everywhere. Nothing here touches the network or Qt.

This re-does brain_street_view's ``fetch_connectivity_data`` with three corrections:

- the average is a running sum per group, so memory does not grow with the number of
  experiments (individual volumes are kept only on request);
- the injected hemisphere comes from the injection's ML coordinate in µm (brain_street_view
  compared a µm value, ``max_voxel_z``, with a voxel index, 57);
- region groups expand acronyms with their ontology descendants instead of string prefixes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_allen.atlas.ontology import Ontology
from napari_allen.progress import CancelToken, ProgressCallback, check, report
from napari_allen.space import grid_midline_index

NORMALIZATIONS: tuple[str, ...] = ("none", "injection_volume")
GROUPINGS: tuple[str, ...] = ("none", "ap", "dv", "ml", "regions")
THRESHOLD_METHODS: tuple[str, ...] = ("percentile", "absolute", "zscore", "relative")
SIDES: tuple[str, ...] = ("left", "right")
#: What hemisphere subtraction keeps: brain_street_view's output (the injected half holds
#: ``P - mirror(P)``, the other half is 0) or the full antisymmetric map (the other half holds
#: the negative, mirrored).
HEMISPHERE_OUTPUTS: tuple[str, ...] = ("injected_half", "antisymmetric")

#: Injection coordinate column (µm) per grouping axis, in the API's PIR naming.
_AXIS_COLUMN = {"ap": "injection_x", "dv": "injection_y", "ml": "injection_z"}


# --- volumes -----------------------------------------------------------------------------
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
    negative = np.less(out, 0)
    if negative.any():  # skips the masked write on volumes without no-data voxels
        np.copyto(out, np.float32(np.nan), where=negative)  # -1 = no data in Allen grids
    return out


def injection_side(ml_um: float, resolution: float, n_ml: int) -> str:
    """``'right'`` or ``'left'``: the hemisphere of an ML coordinate (µm).

    Allen's PIR axes put high ML (z) on the right. The boundary is the plane the grid is
    mirrored about (index ``(n_ml - 1) / 2``), so side and mirroring always agree.
    """
    if not np.isfinite(ml_um):
        raise ValueError("injection ML coordinate is missing (NaN)")
    midline_um = grid_midline_index(n_ml) * float(resolution)
    return "right" if float(ml_um) > midline_um else "left"


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
    already NaN) to save memory; otherwise a float32 copy is made with -1 -> NaN.
    """
    if ipsilateral is not None and ipsilateral not in SIDES:
        raise ValueError(f"ipsilateral must be 'left', 'right' or None, not {ipsilateral!r}")
    if output not in HEMISPHERE_OUTPUTS:
        raise ValueError(f"output must be one of {HEMISPHERE_OUTPUTS}, not {output!r}")
    v = volume if inplace else as_float_volume(volume)
    n_ml = v.shape[2]
    side = injection_side(injection_ml_um, resolution, n_ml)
    if ipsilateral is not None and side != ipsilateral:
        v = v[:, :, ::-1]  # a view: writes below land in the caller's array
    injected_left = (ipsilateral or side) == "left"
    half = n_ml // 2
    mirrored = v[:, :, ::-1]
    diff = v[:, :, :half] - mirrored[:, :, :half]  # the only temporary: half a volume
    if output == "injected_half":
        if injected_left:
            v[:, :, :half] = diff
            mirrored[:, :, :half] = 0.0
        else:
            np.negative(diff, out=diff)
            mirrored[:, :, :half] = diff
            v[:, :, :half] = 0.0
    else:
        v[:, :, :half] = diff
        np.negative(diff, out=diff)
        mirrored[:, :, :half] = diff
    if n_ml % 2:
        v[:, :, half] = np.where(np.isnan(v[:, :, half]), np.nan, 0.0)
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
        if self._sum is None:
            # The sum takes the volumes' memory order (Fortran for Allen grids): adding
            # arrays of different orders is several times slower than adding alike ones.
            self._order = "F" if v.flags.f_contiguous and not v.flags.c_contiguous else "C"
            self._sum = np.zeros(self.shape, dtype=np.float64, order=self._order)
        nan = np.isnan(v)
        if nan.any():
            if self._missing is None:
                self._missing = np.zeros(self.shape, dtype=np.uint16, order=self._order)
            elif self.n >= np.iinfo(self._missing.dtype).max:
                self._missing = self._missing.astype(np.uint32)
            self._missing += nan
            v = v if consume and v.flags.writeable else v.copy(order="K")
            v[nan] = 0.0
        del nan
        np.add(self._sum, v, out=self._sum)
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


# --- grouping ----------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupInfo:
    """One group of experiments: ``index`` (0-based), display ``name``, and for coordinate
    groups the bin edges and centre in µm along ``axis`` ('AP', 'DV' or 'ML')."""

    index: int
    name: str
    axis: str | None = None
    center_um: float | None = None
    low_um: float | None = None
    high_um: float | None = None
    regions: tuple[str, ...] = ()


def bin_coordinates(values: Sequence[float], n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Assign coordinates (µm) to ``n_bins`` equal-width bins between their min and max.

    Returns ``(labels, edges)``: ``labels`` are bin numbers ``0..n_bins-1`` (-1 for NaN values),
    ``edges`` the ``n_bins + 1`` bin edges. The maximum falls in the last bin. All equal
    values give one bin.
    """
    if int(n_bins) < 1:
        raise ValueError(f"number of bins must be >= 1, not {n_bins}")
    vals = np.asarray(values, dtype=float)
    labels = np.full(vals.shape, -1, dtype=int)
    finite = np.isfinite(vals)
    if not finite.any():
        return labels, np.array([np.nan, np.nan])
    lo, hi = float(vals[finite].min()), float(vals[finite].max())
    if hi == lo:
        labels[finite] = 0
        return labels, np.array([lo, hi])
    edges = np.linspace(lo, hi, int(n_bins) + 1)
    labels[finite] = np.clip(np.digitize(vals[finite], edges) - 1, 0, int(n_bins) - 1)
    return labels, edges


def group_by_coordinate(
    experiments: pd.DataFrame, axis: str, n_bins: int
) -> tuple[np.ndarray, list[GroupInfo]]:
    """Group experiments by their injection coordinate along ``axis`` ('ap', 'dv', 'ml').

    Equal-width bins between the extreme injection coordinates; empty bins are dropped and
    the rest renumbered from 0, each named by its bin centre (µm). Returns per-experiment group
    indices (-1 = no coordinate) and the groups.
    """
    axis = axis.lower()
    if axis not in _AXIS_COLUMN:
        raise ValueError(f"unknown grouping axis {axis!r}; use 'ap', 'dv' or 'ml'")
    coords = pd.to_numeric(experiments[_AXIS_COLUMN[axis]], errors="coerce").to_numpy(float)
    labels, edges = bin_coordinates(coords, n_bins)
    present = sorted(set(labels[labels >= 0].tolist()))
    remap = {old: new for new, old in enumerate(present)}
    groups: list[GroupInfo] = []
    single = len(edges) == 2 and edges[0] == edges[-1]
    for old in present:
        lo, hi = (edges[0], edges[-1]) if single else (edges[old], edges[old + 1])
        centre = 0.5 * (lo + hi)
        groups.append(GroupInfo(
            index=remap[old], name=f"{axis.upper()} {centre:.0f} µm", axis=axis.upper(),
            center_um=float(centre), low_um=float(lo), high_um=float(hi),
        ))
    out = np.array([remap.get(int(g), -1) for g in labels], dtype=int)
    return out, groups


def group_by_regions(
    structure_ids: Sequence[int],
    region_groups: Mapping[str, Sequence[int | str]],
    ontology: Ontology,
) -> tuple[np.ndarray, list[GroupInfo]]:
    """Group experiments whose primary injection structure lies in user region groups.

    ``region_groups`` maps a group name to structure acronyms/ids; each is expanded with its
    ontology descendants (``VIS`` covers ``VISp``, ``VISl``...). An experiment joins the first
    group containing its structure, or none (-1). Groups without experiments are dropped.
    """
    if not region_groups:
        raise ValueError("region grouping needs at least one group of structures")
    members: list[tuple[str, tuple[str, ...], set[int]]] = []
    for name, keys in region_groups.items():
        if isinstance(keys, (str, int)):
            keys = [keys]
        ids: set[int] = set()
        for key in keys:
            ids.update(ontology.descendants(ontology.id_of(key)))
        if not ids:
            raise ValueError(f"region group {name!r} lists no structures")
        members.append((str(name), tuple(str(k) for k in keys), ids))
    raw = np.full(len(structure_ids), -1, dtype=int)
    for i, sid in enumerate(structure_ids):
        if pd.isna(sid):
            continue
        for g, (_, _, ids) in enumerate(members):
            if int(sid) in ids:
                raw[i] = g
                break
    present = sorted(set(raw[raw >= 0].tolist()))
    remap = {old: new for new, old in enumerate(present)}
    groups = [GroupInfo(index=remap[g], name=members[g][0], regions=members[g][1])
              for g in present]
    return np.array([remap.get(int(g), -1) for g in raw], dtype=int), groups


@dataclass
class AveragingOptions:
    """How to average projections.

    - ``normalization``: 'none' or 'injection_volume' (divide each volume by the experiment's
      injection volume in mm³, from ProjectionStructureUnionize root 997, both hemispheres).
    - ``subtract_hemisphere`` with ``ipsilateral`` side ('right', 'left' or None = keep) and
      ``hemisphere_output``: 'injected_half' (default, brain_street_view's: the injected half
      holds ipsilateral minus mirrored contralateral, the other half 0) or 'antisymmetric'
      (the other half holds the same difference negated, mirrored).
    - ``group_by``: 'none', 'ap', 'dv', 'ml' (``bins`` equal-width bins) or 'regions'
      (``region_groups``: name -> acronyms).
    - ``keep_individual``: also return every processed volume (memory grows with the count).
    """

    normalization: str = "none"
    subtract_hemisphere: bool = False
    ipsilateral: str | None = "right"
    hemisphere_output: str = "injected_half"
    group_by: str = "none"
    bins: int = 5
    region_groups: Mapping[str, Sequence[int | str]] | None = None
    keep_individual: bool = False

    def __post_init__(self) -> None:
        self.normalization = str(self.normalization).lower().replace("-", "_")
        self.group_by = str(self.group_by or "none").lower()
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, "
                             f"not {self.normalization!r}")
        self.hemisphere_output = str(self.hemisphere_output).lower().replace("-", "_")
        if self.hemisphere_output not in HEMISPHERE_OUTPUTS:
            raise ValueError(f"hemisphere_output must be one of {HEMISPHERE_OUTPUTS}, "
                             f"not {self.hemisphere_output!r}")
        if self.group_by not in GROUPINGS:
            raise ValueError(f"group_by must be one of {GROUPINGS}, not {self.group_by!r}")
        if self.group_by == "regions" and not self.region_groups:
            raise ValueError("group_by='regions' needs region_groups")
        if int(self.bins) < 1:
            raise ValueError(f"bins must be >= 1, not {self.bins}")


def assign_groups(
    experiments: pd.DataFrame, options: AveragingOptions, ontology: Ontology | None = None
) -> tuple[np.ndarray, list[GroupInfo]]:
    """Per-experiment group index (-1 = left out) and the groups, for ``options.group_by``.

    ``experiments`` needs ``structure_id`` and ``injection_x/y/z`` (µm) columns.
    """
    n = len(experiments)
    if options.group_by == "none":
        return np.zeros(n, dtype=int), [GroupInfo(index=0, name="all")]
    if options.group_by == "regions":
        return group_by_regions(experiments["structure_id"].tolist(),
                                options.region_groups or {}, ontology or Ontology.default())
    return group_by_coordinate(experiments, options.group_by, options.bins)


# --- averaging ---------------------------------------------------------------------------
@dataclass
class AveragedGroup:
    """The mean projection of one group: ``mean`` is float32 ``[AP, DV, ML]``."""

    info: GroupInfo
    mean: np.ndarray
    experiment_ids: list[int]

    @property
    def n_experiments(self) -> int:
        return len(self.experiment_ids)


@dataclass
class AveragingResult:
    """Output of :func:`average_projections`.

    ``table`` has one row per requested experiment (brain_street_view's export columns plus
    group and processing details); ``individual`` maps experiment id -> processed volume when
    ``keep_individual`` was asked.
    """

    groups: list[AveragedGroup]
    table: pd.DataFrame
    resolution: float
    options: AveragingOptions
    individual: dict[int, np.ndarray] | None = None
    skipped: dict[int, str] = field(default_factory=dict)

    def stack(self) -> np.ndarray:
        """All group means as one ``[group, AP, DV, ML]`` array."""
        return np.stack([g.mean for g in self.groups]) if self.groups else np.empty((0, 0, 0, 0))


def _line_name(value) -> str:
    """The transgenic line as text; wild type ('' / None / NaN) -> 'Wild-type'."""
    if isinstance(value, Mapping):
        value = value.get("name")
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "Wild-type"
    text = str(value).strip().strip('"')
    return text or "Wild-type"


def metadata_table(
    experiments: pd.DataFrame,
    group_index: np.ndarray,
    groups: Sequence[GroupInfo],
    injection: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The per-experiment table exported with an average (brain_street_view's columns).

    ``injection`` (indexed by experiment id) may carry ``injection_volume`` (mm³) and
    ``injection_intensity`` from ProjectionStructureUnionize.
    """
    names = {g.index: g.name for g in groups}
    ids = experiments["id"].astype("int64").to_numpy()

    def col(name, default=np.nan):
        return experiments[name].to_numpy() if name in experiments else np.full(len(ids), default)

    table = pd.DataFrame({
        "ExperimentID": ids,
        "MouseLine": [_line_name(v) for v in col("transgenic_line", None)],
        "InjectionRegion": col("structure_abbrev", ""),
        "InjectionRegionID": col("structure_id"),
        "InjectionAP": pd.to_numeric(pd.Series(col("injection_x")), errors="coerce"),
        "InjectionDV": pd.to_numeric(pd.Series(col("injection_y")), errors="coerce"),
        "InjectionML": pd.to_numeric(pd.Series(col("injection_z")), errors="coerce"),
    })
    inj = injection if injection is not None else pd.DataFrame()
    for out, key in (("InjectionVolume", "injection_volume"),
                     ("InjectionIntensity", "injection_intensity")):
        if key in inj:
            table[out] = [float(inj[key].get(i, np.nan)) for i in ids]
        else:
            table[out] = np.nan
    table["Sex"] = col("gender", "")
    table["Strain"] = col("strain", "")
    table["Group"] = np.asarray(group_index, dtype=int)
    table["GroupName"] = [names.get(int(g), "") for g in group_index]
    return table


def average_projections(
    volumes: Iterable[tuple[int, np.ndarray]],
    experiments: pd.DataFrame,
    options: AveragingOptions,
    *,
    resolution: float,
    injection: pd.DataFrame | None = None,
    ontology: Ontology | None = None,
    consume: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> AveragingResult:
    """Average projection volumes per group in one streaming pass.

    ``volumes`` yields ``(experiment_id, [AP, DV, ML] array)`` (any order, typically from
    :func:`napari_allen.workflows.connectivity.iter_volumes`); only experiments in a group
    are used, others are consumed and ignored. ``experiments`` has one row per experiment
    (``id, structure_id, structure_abbrev, transgenic_line, injection_x/y/z`` µm, ...).
    ``injection`` is indexed by experiment id with ``injection_volume`` (mm³), required for
    ``normalization='injection_volume'``. Volumes of ``resolution`` µm.

    ``consume=True`` lets the function overwrite float32 volumes it receives (streams of
    freshly read volumes) instead of copying each one.

    Memory: one float64 sum per group (plus a missing-value count if a volume has no-data
    voxels) and the volume being processed, whatever the number of experiments.
    """
    experiments = experiments.reset_index(drop=True)
    group_index, groups = assign_groups(experiments, options, ontology)
    by_id = {int(e): i for i, e in enumerate(experiments["id"].astype("int64"))}
    table = metadata_table(experiments, group_index, groups, injection)
    table["InjectionSide"] = ""
    table["NormalizationFactor"] = np.nan
    table["Used"] = False
    accumulators: dict[int, RunningMean] = {}
    members: dict[int, list[int]] = {g.index: [] for g in groups}
    individual: dict[int, np.ndarray] | None = {} if options.keep_individual else None
    skipped: dict[int, str] = {}
    total = int((group_index >= 0).sum())
    done = 0
    report(progress, done=0, total=total, message="averaging projections")
    for exp_id, volume in volumes:
        check(cancel)
        exp_id = int(exp_id)
        row = by_id.get(exp_id)
        if row is None:
            raise KeyError(f"experiment {exp_id} is not in the experiments table")
        group = int(group_index[row])
        if group < 0:
            continue
        v = as_float_volume(volume, copy=not consume)
        if options.normalization == "injection_volume":
            inj_vol = _injection_volume(injection, exp_id)
            if not inj_vol > 0:
                skipped[exp_id] = "no positive injection volume for normalisation"
                done += 1
                continue
            v /= np.float32(inj_vol)
            table.loc[row, "NormalizationFactor"] = 1.0 / inj_vol
        else:
            table.loc[row, "NormalizationFactor"] = 1.0
        ml = float(table.at[row, "InjectionML"])
        if np.isfinite(ml):
            table.loc[row, "InjectionSide"] = injection_side(ml, resolution, v.shape[2])
        if options.subtract_hemisphere:
            if not np.isfinite(ml):
                skipped[exp_id] = "no injection ML coordinate for hemisphere subtraction"
                done += 1
                continue
            v = subtract_hemisphere(v, ml, resolution, ipsilateral=options.ipsilateral,
                                    output=options.hemisphere_output, inplace=True)
        acc = accumulators.get(group)
        if acc is None:
            acc = accumulators[group] = RunningMean(v.shape)
        acc.add(v, consume=individual is None)
        members[group].append(exp_id)
        table.loc[row, "Used"] = True
        if individual is not None:
            individual[exp_id] = v
        done += 1
        report(progress, done=done, total=total, message=f"averaged experiment {exp_id}")
    v = volume = None  # noqa: F841 - drop the last volume before the means are built
    out_groups = []
    for g in groups:
        if g.index in accumulators:
            out_groups.append(AveragedGroup(g, accumulators[g.index].mean(), members[g.index]))
            del accumulators[g.index]  # the float64 sum is not needed any more
    return AveragingResult(out_groups, table, float(resolution), options, individual, skipped)


def _injection_volume(injection: pd.DataFrame | None, exp_id: int) -> float:
    if injection is None or "injection_volume" not in injection:
        raise ValueError("normalization='injection_volume' needs injection volumes "
                         "(ProjectionStructureUnionize, structure 997, hemisphere 3)")
    value = injection["injection_volume"].get(exp_id, np.nan)
    return float(value) if pd.notna(value) else float("nan")


def injection_summary(unionize: pd.DataFrame) -> pd.DataFrame:
    """Per-experiment injection volume and intensity from ProjectionStructureUnionize rows.

    Uses the injection rows (``is_injection`` true) of the whole brain (structure 997) over
    both hemispheres (``hemisphere_id`` 3), as brain_street_view does: ``projection_volume``
    (mm³) is the injection volume, ``sum_pixel_intensity`` the injection intensity; also the
    densest voxel ``max_voxel_x/y/z`` (µm). Indexed by experiment id.
    """
    cols = ["injection_volume", "injection_intensity", "max_voxel_x", "max_voxel_y",
            "max_voxel_z"]
    if unionize is None or len(unionize) == 0:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="experiment_id"))
    rows = unionize
    if "is_injection" in rows:
        inj = rows["is_injection"].map(lambda v: str(v).strip().lower() in ("true", "1"))
        rows = rows[inj]
    rows = rows[(pd.to_numeric(rows["structure_id"]) == 997)
                & (pd.to_numeric(rows["hemisphere_id"]) == 3)]
    out = pd.DataFrame({
        "experiment_id": pd.to_numeric(rows["section_data_set_id"]).astype("int64"),
        "injection_volume": pd.to_numeric(rows["projection_volume"], errors="coerce"),
        "injection_intensity": pd.to_numeric(rows.get("sum_pixel_intensity"), errors="coerce"),
    })
    for c in ("max_voxel_x", "max_voxel_y", "max_voxel_z"):
        out[c] = pd.to_numeric(rows[c], errors="coerce") if c in rows else np.nan
    # Duplicated rows (re-processed experiments): keep the largest volume, as the seed does.
    out = out.sort_values("injection_volume").groupby("experiment_id").last()
    return out[cols]


# --- thresholds and regions ---------------------------------------------------------------
def region_mask(annotation: np.ndarray, structures: Iterable[int | str],
                ontology: Ontology | None = None) -> np.ndarray:
    """Boolean mask of the voxels labelled with ``structures`` or any of their descendants."""
    onto = ontology or Ontology.default()
    ids: set[int] = set()
    for key in structures:
        ids.update(onto.descendants(onto.id_of(key)))
    if not ids:
        raise ValueError("no target structures given")
    return np.isin(annotation, np.fromiter(ids, dtype=np.int64))


def threshold_projection(
    volume: np.ndarray,
    region: np.ndarray | None = None,
    *,
    method: str = "percentile",
    value: float = 95.0,
) -> tuple[np.ndarray, float]:
    """Significant voxels of a projection inside a target region.

    ``method``: 'percentile' (``value`` in 0..100 of the in-region values), 'absolute'
    (``value`` itself), 'zscore' (in-region mean + ``value`` standard deviations) or
    'relative' (``value`` x the in-region maximum, 0..1). Voxels ``>=`` the threshold inside
    ``region`` (all voxels when None) are True; NaN voxels never are. Returns the boolean
    mask and the threshold used (in the volume's units).
    """
    method = method.lower().replace("-", "")
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method must be one of {THRESHOLD_METHODS}, not {method!r}")
    vol = np.asarray(volume, dtype=float)
    inside = np.isfinite(vol)
    if region is not None:
        region = np.asarray(region, dtype=bool)
        if region.shape != vol.shape:
            raise ValueError(f"region mask shape {region.shape} differs from the volume's "
                             f"{vol.shape}: resample the annotation to the volume's grid")
        inside &= region
    values = vol[inside]
    if values.size == 0:
        raise ValueError("the target region holds no voxels with data")
    if method == "percentile":
        if not 0 <= value <= 100:
            raise ValueError(f"percentile must be within 0..100, not {value}")
        thr = float(np.percentile(values, value))
    elif method == "absolute":
        thr = float(value)
    elif method == "zscore":
        thr = float(values.mean() + value * values.std())
    else:
        if not 0 <= value <= 1:
            raise ValueError(f"relative threshold must be within 0..1, not {value}")
        thr = float(value * values.max())
    mask = np.zeros(vol.shape, dtype=bool)
    mask[inside] = values >= thr
    return mask, thr


def structure_projection_table(
    volume: np.ndarray,
    annotation: np.ndarray,
    resolution: float,
    *,
    ontology: Ontology | None = None,
    mask: np.ndarray | None = None,
    structures: Iterable[int | str] | None = None,
) -> pd.DataFrame:
    """Projection statistics per structure, each structure including its descendants.

    ``volume`` and ``annotation`` share one grid of ``resolution`` µm. Rows: the given
    ``structures`` (acronyms or ids), or every structure containing labelled voxels. Columns:
    ``structure_id, acronym, name, n_voxels, volume_mm3, mean_density, max_density,
    projection_volume_mm3`` (sum of density x voxel volume) and, with a boolean ``mask`` of
    significant voxels, ``n_significant, significant_volume_mm3, fraction_significant``.
    Sorted by ontology order.
    """
    vol = np.asarray(volume, dtype=float)
    ann = np.asarray(annotation)
    if vol.shape != ann.shape:
        raise ValueError(f"annotation shape {ann.shape} differs from the volume's {vol.shape}: "
                         "resample it with atlas.annotation.resample_annotation()")
    onto = ontology or Ontology.default()
    labels, inverse = np.unique(ann.ravel(), return_inverse=True)
    flat = vol.ravel()
    valid = np.isfinite(flat)
    n_lab = len(labels)
    n_vox = np.bincount(inverse, minlength=n_lab)
    n_valid = np.bincount(inverse, weights=valid, minlength=n_lab)
    sums = np.bincount(inverse, weights=np.where(valid, flat, 0.0), minlength=n_lab)
    maxima = np.full(n_lab, -np.inf)
    np.maximum.at(maxima, inverse[valid], flat[valid])
    sig = None
    if mask is not None:
        m = np.asarray(mask, dtype=bool).ravel()
        if m.size != flat.size:
            raise ValueError("the significance mask does not match the volume's shape")
        sig = np.bincount(inverse, weights=m, minlength=n_lab)
    position = {int(lab): i for i, lab in enumerate(labels)}
    if structures is None:
        wanted: set[int] = set()
        for lab in labels:
            if int(lab) != 0 and int(lab) in onto:
                wanted.update(onto.ancestors(int(lab), include_self=True))
    else:
        wanted = {onto.id_of(s) for s in structures}
    voxel_mm3 = (float(resolution) / 1000.0) ** 3
    rows = []
    for sid in onto.table.index[onto.table.index.isin(list(wanted))]:
        idx = [position[d] for d in onto.descendants(int(sid)) if d in position]
        nv = int(n_vox[idx].sum()) if idx else 0
        nval = float(n_valid[idx].sum()) if idx else 0.0
        total = float(sums[idx].sum()) if idx else 0.0
        mx = float(maxima[idx].max()) if idx else -np.inf
        row = {
            "structure_id": int(sid), "acronym": onto.acronym(sid), "name": onto.name(sid),
            "n_voxels": nv, "volume_mm3": nv * voxel_mm3,
            "mean_density": total / nval if nval else np.nan,
            "max_density": mx if np.isfinite(mx) else np.nan,
            "projection_volume_mm3": total * voxel_mm3,
        }
        if sig is not None:
            ns = int(sig[idx].sum()) if idx else 0
            row.update(n_significant=ns, significant_volume_mm3=ns * voxel_mm3,
                       fraction_significant=ns / nv if nv else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


# --- injection sites -----------------------------------------------------------------------
def injection_centroid(density, resolution: float) -> np.ndarray:
    """Density-weighted centroid ``[AP, DV, ML]`` (µm) of an injection density volume.

    No-data (negative/NaN) voxels are ignored; raises ValueError for an empty injection.
    Works slab by slab along AP, so a 10 µm memory-mapped grid never loads at once.
    """
    shape = density.shape
    ap_idx, dv_idx, ml_idx = (np.arange(n, dtype=float) for n in shape)
    moments = np.zeros(3)
    total = 0.0
    step = max(1, int(2**24 // max(1, shape[1] * shape[2])))  # ~16 M voxels per slab
    for start in range(0, shape[0], step):
        d = np.asarray(density[start:start + step], dtype=float)
        w = np.where(np.isfinite(d) & (d > 0), d, 0.0)
        per_ap = w.sum(axis=(1, 2))
        total += per_ap.sum()
        moments[0] += per_ap @ ap_idx[start:start + step]
        moments[1] += w.sum(axis=(0, 2)) @ dv_idx
        moments[2] += w.sum(axis=(0, 1)) @ ml_idx
    if total <= 0:
        raise ValueError("the injection density volume is empty (no positive voxel)")
    return moments / total * float(resolution)


def injection_voxels_um(volume: np.ndarray, resolution: float,
                        threshold: float = 0.5) -> np.ndarray:
    """``(N, 3)`` µm ``[AP, DV, ML]`` centres of the voxels whose value exceeds ``threshold``.

    For an injection fraction/mask volume; 0.5 is the threshold of Allen's lines example.
    """
    v = np.asarray(volume, dtype=float)
    return np.argwhere(np.nan_to_num(v, nan=-np.inf) > threshold).astype(float) * float(resolution)
