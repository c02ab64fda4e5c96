"""Pure tests of napari_allen.analysis.projections, with real-data checks on experiment
158375425 (bundled 100 µm NRRDs and the 25 µm CCF annotation)."""

from __future__ import annotations

from importlib import resources

import nrrd
import numpy as np
import pandas as pd
import pytest

from napari_allen.analysis import projections as P
from napari_allen.atlas.annotation import resample_annotation
from napari_allen.atlas.ontology import Ontology

CONN = resources.files("napari_allen") / "data" / "connectivity" / "158375425"
META_UM = np.array([7070.0, 4360.0, 7650.0])  # experiments.json: injection_x/y/z
VPM = 733


def _real(name: str) -> np.ndarray:
    with resources.as_file(CONN / f"{name}_100.nrrd") as path:
        data, _ = nrrd.read(str(path))
    return data


@pytest.fixture(scope="module")
def annotation_25() -> np.ndarray:
    ref = resources.files("napari_allen") / "data" / "annotation" / "annotation_25.nrrd"
    with resources.as_file(ref) as path:
        data, _ = nrrd.read(str(path))
    return data


def _experiments(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({
        "id": np.arange(1000, 1000 + n),
        "structure_id": rng.choice([385, 409, 733], n),
        "structure_abbrev": "x",
        "transgenic_line": ["", "Cre-A", None] * (n // 3) + [""] * (n % 3),
        "injection_x": rng.uniform(3000, 9000, n),
        "injection_y": rng.uniform(1000, 6000, n),
        "injection_z": rng.uniform(1000, 10000, n),
        "gender": "M",
        "strain": "C57BL/6J",
    })


# --- real data ----------------------------------------------------------------------------
def test_injection_centroid_near_metadata_and_in_vpm(annotation_25):
    centroid = P.injection_centroid(_real("injection_density"), 100)
    assert np.linalg.norm(centroid - META_UM) < 500
    idx = np.rint(centroid / 25).astype(int)
    assert annotation_25[tuple(idx)] == VPM


def test_injection_voxels_threshold_real():
    frac = _real("injection_fraction")
    pts = P.injection_voxels_um(frac, 100, threshold=0.5)
    assert pts.shape[1] == 3 and 0 < len(pts) < 494
    assert len(pts) == int((frac > 0.5).sum())
    # every point is a voxel centre (multiple of 100 µm); most lie around the injection
    # (the rest follow the pipette track dorsally, smaller DV)
    assert np.all(pts % 100 == 0)
    dist = np.linalg.norm(pts - META_UM, axis=1)
    assert np.median(dist) < 500
    assert np.all(pts[dist > 1000, 1] < META_UM[1])


def test_real_hemisphere_subtraction_antisymmetric_and_ipsilateral():
    proj = _real("projection_density")
    d = P.subtract_hemisphere(proj, META_UM[2], 100, ipsilateral="right")
    np.testing.assert_allclose(d, -d[:, :, ::-1], atol=0)
    # the input is untouched (not in place) and VPM projects mostly ipsilaterally
    assert proj.max() == 1.0
    assert d[:, :, 57:].sum() > 0
    # aligning to the left flips the result
    left = P.subtract_hemisphere(proj, META_UM[2], 100, ipsilateral="left")
    np.testing.assert_allclose(left, d[:, :, ::-1])


def test_real_structure_table_and_threshold(annotation_25):
    proj = _real("projection_density")
    ann = resample_annotation(annotation_25, 25, 100)
    assert ann.shape == proj.shape == (132, 80, 114)
    np.testing.assert_array_equal(ann, annotation_25[::4, ::4, ::4])
    onto = Ontology.default()
    ssp = P.region_mask(ann, ["SSp"], onto)
    mask, thr = P.threshold_projection(proj, ssp, method="percentile", value=90)
    assert not mask[~ssp].any()
    assert abs(mask.sum() - 0.1 * ssp.sum()) <= 0.02 * ssp.sum()
    table = P.structure_projection_table(proj, ann, 100, ontology=onto, mask=mask,
                                         structures=["SSp", "VPM", "root"])
    rows = table.set_index("acronym")
    assert list(table["acronym"]) == ["root", "SSp", "VPM"]  # ontology order
    assert rows.at["SSp", "n_significant"] == mask.sum()
    assert rows.at["VPM", "n_significant"] == 0
    assert rows.at["root", "n_voxels"] == int((ann > 0).sum())
    # VPM axons target barrel cortex: SSp mean density well above the brain-wide mean
    assert rows.at["SSp", "mean_density"] > 3 * rows.at["root", "mean_density"]
    np.testing.assert_allclose(rows.at["SSp", "projection_volume_mm3"],
                               proj[ssp].sum() * 1e-3, rtol=1e-6)


# --- hemisphere subtraction ---------------------------------------------------------------
@pytest.mark.parametrize("n_ml", [6, 7])
def test_subtract_hemisphere_small(n_ml):
    v = np.arange(2 * 2 * n_ml, dtype=np.float32).reshape(2, 2, n_ml) ** 1.5
    res = 100
    right_ml = (n_ml - 1) * res
    d = P.subtract_hemisphere(v, right_ml, res, ipsilateral="right")
    expected = v - v[:, :, ::-1]
    np.testing.assert_allclose(d, expected, rtol=1e-6)
    np.testing.assert_allclose(d, -d[:, :, ::-1], rtol=1e-6)
    # injected on the left, aligned to the right: flip first
    d_left = P.subtract_hemisphere(v, 0, res, ipsilateral="right")
    np.testing.assert_allclose(d_left, v[:, :, ::-1] - v, rtol=1e-6)
    # keep own side
    d_own = P.subtract_hemisphere(v, 0, res, ipsilateral=None)
    np.testing.assert_allclose(d_own, expected, rtol=1e-6)
    if n_ml % 2:
        assert np.all(d[:, :, n_ml // 2] == 0)


def test_subtract_hemisphere_inplace_and_missing():
    v = np.ones((3, 2, 4), dtype=np.float32)
    v[0, 0, 0] = -1  # no data
    out = P.subtract_hemisphere(v, 350, 100)
    assert np.isnan(out[0, 0, 0]) and np.isnan(out[0, 0, 3])
    w = P.as_float_volume(v)
    res = P.subtract_hemisphere(w, 0, 100, inplace=True)
    assert np.shares_memory(res, w)


def test_injection_side_uses_grid_midline():
    assert P.injection_side(7650, 100, 114) == "right"
    assert P.injection_side(5600, 100, 114) == "left"
    with pytest.raises(ValueError, match="missing"):
        P.injection_side(float("nan"), 100, 114)


# --- averaging ----------------------------------------------------------------------------
def test_running_mean_matches_direct_mean_with_missing():
    rng = np.random.default_rng(1)
    vols = [rng.random((4, 3, 5)).astype(np.float32) for _ in range(7)]
    vols[2][0, 0, 0] = np.nan
    for v in vols[3:]:
        v[1, 1, 1] = np.nan
    acc = P.RunningMean((4, 3, 5))
    for v in vols:
        acc.add(v)
    expected = np.nanmean(np.stack(vols), axis=0)
    np.testing.assert_allclose(acc.mean(), expected, rtol=1e-6)
    assert acc.counts()[0, 0, 0] == 6 and acc.counts()[1, 1, 1] == 3
    with pytest.raises(ValueError, match="shape"):
        acc.add(np.zeros((2, 2, 2)))


def test_average_projections_equals_direct_mean():
    rng = np.random.default_rng(0)
    exps = _experiments(9, rng)
    vols = {i: rng.random((5, 4, 6)).astype(np.float32) for i in exps["id"]}
    inj = pd.DataFrame({"injection_volume": rng.uniform(0.05, 1, 9),
                        "injection_intensity": rng.uniform(1e6, 1e7, 9)}, index=exps["id"])
    opts = P.AveragingOptions(normalization="injection_volume", subtract_hemisphere=True,
                              hemisphere_output="antisymmetric")
    result = P.average_projections(iter(vols.items()), exps, opts, resolution=100,
                                   injection=inj)
    direct = []
    for _, row in exps.iterrows():
        v = vols[row["id"]] / inj.at[row["id"], "injection_volume"]
        if row["injection_z"] <= 250:  # left of the 6-voxel grid's midline: flip first
            v = v[:, :, ::-1]
        direct.append(v - v[:, :, ::-1])
    assert len(result.groups) == 1 and result.groups[0].n_experiments == 9
    np.testing.assert_allclose(result.groups[0].mean, np.mean(direct, axis=0), rtol=1e-5)
    # inputs were not modified (consume=False)
    assert all(v.min() >= 0 for v in vols.values())
    t = result.table
    assert list(t.columns[:9]) == ["ExperimentID", "MouseLine", "InjectionRegion",
                                   "InjectionRegionID", "InjectionAP", "InjectionDV",
                                   "InjectionML", "InjectionVolume", "InjectionIntensity"]
    assert t["MouseLine"].tolist()[:3] == ["Wild-type", "Cre-A", "Wild-type"]
    np.testing.assert_allclose(t["NormalizationFactor"], 1 / inj["injection_volume"].values)
    assert t["Used"].all()


def test_average_grouped_by_ap_bins_and_keep_individual():
    exps = pd.DataFrame({
        "id": [1, 2, 3, 4, 5],
        "structure_id": [385] * 5,
        "injection_x": [1000.0, 1100.0, 5000.0, 5100.0, 9000.0],
        "injection_y": 0.0, "injection_z": 6000.0,
    })
    vols = [(i, np.full((2, 2, 2), float(i), np.float32)) for i in exps["id"]]
    opts = P.AveragingOptions(group_by="ap", bins=4, keep_individual=True)
    res = P.average_projections(vols, exps, opts, resolution=100)
    # bins of 2000 µm: [1000,3000) [3000,5000) [5000,7000) [7000,9000]; the 2nd is empty
    assert [g.info.name for g in res.groups] == ["AP 2000 µm", "AP 6000 µm", "AP 8000 µm"]
    assert [g.experiment_ids for g in res.groups] == [[1, 2], [3, 4], [5]]
    assert [float(g.mean[0, 0, 0]) for g in res.groups] == [1.5, 3.5, 5.0]
    assert res.stack().shape == (3, 2, 2, 2)
    assert sorted(res.individual) == [1, 2, 3, 4, 5]
    assert res.table["GroupName"].tolist()[0] == "AP 2000 µm"


def test_normalisation_skips_missing_injection_volume():
    exps = pd.DataFrame({"id": [1, 2], "structure_id": [385, 385], "injection_x": [1, 2],
                         "injection_y": [1, 2], "injection_z": [1, 2]})
    inj = pd.DataFrame({"injection_volume": [0.5]}, index=[1])
    vols = [(1, np.ones((2, 2, 2))), (2, np.ones((2, 2, 2)))]
    res = P.average_projections(vols, exps, P.AveragingOptions(normalization="injection_volume"),
                                resolution=100, injection=inj)
    assert res.groups[0].experiment_ids == [1]
    assert float(res.groups[0].mean[0, 0, 0]) == 2.0
    assert 2 in res.skipped


def test_region_groups_expand_descendants():
    onto = Ontology.default()
    visp, visl, mop = onto.id_of("VISp"), onto.id_of("VISl"), onto.id_of("MOp")
    visp1 = onto.children(visp)[0]  # a layer of VISp
    labels, groups = P.group_by_regions([visp1, visl, mop, 733, None],
                                        {"visual": ["VIS"], "thalamus": ["TH"],
                                         "empty": ["OLF"]}, onto)
    assert labels.tolist() == [0, 0, -1, 1, -1]
    assert [g.name for g in groups] == ["visual", "thalamus"]
    with pytest.raises(KeyError, match="NOPE"):
        P.group_by_regions([1], {"x": ["NOPE"]}, onto)


def test_bin_coordinates_edges_and_nan():
    labels, edges = P.bin_coordinates([0.0, 10.0, np.nan, 5.0, 9.99], 2)
    assert labels.tolist() == [0, 1, -1, 1, 1]
    np.testing.assert_allclose(edges, [0, 5, 10])
    labels, _ = P.bin_coordinates([3.0, 3.0], 4)
    assert labels.tolist() == [0, 0]
    with pytest.raises(ValueError):
        P.bin_coordinates([1.0], 0)


def test_options_validation():
    with pytest.raises(ValueError, match="normalization"):
        P.AveragingOptions(normalization="bogus")
    with pytest.raises(ValueError, match="region_groups"):
        P.AveragingOptions(group_by="regions")
    assert P.AveragingOptions(normalization="injection-volume").normalization == \
        "injection_volume"


# --- thresholds, tables, summaries -----------------------------------------------------------
@pytest.mark.parametrize(("method", "value", "expected"), [
    ("absolute", 5.0, {5, 6, 7, 8, 9}),
    ("relative", 0.8, {8, 9}),
    ("percentile", 50, {5, 6, 7, 8, 9}),
    ("zscore", 1.0, {8, 9}),
])
def test_threshold_methods(method, value, expected):
    vol = np.arange(12, dtype=float).reshape(1, 1, 12)
    region = np.zeros_like(vol, dtype=bool)
    region[..., :10] = True  # 10 and 11 are outside the target
    mask, thr = P.threshold_projection(vol, region, method=method, value=value)
    assert set(np.flatnonzero(mask.ravel()).tolist()) == expected
    assert thr <= min(expected)


def test_threshold_errors():
    vol = np.ones((2, 2, 2))
    with pytest.raises(ValueError, match="no voxels"):
        P.threshold_projection(vol, np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError, match="shape"):
        P.threshold_projection(vol, np.ones((1, 2, 2), bool))
    with pytest.raises(ValueError, match="method"):
        P.threshold_projection(vol, method="magic")


def test_injection_summary_picks_root_both_hemispheres():
    rows = pd.DataFrame({
        "section_data_set_id": [7, 7, 7, 7, 8],
        "structure_id": [997, 997, 997, 385, 997],
        "hemisphere_id": [3, 1, 3, 3, 3],
        "is_injection": [True, True, False, True, "true"],
        "projection_volume": [0.2, 0.1, 5.0, 0.05, 0.3],
        "sum_pixel_intensity": [1e6, 5e5, 9e9, 1.0, 2e6],
        "max_voxel_z": [7600, 7600, 0, 0, 3000],
    })
    s = P.injection_summary(rows)
    assert s.loc[7, "injection_volume"] == 0.2
    assert s.loc[8, "injection_intensity"] == 2e6
    assert s.loc[8, "max_voxel_z"] == 3000


def test_centroid_and_voxels_synthetic():
    d = np.zeros((5, 5, 5))
    d[1, 2, 3] = 1.0
    d[3, 2, 3] = 3.0
    d[0, 0, 0] = -1  # no data is ignored
    np.testing.assert_allclose(P.injection_centroid(d, 100), [250, 200, 300])
    np.testing.assert_allclose(P.injection_voxels_um(d, 100, 0.5), [[100, 200, 300],
                                                                   [300, 200, 300]])
    with pytest.raises(ValueError, match="empty"):
        P.injection_centroid(np.zeros((2, 2, 2)), 100)


def _bsv_subtraction(p: np.ndarray, left_injection: bool) -> np.ndarray:
    """brain_street_view's loop, plainly: the injected half gets P minus its mirror image,
    the other half stays 0 (no flipping)."""
    n = p.shape[2]
    tmp = np.zeros_like(p)
    for ml in range(n // 2):
        if left_injection:
            tmp[:, :, ml] = p[:, :, ml] - p[:, :, n - 1 - ml]
        else:
            tmp[:, :, n - 1 - ml] = p[:, :, n - 1 - ml] - p[:, :, ml]
    return tmp


@pytest.mark.parametrize("ml_um", [1200.0, 9800.0])
def test_injected_half_output_is_brain_street_views(ml_um):
    rng = np.random.default_rng(7)
    p = rng.random((6, 5, 114)).astype(np.float32)
    got = P.subtract_hemisphere(p, ml_um, 100, ipsilateral=None, output="injected_half")
    np.testing.assert_array_equal(got, _bsv_subtraction(p, left_injection=ml_um < 5650))
    anti = P.subtract_hemisphere(p, ml_um, 100, ipsilateral=None, output="antisymmetric")
    injected = slice(0, 57) if ml_um < 5650 else slice(57, 114)
    np.testing.assert_array_equal(anti[:, :, injected], got[:, :, injected])
    np.testing.assert_array_equal(anti, -anti[:, :, ::-1])
    # flipped to the right first: the right half holds the difference, the left half 0
    right = P.subtract_hemisphere(p, 1200.0, 100, ipsilateral="right", output="injected_half")
    np.testing.assert_array_equal(right, _bsv_subtraction(p[:, :, ::-1], left_injection=False))
    with pytest.raises(ValueError, match="output must be one of"):
        P.subtract_hemisphere(p, 1200.0, 100, output="other")
    with pytest.raises(ValueError, match="hemisphere_output must be one of"):
        P.AveragingOptions(hemisphere_output="mirror")
    assert P.AveragingOptions().hemisphere_output == "injected_half"


def _reference_processing(v, ml_um, res, ipsilateral, output, scale):
    """The processed volume written plainly: -1 -> NaN, normalise, flip to the ipsilateral
    side, subtract the mirror image, keep the injected half (other half 0) or both."""
    v = np.asarray(v, dtype=np.float32).copy()
    v[v < 0] = np.nan
    if scale is not None:
        v = v / np.float32(scale)
    n = v.shape[2]
    side = "right" if ml_um > (n - 1) / 2 * res else "left"
    if ipsilateral is not None and side != ipsilateral:
        v = v[:, :, ::-1]
    d = v - v[:, :, ::-1]
    if output == "injected_half":
        if (ipsilateral or side) == "left":
            d[:, :, n - n // 2:] = 0.0
        else:
            d[:, :, :n // 2] = 0.0
    return d


@pytest.mark.parametrize("n_ml", [6, 7])
@pytest.mark.parametrize("output", P.HEMISPHERE_OUTPUTS)
@pytest.mark.parametrize("ipsilateral", [None, "left", "right"])
def test_volume_parts_and_plan_match_plain_processing(n_ml, output, ipsilateral):
    """The fused half-volume arithmetic (parts computed from a read-only volume, summed by
    the plan) equals the plain full-volume processing, missing values included."""
    rng = np.random.default_rng(n_ml)
    res = 100.0
    vols, mls, scales = [], [], []
    for i in range(6):
        v = np.asfortranarray(rng.random((4, 3, n_ml)).astype(np.float32))
        if i == 2:
            v[1, 1, 0] = -1.0  # Allen's no data
        if i == 4:
            v[0, 2, n_ml // 2] = np.nan  # the midline plane of odd grids
        v.setflags(write=False)  # a read-only memory map in real use
        vols.append(v)
        mls.append(50.0 if i % 2 else (n_ml - 1) * res)
        scales.append(0.2 + 0.1 * i)
    for v, ml, s in zip(vols, mls, scales, strict=True):
        got = P.assemble(P.mark_missing(P.volume_parts(
            v, scale=s, injection_ml_um=ml, resolution=res, subtract=True,
            ipsilateral=ipsilateral, output=output)), v.shape)
        np.testing.assert_array_equal(got, _reference_processing(v, ml, res, ipsilateral,
                                                                 output, s))
    exps = pd.DataFrame({"id": range(1, 7), "structure_id": 385, "injection_x": 1.0,
                         "injection_y": 1.0, "injection_z": mls})
    inj = pd.DataFrame({"injection_volume": scales}, index=exps["id"])
    opts = P.AveragingOptions(normalization="injection_volume", subtract_hemisphere=True,
                              ipsilateral=ipsilateral, hemisphere_output=output)
    result = P.average_projections(zip(exps["id"], vols, strict=True), exps, opts,
                                   resolution=res, injection=inj)
    direct = np.stack([_reference_processing(v, ml, res, ipsilateral, output, s)
                       for v, ml, s in zip(vols, mls, scales, strict=True)])
    np.testing.assert_allclose(result.groups[0].mean, np.nanmean(direct, axis=0), rtol=1e-6)
    assert result.table["Used"].all() and set(result.table["InjectionSide"]) <= {"left",
                                                                                "right"}
