"""Verified on every reuse: damaged or swapped files are fetched again, never opened as data
(the manifest of napari_allen.io.manifest; real HTTP to the local server)."""

from __future__ import annotations

import hashlib
import os
import shutil
from urllib.parse import urlsplit

import numpy as np
import pytest

from napari_allen.api.batch import GridRequest, download_many
from napari_allen.io import manifest
from napari_allen.io.manifest import DAMAGED, MISSING, UNRECORDED, VERIFIED, Manifest

NRP1 = 74272479


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def served(server, url: str) -> str:
    parts = urlsplit(url)
    return server.checksum(parts.path + "?" + parts.query)


def _ish_ids(client, n: int) -> list[int]:
    frame = client.search_ish(["Gad1", "Nrp1", "Pvalb", "Sst", "Calb1", "Vip"], plane="coronal")
    return [int(i) for i in frame["experiment_id"].drop_duplicates()[:n]]


def truncate(path, _other) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def bit_flip(path, _other) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def bit_flip_keep_mtime(path, _other) -> None:
    st = path.stat()
    bit_flip(path, _other)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def empty(path, _other) -> None:
    path.write_bytes(b"")


def swap(path, other) -> None:
    # Another experiment's (valid, complete) zip under this name: same format, wrong data.
    tmp = path.with_name("swap.tmp")
    shutil.copyfile(other, tmp)
    os.replace(tmp, path)


DAMAGES = [truncate, bit_flip, empty, swap]


def test_manifest_check_outcomes(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    f = folder / "a.bin"
    f.write_bytes(b"hello world")
    m = Manifest(folder)
    assert m.check("a.bin").status == UNRECORDED
    entry = m.record("a.bin", url="http://x/a", synthetic=True)
    assert entry.sha256 == hashlib.sha256(b"hello world").hexdigest() and entry.synthetic
    assert m.check("a.bin").status == VERIFIED
    assert Manifest(folder).get("a.bin") == entry  # read back from disk by a new instance
    os.utime(f, ns=(1, 1))  # touched only: hash re-checked, still the same bytes
    assert m.check("a.bin").status == VERIFIED
    f.write_bytes(b"hello worle")
    result = m.check("a.bin")
    assert result.status == DAMAGED and "SHA-256" in result.reason
    f.write_bytes(b"hi")
    assert "2 bytes, 11 were recorded" in m.check("a.bin").reason
    f.unlink()
    assert m.check("a.bin").status == MISSING
    with pytest.raises(ValueError):
        m.check("../escape")


def test_manifest_skips_torn_and_garbage_lines(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 10)
    manifest.record_file(f)
    with open(tmp_path / manifest.MANIFEST_NAME, "ab") as fh:
        fh.write(b'{"name": "a.bin", "size": "ten"}\n\x00\xff garbage\n{"name": "a.b')
    fresh = manifest._logs.pop(os.path.abspath(tmp_path / manifest.MANIFEST_NAME))
    assert fresh is not None
    assert manifest.check_file(f).status == VERIFIED


def test_manifest_compacts_a_long_log(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    for _ in range(300):
        manifest.record_file(f)
    lines = (tmp_path / manifest.MANIFEST_NAME).read_text().splitlines()
    assert len(lines) < 100
    assert manifest.check_file(f).status == VERIFIED


@pytest.mark.parametrize("damage", DAMAGES + [bit_flip_keep_mtime], ids=lambda f: f.__name__)
def test_damaged_cached_grid_is_refetched_not_opened(client, allen_api, damage):
    path = client.grid_zip(NRP1)
    other = client.grid_zip(_ish_ids(client, 2)[0])
    good = served(allen_api, client.grid_zip_url(NRP1, ["energy"]))
    damage(path, other)
    before = len(allen_api.requests)
    if damage is bit_flip_keep_mtime:
        # Same size, same mtime and inode: only a deep check re-hashes.
        frame = download_many(client, [GridRequest(NRP1)], deep=True)
    else:
        frame = download_many(client, [GridRequest(NRP1)])
    assert frame.loc[0, "status"] == "refetched", frame.loc[0, "error"]
    assert frame.loc[0, "error"]  # says what was wrong
    assert len(allen_api.requests) == before + 1
    assert sha(path) == good
    (vol,) = client.grid_volumes(NRP1)  # opens the real Nrp1 grid again
    assert np.nanmax(np.asarray(vol.data)) == pytest.approx(25.9, abs=0.1)


def test_download_folder_counts_verified_refetched_failed(client, allen_api, tmp_path):
    ids = _ish_ids(client, 6)
    out = tmp_path / "out"
    reqs = [GridRequest(i, dest=out / f"{i}.zip") for i in ids]
    first = download_many(client, reqs, jobs=3)
    assert set(first["status"]) == {"downloaded"}
    paths = [out / f"{i}.zip" for i in ids]
    for k, damage in enumerate(DAMAGES):
        damage(paths[k], paths[-1])
    with client.http.served_block() as tally:  # what the widgets show (pool threads too)
        again = download_many(client, reqs, jobs=3)
    counts = again["status"].value_counts().to_dict()
    assert counts == {"refetched": 4, "verified": 2}
    assert tally.files == counts
    assert tally.files_label == "0 downloaded, 2 verified, 4 re-fetched, 0 failed"
    for req, path in zip(reqs, paths, strict=True):
        url, _, _ = req.plan(client)
        assert sha(path) == served(allen_api, url)


def test_unrecorded_file_is_adopted_only_if_valid(client, allen_api, tmp_path):
    """A file from an older version (no manifest entry) is format-checked: a valid zip is
    adopted without a request, garbage is fetched again."""
    good = client.grid_zip(NRP1)
    out = tmp_path / "old"
    out.mkdir()
    shutil.copyfile(good, out / "a.zip")
    (out / "b.zip").write_bytes(b"PK\x03\x04 not really a zip")
    before = len(allen_api.requests)
    frame = download_many(client, [GridRequest(NRP1, dest=out / "a.zip"),
                                   GridRequest(NRP1, dest=out / "b.zip")])
    assert list(frame["status"]) == ["verified", "refetched"]
    assert len(allen_api.requests) == before + 1
    assert manifest.check_file(out / "a.zip").status == VERIFIED


def test_offline_reuse_of_a_damaged_file_is_an_error(client, allen_api):
    from napari_allen.api.client import AllenClient
    from napari_allen.errors import AllenApiError

    path = client.grid_zip(NRP1)
    empty(path, None)
    offline = AllenClient(client.base_url, cache_dir=client.cache_dir, offline=True)
    with pytest.raises(AllenApiError, match="offline: .*bytes"):
        offline.grid_zip(NRP1)


def test_plane_store_chunk_damage_is_refetched(client, allen_api, tmp_path):
    from napari_allen.workflows.plane_download import download_plane, experiment_table

    table = experiment_table(client, genes=["Gad1", "Nrp1", "Pvalb"], plane="coronal")
    out = tmp_path / "plane.zarr"
    first = download_plane(client, out, experiments=table, jobs=2)
    assert first.complete and set(first.statuses["status"]) == {"downloaded"}
    store = first.store
    victim = int(store.experiment_ids[1])
    chunk = out / store._chunk_name(victim)
    bit_flip(chunk, None)
    assert store.damaged() == [victim]
    second = download_plane(client, out, experiments=table, jobs=2)
    status = dict(zip(second.statuses["experiment_id"], second.statuses["status"], strict=True))
    assert status[victim] == "refetched"
    assert {s for e, s in status.items() if e != victim} == {"already"}
    assert "1 re-fetched" in second.summary()
    assert store.damaged() == []


def test_opening_a_damaged_download_says_so(client, allen_api, tmp_path):
    from napari_allen.errors import AllenFormatError
    from napari_allen.io.gridzip import read_grid_zip

    out = tmp_path / "out"
    download_many(client, [GridRequest(NRP1, dest=out / "nrp1.zip")])
    path = out / "nrp1.zip"
    assert read_grid_zip(path)  # intact: opens
    bit_flip(path, None)
    with pytest.raises(AllenFormatError, match="not the file napari-allen downloaded"):
        read_grid_zip(path)
