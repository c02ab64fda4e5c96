"""napari_allen.lazy: a module bound at import, imported at its first attribute read."""

from __future__ import annotations

import sys

from napari_allen.lazy import LazyModule, lazy_module


def test_lazy_module_imports_at_first_attribute_read(tmp_path, monkeypatch):
    (tmp_path / "lazy_probe_mod.py").write_text("VALUE = 42\nimported = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazy_probe_mod", raising=False)
    mod = lazy_module("lazy_probe_mod")
    assert isinstance(mod, LazyModule) and "lazy_probe_mod" not in sys.modules
    assert mod.VALUE == 42  # imports it
    assert sys.modules["lazy_probe_mod"].imported
    assert "VALUE" in vars(mod)  # later reads are plain look-ups
    try:
        mod.missing  # noqa: B018
    except AttributeError:
        pass
    else:
        raise AssertionError("a missing attribute must raise AttributeError")


def test_lazy_module_of_an_imported_module_is_that_module():
    import json

    assert lazy_module("json") is json
