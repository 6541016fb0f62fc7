"""minimize: equivalence and determinism on random acceptors, minimality against OpenFst
(pywrapfst), idempotence, worked examples, gradients, batches, dtypes and errors."""

from __future__ import annotations

import pytest
import pywrapfst
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from oracle import NEG_INF, assert_relations_close, relation
from strategies import graphs
from test_compose import from_fst, is_deterministic, to_fst

import gtn_py
from gtn_py import Graph, InvalidGraphError
from gtn_py.ops.compose import MINIMIZE_DELTA, determinize, minimize
from gtn_py.ops.shortest import forward_score, total_score, viterbi_score
from gtn_py.ops.structure import equivalent, union

SEMIRINGS = ["log", "tropical"]


@st.composite
def deterministic_acceptors(draw, semiring: str, dyadic: bool = False) -> Graph:
    """A random acyclic acceptor, determinized in ``semiring``. ``dyadic`` rounds the weights
    to quarters, which OpenFst's float32 arithmetic adds up exactly."""
    g = draw(graphs(max_nodes=6, max_arcs=10, num_labels=2, acceptor=True, epsilons=False))
    if dyadic:
        quarters = lambda t: torch.round(t * 4) / 4  # noqa: E731 (-inf stays -inf)
        g = g.with_weights(quarters(g.weights), quarters(g.final_weights), quarters(g.start_weights))
    return determinize(g, semiring)


@st.composite
def cyclic_deterministic_acceptors(draw, semiring: str) -> Graph:
    """A random cyclic acceptor (weights in quarters), determinized in ``semiring``; drawn
    again when it has no finite deterministic equivalent."""
    g = draw(graphs(max_nodes=5, max_arcs=9, num_labels=2, acceptor=True, epsilons=False, acyclic=False))
    quarters = lambda t: torch.round(t * 4) / 4  # noqa: E731 (-inf stays -inf)
    g = g.with_weights(quarters(g.weights), quarters(g.final_weights), quarters(g.start_weights))
    try:
        return determinize(g, semiring, max_states=200)
    except InvalidGraphError:
        assume(False)
        raise


@st.composite
def tries(draw, semiring: str = "tropical") -> Graph:
    """A set of random strings whose arcs weigh 0 or -1, determinized in ``semiring``: many
    states with equal suffixes (random acceptors have few)."""
    strings = draw(st.lists(st.lists(st.integers(1, 2), min_size=0, max_size=4), min_size=1, max_size=6))
    parts = [gtn_py.string_graph(s, weights=[draw(st.sampled_from([0.0, -1.0])) for _ in s], dtype=torch.float64)
             for s in strings]
    return determinize(union(parts), semiring)


def words(*strings: str, weights: dict[str, list[float]] | None = None) -> Graph:
    """The trie (determinized union) of strings of letters a=1, b=2, ...; arcs weigh 0 unless
    ``weights`` gives a string's arc weights."""
    weights = weights or {}
    parts = [gtn_py.string_graph([ord(c) - ord("a") + 1 for c in s], weights=weights.get(s),
                                 dtype=torch.float64) for s in strings]
    return determinize(union(parts), "tropical")


# ---------------------------------------------------------------------- equivalence and minimality
@given(st.data(), st.sampled_from(SEMIRINGS))
def test_minimize_is_deterministic_and_equivalent(data, semiring):
    g = data.draw(deterministic_acceptors(semiring))
    out = minimize(g, semiring)
    assert out.is_acceptor and is_deterministic(out)
    assert out.num_nodes <= g.num_nodes and out.num_arcs <= g.num_arcs
    assert equivalent(out, g, semiring)
    assert_relations_close(relation(out, semiring), relation(g, semiring))
    # Topological node order: every arc goes forward.
    assert bool((out.src < out.dst).all())


@given(st.data(), st.sampled_from(SEMIRINGS))
def test_minimize_tries_is_equivalent(data, semiring):
    g = data.draw(tries(semiring))
    out = minimize(g, semiring)
    assert is_deterministic(out) and equivalent(out, g, semiring)


def openfst_minimized(g: Graph, semiring: str):
    f = to_fst(g, semiring)
    f.rmepsilon()  # the super-start's epsilon arc: OpenFst has one start state without weight
    return f.minimize(delta=MINIMIZE_DELTA)


def openfst_size(f) -> tuple[int, int]:
    return f.num_states(), sum(f.num_arcs(s) for s in f.states())


@settings(max_examples=40, deadline=None)
@given(graphs(max_nodes=5, max_arcs=8, num_labels=2, acyclic=False), st.sampled_from(SEMIRINGS))
def test_minimize_transducers_over_label_pairs(g, semiring):
    """Determinized then minimized transducers (over label pairs, cycles and epsilons
    included): no two arcs with one pair out of a node, no larger, the relation kept."""
    try:
        det = determinize(g, semiring, max_states=200)
        out = minimize(det, semiring)
    except (InvalidGraphError, gtn_py.DivergenceError):  # not determinizable; divergent log sums
        assume(False)
        raise
    pairs = list(zip(out.src.tolist(), out.ilabel.tolist(), out.olabel.tolist()))
    assert len(pairs) == len(set(pairs)) and out.num_nodes <= det.num_nodes
    assert_relations_close(relation(out, semiring, max_arcs=5), relation(det, semiring, max_arcs=5))


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from(SEMIRINGS))
def test_minimize_cyclic_acceptors(data, semiring):
    """Moore's refinement on cyclic deterministic acceptors: deterministic, no larger, every
    string up to 5 labels keeps its score; in the tropical semiring OpenFst's state and arc counts."""
    g = data.draw(cyclic_deterministic_acceptors(semiring))
    assume(g.num_nodes > 0)
    try:
        out = minimize(g, semiring)
    except gtn_py.DivergenceError:  # pushing needs convergent sums over the cycles
        assume(False)
        raise
    assert out.is_acceptor and is_deterministic(out)
    assert out.num_nodes <= g.num_nodes and out.num_arcs <= g.num_arcs
    assert_relations_close(relation(out, semiring, max_arcs=5), relation(g, semiring, max_arcs=5))
    if semiring == "tropical":
        # OpenFst without the super-start state and the start weight. Its pushing leaves the total
        # weight on the start state (on its arcs, or on a new start state's epsilon arc when a
        # cycle returns to it), so its start state merges with no other; ours is a start weight:
        # at most the start state fewer, never more.
        f = to_fst(g, semiring)
        f.set_start(int(g.start_nodes[0]))
        f.delete_arcs(g.num_nodes)
        f.connect()
        theirs = f.minimize(delta=MINIMIZE_DELTA)
        states, arcs = openfst_size(theirs)
        start = theirs.start()
        only = list(theirs.arcs(start))
        if len(only) == 1 and only[0].ilabel == 0 and theirs.final(start) == pywrapfst.Weight.zero("tropical"):
            states, arcs = states - 1, arcs - 1
        assert states - 1 <= out.num_nodes <= states and out.num_arcs <= arcs


@given(st.data(), st.sampled_from(SEMIRINGS))
def test_minimize_matches_openfst(data, semiring):
    g = data.draw(deterministic_acceptors(semiring, dyadic=True))
    assume(g.num_nodes > 0)
    ours = minimize(g, semiring)
    theirs = openfst_minimized(g, semiring)
    assert (ours.num_nodes, ours.num_arcs) == openfst_size(theirs)
    # OpenFst leaves its weights quantized to delta (ours keep their exact pushed values).
    assert_relations_close(relation(ours, semiring), relation(from_fst(theirs), semiring), tol=10 * MINIMIZE_DELTA)


@given(st.data(), st.sampled_from(SEMIRINGS))
def test_minimize_tries_matches_openfst(data, semiring):
    g = data.draw(tries(semiring))
    ours = minimize(g, semiring)
    theirs = openfst_minimized(g, semiring)
    assert (ours.num_nodes, ours.num_arcs) == openfst_size(theirs)


@given(st.data(), st.sampled_from(SEMIRINGS))
def test_minimize_is_idempotent(data, semiring):
    once = minimize(data.draw(deterministic_acceptors(semiring)), semiring)
    twice = minimize(once, semiring)
    assert (twice.num_nodes, twice.num_arcs) == (once.num_nodes, once.num_arcs)


# ---------------------------------------------------------------------- worked examples
def test_shared_suffix_merges():
    g = words("ab", "cb")
    assert g.num_nodes == 5  # the trie: start, after "a", after "c", two leaves
    out = minimize(g)
    assert (out.num_nodes, out.num_arcs) == (3, 3)
    assert equivalent(out, g, "tropical")


def test_pushing_enables_a_merge():
    # "ab" and "cb" weigh -1 each, but on different arcs: the two middle states differ
    # until pushing moves the -1 of "c b" onto the "c" arc.
    g = words("ab", "cb", weights={"ab": [-1.0, 0.0], "cb": [0.0, -1.0]})
    out = minimize(g)
    assert (out.num_nodes, out.num_arcs) == (3, 3)
    assert equivalent(out, g, "tropical")
    # The total -1 sits on the start state, and every arc weighs 0.
    assert out.weights.tolist() == [0.0, 0.0, 0.0]
    assert out.start_weights.tolist()[0] == -1.0


def test_unequal_weights_prevent_a_merge():
    # Different totals for "ab" and "cb" are fine (pushed into the first arcs), but suffix
    # sets with different relative weights cannot merge: "a" is followed by b/d at 0/-1,
    # "c" by b/d at -1/0.
    g = words("ab", "ad", "cb", "cd", weights={"ad": [0.0, -1.0], "cb": [0.0, -1.0]})
    out = minimize(g)
    assert out.num_nodes == 4
    assert equivalent(out, g, "tropical")
    same = words("ab", "ad", "cb", "cd", weights={"ad": [0.0, -1.0], "cd": [-2.0, -1.0], "cb": [-2.0, 0.0]})
    assert minimize(same).num_nodes == 3


def test_delta_decides_near_equal_weights():
    # After "a" the "d" arc weighs 1 less than the "b" arc; after "c", 1 - 1e-6 less.
    g = words("ab", "ad", "cb", "cd", weights={"ad": [0.0, -1.0], "cd": [0.0, -1.0 + 1e-6]})
    assert minimize(g).num_nodes == 3
    assert minimize(g, delta=1e-8).num_nodes == 4
    with pytest.raises(ValueError, match="delta"):
        minimize(g, delta=0.0)


def test_empty_graph_gives_empty_graph():
    g = Graph.from_arcs(2, [0], [1], [1], start=[0], dtype=torch.float64)  # no accept node
    g.weights.requires_grad_()
    out = minimize(g)
    assert (out.num_nodes, out.num_arcs) == (0, 0)
    score = forward_score(out)
    score.backward()
    assert score.item() == NEG_INF and g.weights.grad is not None and g.weights.grad.tolist() == [0.0]


def test_impossible_arcs_and_useless_nodes_are_removed():
    g = Graph.from_arcs(4, [0, 0, 0], [1, 2, 3], [1, 2, 3], weights=[0.0, NEG_INF, 0.0],
                        start=[0], accept=[1, 2], dtype=torch.float64)
    out = minimize(g)
    assert (out.num_nodes, out.num_arcs) == (2, 1)
    assert equivalent(out, g, "tropical")


# ---------------------------------------------------------------------- gradients
def gradcheck_graph() -> Graph:
    # The trie of "ab", "cb", "ad": the "b" leaves merge with each other and with "d"'s.
    return words("ab", "cb", "ad")


@pytest.mark.parametrize("semiring, score", [("log", forward_score), ("tropical", viterbi_score)])
def test_minimize_gradcheck(semiring, score):
    g = gradcheck_graph()
    torch.manual_seed(0)
    w = torch.randn(g.num_arcs, dtype=torch.float64, requires_grad=True)
    final = torch.where(g.final_weights > NEG_INF, torch.randn(g.num_nodes, dtype=torch.float64),
                        g.final_weights).requires_grad_()
    start = g.start_weights.clone().requires_grad_()

    def scalar(w, final, start):
        return score(minimize(g.with_weights(w, final, start), semiring))

    assert torch.autograd.gradcheck(scalar, (w, final, start))

    def weights_of(w, final, start):
        out = minimize(g.with_weights(w, final, start), semiring)
        finite = lambda t: t[t > NEG_INF]  # noqa: E731
        return out.weights, finite(out.final_weights), finite(out.start_weights)

    assert torch.autograd.gradcheck(weights_of, (w, final, start))


@pytest.mark.parametrize("semiring", SEMIRINGS)
def test_total_and_its_gradient_are_unchanged(semiring):
    # Pushing makes every state's suffix total 0 identically, so the minimized graph's total
    # is the same function of g's weights even where merged states had different weights.
    g = words("ab", "cb", "ad", "cd", "e")
    torch.manual_seed(1)
    w = torch.randn(g.num_arcs, dtype=torch.float64, requires_grad=True)
    want = total_score(g.with_weights(w), semiring)
    (want_grad,) = torch.autograd.grad(want, w)
    out = minimize(g.with_weights(w), semiring)
    got = total_score(out, semiring)
    (got_grad,) = torch.autograd.grad(got, w)
    assert torch.allclose(got, want) and torch.allclose(got_grad, want_grad)


# ---------------------------------------------------------------------- batches and dtypes
def test_batch_equals_batch_of_minimized_graphs():
    gs = [words("ab", "cb"), words("ab", "cb", weights={"ab": [-1.0, 0.0]}), words("a"),
          Graph.from_arcs(2, [0], [1], [1], start=[0], dtype=torch.float64),  # empty after trimming
          words("abc", "bbc", "ac")]
    out = minimize(Graph.batch(gs))
    assert out.is_batch and out.num_graphs == len(gs)
    # Each graph's nodes stay together, in batch order.
    assert bool((out.node_graph[1:] >= out.node_graph[:-1]).all())
    alone = Graph.batch([minimize(g) for g in gs])
    assert gtn_py.equal(out, alone)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("semiring", SEMIRINGS)
def test_dtypes(dtype, semiring):
    g = words("ab", "cb", "ad", "cd", weights={"ab": [-0.3, 0.1], "ad": [-0.3, -0.7], "cb": [0.2, 0.1],
                                               "cd": [0.2, -0.7]}).to(dtype=dtype)
    out = minimize(g, semiring)
    assert out.dtype == dtype and out.num_nodes == 3
    assert equivalent(out, g, semiring, tol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("semiring", SEMIRINGS)
def test_minimize_on_cuda(semiring):
    g = words("ab", "cb", "ad", weights={"ab": [0.5, -0.25], "cb": [0.1, -0.25], "ad": [0.5, 0.3]})
    w = g.weights.to("cuda").requires_grad_()
    out = minimize(g.to("cuda").with_weights(w), semiring)
    assert out.weights.device.type == "cuda"
    on_cpu = minimize(g, semiring)
    assert (out.num_nodes, out.num_arcs) == (on_cpu.num_nodes, on_cpu.num_arcs)
    assert equivalent(out.cpu(), g, semiring)
    total_score(out, semiring).backward()
    assert w.grad is not None and w.grad.device.type == "cuda"


# ---------------------------------------------------------------------- errors
def test_errors():
    nondeterministic = Graph.from_arcs(3, [0, 0], [1, 2], [1, 1], start=[0], accept=[1, 2])
    with pytest.raises(InvalidGraphError, match=r"node 0 .*labelled 1.*determinize first"):
        minimize(nondeterministic)
    two_starts = Graph.from_arcs(2, [0], [1], [1], start=[0, 1], accept=[1])
    with pytest.raises(InvalidGraphError, match=r"nodes \[0, 1\].*determinize first"):
        minimize(two_starts)
    epsilon = Graph.from_arcs(2, [0], [1], [0], start=[0], accept=[1])
    with pytest.raises(InvalidGraphError, match="epsilon.*determinize first"):
        minimize(epsilon)
    # A cycle on no successful path is trimmed away first.
    useless_loop = Graph.from_arcs(3, [0, 0, 2], [1, 2, 2], [1, 2, 3], start=[0], accept=[1])
    assert minimize(useless_loop).num_nodes == 2
