"""napari_allen.workflows.connectivity and the connectivity CLI through the local Allen API
server (``allen_api``): real NRRDs of 158375425, synthetic grids elsewhere."""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_allen.analysis.projections import AveragingOptions, as_float_volume
from napari_allen.atlas.ontology import Ontology
from napari_allen.progress import Cancelled, CancelToken
from napari_allen.workflows import connectivity as C

REAL = 158375425


@pytest.fixture
def client(allen_api, tmp_path):
    from napari_allen.api.client import AllenClient

    c = AllenClient(base_url=allen_api.url, cache_dir=tmp_path / "client-cache")
    yield c
    c.close()


@pytest.fixture
def vpm(client) -> pd.DataFrame:
    frame = C.search_experiments(client, ["VPM"])
    assert REAL in frame["id"].tolist()
    return frame


def _bundled(image: str) -> np.ndarray:
    from napari_allen.io.nrrd import read_nrrd

    ref = resources.files("napari_allen") / "data" / "connectivity" / str(REAL)
    with resources.as_file(ref / f"{image}_100.nrrd") as path:
        return np.asarray(read_nrrd(path).data)


def test_load_volume_real_nrrd_and_decoded_cache(client, allen_api):
    vol = C.load_volume(client, REAL, "projection_density", 100)
    assert vol.shape == (132, 80, 114) and vol.resolution == 100
    assert vol.metadata["experiment_id"] == REAL
    np.testing.assert_array_equal(np.asarray(vol.data), _bundled("projection_density"))
    n_requests = len(allen_api.requests)
    again = C.load_volume(client, REAL, "projection_density", 100)
    assert isinstance(again.data, np.memmap)  # the decoded copy, no second download
    assert len(allen_api.requests) == n_requests
    np.testing.assert_array_equal(np.asarray(again.data), np.asarray(vol.data))


def test_decoded_once_into_the_capped_cache_no_npy_copy(client, vpm):
    """Every volume is decoded once into the bounded decoded cache (one manifest-recorded
    entry per grid) and memory-mapped from it: no ``.npy`` copy beside the downloads, and the
    earlier versions' ``connectivity-decoded`` copies are removed."""
    from napari_allen.io._decode import decoded_cache_info
    from napari_allen.io.manifest import Manifest

    legacy = client.cache_dir / "connectivity-decoded"
    legacy.mkdir(parents=True)
    (legacy / "old.npy").write_bytes(b"x" * 100)
    C._legacy_checked.discard(str(client.cache_dir))
    ids = vpm["id"].head(3).tolist()
    first = dict(C.iter_volumes(client, ids))
    zipped = C.load_volume(client, ids[0], source="grid")
    assert not legacy.exists()
    assert not list(client.cache_dir.rglob("*.npy"))
    info = decoded_cache_info(client.cache_dir)
    assert info["entries"] == len(ids) + 1  # 3 NRRDs + the zip's density member
    assert info["bytes"] == (len(ids) + 1) * 132 * 80 * 114 * 4
    decoded = client.cache_dir / "decoded"
    for vol in [*first.values(), zipped]:
        assert isinstance(vol.data, np.memmap)
        assert Path(vol.data.filename).parent == decoded
        assert Manifest(decoded).check(Path(vol.data.filename).name).ok
    again = dict(C.iter_volumes(client, ids))
    assert decoded_cache_info(client.cache_dir)["entries"] == len(ids) + 1  # reused
    for exp_id in ids:
        assert again[exp_id].data.filename == first[exp_id].data.filename
        np.testing.assert_array_equal(np.asarray(again[exp_id].data),
                                      np.asarray(first[exp_id].data))
    np.testing.assert_array_equal(np.asarray(first[REAL].data) if REAL in first
                                  else np.asarray(C.load_volume(client, REAL).data),
                                  _bundled("projection_density"))


def test_load_volume_grid_zip_density(client):
    vol = C.load_volume(client, REAL, "projection_density", 100, source="grid")
    assert vol.shape == (132, 80, 114)
    assert vol.metadata["image"] == "projection_density"
    with pytest.raises(ValueError, match="100 µm"):
        C.load_volume(client, REAL, "projection_density", 25, source="grid")
    with pytest.raises(ValueError, match="resolution"):
        C.load_volume(client, REAL, "projection_density", 30)


def test_iter_volumes_order_progress_and_failures(client, vpm):
    ids = vpm["id"].head(3).tolist() + [999999999]
    seen, snaps, failures = [], [], {}
    for exp_id, vol in C.iter_volumes(client, ids, failures=failures, progress=snaps.append):
        seen.append(exp_id)
        assert vol.metadata["experiment_id"] == exp_id
    assert seen == ids[:3]
    assert list(failures) == [999999999]
    assert snaps[-1].done == 4 and snaps[-1].failed == 1
    with pytest.raises(Exception, match="999999999"):
        list(C.iter_volumes(client, [999999999]))


def test_iter_volumes_cancel(client, vpm):
    token = CancelToken()
    stream = C.iter_volumes(client, vpm["id"].head(3).tolist(), cancel=token)
    next(stream)
    token.cancel()
    with pytest.raises(Cancelled):
        next(stream)


def test_injection_summary_from_unionize(client):
    summary = C.fetch_injection_summary(client, [REAL])
    inj = summary.loc[REAL, "injection_volume"]
    # ~0.09 mm³ from the real injection density, close to the metadata 0.0998 mm³
    assert 0.02 < inj < 0.3
    assert summary.loc[REAL, "max_voxel_z"] > 5700  # a right-hemisphere injection


def test_search_expands_parents_and_filters_lines(client):
    onto = Ontology.default()
    vis = C.search_experiments(client, ["VIS"], line="wild type",
                               primary_structure_only=False)
    assert len(vis) > 0
    allowed = set(onto.descendants(onto.id_of("VIS")))
    # every experiment has some injection in VIS or a descendant (VISp, VISl, ...)
    assert all(set(map(int, s)) & allowed for s in vis["injection_structures"])
    assert (vis["transgenic_line"] == "").all()
    primary = C.search_experiments(client, ["VIS"], line="wild type")  # the default
    assert 0 < len(primary) < len(vis)
    assert set(primary["structure_id"].astype(int)) <= allowed
    assert not set(vis["structure_id"].astype(int)) <= allowed  # others touch VIS only
    any_line = C.search_experiments(client, ["VIS"], primary_structure_only=False)
    assert len(any_line) >= len(vis)
    cre = [v for v in any_line["transgenic_line"].unique() if v]
    if cre:
        one = C.search_experiments(client, ["VIS"], line=cre[0])
        assert set(one["transgenic_line"]) == {cre[0]}


def test_average_experiments_equals_direct_mean(client, vpm):
    exps = vpm.head(4)
    options = AveragingOptions(normalization="injection_volume", subtract_hemisphere=True)
    result = C.average_experiments(client, exps, options)
    summary = C.fetch_injection_summary(client, exps["id"])
    direct = []
    for _, row in exps.iterrows():
        v = as_float_volume(C.load_volume(client, row["id"]).data)
        v = v / summary.loc[row["id"], "injection_volume"]
        if row["injection_z"] <= 5650:
            v = v[:, :, ::-1]
        d = v - v[:, :, ::-1]  # the default keeps the injected (right) half, as bsv
        d[:, :, :57] = 0.0
        direct.append(d)
    group = result.groups[0]
    assert sorted(group.experiment_ids) == sorted(exps["id"].tolist())
    np.testing.assert_allclose(group.mean, np.nanmean(direct, axis=0), rtol=1e-5, atol=1e-6)
    left = group.mean[:, :, :57]
    assert np.all(left[np.isfinite(left)] == 0)  # the contralateral half is 0, as in bsv
    table = result.table.set_index("ExperimentID")
    assert table.loc[REAL, "InjectionRegion"] == "VPM"
    assert table.loc[REAL, "InjectionVolume"] == pytest.approx(
        summary.loc[REAL, "injection_volume"])
    assert table["Used"].all()


def _cli(argv: list[str]) -> int:
    """Run a sub-command of this area's CLI module (parsed exactly as napari-allen does)."""
    import argparse

    from napari_allen.commands import connectivity

    parser = argparse.ArgumentParser(prog="napari-allen")
    connectivity.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_search_and_average(allen_api, tmp_path, capsys):
    from napari_allen.io.nrrd import read_nrrd

    main = _cli

    assert main(["search-connectivity", "-s", "VPM", "--line", "wild type"]) == 0
    out = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert REAL in out["id"].tolist()
    out_dir = tmp_path / "avg"
    code = main(["average-projections", "-s", "VPM", "--limit", "4", "--group-by", "ap",
                 "--bins", "2", "--normalize", "injection-volume", "--subtract-hemisphere",
                 "--format", "both", "--out", str(out_dir)])
    assert code == 0
    groups = pd.read_csv(out_dir / "connectivity_groups.csv")
    meta = pd.read_csv(out_dir / "connectivity_metadata.csv")
    assert len(meta) == 4 and groups["n_experiments"].sum() == meta["Used"].sum()
    for files in groups["files"]:
        nrrd_name = [f for f in files.split(";") if f.endswith(".nrrd")][0]
        vol = read_nrrd(out_dir / nrrd_name)
        assert vol.shape == (132, 80, 114) and vol.resolution == 100
        assert (out_dir / nrrd_name.replace(".nrrd", ".mhd")).exists()
    assert "AP" in groups["name"].iloc[0]


def test_average_survives_missing_summaries_unless_normalising(client, allen_api, vpm):
    from napari_allen.errors import AllenApiError

    exps = vpm.head(2)
    allen_api.faults.add("success_false", path_contains="ProjectionStructureUnionize",
                         message="Error in query: bad syntax")
    plain = C.average_experiments(client, exps, AveragingOptions())
    assert plain.groups[0].n_experiments == 2
    assert plain.table["InjectionVolume"].isna().all()
    with pytest.raises(AllenApiError, match="bad syntax"):
        C.average_experiments(client, exps, AveragingOptions(normalization="injection_volume"))


def test_average_memory_guard():
    assert C.check_average_memory(100, 1) < 30e6
    with pytest.raises(ValueError, match="10 µm needs about"):
        C.check_average_memory(10, 1)
    with pytest.raises(ValueError, match="5 group"):
        C.check_average_memory(25, 5, max_bytes=1e9)


def test_downloads_survive_server_faults(client, allen_api):
    allen_api.faults.add("http500", path_contains="download_file", times=1)
    allen_api.faults.add("truncated", path_contains="download_file", times=1)
    vol = C.load_volume(client, REAL, "injection_density", 100)
    np.testing.assert_array_equal(np.asarray(vol.data), _bundled("injection_density"))
    statuses = [r["status"] for r in allen_api.requests if "download_file" in r["path"]]
    assert len(statuses) == 3 and statuses[0] == 500


def test_cli_reports_bad_input(allen_api, tmp_path, capsys):
    assert _cli(["search-connectivity", "-s", "NOTAREGION"]) == 2
    assert "NOTAREGION" in capsys.readouterr().err
    assert _cli(["average-projections", "-s", "VPM", "--resolution", "10",
                 "--out", str(tmp_path)]) == 2
    assert "10 µm needs about" in capsys.readouterr().err


def test_cli_search_primary_by_default_any_injection_on_request(allen_api, tmp_path):
    """As AllenSDK's get_experiments and brain_street_view: the primary injection structure
    by default; --any-injection also lists experiments that merely touch the structure."""
    onto = Ontology.default()
    allowed = set(onto.descendants(onto.id_of("VISp")))
    primary_csv, any_csv = tmp_path / "primary.csv", tmp_path / "any.csv"
    assert _cli(["search-connectivity", "--structures", "VISp", "--out", str(primary_csv)]) == 0
    assert _cli(["search-connectivity", "--structures", "VISp", "--any-injection",
                 "--out", str(any_csv)]) == 0
    primary, anywhere = pd.read_csv(primary_csv), pd.read_csv(any_csv)
    assert 0 < len(primary) < len(anywhere)
    assert set(primary["structure_id"]) <= allowed
    assert set(primary["id"]) <= set(anywhere["id"])
    assert _cli(["search-connectivity", "--structures", "VISp", "--primary",
                 "--out", str(tmp_path / "p2.csv")]) == 0
    assert pd.read_csv(tmp_path / "p2.csv")["id"].tolist() == primary["id"].tolist()
