"""``napari-allen local-api``: runs in the foreground, prints its URL, stops on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import requests

from napari_allen.cli import build_parser


def test_local_api_command_serves_until_interrupted():
    code = ("from napari_allen.cli import main; raise SystemExit(main(['local-api', '--port', '0',"
            " '--latency-ms', '5']))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        body = requests.get(url + "/api/v2/data/Structure/385.json", timeout=30).json()
        assert body["msg"][0]["acronym"] == "VISp"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0  # generous: a loaded CI machine, not a timing check
        assert "Ctrl-C" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("argv", [["local-api", "--fault-rate", "2"],
                                  ["local-api", "--latency-ms", "-5"],
                                  ["local-api", "--port", "http"]])
def test_bad_arguments_are_rejected(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "local-api" in capsys.readouterr().err


def test_defaults():
    args = build_parser().parse_args(["local-api"])
    assert (args.host, args.port, args.latency_ms, args.fault_rate) == ("127.0.0.1", 8765, 0, 0)
