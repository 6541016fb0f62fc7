"""compose, intersect, remove_epsilon, determinize: against the brute-force oracle, against
OpenFst (pywrapfst), gradcheck, batches and errors."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import pywrapfst
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import NEG_INF, assert_relations_close, plus, relation
from strategies import graphs

import gtn_py
from gtn_py import DeviceMismatchError, DtypeMismatchError, Graph, InvalidGraphError
from gtn_py.ops.compose import compose, determinize, intersect, remove_epsilon
from gtn_py.ops.shortest import forward_score, total_score
from gtn_py.ops.structure import arcsort

SEMIRINGS = ["log", "tropical"]
ARC_TYPE = {"log": "log", "tropical": "standard"}


def compose_relations(ra, rb, semiring):
    """Relational composition by brute force: (x, z) -> plus over y of a(x, y) + b(y, z)."""
    groups = defaultdict(list)
    for (x, y), s in ra.items():
        for (y2, z), t in rb.items():
            if y == y2:
                groups[(x, z)].append(s + t)
    return {k: plus(v, semiring) for k, v in groups.items() if plus(v, semiring) > NEG_INF}


# ---------------------------------------------------------------------- OpenFst bridge
def to_fst(g: Graph, semiring: str) -> pywrapfst.VectorFst:
    """The same WFST in OpenFst (costs = -scores), with a super-start state whose epsilon arcs
    carry the start weights (OpenFst has one start state)."""
    arc_type = ARC_TYPE[semiring]
    f = pywrapfst.VectorFst(arc_type=arc_type)
    f.add_states(g.num_nodes + 1)
    weight = lambda score: pywrapfst.Weight(f.weight_type(), -score)
    for a in g.arcs():
        f.add_arc(a.src, pywrapfst.Arc(a.ilabel, a.olabel, weight(a.weight), a.dst))
    for n, (s, fw) in enumerate(zip(g.start_weights.tolist(), g.final_weights.tolist())):
        if s > NEG_INF:
            f.add_arc(g.num_nodes, pywrapfst.Arc(0, 0, weight(s), n))
        if fw > NEG_INF:
            f.set_final(n, weight(fw))
    f.set_start(g.num_nodes)
    return f


def from_fst(f: pywrapfst.Fst) -> Graph:
    src, dst, il, ol, w = [], [], [], [], []
    final = []
    for s in f.states():
        for a in f.arcs(s):
            src.append(s); dst.append(a.nextstate); il.append(a.ilabel); ol.append(a.olabel)
            w.append(-float(a.weight))
        cost = float(f.final(s))
        final.append(-cost if math.isfinite(cost) else NEG_INF)
    n = len(final)
    start = [NEG_INF] * n
    if f.start() >= 0:
        start[f.start()] = 0.0
    return Graph.from_arcs(n, src, dst, il, ol, w, start_weights=start, final_weights=final, dtype=torch.float64)


def openfst_total(g: Graph, semiring: str) -> float:
    """Total score of all paths via OpenFst's shortest distance (handles cycles)."""
    f = to_fst(g, semiring)
    dist = pywrapfst.shortestdistance(f, reverse=True)
    return -float(dist[f.start()]) if len(dist) > f.start() else NEG_INF


# ---------------------------------------------------------------------- compose
transducers = graphs(max_nodes=4, max_arcs=7, num_labels=2)


@given(transducers, transducers, st.sampled_from(SEMIRINGS))
def test_compose_relation_matches_brute_force(a, b, semiring):
    want = compose_relations(relation(a, semiring), relation(b, semiring), semiring)
    assert_relations_close(relation(compose(a, b), semiring), want)


@given(transducers, transducers, st.sampled_from(SEMIRINGS))
def test_compose_matches_openfst(a, b, semiring):
    fa, fb = to_fst(a, semiring), to_fst(b, semiring)
    fa.arcsort("olabel"); fb.arcsort("ilabel")
    theirs = from_fst(pywrapfst.compose(fa, fb))
    ours = compose(a, b)
    assert_relations_close(relation(ours, semiring), relation(theirs, semiring))


def convergent(g: Graph, semiring: str) -> Graph:
    """Cyclic test graphs have cycle scores <= -0.2 per arc, which is enough in tropical but
    not in log (several loops on a node can sum past 1): shift log weights down so that
    every node's out-arcs sum to less than 1."""
    return g.with_weights(g.weights - 3.0) if semiring == "log" else g


cyclic = graphs(max_nodes=3, max_arcs=6, num_labels=2, acyclic=False)


@settings(max_examples=30)
@given(cyclic, cyclic, st.sampled_from(SEMIRINGS))
def test_compose_cyclic_matches_openfst_total(a, b, semiring):
    a, b = convergent(a, semiring), convergent(b, semiring)
    fa, fb = to_fst(a, semiring), to_fst(b, semiring)
    fa.arcsort("olabel"); fb.arcsort("ilabel")
    theirs = pywrapfst.compose(fa, fb)
    got = openfst_total(compose(a, b), semiring)
    want = -float(pywrapfst.shortestdistance(theirs, reverse=True)[theirs.start()]) if theirs.num_states() else NEG_INF
    assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-4) or got == want == NEG_INF


def test_compose_worked_example():
    # a maps 1 2 -> 2 3 (through an output epsilon), b maps 2 3 -> 4 (through an input epsilon).
    a = Graph.from_arcs(4, [0, 1, 2], [1, 2, 3], [1, 2, 0], [0, 2, 3], [0.5, 0.25, 1.0], start=[0], accept=[3])
    b = Graph.from_arcs(3, [0, 1, 1], [1, 1, 2], [2, 0, 3], [4, 5, 0], [-1.0, -0.5, 2.0], start=[0], accept=[2])
    c = a @ b
    # b's epsilon self-loop on node 1 makes 5* outputs: string pairs ((1, 2), (4, 5^k)).
    rel = relation(c, "log", max_arcs=6)
    assert rel[((1, 2), (4,))] == pytest.approx(0.5 + 0.25 + 1.0 - 1.0 + 2.0)
    assert rel[((1, 2), (4, 5))] == pytest.approx(0.5 + 0.25 + 1.0 - 1.0 - 0.5 + 2.0)


@given(transducers, transducers)
def test_compose_sorted_and_unsorted_inputs_agree(a, b):
    want = relation(compose(a, b))
    assert_relations_close(relation(compose(arcsort(a, "olabel"), arcsort(b, "ilabel"))), want)
    assert_relations_close(relation(arcsort(a, "ilabel")), relation(a))


@given(graphs(max_nodes=4, max_arcs=7, num_labels=2, acceptor=True),
       graphs(max_nodes=4, max_arcs=7, num_labels=2, acceptor=True), st.sampled_from(SEMIRINGS))
def test_intersect_relation(a, b, semiring):
    got = intersect(a, b)
    assert got.is_acceptor
    assert_relations_close(relation(got, semiring), compose_relations(relation(a, semiring), relation(b, semiring),
                                                                       semiring))


def test_intersect_rejects_transducers():
    a = gtn_py.string_graph([1, 2])
    t = gtn_py.string_graph([1, 2], [1, 3])
    with pytest.raises(InvalidGraphError, match="arc 1 has ilabel 2 != olabel 3"):
        intersect(a, t)


def test_empty_intersection_has_no_accepting_path():
    a = gtn_py.string_graph([1, 2], weights=torch.tensor([0.5, 0.5], requires_grad=True))
    b = gtn_py.string_graph([1, 3])
    c = intersect(a, b)
    assert c.num_nodes == 0 and relation(c) == {}
    assert c.weights.requires_grad


@settings(max_examples=15)
@given(st.lists(transducers, min_size=3, max_size=3), st.lists(transducers, min_size=3, max_size=3))
def test_compose_batches_pairwise_and_broadcast(gs1, gs2):
    pairwise = compose(Graph.batch(gs1), Graph.batch(gs2))
    assert pairwise.num_graphs == 3
    broadcast = compose(Graph.batch(gs1), gs2[0])
    reverse_broadcast = compose(gs1[0], Graph.batch(gs2))
    for i in range(3):
        assert_relations_close(relation(pairwise[i]), relation(compose(gs1[i], gs2[i])))
        assert_relations_close(relation(broadcast[i]), relation(compose(gs1[i], gs2[0])))
        assert_relations_close(relation(reverse_broadcast[i]), relation(compose(gs1[0], gs2[i])))
    # States of one graph are contiguous, as Graph.batch lays them out.
    ng = pairwise.node_graph
    assert bool((ng[1:] >= ng[:-1]).all())
    with pytest.raises(InvalidGraphError, match="pairwise"):
        compose(Graph.batch(gs1), Graph.batch(gs2[:2]))


def test_compose_gradcheck():
    torch.manual_seed(0)
    a = Graph.from_arcs(3, [0, 0, 1, 1, 2], [1, 2, 2, 1, 0], [1, 2, 0, 1, 2], [0, 1, 2, 1, 0], dtype=torch.float64,
                        start=[0], accept=[2])
    b = Graph.from_arcs(2, [0, 0, 1, 0], [0, 1, 1, 1], [0, 1, 2, 2], [1, 1, 2, 0], dtype=torch.float64,
                        start=[0], accept=[1])

    def score(w1, f1, w2, s2):
        c = compose(a.with_weights(w1, final_weights=f1), b.with_weights(w2, start_weights=s2))
        # A fixed differentiable reduction of every output weight (not a semiring total:
        # the cycles make that infinite); the arc maps decide where gradients go.
        return (c.weights * torch.arange(1.0, c.num_arcs + 1, dtype=torch.float64)).sum() \
            + c.final_weights[c.final_weights > NEG_INF].sum() + c.start_weights[c.start_weights > NEG_INF].sum()

    inputs = (torch.randn(5, dtype=torch.float64, requires_grad=True),
              torch.tensor([NEG_INF, NEG_INF, 0.3], dtype=torch.float64).requires_grad_(),
              torch.randn(4, dtype=torch.float64, requires_grad=True),
              torch.tensor([0.2, NEG_INF], dtype=torch.float64).requires_grad_())
    assert torch.autograd.gradcheck(score, inputs)


def test_compose_errors():
    a = gtn_py.string_graph([1])
    with pytest.raises(DtypeMismatchError):
        compose(a, a.double())
    if torch.cuda.is_available():
        with pytest.raises(DeviceMismatchError):
            compose(a, a.to("cuda"))
    meta = gtn_py.string_graph([1]).to("meta") if hasattr(torch, "device") else None
    if meta is not None:
        with pytest.raises(DeviceMismatchError):
            compose(a, meta)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@settings(max_examples=10)
@given(transducers, transducers)
def test_compose_on_cuda(a, b):
    c = compose(a.to("cuda"), b.to("cuda"))
    assert c.weights.device.type == "cuda"
    assert_relations_close(relation(c.cpu()), relation(compose(a, b)))


def test_empty_composition_scores_minus_inf_with_zero_grads():
    w = torch.tensor([0.5, 0.5], requires_grad=True)
    c = intersect(gtn_py.string_graph([1, 2], weights=w), gtn_py.string_graph([1, 3]))
    score = forward_score(c)
    assert score.item() == NEG_INF
    if score.requires_grad:
        score.backward()
        assert w.grad is None or bool((w.grad == 0).all())


# ---------------------------------------------------------------------- remove_epsilon
def has_no_epsilons(g: Graph) -> bool:
    return not bool(((g.ilabel == 0) & (g.olabel == 0)).any())


@given(transducers, st.sampled_from(SEMIRINGS))
def test_remove_epsilon_preserves_relation(g, semiring):
    out = remove_epsilon(g, semiring)
    assert has_no_epsilons(out)
    assert_relations_close(relation(out, semiring), relation(g, semiring))


@settings(max_examples=30)
@given(graphs(max_nodes=4, max_arcs=7, num_labels=2, acyclic=False), st.sampled_from(SEMIRINGS))
def test_remove_epsilon_cyclic_matches_openfst(g, semiring):
    g = convergent(g, semiring)
    ours = remove_epsilon(g, semiring)
    assert has_no_epsilons(ours)
    theirs = to_fst(g, semiring)
    theirs.rmepsilon()
    # Epsilon-free graphs: their paths of at most 4 arcs stand for the same original paths.
    assert_relations_close(relation(ours, semiring, max_arcs=4), relation(from_fst(theirs), semiring, max_arcs=4))
    assert math.isclose(openfst_total(ours, semiring), openfst_total(g, semiring), rel_tol=1e-4, abs_tol=1e-4)


def test_remove_epsilon_divergent_cycle_raises():
    g = Graph.from_arcs(2, [0, 0, 1], [0, 1, 1], [0, 1, 0], weights=[0.5, 0.0, 0.0], start=[0], accept=[1])
    with pytest.raises(gtn_py.DivergenceError):
        remove_epsilon(g, "tropical")
    with pytest.raises(gtn_py.DivergenceError):
        remove_epsilon(g, "log")


@pytest.mark.parametrize("semiring", SEMIRINGS)
def test_remove_epsilon_gradcheck(semiring):
    # An epsilon chain, a parallel epsilon, and an epsilon self-loop (cyclic closure).
    g = Graph.from_arcs(4, [0, 0, 1, 1, 2, 2, 3], [1, 2, 2, 3, 3, 2, 3], [0, 1, 0, 2, 0, 0, 3],
                        dtype=torch.float64, start=[0], accept=[3])
    torch.manual_seed(1)
    w = (torch.rand(7, dtype=torch.float64) - 1.5).requires_grad_()
    final = torch.tensor([NEG_INF, -0.3, NEG_INF, 0.2], dtype=torch.float64, requires_grad=True)

    def weights_of(w, final):
        out = remove_epsilon(g.with_weights(w, final_weights=final), semiring)
        return out.weights, out.final_weights[out.final_weights > NEG_INF]

    assert torch.autograd.gradcheck(weights_of, (w, final))


# ---------------------------------------------------------------------- determinize
acceptors = graphs(max_nodes=5, max_arcs=8, num_labels=2, acceptor=True)


def is_deterministic(g: Graph) -> bool:
    pairs = list(zip(g.src.tolist(), g.ilabel.tolist()))
    return len(pairs) == len(set(pairs)) and 0 not in g.ilabel.tolist() and len(g.start_nodes) <= 1


@given(acceptors, st.sampled_from(SEMIRINGS))
def test_determinize_preserves_relation(g, semiring):
    out = determinize(g, semiring)
    assert out.is_acceptor and is_deterministic(out)
    assert_relations_close(relation(out, semiring), relation(g, semiring))


@given(graphs(max_nodes=5, max_arcs=8, num_labels=2, acceptor=True, epsilons=False), st.sampled_from(SEMIRINGS))
def test_determinize_matches_openfst(g, semiring):
    f = to_fst(g, semiring)
    f.rmepsilon()  # the super-start's epsilon arcs
    theirs = pywrapfst.determinize(f)
    assert_relations_close(relation(determinize(g, semiring), semiring), relation(from_fst(theirs), semiring))


def test_determinize_batch_matches_each_graph():
    gs = [Graph.from_arcs(3, [0, 0, 1, 1], [1, 2, 2, 2], [1, 1, 2, 2], weights=[0.1, 0.2, 0.3, 0.4],
                          start=[0], accept=[2], dtype=torch.float64),
          gtn_py.string_graph([2, 1], weights=[0.5, -0.5], dtype=torch.float64),
          Graph.from_arcs(2, [0, 0], [1, 1], [3, 3], weights=[-1.0, -2.0], start=[0, 1], accept=[1],
                          dtype=torch.float64)]
    gs.append(Graph.from_arcs(3, [0, 1, 0], [1, 2, 2], [0, 4, 4], weights=[-0.5, 0.25, 1.0], start=[0], accept=[2],
                              dtype=torch.float64))
    out = determinize(Graph.batch(gs), "log")
    no_eps = remove_epsilon(Graph.batch(gs), "log")
    assert out.num_graphs == no_eps.num_graphs == 4
    for i, g in enumerate(gs):
        assert is_deterministic(out[i])
        assert_relations_close(relation(out[i]), relation(g))
        assert_relations_close(relation(no_eps[i]), relation(g))


def test_determinize_errors():
    # a* read as 1 per a along one path and 2 per a along the other: no finite deterministic equivalent
    twins_fail = Graph.from_arcs(3, [0, 0, 1, 2], [1, 2, 1, 2], [1, 1, 1, 1], weights=[0.0, 0.0, -1.0, -2.0],
                                 start=[0], accept=[1, 2])
    with pytest.raises(InvalidGraphError, match="stopped at 500 states: this cyclic graph is most likely not "
                                                "determinizable"):
        determinize(twins_fail, "tropical", max_states=500)
    with pytest.raises(gtn_py.ArgumentValueError, match="max_states is 0"):
        determinize(twins_fail, max_states=0)


def pair_deterministic(g: Graph) -> bool:
    triples = list(zip(g.src.tolist(), g.ilabel.tolist(), g.olabel.tolist()))
    return len(triples) == len(set(triples)) and (0, 0) not in {(i, o) for _, i, o in triples}


@settings(max_examples=60, deadline=None)
@given(graphs(max_nodes=4, max_arcs=7, num_labels=2, acceptor=True, acyclic=False, epsilons=False),
       st.sampled_from(SEMIRINGS))
def test_determinize_cyclic_graphs_or_say_they_cannot_be(g, semiring):
    """A cyclic acceptor is determinized (every string up to 5 labels keeps its total) or refused
    with the not-determinizable error; never a run without end."""
    try:
        out = determinize(g, semiring, max_states=300)
    except InvalidGraphError as error:
        assert "not determinizable" in str(error)
        return
    assert out.is_acceptor and is_deterministic(out)
    assert_relations_close(relation(out, semiring, max_arcs=5), relation(g, semiring, max_arcs=5))


def test_determinize_cyclic_graphs_as_openfst_does():
    """Determinizable cyclic acceptors: the relation and the state and arc counts of OpenFst's."""
    cases = [
        Graph.from_arcs(1, [0], [0], [1], weights=[-0.5], start=[0], accept=[0], dtype=torch.float64),
        # two paths into equal-weight cycles (the twins property holds), then different exits
        Graph.from_arcs(4, [0, 0, 1, 2, 1, 2], [1, 2, 1, 2, 3, 3], [1, 1, 2, 2, 3, 4],
                        weights=[-0.25, -1.0, -0.5, -0.5, -0.1, -0.3], start=[0], accept=[3], dtype=torch.float64),
        Graph.from_arcs(3, [0, 1, 1, 2, 2], [1, 2, 0, 0, 2], [1, 2, 1, 1, 2], weights=[-1, -2, -0.5, -0.25, -3],
                        start=[0], accept=[0, 2], dtype=torch.float64),
    ]
    for g in cases:
        for semiring in SEMIRINGS:
            f = to_fst(g, semiring)
            f.set_start(0)  # the one start node, start weight 0: no super-start state
            f.delete_arcs(g.num_nodes)
            f.connect()
            theirs = pywrapfst.determinize(f)
            ours = determinize(g, semiring)
            assert (ours.num_nodes, ours.num_arcs) == (theirs.num_states(), sum(1 for s in theirs.states()
                                                                                 for _ in theirs.arcs(s)))
            assert_relations_close(relation(ours, semiring, max_arcs=6), relation(from_fst(theirs), semiring,
                                                                                   max_arcs=6))


@settings(max_examples=40, deadline=None)
@given(graphs(max_nodes=5, max_arcs=8, num_labels=2), st.sampled_from(SEMIRINGS))
def test_determinize_transducers_over_label_pairs(g, semiring):
    """Acyclic transducers (epsilons included): deterministic over (input, output) pairs, the
    relation kept, as OpenFst's encode / determinize / decode."""
    out = determinize(g, semiring)
    assert pair_deterministic(out)
    assert_relations_close(relation(out, semiring), relation(g, semiring))


@pytest.mark.parametrize("semiring", SEMIRINGS)
def test_determinize_gradcheck(semiring):
    # Two paths per string through shared prefixes: residuals matter.
    g = Graph.from_arcs(5, [0, 0, 1, 2, 1, 2, 3], [1, 2, 3, 3, 4, 4, 4], [1, 1, 2, 2, 3, 3, 1],
                        dtype=torch.float64, start_weights=[0.0, NEG_INF, -0.5, NEG_INF, NEG_INF],
                        final_weights=[NEG_INF, NEG_INF, NEG_INF, 0.1, 0.0])
    torch.manual_seed(2)
    w = torch.randn(7, dtype=torch.float64, requires_grad=True)
    start = g.start_weights.clone().requires_grad_()

    def weights_of(w, start):
        out = determinize(g.with_weights(w, start_weights=start), semiring)
        finite = lambda t: t[t > NEG_INF]
        return out.weights, finite(out.final_weights), finite(out.start_weights)

    assert torch.autograd.gradcheck(weights_of, (w, start))


@pytest.mark.parametrize("semiring", SEMIRINGS)
def test_determinize_total_gradient_equals_input_gradient(semiring):
    # Determinization keeps each string's total, so the total over all strings and its
    # gradient with respect to the input weights are unchanged.
    g = Graph.from_arcs(4, [0, 0, 1, 2, 1, 2], [1, 2, 3, 3, 3, 3], [1, 1, 2, 2, 3, 3], dtype=torch.float64,
                        start=[0], accept=[3])
    w = torch.tensor([0.3, -0.2, 0.5, 0.1, -1.0, 0.7], dtype=torch.float64, requires_grad=True)
    score = total_score(g.with_weights(w), semiring)
    (want,) = torch.autograd.grad(score, w)
    got_score = total_score(determinize(g.with_weights(w), semiring), semiring)
    (got,) = torch.autograd.grad(got_score, w)
    assert torch.allclose(got_score, score) and torch.allclose(got, want)


def test_intersect_gradcheck_through_forward_score():
    a = Graph.from_arcs(3, [0, 0, 1, 1, 0], [1, 1, 2, 2, 2], [1, 0, 2, 1, 2], dtype=torch.float64,
                        start=[0], accept=[2])
    b = Graph.from_arcs(3, [0, 1, 0, 0], [1, 2, 1, 2], [1, 2, 0, 2], dtype=torch.float64, start=[0], accept=[2])
    torch.manual_seed(3)
    inputs = (torch.randn(5, dtype=torch.float64, requires_grad=True),
              torch.randn(4, dtype=torch.float64, requires_grad=True))
    score = lambda w1, w2: forward_score(intersect(a.with_weights(w1), b.with_weights(w2)))
    assert torch.autograd.gradcheck(score, inputs)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("semiring", SEMIRINGS)
def test_remove_epsilon_and_determinize_on_cuda(semiring):
    g = Graph.from_arcs(5, [0, 0, 1, 2, 1, 2, 0], [1, 2, 3, 3, 4, 4, 4], [1, 1, 2, 2, 3, 3, 0],
                        weights=[0.1, 0.2, 0.3, 0.4, 0.5, -1.0, 0.7], start=[0], accept=[3, 4], dtype=torch.float64)
    for op in (remove_epsilon, determinize):
        out = op(g.to("cuda"), semiring)
        assert out.weights.device.type == "cuda"
        assert_relations_close(relation(out.cpu(), semiring), relation(g, semiring))


def test_determinize_shares_states_with_equal_residuals():
    # Strings "1 3" and "2 3" meet in node 1 with one entry each, so they share a state;
    # the two parallel "1"-arcs merge into one arc carrying their log-sum.
    g = Graph.from_arcs(3, [0, 0, 0, 1], [1, 1, 1, 2], [1, 1, 2, 3], weights=[-1.0, -2.0, 0.5, 0.25],
                        start=[0], accept=[2], dtype=torch.float64)
    out = determinize(g, "log")
    assert (out.num_nodes, out.num_arcs) == (3, 3)
    assert out.weights.tolist() == pytest.approx([math.log(math.exp(-1.0) + math.exp(-2.0)), 0.5, 0.25])


@given(graphs(max_nodes=6, max_arcs=10, num_labels=3), graphs(max_nodes=6, max_arcs=10, num_labels=3),
       st.sampled_from([2**62, 2**62 + 7, 2**63 - 1]), st.booleans())
@settings(max_examples=30)
def test_labels_near_the_int64_limit(g1, g2, top, reverse):
    """Arcs were sorted by ``src * (max label + 1) + label``, which overflows int64 for labels
    near 2**62 (wrong matches, wrong scores) and raised OverflowError near 2**63. Composition
    only compares labels, so renaming them (0, epsilon, kept) leaves the scores as they are."""
    def rename(g: Graph) -> Graph:
        def big(labels: torch.Tensor) -> torch.Tensor:
            return torch.where(labels > 0, top - labels if reverse else top - 3 + labels, labels)
        return g.replace(ilabel=big(g.ilabel), olabel=big(g.olabel))
    for semiring in SEMIRINGS:
        want = total_score(compose(g1, g2), semiring)
        got = total_score(compose(rename(g1), rename(g2)), semiring)
        assert torch.allclose(got, want, atol=1e-9), (semiring, got, want)
