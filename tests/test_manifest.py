"""Packaging: the manifest napari uses is the top-level napari.yaml, every command resolves, and
reading files never imports Qt."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_manifest_is_the_installed_one():
    import npe2

    import napari_allen

    installed = Path(napari_allen.__file__).parent / "napari.yaml"
    assert (ROOT / "napari.yaml").resolve() == installed.resolve()
    manifest = npe2.PluginManifest.from_distribution("napari-allen")
    assert manifest.name == "napari-allen"
    assert {c.id for c in manifest.contributions.commands} == {
        c["id"] for c in yaml.safe_load(installed.read_text())["contributions"]["commands"]
    }


def test_every_python_name_resolves():
    manifest = yaml.safe_load((ROOT / "napari.yaml").read_text())
    for command in manifest["contributions"]["commands"]:
        module_name, attr = command["python_name"].split(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, attr)), command["python_name"]
    module_name, attr = manifest["on_activate"].split(":")  # installs the GUI-thread caller
    assert callable(getattr(importlib.import_module(module_name), attr))


def test_npe2_validate_passes():
    exe = Path(sys.executable).with_name("npe2")
    result = subprocess.run([str(exe), "validate", "napari-allen"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reader_writer_samples_and_cli_import_without_qt():
    code = (
        "import sys\n"
        "import napari_allen._reader, napari_allen._writer, napari_allen._sample_data\n"
        "import napari_allen.cli, napari_allen.api.client, napari_allen.layers.volumes\n"
        "qt = [m for m in sys.modules if m.split('.')[0] in "
        "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'superqt', 'magicgui')]\n"
        "assert not qt, qt\n"
    )
    env = dict(os.environ)
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
