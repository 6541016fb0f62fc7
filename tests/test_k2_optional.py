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


def test_the_core_imports_no_backend():
    """k2's adapter registers itself when first asked for; importing gtn_py does not import it."""
    import subprocess
    code = "import sys, gtn_py; assert 'gtn_py.k2' not in sys.modules, 'gtn_py imported its k2 adapter'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_registered_backend_is_what_backend_selects(monkeypatch):
    from gtn_py import backends
    calls = []

    def totals(graphs, semiring):
        calls.append(semiring.name)
        return gtn_py.total_score(graphs, semiring) + 1.0

    def dense_totals(g, emissions, lengths, semiring):
        calls.append(("dense", tuple(emissions.shape), lengths.tolist()))
        return gtn_py.dense_score(g, emissions, lengths, semiring) + 2.0

    monkeypatch.setattr(backends, "_registered", dict(backends._registered))
    backends.register_backend("shifted", backends.Backend(totals, dense_totals))
    assert "shifted" in backends.backend_names()
    g = small_graph()
    assert float(gtn_py.forward_score(g, backend="shifted")) == pytest.approx(float(gtn_py.forward_score(g)) + 1.0)
    assert float(gtn_py.viterbi_score(g, backend="shifted")) == pytest.approx(float(gtn_py.viterbi_score(g)) + 1.0)
    emissions = torch.zeros(1, 1, 2)
    assert float(gtn_py.dense_score(g, emissions, backend="shifted")[0]) == pytest.approx(
        float(gtn_py.dense_score(g, emissions)[0]) + 2.0)
    assert calls == ["log", "tropical", ("dense", (1, 1, 2), [1])]
    with pytest.raises(ValueError, match="own kernels"):
        backends.register_backend("native", backends.Backend(totals, dense_totals))
