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

from napari_allen.analysis.streaming import (  # noqa: F401 - re-exported: the public API
    HEMISPHERE_OUTPUTS,
    SIDES,
    Part,
    RunningMean,
    as_float_volume,
    assemble,
    injection_side,
    mark_missing,
    subtract_hemisphere,
    volume_parts,
)
from napari_allen.atlas.ontology import Ontology
from napari_allen.lazy import lazy_module
from napari_allen.progress import CancelToken, ProgressCallback, check, report

pd = lazy_module("pandas")  # imported at first use: the docks open without it

NORMALIZATIONS: tuple[str, ...] = ("none", "injection_volume")
GROUPINGS: tuple[str, ...] = ("none", "ap", "dv", "ml", "regions")
THRESHOLD_METHODS: tuple[str, ...] = ("percentile", "absolute", "zscore", "relative")

#: Injection coordinate column (µm) per grouping axis, in the API's PIR naming.
_AXIS_COLUMN = {"ap": "injection_x", "dv": "injection_y", "ml": "injection_z"}


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
            table[out] = pd.to_numeric(inj[key], errors="coerce").reindex(ids).to_numpy(float)
        else:
            table[out] = np.nan
    table["Sex"] = col("gender", "")
    table["Strain"] = col("strain", "")
    table["Group"] = np.asarray(group_index, dtype=int)
    table["GroupName"] = [names.get(int(g), "") for g in group_index]
    return table


@dataclass(frozen=True)
class Contribution:
    """What one experiment adds to its group's sum: the :class:`Part` s of its processed
    volume (missing voxels marked) and that volume's shape and memory order."""

    experiment_id: int
    group: int
    parts: tuple[Part, ...]
    shape: tuple[int, ...]
    order: str = "F"

    @property
    def nbytes(self) -> int:
        seen = {id(p.values): p.values.nbytes for p in self.parts if p.values is not None}
        return sum(seen.values())


class AveragingPlan:
    """An average, planned from metadata before any volume arrives, then summed.

    The constructor decides everything the experiments table, the options and the injection
    summary decide: groups, the exported table, normalisation factors, the experiments left
    out and why (``skipped``). Then, per experiment, :meth:`contribution` turns its volume
    into what it adds (numpy only, never writes the volume, safe to call from several threads
    at once: prefetch workers do it), :meth:`add` adds that to its group's running sum (one
    thread, in a fixed order for reproducible sums) and :meth:`result` builds the means.

    Memory: one float64 sum per group (plus a missing-value count once a volume has no-data
    voxels); a contribution holds half a float32 volume with hemisphere subtraction (the part
    that is not zero), a whole one without.
    """

    def __init__(self, experiments: pd.DataFrame, options: AveragingOptions, *,
                 resolution: float, injection: pd.DataFrame | None = None,
                 ontology: Ontology | None = None) -> None:
        experiments = experiments.reset_index(drop=True)
        self.options = options
        self.resolution = float(resolution)
        group_index, self.groups = assign_groups(experiments, options, ontology)
        self._group = np.asarray(group_index, dtype=int)
        self._ids = experiments["id"].astype("int64").to_numpy()
        self._row = {int(e): i for i, e in enumerate(self._ids)}
        self.table = metadata_table(experiments, group_index, self.groups, injection)
        self._ml = self.table["InjectionML"].to_numpy(dtype=float)
        n = len(self._ids)
        self._scale = np.full(n, np.nan)
        factor = np.ones(n)
        self.skipped: dict[int, str] = {}
        member = self._group >= 0
        if options.normalization == "injection_volume":
            if injection is None or "injection_volume" not in injection:
                raise ValueError("normalization='injection_volume' needs injection volumes "
                                 "(ProjectionStructureUnionize, structure 997, hemisphere 3)")
            volume = pd.to_numeric(injection["injection_volume"].reindex(self._ids),
                                   errors="coerce").to_numpy(dtype=float)
            positive = volume > 0  # NaN is not
            self._scale = np.where(positive, volume, np.nan)
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(positive, 1.0 / volume, np.nan)
            for i in np.flatnonzero(member & ~positive):
                self.skipped[int(self._ids[i])] = "no positive injection volume for normalisation"
        if options.subtract_hemisphere:
            for i in np.flatnonzero(member & ~np.isfinite(self._ml)):
                self.skipped.setdefault(int(self._ids[i]), "no injection ML coordinate for "
                                                           "hemisphere subtraction")
        self.table["InjectionSide"] = ""
        self.table["NormalizationFactor"] = np.where(member, factor, np.nan)
        self._used = np.zeros(n, dtype=bool)
        self._side = [""] * n
        self._sums: dict[int, RunningMean] = {}
        self._members: dict[int, list[int]] = {g.index: [] for g in self.groups}
        self.individual: dict[int, np.ndarray] | None = {} if options.keep_individual else None

    @property
    def members(self) -> list[int]:
        """Ids of the experiments in a group (skipped ones included), in table order."""
        return [int(e) for e in self._ids[self._group >= 0]]

    @property
    def wanted(self) -> list[int]:
        """Ids whose volumes the average needs (in a group, not skipped), in table order."""
        return [e for e in self.members if e not in self.skipped]

    def contribution(self, experiment_id: int, volume) -> Contribution | None:
        """What ``volume`` (``[AP, DV, ML]``, raw values, -1 = no data; read only) adds to
        its experiment's group, or None for an experiment the average leaves out."""
        row = self._row.get(int(experiment_id))
        if row is None:
            raise KeyError(f"experiment {experiment_id} is not in the experiments table")
        group = int(self._group[row])
        if group < 0 or int(experiment_id) in self.skipped:
            return None
        opts = self.options
        scale = float(self._scale[row]) if opts.normalization == "injection_volume" else None
        arr = np.asarray(volume)
        parts = volume_parts(arr, scale=scale, injection_ml_um=float(self._ml[row]),
                             resolution=self.resolution, subtract=opts.subtract_hemisphere,
                             ipsilateral=opts.ipsilateral, output=opts.hemisphere_output)
        order = "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"
        return Contribution(int(experiment_id), group, tuple(mark_missing(parts)), arr.shape,
                            order)

    def add(self, contribution: Contribution) -> None:
        """Add one experiment's contribution to its group's sum."""
        c = contribution
        acc = self._sums.get(c.group)
        if acc is None:
            acc = self._sums[c.group] = RunningMean(c.shape)
        acc.add_parts(c.parts, c.shape)
        row = self._row[c.experiment_id]
        self._members[c.group].append(c.experiment_id)
        self._used[row] = True
        if np.isfinite(self._ml[row]):
            self._side[row] = injection_side(self._ml[row], self.resolution, c.shape[2])
        if self.individual is not None:
            self.individual[c.experiment_id] = assemble(c.parts, c.shape, c.order)

    def result(self) -> AveragingResult:
        """The group means (groups without any volume added are left out) and the table."""
        table = self.table
        table["InjectionSide"] = self._side
        table["Used"] = self._used
        out_groups = []
        for g in self.groups:
            if g.index in self._sums:
                out_groups.append(AveragedGroup(g, self._sums[g.index].mean(),
                                                self._members[g.index]))
                del self._sums[g.index]  # the float64 sum is not needed any more
        return AveragingResult(out_groups, table, self.resolution, self.options,
                               self.individual, dict(self.skipped))


def average_projections(
    volumes: Iterable[tuple[int, np.ndarray]],
    experiments: pd.DataFrame,
    options: AveragingOptions,
    *,
    resolution: float,
    injection: pd.DataFrame | None = None,
    ontology: Ontology | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> AveragingResult:
    """Average projection volumes per group in one streaming pass (an :class:`AveragingPlan`
    fed in the calling thread).

    ``volumes`` yields ``(experiment_id, [AP, DV, ML] array)`` (any order); only experiments
    in a group are used, others are consumed and ignored; the arrays are never modified.
    ``experiments`` has one row per experiment (``id, structure_id, structure_abbrev,
    transgenic_line, injection_x/y/z`` µm, ...). ``injection`` is indexed by experiment id
    with ``injection_volume`` (mm³), required for ``normalization='injection_volume'``.
    Volumes of ``resolution`` µm.

    Memory: one float64 sum per group (plus a missing-value count if a volume has no-data
    voxels) and the volume being processed, whatever the number of experiments.
    """
    plan = AveragingPlan(experiments, options, resolution=resolution, injection=injection,
                         ontology=ontology)
    total = len(plan.members)
    done = 0
    report(progress, done=0, total=total, message="averaging projections")
    for exp_id, volume in volumes:
        check(cancel)
        contribution = plan.contribution(int(exp_id), volume)
        if contribution is None:
            done += int(exp_id) in plan.skipped
            continue
        plan.add(contribution)
        done += 1
        report(progress, done=done, total=total, message=f"averaged experiment {exp_id}")
    return plan.result()


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
    if not out["experiment_id"].duplicated().any():  # the usual case: one row each
        return out.set_index("experiment_id")[cols]
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
