"""``search-ish``, ``download`` and ``cache-info`` end to end against the local server."""

from __future__ import annotations

import argparse
import io
import zipfile

import pandas as pd
import pytest

from napari_allen.commands import api_commands
from napari_allen.io.manifest import MANIFEST_NAME

NRP1 = 74272479


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="napari-allen")
    api_commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_search_ish_prints_csv(allen_api, capsys):
    assert run(["search-ish", "nrp1", "Pdyn", "--plane", "coronal"]) == 0
    out, err = capsys.readouterr()
    frame = pd.read_csv(io.StringIO(out))
    assert {"Nrp1", "Pdyn"} <= set(frame["gene"]) and set(frame["plane"]) == {"coronal"}
    assert NRP1 in set(frame["experiment_id"])
    assert "experiments" in err


def test_download_by_gene_writes_grids_and_metadata_and_resumes(allen_api, tmp_path, capsys):
    out = tmp_path / "grids"
    argv = ["download", "--genes", "Nrp1", "Pdyn", "--out", str(out), "--jobs", "3"]
    assert run(argv) == 0
    meta = pd.read_csv(out / "metadata.csv")
    assert meta["success"].all() and set(meta["status"]) == {"downloaded"}
    assert NRP1 in set(meta["experiment_id"]) and {"gene", "plane"} <= set(meta.columns)
    for name in meta["path"]:
        with zipfile.ZipFile(out / name) as zf:
            assert {"energy.mhd", "energy.raw"} <= set(zf.namelist())
    n = len(allen_api.requests)
    assert run(argv) == 0
    again = pd.read_csv(out / "metadata.csv")
    assert set(again["status"]) == {"verified"} and again["success"].all()
    grid_requests = [r for r in allen_api.requests[n:] if "grid_data" in r["path"]]
    assert grid_requests == []  # resume: nothing downloaded twice
    assert "complete" in capsys.readouterr().err


def test_download_experiments_with_a_failure_records_it(allen_api, tmp_path, capsys):
    out = tmp_path / "g"
    allen_api.faults.add("http500", path_contains="/grid_data/download/74272479")
    code = run(["download", "--experiments", str(NRP1), "71717084", "--out", str(out),
                "--volume", "energy", "--jobs", "2", "--retries", "1"])
    assert code == 1
    meta = pd.read_csv(out / "metadata.csv").set_index("experiment_id")
    assert not meta.loc[NRP1, "success"] and "HTTP 500" in meta.loc[NRP1, "error"]
    assert meta.loc[71717084, "success"]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "71717084_energy_200um.zip",
                                                     "metadata.csv"]
    assert "1 failed" in capsys.readouterr().err


def test_download_whole_plane_uses_the_csv_listing(allen_api, tmp_path, monkeypatch):
    from napari_allen.api.client import AllenClient

    # Keep the job small: the plane listing is real, downloads stop after the first few.
    real = AllenClient.ish_plane_listing
    monkeypatch.setattr(AllenClient, "ish_plane_listing",
                        lambda self, plane, **kw: real(self, plane, **kw).head(5))
    out = tmp_path / "plane"
    assert run(["download", "--plane", "sagittal", "--out", str(out)]) == 0
    meta = pd.read_csv(out / "metadata.csv")
    assert len(meta) == 5 and set(meta["plane"]) == {"sagittal"} and meta["success"].all()
    assert any(r["path"].endswith("SectionDataSet/query.csv") for r in allen_api.requests)


def test_download_requires_one_selection(allen_api, tmp_path, capsys):
    assert run(["download", "--out", str(tmp_path)]) == 2
    assert run(["download", "--experiments", "1", "--plane", "coronal",
                "--out", str(tmp_path)]) == 2
    assert "--experiments" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["download", "--genes", "x", "--experiments", "1", "--out", str(tmp_path)])
    assert allen_api.requests == []


def test_cache_info(allen_api, capsys):
    run(["search-ish", "Nrp1"])
    capsys.readouterr()
    assert run(["cache-info"]) == 0
    out = capsys.readouterr().out
    assert "napari-allen-cache" in out and "metadata:" in out


def test_console_download_interrupted_by_ctrl_c_then_resumed(allen_api, tmp_path):
    """The real ``napari-allen download`` in a subprocess: SIGINT stops it cleanly (exit 130,
    metadata written, no partial file); the same command then finishes the job."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from napari_allen.api.client import AllenClient

    ids = [str(i) for i in AllenClient().ish_plane_listing("coronal")["experiment_id"][:12]]
    out = tmp_path / "grids"
    argv = [sys.executable, "-m", "napari_allen.cli", "download", "--experiments", *ids,
            "--out", str(out), "--jobs", "2"]
    env = dict(os.environ)  # NAPARI_ALLEN_API_URL / _CACHE point at the test server / tmp
    allen_api.latency_ms = 150
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and any(out.glob("*.zip"))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again" in err
    meta = pd.read_csv(out / "metadata.csv")
    done = set(meta.loc[meta["success"], "experiment_id"])
    assert 1 <= len(done) < len(ids)
    assert not list(out.glob("*.part"))
    allen_api.latency_ms = 0
    finished = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    meta = pd.read_csv(out / "metadata.csv").set_index("experiment_id")
    assert meta["success"].all()
    assert set(meta.index[meta["status"] == "verified"]) == done


def test_download_command_never_imports_pandas(allen_api, tmp_path):
    """Issue #10 (6): process start is on the critical path of ``download``; pandas alone
    costs ~1 s to import, so the whole ``download --experiments`` run must not load it (nor
    requests-cache: no metadata query is needed)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "grids"
    script = ("import sys; from napari_allen.cli import main; "
              f"code = main(['download', '--experiments', '{NRP1}', '--out', {str(out)!r}]); "
              "print(code, sorted(m for m in ('pandas', 'requests_cache', 'scipy', 'napari') "
              "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "0 []", done.stdout + done.stderr
    meta = pd.read_csv(out / "metadata.csv")
    assert list(meta.columns) == ["experiment_id", "status", "path", "bytes", "error",
                                  "success", "volume"]
    assert meta.loc[0, "status"] == "downloaded" and bool(meta.loc[0, "success"])
