"""The command-line helpers shared by every sub-command."""

from __future__ import annotations

import io

from napari_allen.cli import build_parser
from napari_allen.commands._common import ProgressPrinter, client_from_args, format_size
from napari_allen.parsing import split_list
from napari_allen.progress import Progress


def test_split_list_accepts_commas_and_spaces():
    assert split_list(["VISp,VISl", "MOs  SSp"]) == ["VISp", "VISl", "MOs", "SSp"]
    assert split_list(None) == []


def test_format_size():
    assert format_size(999) == "999 B"
    assert format_size(2_500_000) == "2.5 MB"


def test_progress_printer_shows_stages_and_finals_but_not_every_item():
    out = io.StringIO()
    printer = ProgressPrinter(out)
    for i in range(1, 1001):  # one stage of 1,000 items in well under a second
        printer(Progress(done=i, total=1000, message=f"item {i}"))
    printer(Progress(done=0, total=None, message="loading fibre tracts"))
    for i in range(1, 4):
        printer(Progress(done=i, total=3, message="lines"))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/1000]")
    assert "[1000/1000] item 1000, 0 failed" in lines
    assert any("loading fibre tracts" in line for line in lines)
    assert lines[-1] == "[3/3] lines, 0 failed"
    assert len(lines) <= 6


def test_every_command_module_registers():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no API
    for name in ("search-ish", "download", "cache-info", "local-api", "export", "plane-store",
                 "correlate",
                 "gene-correlation", "expression-table", "search-connectivity",
                 "average-projections", "spatial-search"):
        assert name in commands


def test_command_table_names_the_registering_module():
    """cli.COMMANDS (a run imports only its command's module) matches what each module
    registers, and a one-command parser parses that command."""
    import argparse
    import importlib

    from napari_allen.cli import COMMAND_MODULES, COMMANDS

    registered = {}
    for module in COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"napari_allen.commands.{module}").register(sub)
        registered.update(dict.fromkeys(sub.choices, module))
    assert registered == COMMANDS
    only = build_parser("download")
    assert set(only._subparsers._group_actions[0].choices) == {  # noqa: SLF001
        "search-ish", "download", "cache-info", "cache-prune"}
    assert only.parse_args(["download", "--experiments", "1", "--out", "x"]).experiments == [1]


#: Commands that never talk to the API or its cache (files in, files out; the server itself).
OFFLINE_COMMANDS = {"export", "local-api"}


def test_every_api_command_shares_the_client_options(tmp_path, monkeypatch):
    """--api-url, --cache-dir, --offline, --retries on every command that talks to the API
    (any new command too); the client is built from them (the command line wins over the
    environment)."""
    monkeypatch.setenv("NAPARI_ALLEN_API_URL", "http://env.invalid")
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no API
    assert {"search-ish", "download", "correlate", "spatial-search"} <= set(commands)
    for name, sub in commands.items():
        if name in OFFLINE_COMMANDS:
            continue
        options = {o for a in sub._actions for o in a.option_strings}
        assert {"--api-url", "--cache-dir", "--offline", "--retries"} <= options, name
    args = parser.parse_args(["cache-info", "--api-url", "http://127.0.0.1:9/", "--cache-dir",
                              str(tmp_path / "c"), "--offline", "--retries", "2"])
    with client_from_args(args) as client:
        assert client.base_url == "http://127.0.0.1:9"
        assert client.cache_dir == tmp_path / "c" and client.offline
        assert client.http.retries == 2
    with client_from_args(parser.parse_args(["cache-info"])) as client:
        assert client.base_url == "http://env.invalid" and client.http.retries == 5


def test_cache_info_reports_the_given_cache_folder(tmp_path, capsys):
    from napari_allen.cli import main

    assert main(["cache-info", "--cache-dir", str(tmp_path / "mine")]) == 0
    assert f"cache folder: {tmp_path / 'mine'}" in capsys.readouterr().out


def test_a_command_process_tunes_the_garbage_collector_and_main_argv_does_not(tmp_path):
    """Run as the process's command (``main()`` reading ``sys.argv``), the objects alive after
    the imports are frozen and collections come less often; ``main(argv)`` (tests, embedding)
    leaves the interpreter's collector as it was."""
    import os
    import subprocess
    import sys

    code = (
        "import gc, sys\n"
        "from napari_allen import cli\n"
        "before = gc.get_threshold()\n"
        "assert cli.main(['cache-info']) == 0\n"
        "print('gc', gc.get_threshold() == before, gc.get_freeze_count() == 0)\n"
        "sys.argv = ['napari-allen', 'cache-info']\n"
        "assert cli.main() == 0\n"
        "print('gc', gc.get_threshold()[0] == cli.COMMAND_GC_THRESHOLD, "
        "gc.get_freeze_count() > 0)\n"
    )
    env = dict(os.environ, NAPARI_ALLEN_CACHE=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout
    assert [line for line in out.splitlines() if line.startswith("gc ")] == [
        "gc True True", "gc True True"]


def test_network_first_commands_start_without_numpy_or_pandas():
    """``download`` and ``correlate`` begin with requests: their parsers, the client and the
    batch/unionize code must not import numpy or pandas (0.1-0.4 s of process start, imported
    meanwhile on another thread by :func:`importing_meanwhile`)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from napari_allen.cli import build_parser\n"
        "build_parser('download'); build_parser('correlate')\n"
        "import napari_allen.api.batch, napari_allen.api.client\n"
        "import napari_allen.workflows.structure_similarity\n"
        "print(sorted(m for m in ('numpy', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_importing_meanwhile_imports_in_the_background_and_joins(tmp_path, monkeypatch):
    import sys
    import threading

    from napari_allen.commands._common import importing_meanwhile

    (tmp_path / "cli_probe_module.py").write_text(
        "import threading\nTHREAD = threading.current_thread().name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = sys.getswitchinterval()
    called: list[str] = []
    with importing_meanwhile("cli_probe_module",
                             lambda: called.append(threading.current_thread().name)):
        pass
    assert sys.modules["cli_probe_module"].THREAD == "napari-allen-imports"
    assert called == ["napari-allen-imports"]  # a callable runs there too, in its turn
    assert not any(t.name == "napari-allen-imports" for t in threading.enumerate())
    assert sys.getswitchinterval() == before
    # A module that fails to import stops the list quietly: the block's own import raises.
    with importing_meanwhile("napari_allen.no_such_module", "cli_probe_module"):
        pass
    assert "napari_allen.no_such_module" not in sys.modules
    assert sys.getswitchinterval() == before


def test_metacache_warm_up_leaves_the_cache_working(client):
    """The warm-up ``correlate`` runs on its import thread (cattrs' response functions, the
    URL normaliser) leaves the real cache as it was: a query is stored, then served from the
    cache, identical."""
    from napari_allen.api import metacache, rma

    metacache.warm_up()
    metacache.warm_up()  # harmless twice
    url = client.rma_url(rma.RmaQuery("Structure").where(None, id=385).stages())
    with client.http.served_block() as first:
        fresh = client.http.get_json(url)
    with client.http.served_block() as again:
        cached = client.http.get_json(url)
    assert (first.network, again.cache) == (1, 1)
    assert cached == fresh and fresh["msg"][0]["acronym"] == "VISp"
