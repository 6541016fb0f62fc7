"""The shortest-distance family (gtn_py.ops.shortest, gtn_py.semiring, gtn_py.ops.traverse) on
bad or awkward input: NaN weights written after construction, dead ends in sampled graphs,
cyclic log sums that converge slowly or diverge, n-best lists over outputs repeated by
epsilon cycles, bad arguments and half-precision graphs. Each test states the answer or the
typed error it expects, and the time it may take where time is the point."""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np
import pytest
import torch

import gtn_py as gtn
from gtn_py import (
    ArgumentTypeError,
    ArgumentValueError,
    DivergenceError,
    DtypeMismatchError,
    Graph,
    GraphError,
    LogSemiring,
    WeightError,
)
from gtn_py.ops import shortest

NAN = float("nan")
NEG_INF = float("-inf")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _diamond(weights: torch.Tensor) -> Graph:
    """0 -> 1 -> 2 and 0 -> 2 (three arcs), start 0, accept 2; the weights are used as given."""
    return Graph.from_arcs(3, [0, 1, 0], [1, 2, 2], [1, 2, 3], weights=weights, start=[0], accept=[2])


def _nan_after_construction(g: Graph, *arcs: int) -> Graph:
    """``g`` with its arc weights in a tensor of its own, NaN written into ``arcs`` afterwards (as
    an optimizer step writes into a Parameter; construction refuses NaN weights)."""
    weights = g.weights.detach().clone()
    h = g.with_weights(weights)
    weights[list(arcs)] = NAN
    return h


def _dense_log_total(g: Graph, beta: float = 1.0) -> float:
    """Reference total of a small graph, cyclic or not: ``x = exp(beta start) + A^T x`` solved
    densely in float64 (``A[u, v]``: the summed ``exp(beta w)`` of the arcs u -> v)."""
    n = g.num_nodes
    a = np.zeros((n, n))
    np.add.at(a, (g.src.numpy(), g.dst.numpy()), np.exp(beta * g.weights.detach().double().numpy()))
    x = np.linalg.solve(np.eye(n) - a.T, np.exp(beta * g.start_weights.detach().double().numpy()))
    return float(np.log(x @ np.exp(beta * g.final_weights.detach().double().numpy())) / beta)


# ---------------------------------------------------------------------- 1. NaN after construction
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("score", [gtn.forward_score, gtn.viterbi_score])
def test_nan_written_into_a_parameter_after_construction_gives_nan_totals_and_gradients(dtype, score):
    w = torch.nn.Parameter(torch.tensor([-1.0, -2.0, -0.5], dtype=dtype))
    g = _diamond(w)  # the documented pattern: weights=Parameter, updated in place by an optimizer
    with torch.no_grad():
        w[0] = NAN
    total = score(g)
    assert math.isnan(total.item())
    total.backward()
    assert torch.isnan(w.grad).all()


@pytest.mark.parametrize("score", [gtn.forward_score, gtn.viterbi_score])
def test_nan_stays_in_its_graph_of_a_batch(score):
    w = torch.nn.Parameter(torch.tensor([-1.0, -2.0, -0.5, -1.0, -2.0, -0.5]))
    clean = _diamond(torch.tensor([-1.0, -2.0, -0.5]))
    batch = Graph.batch([clean, clean]).with_weights(w)
    with torch.no_grad():
        w[1] = NAN
    totals = score(batch)
    assert math.isnan(totals[0].item()) and totals[1].item() == pytest.approx(score(clean).item())
    totals.sum().backward()
    assert torch.isnan(w.grad[:3]).all() and torch.isfinite(w.grad[3:]).all()


def test_nan_in_shortest_distance_arc_posteriors_and_total_score():
    g = _nan_after_construction(_diamond(torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64)), 0)
    for semiring in ("log", "tropical", LogSemiring(0.5)):
        dist = gtn.shortest_distance(g, semiring)
        assert dist[0].item() == 0.0 and torch.isnan(dist[1:]).all()  # NaN goes on from where it is reached
        assert math.isnan(gtn.total_score(g, semiring).item())
    assert torch.isnan(gtn.arc_posteriors(g)).all()


def test_nan_on_an_arc_no_start_reaches_changes_nothing():
    # node 3 is not reachable from the start node, so its NaN arc is on no path
    g = _nan_after_construction(Graph.from_arcs(4, [0, 3], [1, 1], [1, 2], weights=[-1.0, 0.0], start=[0],
                                                accept=[1]), 1)
    assert gtn.forward_score(g).item() == -1.0 and gtn.viterbi_score(g).item() == -1.0


@pytest.mark.parametrize("semiring", ["log", "tropical"])
def test_nan_in_a_cyclic_graph_gives_nan(semiring):
    g = _nan_after_construction(Graph.from_arcs(2, [0, 1, 1], [1, 1, 0], [1, 2, 3], weights=[-1.0, -1.0, -2.0],
                                                start=[0], accept=[1]), 1)
    assert math.isnan(gtn.total_score(g, semiring).item())


def test_nan_makes_n_best_and_sample_raise():
    g = _nan_after_construction(_diamond(torch.tensor([-1.0, -2.0, -0.5])), 0)
    with pytest.raises(WeightError, match="NaN"):
        gtn.n_best(g, 2)
    with pytest.raises(WeightError, match="NaN"):
        gtn.sample(g, 2)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("score", [gtn.forward_score, gtn.viterbi_score])
def test_cuda_nan_totals_and_gradients(score):
    w = torch.nn.Parameter(torch.tensor([-1.0, -2.0, -0.5, -1.0, -2.0, -0.5], device="cuda"))
    clean = _diamond(torch.tensor([-1.0, -2.0, -0.5]))
    batch = Graph.batch([clean, clean]).to("cuda").with_weights(w)
    with torch.no_grad():
        w[0] = NAN
    totals = score(batch)
    assert math.isnan(totals[0].item()) and math.isfinite(totals[1].item())
    totals.sum().backward()
    assert torch.isnan(w.grad[:3]).all() and torch.isfinite(w.grad[3:]).all()


# ---------------------------------------------------------------------- 2. sampling with dead ends
def _dead_end() -> Graph:
    """s -> f twice (labels 1 and 2, weight -1 each), f accepting, then f -> d and a loop on d:
    d reaches no accept node."""
    return Graph.from_arcs(3, [0, 0, 1, 2], [1, 1, 2, 2], [1, 2, 3, 4], weights=[-1.0, -1.0, 0.0, 0.0],
                           start=[0], accept=[1], dtype=torch.float64)


def _chi2(drawn: Counter, exact: dict, n: int) -> float:
    return sum((drawn.get(k, 0) - n * p) ** 2 / (n * p) for k, p in exact.items())


def test_sample_with_a_cyclic_dead_end_draws_each_path_with_its_probability():
    n = 4000
    drawn = Counter(tuple(p.ilabel.tolist()) for p in gtn.sample(_dead_end(), n, torch.Generator().manual_seed(0)))
    assert set(drawn) == {(1,), (2,)}
    assert _chi2(drawn, {(1,): 0.5, (2,): 0.5}, n) < 11  # 1 degree of freedom: p(chi2 > 11) ~ 1e-3


def test_sample_batch_with_a_dead_end_leaves_the_other_graphs_right():
    other = Graph.from_arcs(2, [0, 0, 0], [1, 1, 1], [5, 6, 7], weights=[0.0, math.log(2), math.log(3)],
                            start=[0], accept=[1], dtype=torch.float64)
    exact_other = {(5,): 1 / 6, (6,): 2 / 6, (7,): 3 / 6}
    n = 3000
    dead, live = gtn.sample([_dead_end(), other], n, torch.Generator().manual_seed(1))
    drawn_dead = Counter(tuple(p.ilabel.tolist()) for p in dead.unbatch())
    drawn_live = Counter(tuple(p.ilabel.tolist()) for p in live.unbatch())
    assert _chi2(drawn_dead, {(1,): 0.5, (2,): 0.5}, n) < 11
    assert set(drawn_live) <= set(exact_other) and _chi2(drawn_live, exact_other, n) < 14  # 2 d.o.f.


def test_sample_of_graphs_without_nodes_gives_empty_paths():
    assert [p.num_nodes for p in gtn.sample(Graph(), 2)] == [0, 0]
    empty, string = gtn.sample([Graph(), gtn.string_graph([1, 2])], 2)
    assert empty.num_nodes == 0 and string.num_arcs == 4


# ---------------------------------------------------------------------- 3. cyclic log sums
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.5, 0.99, 0.9999, 1 - 1e-6, math.exp(-0.01), math.exp(-0.001)])
def test_self_loop_totals_are_exact_up_to_probability_one_minus_1e6(dtype, p):
    g = Graph.from_arcs(1, [0], [0], [1], weights=torch.tensor([math.log(p)], dtype=dtype), start=[0], accept=[0])
    exact = -math.log1p(-p)  # log sum_k p^k
    began = time.perf_counter()
    got = gtn.forward_score(g).item()
    assert time.perf_counter() - began < 1.0
    assert got == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_two_node_cycle_of_probability_one_minus_1e6(dtype):
    half = math.log(1 - 1e-6) / 2
    g = Graph.from_arcs(2, [0, 1], [1, 0], [1, 2], weights=torch.tensor([half, half], dtype=dtype),
                        start=[0], accept=[0])
    assert gtn.forward_score(g).item() == pytest.approx(-math.log(1e-6), rel=1e-6)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("beta", [1.0, 0.5, 3.0])
def test_random_cyclic_graphs_match_a_dense_linear_solve(seed, beta):
    generator = torch.Generator().manual_seed(seed)
    n, m = 6, 14
    src, dst = torch.randint(n, (m,), generator=generator), torch.randint(n, (m,), generator=generator)
    # out-weights of every node sum to at most 0.7 (beta-scaled), so every sum converges
    weights = (torch.log(torch.rand(m, generator=generator, dtype=torch.float64) * 0.7 / 3) / beta)
    g = Graph.from_arcs(n, src, dst, torch.ones(m, dtype=torch.long), weights=weights,
                        start_weights=torch.randn(n, generator=generator, dtype=torch.float64),
                        final_weights=torch.randn(n, generator=generator, dtype=torch.float64))
    assert gtn.total_score(g, LogSemiring(beta)).item() == pytest.approx(_dense_log_total(g, beta), rel=1e-9)
    if not gtn.is_acyclic(g):
        float32 = gtn.total_score(g.to(dtype=torch.float32), LogSemiring(beta)).item()
        assert float32 == pytest.approx(_dense_log_total(g, beta), rel=1e-6)


def test_ring_of_200k_nodes_in_under_2_seconds():
    n = 200_000
    src = torch.arange(n)
    g = Graph.from_arcs(n, src, (src + 1) % n, torch.ones(n, dtype=torch.long),
                        weights=torch.full((n,), -1e-6, dtype=torch.float64), start=[0], accept=[n - 1])
    gtn.forward_score(gtn.closure(gtn.string_graph([1], weights=[-1.0])))  # compiled kernels loaded
    began = time.perf_counter()
    got = gtn.forward_score(g).item()
    elapsed = time.perf_counter() - began
    exact = (n - 1) * -1e-6 - math.log(-math.expm1(-n * 1e-6))  # to node n-1, then any number of turns
    assert got == pytest.approx(exact, rel=1e-9)
    assert elapsed < 2.0, elapsed


@pytest.mark.parametrize("semiring", ["log", LogSemiring(2.0)])
def test_divergent_cycles_raise_with_the_node_and_its_cycle_total(semiring):
    # a self-loop of weight 0 (probability 1); a two-node cycle of positive score
    for g in (Graph.from_arcs(2, [0, 1], [1, 1], [1, 2], weights=[0.0, 0.0], start=[0], accept=[1]),
              Graph.from_arcs(3, [0, 1, 2], [1, 2, 1], [1, 2, 3], weights=[0.0, 0.1, -0.05], start=[0], accept=[2])):
        with pytest.raises(DivergenceError, match=r"diverges: the cycles through node \d .* >= 1"):
            gtn.total_score(g, semiring)


def test_loops_each_below_one_that_sum_above_one_diverge():
    # two loops of probability 0.6 on one node: each cycle has a negative score (the tropical
    # best path is finite) but they add up to 1.2; at beta 2 they are 0.36 each and converge
    loop = math.log(0.6)
    g = Graph.from_arcs(2, [0, 1, 1], [1, 1, 1], [1, 2, 3], weights=[0.0, loop, loop], start=[0], accept=[1],
                        dtype=torch.float64)
    assert gtn.viterbi_score(g).item() == 0.0
    with pytest.raises(DivergenceError, match="exp\\(0.182322\\) >= 1"):
        gtn.forward_score(g)
    assert gtn.total_score(g, LogSemiring(2.0)).item() == pytest.approx(-math.log(1 - 0.72) / 2, rel=1e-12)


def test_divergent_cycle_nothing_reaches_does_not_matter():
    g = Graph.from_arcs(3, [0, 2], [1, 2], [1, 2], weights=[-1.0, 0.5], start=[0], accept=[1])
    assert gtn.shortest_distance(g).tolist() == [0.0, -1.0, NEG_INF]


def test_cyclic_total_gradients_pass_gradcheck():
    g = Graph.from_arcs(3, [0, 1, 1, 2, 2, 0], [1, 1, 2, 1, 2, 2], [1, 2, 3, 4, 5, 6],
                        weights=[-0.5, -1.0, -0.3, -2.0, -0.7, -1.5], start_weights=[0.0, -1.0, NEG_INF],
                        final_weights=[NEG_INF, -0.2, 0.0], dtype=torch.float64)

    def total(w, start, final):
        return gtn.forward_score(g.with_weights(w, final, start))

    inputs = tuple(t.detach().clone().requires_grad_() for t in (g.weights, g.start_weights, g.final_weights))
    # -inf start/final weights: finite differences there are NaN; check the arc weights and the finite ones
    assert torch.autograd.gradcheck(lambda w: total(w, inputs[1].detach(), inputs[2].detach()), (inputs[0],))
    posteriors = gtn.arc_posteriors(g)
    w = g.weights.detach().clone().requires_grad_()
    gtn.forward_score(g.with_weights(w)).backward()
    assert torch.allclose(posteriors, w.grad, rtol=1e-12)


def test_cyclic_path_distances_pass_gradcheck():
    g = Graph.from_arcs(4, [0, 1, 2, 2, 1, 3], [1, 2, 1, 3, 1, 0], [1, 2, 3, 4, 5, 6],
                        weights=[-0.2, -0.4, -0.9, -0.3, -1.2, -2.0], start=[0], accept=[3], dtype=torch.float64)
    init = torch.tensor([0.0, -1.0, -0.5, -2.0], dtype=torch.float64, requires_grad=True)
    w = g.weights.detach().clone().requires_grad_()
    for sr in (gtn.LOG, LogSemiring(0.7)):
        assert torch.autograd.gradcheck(
            lambda w, i, sr=sr: shortest.path_distances(g.num_nodes, g.src, g.dst, w, i, sr), (w, init))


# ---------------------------------------------------------------------- 4. n-best over distinct outputs
def test_n_best_distinct_outputs_with_an_epsilon_loop_takes_milliseconds():
    g = Graph()
    a, b = g.add_node(start=True), g.add_node(accept=True)
    g.add_arc(a, b, 1, 1, -1.0)
    g.add_arc(b, b, 0, 0, -1.0)
    gtn.n_best(g, 2, distinct_outputs=True)
    for max_paths in (1000, 100_000):
        began = time.perf_counter()
        got = gtn.n_best(g, 2, distinct_outputs=True, max_paths=max_paths)
        assert time.perf_counter() - began < 0.05
        assert [p.olabel.tolist() for p in got] == [[1]] and gtn.viterbi_score(got[0]).item() == -1.0


def test_n_best_distinct_outputs_time_is_linear_in_max_paths():
    # every output string is reached by many paths (epsilon loops on every node) and there are
    # more strings than max_paths allows: the work is bounded by max_paths
    body = gtn.Graph.from_arcs(3, [0, 0, 1, 1, 2, 2, 1], [1, 1, 2, 2, 0, 0, 1], [1, 2, 1, 2, 3, 4, 0],
                               weights=[-0.1, -0.2, -0.3, -0.1, -0.5, -0.4, -0.05], start=[0], accept=[0, 2])
    gtn.n_best(body, 10, distinct_outputs=True, max_paths=100)
    times = []
    for max_paths in (2000, 8000):
        took = []  # the best of three: one run's time can carry a pause of the machine
        for _ in range(3):
            began = time.perf_counter()
            got = gtn.n_best(body, 10**9, distinct_outputs=True, max_paths=max_paths)
            took.append(time.perf_counter() - began)
        times.append(min(took))
        scores = [gtn.viterbi_score(p).item() for p in got[:50]]
        assert scores == sorted(scores, reverse=True)
        outputs = [tuple(x for x in p.olabel.tolist() if x) for p in got]
        assert len(set(outputs)) == len(outputs)
    assert times[1] < 8 * times[0] + 0.05, times  # 4x the bound: about 4x the time


# ---------------------------------------------------------------------- 5. bad arguments
B = Graph.from_arcs(3, [0, 1, 0], [1, 2, 2], [1, 2, 0], [2, 1, 0], [-0.5, -1.0, -2.0], start=[0], accept=[2])
BAD_CALLS = [
    (lambda: gtn.n_best(B, 0), ArgumentValueError, "k is 0; it must be at least 1"),
    (lambda: gtn.n_best(B, 1.5), ArgumentValueError, "k must be an integer"),
    (lambda: gtn.n_best(B, "2"), ArgumentTypeError, "k must be an integer"),
    (lambda: gtn.n_best(B, 2, max_paths=-1), ArgumentValueError, "max_paths is -1"),
    (lambda: gtn.n_best(None, 2), ArgumentTypeError, "g must be a Graph"),
    (lambda: gtn.prune(B, NAN), ArgumentValueError, "beam is nan; it must be a number >= 0"),
    (lambda: gtn.prune(B, -1.0), ArgumentValueError, "beam is -1.0"),
    (lambda: gtn.prune(B, "1"), ArgumentTypeError, "beam must be a number"),
    (lambda: gtn.prune(B), ArgumentValueError, "needs a beam, a min_posterior or both"),
    (lambda: gtn.prune(B, min_posterior=1.5), ArgumentValueError, "must be in \\(0, 1\\]"),
    (lambda: gtn.sample(B, 0), ArgumentValueError, "n is 0"),
    (lambda: gtn.sample(B, math.inf), ArgumentValueError, "n must be an integer"),
    (lambda: gtn.sample(B, 2, generator=3), ArgumentTypeError, "generator must be a torch.Generator"),
    (lambda: gtn.LogSemiring(0), ArgumentValueError, "beta must be a finite number > 0, got 0"),
    (lambda: gtn.LogSemiring(-1.0), ArgumentValueError, "beta must be a finite number > 0"),
    (lambda: gtn.LogSemiring(NAN), ArgumentValueError, "beta must be a finite number > 0"),
    (lambda: gtn.LogSemiring(math.inf), ArgumentValueError, "use the tropical semiring"),
    (lambda: gtn.LogSemiring("1"), ArgumentTypeError, "beta must be a number"),
    (lambda: gtn.total_score(B, "logg"), ArgumentValueError, "unknown semiring 'logg'"),
    (lambda: gtn.shortest_distance(B, 3), ArgumentTypeError, "semiring must be a name"),
    (lambda: gtn.get_semiring(None), ArgumentTypeError, "semiring must be a name"),
    (lambda: gtn.forward_score([]), ArgumentValueError, "g is an empty list"),
    (lambda: gtn.viterbi_path([B, "x"]), ArgumentTypeError, r"g\[1\] must be a Graph"),
    (lambda: gtn.topological_order("x"), ArgumentTypeError, "g must be a Graph"),
    (lambda: gtn.is_acyclic(None), ArgumentTypeError, "g must be a Graph"),
]


@pytest.mark.parametrize("call, error, message", BAD_CALLS)
def test_bad_arguments_raise_typed_errors_in_the_callers_terms(call, error, message):
    with pytest.raises(error, match=message) as raised:
        call()
    assert isinstance(raised.value, GraphError)


# ---------------------------------------------------------------------- 6. half precision
HALF_OPS = [
    lambda g: gtn.forward_score(g), lambda g: gtn.viterbi_score(g), lambda g: gtn.total_score(g, "log"),
    lambda g: gtn.shortest_distance(g), lambda g: gtn.arc_posteriors(g), lambda g: gtn.viterbi_path(g),
    lambda g: gtn.n_best(g, 2), lambda g: gtn.sample(g, 2), lambda g: gtn.prune(g, 1.0),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op", HALF_OPS)
def test_half_precision_graphs_raise_a_dtype_error_naming_the_supported_dtypes(dtype, op):
    half = B.with_weights(B.weights.to(dtype), B.final_weights.to(dtype), B.start_weights.to(dtype))
    with pytest.raises(DtypeMismatchError, match="float32 and float64"):
        op(half)
