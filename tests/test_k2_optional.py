"""gtn_py.k2 imports without k2 and, when k2 is missing, every entry point raises a typed error
that says how to get it. (The interop itself is tested in tests/k2_interop/, in the k2 environment.)"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

import gtn_py
from gtn_py import BackendUnavailableError, Graph, GraphError


@pytest.fixture
def without_k2(monkeypatch):
    """Make ``import k2`` fail as it does where k2 is not installed (even in the k2 environment)."""
    monkeypatch.setitem(sys.modules, "k2", None)
    return importlib.import_module("gtn_py.k2")


def small_graph() -> Graph:
    return Graph.from_arcs(2, [0], [1], [1], weights=[0.5], start=[0], accept=[1])


def test_module_imports_without_k2(without_k2):
    reloaded = importlib.reload(without_k2)
    assert reloaded.is_available() is False


@pytest.mark.parametrize("call", [
    lambda m: m.to_k2(small_graph()),
    lambda m: m.from_k2(object()),
    lambda m: m.k2_total_score(small_graph()),
    lambda m: m.k2_dense_totals(small_graph(), torch.zeros(1, 3, 2), torch.tensor([3])),
])
def test_use_without_k2_raises_with_install_advice(without_k2, call):
    with pytest.raises(BackendUnavailableError) as info:
        call(without_k2)
    message = str(info.value)
    assert "k2 is not installed" in message and "tools/k2_env.sh" in message
    # Typed: callers can catch it as a gtn_py error or as the ImportError it is.
    assert isinstance(info.value, GraphError) and isinstance(info.value, ImportError)


def test_backend_error_is_exported():
    assert gtn_py.BackendUnavailableError is BackendUnavailableError


@pytest.mark.parametrize("call", [
    lambda: gtn_py.forward_score(small_graph(), backend="k2"),
    lambda: gtn_py.viterbi_score([small_graph()], backend="k2"),
    lambda: gtn_py.dense_score(small_graph(), torch.zeros(1, 2), backend="k2"),
    lambda: gtn_py.ctc_loss(torch.zeros(3, 1, 2).log_softmax(-1), torch.tensor([[1]]), [3], [1], backend="k2"),
])
def test_public_functions_dispatch_to_k2(without_k2, call):
    """``backend="k2"`` reaches gtn_py.k2 (which, without k2, says how to install it)."""
    with pytest.raises(BackendUnavailableError):
        call()


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="backend"):
        gtn_py.forward_score(small_graph(), backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        gtn_py.dense_score(small_graph(), torch.zeros(1, 2), backend="openfst")
