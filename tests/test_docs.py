"""The API reference builds from the docstrings without a pdoc warning, and every public name has
a docstring of its own (tools/api_docs.py, what `make docs` runs)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import gtn_py

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("pdoc", reason="pip install -e '.[docs]' (make test installs it)")


def _api_docs():
    spec = importlib.util.spec_from_file_location("api_docs", ROOT / "tools" / "api_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_builds_cleanly(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "api_docs.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "gtn_py.html").read_text()
    assert "ctc_decoding_graph" in page and (tmp_path / "gtn_py" / "losses.html").is_file()


def test_a_public_name_without_a_docstring_is_found(monkeypatch):
    api_docs = _api_docs()
    assert api_docs.undocumented() == []
    monkeypatch.setattr(gtn_py.compose, "__doc__", None)
    monkeypatch.setattr(gtn_py.losses.hinge, "__doc__", "")
    assert api_docs.undocumented() == ["gtn_py.compose", "gtn_py.losses.hinge"]
