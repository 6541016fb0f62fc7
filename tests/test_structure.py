"""Structural operations against the brute-force oracle, OpenFst, and autograd."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, List, Tuple

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from oracle import assert_relations_close, paths, plus, relation, strings_of
from strategies import graphs

import gtn_py
from gtn_py import (
    CyclicGraphError,
    DeviceMismatchError,
    DtypeMismatchError,
    Graph,
    arcsort,
    clone,
    closure,
    concat,
    connect,
    equal,
    equivalent,
    invert,
    project_input,
    project_output,
    reverse,
    topsort,
    union,
)

NEG_INF = float("-inf")
SEMIRINGS = ["log", "tropical"]
LONG = 40  # path-length bound that every acyclic test graph (and their concatenations) stays under
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

Relation = Dict[Tuple[Tuple[int, ...], Tuple[int, ...]], float]


def aggregate(items, semiring: str) -> Relation:
    """Sum (in the semiring) the scores of equal (input, output) keys; drop -inf totals."""
    groups: Dict[tuple, List[float]] = defaultdict(list)
    for key, score in items:
        groups[key].append(score)
    totals = {k: plus(v, semiring) for k, v in groups.items()}
    return {k: v for k, v in totals.items() if v > NEG_INF}


# ---------------------------------------------------------------------- relations
@pytest.mark.parametrize("semiring", SEMIRINGS)
@given(gs=st.lists(graphs(max_nodes=4, max_arcs=6), min_size=1, max_size=3))
def test_union_sums_relations(semiring, gs):
    want = aggregate((item for g in gs for item in relation(g, semiring, LONG).items()), semiring)
    out = union(gs)
    assert not out.is_batch and out.num_nodes == sum(g.num_nodes for g in gs)
    assert_relations_close(relation(out, semiring, LONG), want)


@pytest.mark.parametrize("semiring", SEMIRINGS)
@given(gs=st.lists(graphs(max_nodes=4, max_arcs=5), min_size=0, max_size=3))
def test_concat_concatenates_strings(semiring, gs):
    want: Relation = {((), ()): 0.0}
    for g in gs:
        want = aggregate((((ia + ib, oa + ob), wa + wb) for (ia, oa), wa in want.items()
                          for (ib, ob), wb in relation(g, semiring, LONG).items()), semiring)
    assert_relations_close(relation(concat(gs), semiring, LONG), want)


def closure_oracle(g: Graph, semiring: str, max_arcs: int) -> Relation:
    """The relation of ``g*`` over closure paths of at most ``max_arcs`` arcs.

    A closure path made of ``k`` paths of ``g`` with ``l_1..l_k`` arcs has ``k + sum l_i``
    arcs (one epsilon arc before each), so sequences are built by dynamic programming over
    that cost.
    """
    pieces = [(strings_of(g, p), score, len(p) + 1) for p, score in paths(g, max_arcs - 1)]
    by_cost: List[Relation] = [{((), ()): 0.0}]
    for cost in range(1, max_arcs + 1):
        by_cost.append(aggregate((((i + pi, o + po), w + pw)
                                  for (pi, po), pw, c in pieces if c <= cost
                                  for (i, o), w in by_cost[cost - c].items()), semiring))
    return aggregate((item for rel in by_cost for item in rel.items()), semiring)


@pytest.mark.parametrize("semiring", SEMIRINGS)
@given(g=graphs(max_nodes=4, max_arcs=5))
def test_closure_is_sum_of_powers(semiring, g):
    out = closure(g)
    assert out.start_nodes.tolist() == [0] and float(out.final_weights[0]) == 0.0
    assert_relations_close(relation(out, semiring, max_arcs=6), closure_oracle(g, semiring, 6))


RELABELLINGS = {
    "invert": (invert, lambda i, o: (o, i)),
    "project_input": (project_input, lambda i, o: (i, i)),
    "project_output": (project_output, lambda i, o: (o, o)),
    "reverse": (reverse, lambda i, o: (i[::-1], o[::-1])),
    "arcsort_ilabel": (arcsort, lambda i, o: (i, o)),
    "arcsort_olabel": (lambda g: arcsort(g, by="olabel"), lambda i, o: (i, o)),
    "connect": (connect, lambda i, o: (i, o)),
    "clone": (clone, lambda i, o: (i, o)),
}


@pytest.mark.parametrize("semiring", SEMIRINGS)
@given(g=graphs(acyclic=False, max_nodes=4, max_arcs=6))
def test_relation_transforms(semiring, g):
    # These operations keep path lengths, so relations over paths of <= 5 arcs match exactly,
    # cycles included.
    rel = relation(g, semiring, 5)
    for name, (op, key) in RELABELLINGS.items():
        note(name)
        want = aggregate(((key(*k), v) for k, v in rel.items()), semiring)
        assert_relations_close(relation(op(g), semiring, 5), want)


@pytest.mark.parametrize("semiring", SEMIRINGS)
@given(g=graphs(max_nodes=6, max_arcs=10))
def test_topsort_orders_nodes_and_keeps_relation(semiring, g):
    out = topsort(g)
    assert bool((out.src < out.dst).all())
    assert out.num_nodes == g.num_nodes and out.num_arcs == g.num_arcs
    assert_relations_close(relation(out, semiring, LONG), relation(g, semiring, LONG))


# ---------------------------------------------------------------------- structure
def useful_nodes(g: Graph) -> set:
    """Nodes both reachable from a start node and reaching an accept node (plain Python)."""
    arcs = list(zip(g.src.tolist(), g.dst.tolist()))

    def closure_from(seeds, forward):
        seen, todo = set(seeds), list(seeds)
        while todo:
            n = todo.pop()
            for s, d in arcs:
                a, b = (s, d) if forward else (d, s)
                if a == n and b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    return closure_from(g.start_nodes.tolist(), True) & closure_from(g.accept_nodes.tolist(), False)


@given(g=graphs(acyclic=False, max_nodes=6))
def test_connect_keeps_exactly_the_useful_nodes(g):
    out = connect(g)
    keep = sorted(useful_nodes(g))
    assert out.num_nodes == len(keep)
    assert out.start_weights.tolist() == g.start_weights[keep].tolist()
    assert out.final_weights.tolist() == g.final_weights[keep].tolist()
    assert len(useful_nodes(out)) == out.num_nodes
    assert equal(connect(out), out)


@pytest.mark.parametrize("by", ["ilabel", "olabel"])
@given(g=graphs(acyclic=False, max_arcs=10))
def test_arcsort_is_a_stable_sort(by, g):
    out = arcsort(g, by=by)
    arcs = list(g.arcs())
    want = sorted(arcs, key=lambda a: (a.src, getattr(a, by)))
    assert list(out.arcs()) == want


def test_closure_of_a_single_arc():
    g = Graph.from_arcs(2, [0], [1], [5], weights=[-1.0], start_weights=[0.5, NEG_INF],
                        final_weights=[NEG_INF, 0.25])
    star = g.star()
    assert star.num_nodes == 3 and star.start_nodes.tolist() == [0] and star.accept_nodes.tolist() == [0, 2]
    rel = relation(star, max_arcs=8)
    assert rel[((), ())] == 0.0
    assert math.isclose(rel[((5,), (5,))], -0.25)
    assert math.isclose(rel[((5, 5, 5), (5, 5, 5))], -0.75)


def test_operators_match_functions():
    a = gtn_py.string_graph([1, 2], weights=[0.5, -0.5])
    b = gtn_py.string_graph([3], weights=[0.25])
    assert equal(a | b, union([a, b]))
    assert equal(a + b, concat([a, b]))
    assert equal(a.star(), closure(a))
    assert relation(a + b) == {((1, 2, 3), (1, 2, 3)): 0.25}


def test_empty_inputs():
    assert relation(concat([])) == {((), ()): 0.0}
    assert union([]).num_nodes == 0
    empty = Graph()
    assert relation(closure(empty)) == {((), ()): 0.0}
    assert connect(empty).num_nodes == 0 and topsort(empty).num_nodes == 0
    dead = Graph.from_arcs(3, [0, 1], [1, 2], [1, 1], start=[0], accept=[0])
    assert connect(dead).num_nodes == 1


# ---------------------------------------------------------------------- batches
PER_GRAPH = {
    "closure": closure, "project_input": project_input, "project_output": project_output,
    "invert": invert, "reverse": reverse, "connect": connect, "topsort": topsort,
    "arcsort": arcsort, "clone": clone,
}


@given(gs=st.lists(graphs(max_nodes=4, max_arcs=6), min_size=1, max_size=3))
def test_per_graph_ops_on_a_batch(gs):
    batch = Graph.batch(gs)
    for name, op in PER_GRAPH.items():
        note(name)
        out = op(batch)
        assert out.is_batch and out.num_graphs == len(gs)
        assert bool((out.node_graph[1:] >= out.node_graph[:-1]).all()), "each graph's nodes stay together"
        for part, g in zip(out.unbatch(), gs):
            assert equal(part, op(g))


@given(gs=st.lists(graphs(max_nodes=3, max_arcs=4), min_size=2, max_size=4), cut=st.integers(1, 3))
def test_union_and_concat_flatten_batches(gs, cut):
    nested = [Graph.batch(gs[:cut]), *gs[cut:]]
    assert equal(union(nested), union(gs))
    assert equal(concat(nested), concat(gs))


# ---------------------------------------------------------------------- comparisons
@pytest.mark.parametrize("semiring", SEMIRINGS)
@given(g=graphs(), h=graphs(), arc=st.integers(0, 100), delta=st.sampled_from([0.0, 0.5]))
def test_equivalent_agrees_with_oracle(semiring, g, h, arc, delta):
    if g.num_arcs:
        w = g.weights.clone()
        w[arc % g.num_arcs] += delta
        changed = g.with_weights(w)
    else:
        changed = g
    for other in (h, changed, topsort(arcsort(g))):
        want, got = relation(g, semiring, LONG), relation(other, semiring, LONG)
        same = set(want) == set(got) and all(math.isclose(want[k], got[k], abs_tol=1e-5, rel_tol=1e-5)
                                             for k in want)
        assert equivalent(g, other, semiring) == same


def test_equivalent_on_batches_and_limits():
    a = gtn_py.string_graph([1, 2], weights=[0.5, -0.5])
    b = gtn_py.string_graph([3])
    assert equivalent(Graph.batch([a, b]), Graph.batch([reverse(reverse(a)), b]))
    assert not equivalent(Graph.batch([a, b]), Graph.batch([b, a]))
    assert not equivalent(Graph.batch([a, b]), a)
    assert equivalent(Graph(), Graph())
    # Epsilons do not count: 1 then eps equals eps then 1.
    assert equivalent(gtn_py.string_graph([1, 0]), gtn_py.string_graph([0, 1]))
    wide = gtn_py.linear_graph(12, 3)  # 3^12 paths
    with pytest.raises(ValueError, match="max_paths"):
        equivalent(wide, wide, max_paths=1000)
    with pytest.raises(CyclicGraphError):
        equivalent(a.star(), a.star())


def test_equal():
    g = Graph.from_arcs(3, [0, 1, 0], [1, 2, 2], [1, 2, 0], [1, 3, 0], [0.5, -1.0, 0.25],
                        start=[0], accept=[2], dtype=torch.float64)
    assert equal(g, clone(g))
    assert not equal(g, g.with_weights(g.weights + 1e-3))
    assert equal(g, g.with_weights(g.weights + 1e-9))
    assert not equal(g, arcsort(g, by="olabel"))  # same arcs, another order
    assert not equal(g, invert(g))
    assert not equal(g, reverse(g))
    assert not equal(g, Graph.batch([g]))
    assert equal(g, g.to(dtype=torch.float32), tol=1e-6)


def test_clone_has_fresh_tensors_and_passes_gradients():
    w = torch.tensor([0.5, -1.0], requires_grad=True)
    g = Graph.from_arcs(3, [0, 1], [1, 2], [1, 2], weights=w, start=[0], accept=[2])
    c = clone(g)
    assert c.weights.data_ptr() != w.data_ptr() and c.src.data_ptr() != g.src.data_ptr()
    c.weights.sum().backward()
    assert w.grad.tolist() == [1.0, 1.0]
    assert not clone(g).detach().requires_grad


# ---------------------------------------------------------------------- gradients
def _template(seed: int) -> Graph:
    """A small graph with epsilons, two start and two accept nodes, a non-start node."""
    g = Graph.from_arcs(4, [0, 0, 1, 2, 1, 0], [1, 2, 3, 3, 2, 3], [1, 0, 2, 1, 3, 2], [2, 1, 0, 1, 3, 3],
                        start_weights=[0.1, -0.3, NEG_INF, NEG_INF],
                        final_weights=[NEG_INF, NEG_INF, 0.2, -0.4], dtype=torch.float64)
    torch.manual_seed(seed)
    return g.with_weights(torch.randn(g.num_arcs, dtype=torch.float64))


def _leaves(g: Graph) -> List[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in (g.weights, g.start_weights, g.final_weights)]


def _readout(out: Graph) -> torch.Tensor:
    """A scalar that depends on every output weight differently (exp keeps -inf harmless)."""
    def term(t: torch.Tensor) -> torch.Tensor:
        coeff = 1.0 + torch.arange(t.shape[0], dtype=t.dtype) / (t.shape[0] + 1)
        return (coeff * torch.exp(t)).sum()
    return term(out.weights) + term(out.start_weights) + term(out.final_weights)


UNARY = {**PER_GRAPH, "arcsort_olabel": lambda g: arcsort(g, by="olabel"),
         "closure_batch": lambda g: closure(Graph.batch([g, reverse(g)]))}
COMBINING = {"union": union, "concat": concat}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_gradcheck_unary(name):
    g = _template(0)
    if name == "topsort":  # make it need renumbering
        g = reverse(g)

    def f(w, s, fw):
        return _readout(UNARY[name](g.with_weights(w, final_weights=fw, start_weights=s)))

    assert torch.autograd.gradcheck(f, _leaves(g))


@pytest.mark.parametrize("name", sorted(COMBINING))
def test_gradcheck_combining(name):
    a, b = _template(1), reverse(_template(2))

    def f(wa, sa, fa, wb, sb, fb):
        ga = a.with_weights(wa, final_weights=fa, start_weights=sa)
        gb = b.with_weights(wb, final_weights=fb, start_weights=sb)
        return _readout(COMBINING[name]([ga, gb, ga]))

    assert torch.autograd.gradcheck(f, _leaves(a) + _leaves(b))


# ---------------------------------------------------------------------- errors
def test_typed_errors():
    loop = Graph.from_arcs(2, [0, 1], [1, 0], [1, 1], start=[0], accept=[1])
    with pytest.raises(CyclicGraphError):
        topsort(loop)
    a = gtn_py.string_graph([1])
    b = gtn_py.string_graph([2], dtype=torch.float64)
    for op in (union, concat):
        with pytest.raises(DtypeMismatchError):
            op([a, b])
    with pytest.raises(DtypeMismatchError):
        a | b
    with pytest.raises(ValueError, match="ilabel"):
        arcsort(a, by="weight")


# ---------------------------------------------------------------------- OpenFst
try:
    import pywrapfst
except ImportError:  # the k2 environment has no OpenFst
    pywrapfst = None
needs_openfst = pytest.mark.skipif(pywrapfst is None, reason="needs pywrapfst")


def to_fst(g: Graph):
    """A log-semiring VectorFst (costs = -scores) with a super-start state for the start weights."""
    f = pywrapfst.VectorFst("log")
    f.add_states(g.num_nodes + 1)
    begin = g.num_nodes
    f.set_start(begin)
    weight = lambda score: pywrapfst.Weight("log", -score)
    for n, (s, fw) in enumerate(zip(g.start_weights.tolist(), g.final_weights.tolist())):
        if s > NEG_INF:
            f.add_arc(begin, pywrapfst.Arc(0, 0, weight(s), n))
        if fw > NEG_INF:
            f.set_final(n, weight(fw))
    for arc in g.arcs():
        f.add_arc(arc.src, pywrapfst.Arc(arc.ilabel, arc.olabel, weight(arc.weight), arc.dst))
    return f


def from_fst(f) -> Graph:
    src, dst, il, ol, w = [], [], [], [], []
    final = []
    for s in f.states():
        final.append(-float(f.final(s)))
        for arc in f.arcs(s):
            src.append(s); dst.append(arc.nextstate); il.append(arc.ilabel); ol.append(arc.olabel)
            w.append(-float(arc.weight))
    start = [NEG_INF] * len(final)
    if f.start() >= 0:
        start[f.start()] = 0.0
    return Graph.from_arcs(len(final), torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long),
                           torch.tensor(il, dtype=torch.long), torch.tensor(ol, dtype=torch.long), w,
                           start_weights=start, final_weights=final, dtype=torch.float64)


OPENFST = {
    "invert": (invert, lambda f: f.invert()),
    "project_input": (project_input, lambda f: f.project("input")),
    "project_output": (project_output, lambda f: f.project("output")),
    "reverse": (reverse, lambda f: pywrapfst.reverse(f)),
    "connect": (connect, lambda f: f.connect()),
    "topsort": (topsort, lambda f: f.topsort()),
    "arcsort": (arcsort, lambda f: f.arcsort("ilabel")),
}


@needs_openfst
@given(g=graphs(max_arcs=6))
def test_unary_ops_match_openfst(g):
    for name, (ours, theirs) in OPENFST.items():
        note(name)
        f = to_fst(g)
        out = theirs(f)  # pywrapfst's methods change f in place (and return it)
        assert equivalent(ours(g), from_fst(out if out is not None else f))


@needs_openfst
@given(a=graphs(max_nodes=3, max_arcs=4), b=graphs(max_nodes=3, max_arcs=4))
def test_union_and_concat_match_openfst(a, b):
    assert equivalent(union([a, b]), from_fst(to_fst(a).union(to_fst(b))))
    assert equivalent(concat([a, b]), from_fst(to_fst(a).concat(to_fst(b))))


# ---------------------------------------------------------------------- CUDA
@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(UNARY))
def test_cuda_matches_cpu(name):
    g = _template(3)
    out = UNARY[name](g.to("cuda"))
    assert out.weights.device.type == "cuda" and out.node_graph.device.type == "cuda"
    assert equal(out.cpu(), UNARY[name](g))


@cuda
@pytest.mark.cuda
def test_cuda_combining_and_device_mismatch():
    a, b = _template(4), _template(5)
    for op in (union, concat):
        assert equal(op([a.to("cuda"), b.to("cuda")]).cpu(), op([a, b]))
        with pytest.raises(DeviceMismatchError):
            op([a, b.to("cuda")])
    assert equivalent(a.to("cuda"), arcsort(a).to("cuda"))
