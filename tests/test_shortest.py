import math
import time
from collections import Counter

import pytest
import pywrapfst as fst
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import logsumexp, node_distances, paths, paths_with_ends, relation, strings_of, total
from strategies import graphs

import gtn_py.ops.distance as distance
from gtn_py import (
    TROPICAL,
    ArgumentValueError,
    DivergenceError,
    Graph,
    LogSemiring,
    equal,
    gather,
    is_acyclic,
    topological_order,
)
from gtn_py.ops.shortest import (
    arc_posteriors,
    forward_score,
    n_best,
    prune,
    sample,
    shortest_distance,
    total_score,
    viterbi_path,
    viterbi_score,
)
from gtn_py.ops.traverse import node_depths

NEG_INF = float("-inf")
SEMIRINGS = ["log", "tropical"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def close(a: float, b: float, tol: float = 1e-6) -> bool:
    return (a == b == NEG_INF) or math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def reversed_graph(g: Graph) -> Graph:
    return Graph.from_arcs(g.num_nodes, g.dst, g.src, g.ilabel, g.olabel, g.weights,
                           start_weights=g.final_weights, final_weights=g.start_weights)


def to_openfst(g: Graph, arc_type: str) -> fst.VectorFst:
    """The graph as an OpenFst machine (costs = -scores), with one extra start state
    (the last) that enters each start node by an epsilon arc carrying its start weight."""
    f = fst.VectorFst(arc_type=arc_type)
    weight_type = f.weight_type()
    for _ in range(g.num_nodes + 1):
        f.add_state()
    f.set_start(g.num_nodes)
    one = fst.Weight.one(weight_type)
    for node, (s, e) in enumerate(zip(g.start_weights.tolist(), g.final_weights.tolist())):
        if s > NEG_INF:
            f.add_arc(g.num_nodes, fst.Arc(0, 0, fst.Weight(weight_type, -s), node))
        if e > NEG_INF:
            f.set_final(node, fst.Weight(weight_type, -e))
    for a in g.arcs():
        f.add_arc(a.src, fst.Arc(a.ilabel, a.olabel, fst.Weight(weight_type, -a.weight) if a.weight else one, a.dst))
    return f


def openfst_distances(f: fst.Fst, reverse: bool = False) -> list:
    """shortestdistance as scores for every state (OpenFst leaves out trailing unreached ones)."""
    got = [NEG_INF if str(w) == "Infinity" else -float(str(w))
           for w in fst.shortestdistance(f, delta=1e-12, reverse=reverse)]
    return got + [NEG_INF] * (f.num_states() - len(got))


def path_scores_of(f: fst.Fst) -> list:
    """Scores of the paths of an (acyclic) OpenFst machine, e.g. shortestpath's output."""
    out = []

    def walk(state, cost):
        final = f.final(state)
        if str(final) != "Infinity":
            out.append(-(cost + float(str(final))))
        for arc in f.arcs(state):
            walk(arc.nextstate, cost + float(str(arc.weight)))

    if f.start() >= 0:  # an empty result has no start state
        walk(f.start(), 0.0)
    return sorted(out, reverse=True)


# ---------------------------------------------------------------------- distances and totals
@given(graphs(), st.sampled_from(SEMIRINGS))
def test_acyclic_totals_and_distances_match_oracle(g, semiring):
    assert close(total_score(g, semiring).item(), total(g, semiring))
    want = node_distances(g, semiring)
    got = shortest_distance(g, semiring).tolist()
    assert all(close(a, b) for a, b in zip(got, want)), (got, want)
    want_reverse = node_distances(reversed_graph(g), semiring)
    got_reverse = shortest_distance(g, semiring, reverse=True).tolist()
    assert all(close(a, b) for a, b in zip(got_reverse, want_reverse)), (got_reverse, want_reverse)


def substochastic(g: Graph) -> bool:
    """Every node's out-arcs have total probability below 0.95, so log sums over cycles converge."""
    mass = torch.zeros(g.num_nodes, dtype=torch.float64).index_add(0, g.src, g.weights.exp())
    return bool((mass < 0.95).all())


cyclic_graphs = graphs(acyclic=False, max_nodes=4, max_arcs=7).filter(substochastic)


@given(cyclic_graphs, st.sampled_from(SEMIRINGS))
def test_cyclic_distances_match_openfst(g, semiring):
    f = to_openfst(g, "log" if semiring == "log" else "standard")
    forward, backward = openfst_distances(f), openfst_distances(f, reverse=True)
    got = shortest_distance(g, semiring).tolist()
    assert all(close(a, b, 1e-5) for a, b in zip(got, forward[:-1])), (got, forward)
    got_reverse = shortest_distance(g, semiring, reverse=True).tolist()
    assert all(close(a, b, 1e-5) for a, b in zip(got_reverse, backward[:-1])), (got_reverse, backward)
    assert close(total_score(g, semiring).item(), backward[-1], 1e-5)


@settings(max_examples=30)
@given(graphs(acyclic=False, max_nodes=3, max_arcs=5).filter(substochastic), st.sampled_from(SEMIRINGS))
def test_cyclic_totals_match_truncated_enumeration(g, semiring):
    # the oracle sums paths of at most 8 arcs: exact for tropical (the best path has no
    # cycle, cycles cost >= 0.2), a lower bound of the total for log
    want = total(g, semiring, max_arcs=8)
    got = total_score(g, semiring).item()
    if semiring == "tropical":
        assert close(got, want)
    else:
        assert got >= want - 1e-9  # exactness: see the comparison with OpenFst above


@given(graphs(max_nodes=5, max_arcs=8))
def test_acyclic_totals_match_openfst(g):
    for arc_type, semiring in (("log", "log"), ("standard", "tropical")):
        f = to_openfst(g, arc_type)
        want = openfst_distances(f, reverse=True)[-1]
        assert close(total_score(g, semiring).item(), want, 1e-5)


@given(graphs(max_nodes=6, max_arcs=10), st.sampled_from(SEMIRINGS))
def test_level_sweep_for_cuda_matches_kernel(g, semiring):
    from gtn_py.semiring import get_semiring
    sr = get_semiring(semiring)
    depth = node_depths(g.num_nodes, g.src.numpy(), g.dst.numpy())
    levels, level_pred = distance._level_sweep(g.src, g.dst, g.weights, g.start_weights, sr, depth)
    kernel, kernel_pred = distance.node_distances(g, sr, reverse=False)
    assert torch.allclose(levels, kernel, atol=1e-9)
    if semiring == "tropical":  # both best-arc choices reach the same score
        via = gather(kernel[g.src] + g.weights, level_pred, NEG_INF)
        reaches = torch.where(level_pred >= 0, via, g.start_weights)
        assert torch.allclose(reaches, kernel, atol=1e-9)


@given(st.lists(graphs(max_nodes=4, max_arcs=6), min_size=1, max_size=4), st.sampled_from(SEMIRINGS))
def test_batch_matches_each_graph(gs, semiring):
    batch = Graph.batch(gs)
    totals = total_score(gs, semiring)
    assert totals.shape == (len(gs),)
    assert torch.allclose(totals, total_score(batch, semiring))
    for g, t in zip(gs, totals):
        assert close(t.item(), total_score(g, semiring).item(), 1e-9)
    distances = torch.cat([shortest_distance(g, semiring, reverse=True) for g in gs])
    assert torch.allclose(shortest_distance(batch, semiring, reverse=True), distances)
    assert torch.allclose(arc_posteriors(batch), torch.cat([arc_posteriors(g) for g in gs]))
    paths = viterbi_path(batch)
    assert paths.num_graphs == len(gs)
    assert torch.allclose(viterbi_score(paths), viterbi_score(gs))
    for g, best in zip(gs, n_best(batch, 2)):
        assert viterbi_score(best).tolist() == [viterbi_score(p).item() for p in n_best(g, 2)]


def test_float32_matches_float64():
    torch.manual_seed(0)
    g = random_dag(300, 1500).double()
    for semiring in SEMIRINGS:
        assert torch.allclose(total_score(g.to(dtype=torch.float32), semiring).double(), total_score(g, semiring),
                              rtol=1e-5)


# ---------------------------------------------------------------------- gradients
def path_posteriors(g: Graph, beta: float = 1.0) -> list:
    scored = list(paths(g, 12))
    z = LogSemiring(beta).plus(torch.tensor([s for _, s in scored], dtype=torch.float64), 0).item() \
        if scored else NEG_INF
    post = [0.0] * g.num_arcs
    for arcs, s in scored:
        for a in arcs:
            post[a] += math.exp(beta * (s - z))
    return post


@given(graphs())
def test_arc_posteriors_match_enumeration_and_gradient(g):
    got = arc_posteriors(g)
    assert torch.allclose(got, torch.tensor(path_posteriors(g), dtype=torch.float64), atol=1e-9)
    w = g.weights.detach().clone().requires_grad_()
    forward_score(g.with_weights(w)).backward()
    assert torch.allclose(w.grad, got, atol=1e-12)


def weights_of(g: Graph):
    return (g.weights.detach().clone().requires_grad_(), g.start_weights.detach().clone().requires_grad_(),
            g.final_weights.detach().clone().requires_grad_())


def with_node_weights(g: Graph, w, s, f) -> Graph:
    return g.with_weights(w, start_weights=s, final_weights=f)


def finite_gradcheck(fn, g: Graph) -> None:
    """gradcheck w.r.t. arc weights and the finite start and final weights."""
    w, s, f = weights_of(g)
    s_mask, f_mask = s > NEG_INF, f > NEG_INF

    def wrapped(w, s_finite, f_finite):
        start = torch.full_like(s, NEG_INF).masked_scatter(s_mask, s_finite)
        final = torch.full_like(f, NEG_INF).masked_scatter(f_mask, f_finite)
        return fn(with_node_weights(g, w, start, final))

    torch.autograd.gradcheck(wrapped, (w, s[s_mask].detach().requires_grad_(), f[f_mask].detach().requires_grad_()))


@settings(max_examples=25)
@given(graphs().filter(lambda g: total(g) > NEG_INF), st.sampled_from([1.0, 0.5, 3.0]))
def test_gradcheck_log_totals(g, beta):
    finite_gradcheck(lambda h: total_score(h, LogSemiring(beta)), g)
    finite_gradcheck(forward_score, g)


def distinct_scores(g: Graph) -> bool:
    """Some path, and no two paths with nearly the same score (so the k best are unique)."""
    scores = sorted((s for _, s in paths(g)), reverse=True)
    return len(scores) > 0 and all(a - b > 1e-3 for a, b in zip(scores, scores[1:]))


@settings(max_examples=15)
@given(graphs(max_nodes=4, max_arcs=6).filter(distinct_scores))
def test_gradcheck_best_paths(g):
    finite_gradcheck(viterbi_score, g)
    finite_gradcheck(lambda h: forward_score(viterbi_path(h)), g)
    finite_gradcheck(lambda h: torch.stack([forward_score(p) for p in n_best(h, 3)]), g)


def test_log_beta_gradient_is_tempered_posterior():
    g = Graph.from_arcs(3, [0, 0, 1, 0], [1, 1, 2, 2], [1, 2, 3, 4], weights=[0.3, -0.5, 0.1, -1.0],
                        start=[0], accept=[2], dtype=torch.float64)
    for beta in (0.5, 2.0):
        w = g.weights.clone().requires_grad_()
        total_score(g.with_weights(w), LogSemiring(beta)).backward()
        assert torch.allclose(w.grad, torch.tensor(path_posteriors(g, beta), dtype=torch.float64))


@pytest.mark.parametrize("semiring", SEMIRINGS)
def test_no_successful_path_gives_minus_inf_and_zero_gradients(semiring):
    # node 2 is an accept node nobody reaches; the second graph has no start node at all
    unreachable = Graph.from_arcs(3, [0, 1], [1, 0], [1, 2], weights=[-0.5, -0.5], start=[0], accept=[2],
                                  dtype=torch.float64)
    no_start = Graph.from_arcs(2, [0], [1], [1], weights=[0.5], accept=[1], dtype=torch.float64)
    for g in (unreachable, no_start):
        w, s, f = weights_of(g)
        score = total_score(with_node_weights(g, w, s, f), semiring)
        assert score.item() == NEG_INF
        score.backward()
        for grad in (w.grad, s.grad, f.grad):
            assert not torch.isnan(grad).any() and not grad.any()
        assert torch.equal(arc_posteriors(g), torch.zeros(g.num_arcs, dtype=torch.float64))
        assert viterbi_path(g).num_nodes == 0 and n_best(g, 3) == []
        assert all(p.num_nodes == 0 for p in sample(g, 3))


# ---------------------------------------------------------------------- differentiable node distances
DISTANCE_SEMIRINGS = [LogSemiring(), LogSemiring(0.5), LogSemiring(3.0), TROPICAL]


@st.composite
def distance_problems(draw):
    """An acyclic graph's arcs with continuous random weights (no ties between path scores),
    a fifth of them -inf, and continuous random ``init`` at its start nodes (-inf elsewhere),
    so some nodes are unreachable: ``(graph, weights, init)``, float64."""
    g = draw(graphs(max_nodes=6, max_arcs=10))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))

    def uniform(n: int) -> torch.Tensor:
        return torch.rand(n, generator=generator, dtype=torch.float64) * 3 - 2

    weights = uniform(g.num_arcs)
    weights[torch.rand(g.num_arcs, generator=generator) < 0.2] = NEG_INF
    init = torch.where(g.start_weights > NEG_INF, uniform(g.num_nodes), torch.full_like(g.start_weights, NEG_INF))
    return g, weights, init


def path_distances(g: Graph, weights, init, sr):
    return distance.path_distances(g.num_nodes, g.src, g.dst, weights, init, sr)


@given(distance_problems(), st.sampled_from(DISTANCE_SEMIRINGS))
def test_acyclic_path_distances_pass_gradcheck(problem, sr):
    g, weights, init = problem
    w_finite, i_finite = weights > NEG_INF, init > NEG_INF

    def finite_distances(w, i):
        # -inf inputs and outputs stay fixed (finite differences there are NaN); their
        # gradients are checked against the level sweep below
        full_w = torch.full_like(weights, NEG_INF).masked_scatter(w_finite, w)
        full_i = torch.full_like(init, NEG_INF).masked_scatter(i_finite, i)
        dist = path_distances(g, full_w, full_i, sr)
        return torch.where(dist > NEG_INF, dist, torch.zeros_like(dist))

    torch.autograd.gradcheck(finite_distances, (weights[w_finite].requires_grad_(), init[i_finite].requires_grad_()))


@given(distance_problems(), st.sampled_from(DISTANCE_SEMIRINGS), st.integers(0, 2**31 - 1))
def test_acyclic_path_distances_match_level_sweep_and_oracle(problem, sr, seed):
    g, weights, init = problem
    w, i = weights.clone().requires_grad_(), init.clone().requires_grad_()
    dist = path_distances(g, w, i, sr)
    assert type(dist.grad_fn).__name__ == "_AcyclicDistancesBackward"  # one node, not one per level
    depth = node_depths(g.num_nodes, g.src.numpy(), g.dst.numpy())
    old = distance._level_sweep(g.src, g.dst, w, i, sr, depth)[0]
    assert torch.allclose(dist, old, rtol=1e-12, atol=1e-12)
    assert torch.equal(dist == NEG_INF, old == NEG_INF)
    if sr.beta in (1.0, math.inf):
        want = node_distances(g.with_weights(weights, start_weights=init), "log" if sr.beta == 1.0 else "tropical")
        assert all(close(a, b, 1e-9) for a, b in zip(dist.tolist(), want)), (dist, want)

    reachable = dist > NEG_INF
    grad = torch.rand(g.num_nodes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 0.5
    new_w, new_i = torch.autograd.grad(dist, (w, i), grad)
    # the level sweep gives NaN (log) or shares ties of -inf (tropical) at unreachable nodes:
    # compare where it is meaningful, with no gradient entering unreachable nodes
    old_w, old_i = (torch.zeros_like(x) if d is None else d for x, d in zip((w, i), torch.autograd.grad(
        old, (w, i), torch.where(reachable, grad, torch.zeros_like(grad)), allow_unused=True)))
    into_reachable = reachable[g.dst]
    assert torch.allclose(new_w[into_reachable], old_w[into_reachable], rtol=1e-12, atol=1e-12)
    assert torch.allclose(new_i[reachable], old_i[reachable], rtol=1e-12, atol=1e-12)
    # gradient entering an unreachable node goes nowhere; -inf arcs get none
    assert not torch.isnan(new_w).any() and not torch.isnan(new_i).any()
    assert not new_w[~into_reachable].any() and not new_i[~reachable].any()
    assert not new_w[weights == NEG_INF].any()


@given(graphs(max_nodes=8, max_arcs=14), st.integers(0, 2**31 - 1))
def test_level_adjoint_for_cuda_matches_kernel(g, seed):
    generator = torch.Generator().manual_seed(seed)
    coefficient = torch.rand(g.num_arcs, generator=generator, dtype=torch.float64)
    grad = torch.rand(g.num_nodes, generator=generator, dtype=torch.float64) - 0.5
    depth = node_depths(g.num_nodes, g.src.numpy(), g.dst.numpy())
    levels = distance._level_adjoint(g.src, g.dst, coefficient, grad, depth)
    kernel = distance._adjoint_sweep(topological_order(g).numpy(), g.src.numpy(), g.dst.numpy(), coefficient.numpy(),
                                     grad.numpy())
    assert torch.allclose(levels, torch.from_numpy(kernel), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sr", DISTANCE_SEMIRINGS)
def test_acyclic_path_distances_float32_and_cycles(sr):
    torch.manual_seed(0)
    g = random_dag(300, 1500).double()
    init = torch.where(g.start_weights > NEG_INF, torch.zeros_like(g.start_weights), g.start_weights)
    grads = []
    for dtype in (torch.float64, torch.float32):
        w, i = (t.detach().to(dtype, copy=True).requires_grad_() for t in (g.weights, init))
        dist = path_distances(g, w, i, sr)
        dist[dist > NEG_INF].sum().backward()
        assert dist.dtype == w.grad.dtype == i.grad.dtype == dtype
        grads.append((dist.double(), w.grad.double(), i.grad.double()))
    for wide, narrow in zip(*grads):
        assert torch.allclose(narrow, wide, rtol=1e-4, atol=1e-5)
    # cyclic input keeps the relaxation recorded by autograd
    cyclic = Graph.from_arcs(3, [0, 1, 1], [1, 1, 2], [1, 2, 3], weights=[0.0, -1.0, -0.5], start=[0], accept=[2],
                             dtype=torch.float64)
    w = cyclic.weights.clone().requires_grad_()
    dist = path_distances(cyclic, w, cyclic.start_weights, sr)
    assert type(dist.grad_fn).__name__ != "_AcyclicDistancesBackward"
    assert torch.allclose(dist, shortest_distance(cyclic, sr))


# ---------------------------------------------------------------------- best paths
@given(graphs(acyclic=False, max_nodes=3, max_arcs=5))
def test_viterbi_path_is_a_best_path(g):
    best = total(g, "tropical", max_arcs=8)
    path = viterbi_path(g)
    if best == NEG_INF:
        assert path.num_nodes == 0
        return
    assert close(viterbi_score(path).item(), best)
    assert close(viterbi_score(g).item(), best)
    strings = (tuple(x for x in path.ilabel.tolist() if x), tuple(x for x in path.olabel.tolist() if x))
    best_strings = {strings_of(g, p) for p, s in paths(g, 8) if close(s, best)}
    assert strings in best_strings


def labelled_scores(path_graphs) -> list:
    return sorted(((round(viterbi_score(p).item(), 6), tuple(p.ilabel.tolist()), tuple(p.olabel.tolist()))
                   for p in path_graphs), reverse=True)


@given(st.booleans().flatmap(lambda cyclic: graphs(acyclic=not cyclic, max_nodes=4 - cyclic, max_arcs=6 - cyclic)),
       st.integers(1, 6))
def test_n_best_matches_enumeration_and_openfst(g, k):
    got = n_best(g, k)
    scores = [viterbi_score(p).item() for p in got]
    # Best first; ties may differ in the last bit, since a path graph sums its weights in another
    # order than n_best did (found by hypothesis: -4.126 before -4.1259999999999994).
    assert all(a >= b or close(a, b, 1e-9) for a, b in zip(scores, scores[1:]))
    # OpenFst is exact on cyclic graphs too
    theirs = path_scores_of(fst.shortestpath(to_openfst(g, "standard"), nshortest=k))
    assert all(close(a, b, 1e-5) for a, b in zip(scores, theirs)) and len(theirs) == len(scores)
    # the returned paths are paths of g with the right labels and scores (those of at most
    # 7 arcs are checked: enumerating longer paths of cyclic graphs explodes)
    enumerated = list(paths(g, 7))
    all_paths = Counter((round(s, 6), tuple(g.ilabel[p].tolist()), tuple(g.olabel[p].tolist())) for p, s in enumerated)
    short = Counter(x for x in labelled_scores(got) if len(x[1]) <= 7)
    assert not short - all_paths
    if is_acyclic(g):
        best = sorted((s for _, s in enumerated), reverse=True)[:k]
        assert len(scores) == len(best) and all(close(a, b, 1e-9) for a, b in zip(scores, best))


@given(graphs(max_nodes=5, max_arcs=8, num_labels=2), st.integers(1, 5))
def test_n_best_distinct_outputs(g, k):
    got = n_best(g, k, distinct_outputs=True)
    outputs = [tuple(x for x in p.olabel.tolist() if x) for p in got]
    assert len(set(outputs)) == len(outputs)
    best_by_output: dict = {}
    for (_, out), s in relation(g, "tropical").items():
        best_by_output[out] = max(s, best_by_output.get(out, NEG_INF))
    want = sorted(best_by_output.values(), reverse=True)[:k]
    scores = [viterbi_score(p).item() for p in got]
    assert all(close(a, b, 1e-9) for a, b in zip(scores, want)) and len(scores) == len(want)
    assert all(close(best_by_output[o], s, 1e-9) for o, s in zip(outputs, scores))


def test_n_best_distinct_outputs_stops_on_cycles_that_repeat_an_output():
    # an epsilon-output loop: infinitely many paths, one output string
    g = Graph.from_arcs(2, [0, 1], [1, 1], [1, 2], [1, 0], weights=[0.0, -1.0], start=[0], accept=[1])
    got = n_best(g, 3, distinct_outputs=True, max_paths=50)
    assert [p.olabel.tolist() for p in got] == [[1]]
    assert [p.num_arcs for p in n_best(g, 4)] == [1, 2, 3, 4]


def test_n_best_of_a_lattice_is_fast_and_exact():
    torch.manual_seed(0)
    g = lattice(50, 5).double()
    got = [viterbi_score(p).item() for p in n_best(g, 20)]
    f = to_openfst(g, "standard")
    assert all(close(a, b, 1e-6) for a, b in zip(got, path_scores_of(fst.shortestpath(f, nshortest=20))))


# ---------------------------------------------------------------------- sampling
def test_sample_frequencies_match_path_probabilities():
    g = Graph.from_arcs(4, [0, 0, 1, 1, 2, 0], [1, 2, 2, 3, 3, 3], [1, 2, 3, 4, 5, 6],
                        weights=[0.2, -0.3, 0.1, -1.0, 0.5, -2.0],
                        start_weights=[0.0, -1.0, NEG_INF, NEG_INF], final_weights=[NEG_INF, NEG_INF, -0.5, 0.0],
                        dtype=torch.float64)
    z = total(g)
    exact = {tuple(g.ilabel[p].tolist()): math.exp(s - z) for p, s in paths(g)}
    n = 20000
    drawn = Counter(tuple(p.ilabel.tolist()) for p in sample(g, n, torch.Generator().manual_seed(1)))
    assert set(drawn) <= set(exact)
    chi2 = sum((drawn.get(k, 0) - n * p) ** 2 / (n * p) for k, p in exact.items())
    assert chi2 < 30, (chi2, drawn, exact)  # 9 paths: 8 degrees of freedom, p(chi2 > 30) ~ 2e-4


def test_sample_batches_and_gradients():
    g = lattice(6, 3).double()
    batch = Graph.batch([g, g, g])
    per_graph = sample(batch, 4, torch.Generator().manual_seed(0))
    assert len(per_graph) == 3 and all(p.num_graphs == 4 and p.num_arcs == 4 * 6 for p in per_graph)
    w = g.weights.clone().requires_grad_()
    samples = sample(g.with_weights(w), 5, torch.Generator().manual_seed(0))
    torch.stack([forward_score(p) for p in samples]).sum().backward()
    assert w.grad.sum().item() == pytest.approx(5 * 6)


@settings(max_examples=20)
@given(graphs())
def test_samples_are_paths(g):
    all_paths = {(tuple(g.ilabel[p].tolist()), round(s, 6)) for p, s in paths(g)}
    for p in sample(g, 10, torch.Generator().manual_seed(0)):
        if p.num_nodes:
            assert (tuple(p.ilabel.tolist()), round(viterbi_score(p).item(), 6)) in all_paths


def test_sample_loop_counts_are_geometric():
    # a self-loop of probability 0.5 whose alternative (stopping) has probability 0.5
    half = math.log(0.5)
    g = Graph.from_arcs(2, [0, 1], [1, 1], [1, 2], weights=[0.0, half], start=[0], final_weights=[NEG_INF, half],
                        dtype=torch.float64)
    loops = Counter(p.num_arcs - 1 for p in sample(g, 4000, torch.Generator().manual_seed(3)))
    assert abs(sum(k * c for k, c in loops.items()) / 4000 - 1.0) < 0.1  # mean of Geometric(1/2) - 1
    assert abs(loops[0] / 4000 - 0.5) < 0.04


# ---------------------------------------------------------------------- errors and scale
def test_positive_cycle_diverges_in_tropical_and_log():
    g = Graph.from_arcs(2, [0, 1, 1], [1, 1, 0], [1, 2, 3], weights=[0.0, 0.5, -2.0], start=[0], accept=[1])
    for semiring in SEMIRINGS:
        with pytest.raises(DivergenceError):
            total_score(g, semiring)


def test_log_sum_with_cycle_weight_above_one_diverges():
    # two loops of probability 0.6 each: every cycle has a negative score (tropical is
    # finite) but the log sum diverges
    loop = math.log(0.6)
    g = Graph.from_arcs(2, [0, 1, 1], [1, 1, 1], [1, 2, 3], weights=[0.0, loop, loop], start=[0], accept=[1])
    assert viterbi_score(g).item() == 0.0
    with pytest.raises(DivergenceError):
        forward_score(g)


def test_divergent_cycle_off_every_successful_path_does_not_matter():
    g = Graph.from_arcs(3, [0, 0, 2], [1, 2, 2], [1, 2, 3], weights=[-1.0, 0.0, 0.5], start=[0], accept=[1],
                        dtype=torch.float64)
    assert forward_score(g).item() == -1.0 and viterbi_score(g).item() == -1.0
    with pytest.raises(DivergenceError):
        shortest_distance(g, "tropical")


def test_deep_chain_is_one_kernel_call():
    n = 100_000
    nodes = torch.arange(n - 1)
    chain = Graph.from_arcs(n, nodes, nodes + 1, torch.ones(n - 1, dtype=torch.long),
                            weights=torch.full((n - 1,), -0.01), start=[0], accept=[n - 1])
    w = chain.weights.clone().requires_grad_()
    forward_score(chain)  # compile
    began = time.perf_counter()
    score = forward_score(chain.with_weights(w))
    score.backward()
    elapsed = time.perf_counter() - began
    assert score.item() == pytest.approx(-0.01 * (n - 1), rel=1e-4)
    assert torch.allclose(w.grad, torch.ones_like(w), atol=1e-3)  # float32 sums of 100k terms
    assert elapsed < 0.5, elapsed
    assert viterbi_path(chain).num_arcs == n - 1


# ---------------------------------------------------------------------- helpers and CUDA
def lattice(levels: int, width: int) -> Graph:
    """``levels`` layers of ``width`` nodes, every node linked to every node of the next layer."""
    layer = torch.arange(width)
    src = (torch.arange(levels)[:, None, None] * width + layer[None, :, None]).expand(levels, width, width)
    dst = ((torch.arange(levels)[:, None, None] + 1) * width + layer[None, None, :]).expand(levels, width, width)
    num_nodes = (levels + 1) * width
    labels = torch.randint(1, 5, (src.numel(),))
    return Graph.from_arcs(num_nodes, src.reshape(-1), dst.reshape(-1), labels, weights=-torch.rand(src.numel()),
                           start=list(range(width)), accept=list(range(num_nodes - width, num_nodes)))


def random_dag(num_nodes: int, num_arcs: int) -> Graph:
    src = torch.randint(0, num_nodes - 1, (num_arcs,))
    dst = src + 1 + (torch.rand(num_arcs) * (num_nodes - 1 - src)).long()
    return Graph.from_arcs(num_nodes, src, dst, torch.randint(1, 5, (num_arcs,)), weights=-torch.rand(num_arcs),
                           start=[0], accept=[num_nodes - 1])


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("semiring", SEMIRINGS)
def test_cuda_matches_cpu(semiring):
    torch.manual_seed(0)
    cyclic = Graph.from_arcs(3, [0, 1, 1, 2], [1, 1, 2, 0], [1, 2, 3, 4], weights=[0.0, -1.0, -0.5, -2.0],
                             start=[0], accept=[2], dtype=torch.float64)
    for g in (lattice(20, 4).double(), random_dag(200, 800).double(), cyclic):
        gpu = g.to("cuda")
        assert torch.allclose(total_score(gpu, semiring).cpu(), total_score(g, semiring))
        assert torch.allclose(shortest_distance(gpu, semiring, reverse=True).cpu(),
                              shortest_distance(g, semiring, reverse=True))
        assert torch.allclose(arc_posteriors(gpu).cpu(), arc_posteriors(g))
        w = gpu.weights.clone().requires_grad_()
        total_score(gpu.with_weights(w), semiring).backward()
        assert w.grad.device.type == "cuda"
        assert torch.allclose(viterbi_score(viterbi_path(gpu)).cpu(), viterbi_score(g))
        assert [p.device.type for p in n_best(gpu, 2) + sample(gpu, 2)] == ["cuda"] * 4
        for options in ({"beam": 0.5}, {"min_posterior": 0.01}):
            pruned = prune(gpu, **options)
            assert pruned.device.type == "cuda" and equal(pruned.to("cpu"), prune(g, **options), tol=1e-9)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("sr", DISTANCE_SEMIRINGS)
def test_cuda_path_distances_match_cpu(sr):
    torch.manual_seed(0)
    g = random_dag(200, 800).double()
    weights = g.weights.detach().clone()
    weights[::7] = NEG_INF
    init = torch.full((g.num_nodes,), NEG_INF, dtype=torch.float64)
    init[:3] = torch.rand(3, dtype=torch.float64)  # node 1 and 2 may be unreachable from 0
    grad = torch.rand(g.num_nodes, dtype=torch.float64)
    results = []
    for device in ("cpu", "cuda"):
        # detach: on the CPU, .to() returns the tensor itself, which must not become a leaf that
        # requires grad (the CUDA copy would then be a non-leaf without .grad)
        w, i = weights.detach().to(device).requires_grad_(), init.detach().to(device).requires_grad_()
        dist = distance.path_distances(g.num_nodes, g.src.to(device), g.dst.to(device), w, i, sr)
        assert type(dist.grad_fn).__name__ == "_AcyclicDistancesBackward"
        dist.backward(grad.to(device))
        assert w.grad.device.type == device and not torch.isnan(w.grad).any() and not torch.isnan(i.grad).any()
        results.append([t.cpu() for t in (dist, w.grad, i.grad)])
    for on_cpu, on_cuda in zip(*results):
        assert torch.allclose(on_cuda, on_cpu, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------- pruning
def expected_prune(g: Graph, beam, min_posterior) -> Graph:
    """prune by enumeration: mark the arcs, start and final weights on the good paths (within
    the beam of the best; posterior probability at least min_posterior), keep the arcs and
    weights marked, then the nodes still on a successful path (in order)."""
    scored = list(paths_with_ends(g))
    keep_arc, keep_start, keep_final = [True] * g.num_arcs, [True] * g.num_nodes, [True] * g.num_nodes
    if beam is not None:
        best = max((score for *_, score in scored), default=NEG_INF)
        good = [(first, arcs, last) for first, arcs, last, score in scored if score >= best - beam - 1e-9]
        arcs_on = {a for _, arcs, _ in good for a in arcs}
        keep_arc = [k and a in arcs_on for a, k in enumerate(keep_arc)]
        keep_start = [k and any(first == n for first, _, _ in good) for n, k in enumerate(keep_start)]
        keep_final = [k and any(last == n for _, _, last in good) for n, k in enumerate(keep_final)]
    if min_posterior is not None:
        z = logsumexp([score for *_, score in scored])
        arc_post, start_post, final_post = [0.0] * g.num_arcs, [0.0] * g.num_nodes, [0.0] * g.num_nodes
        for first, arcs, last, score in scored:
            share = math.exp(score - z)
            start_post[first] += share
            final_post[last] += share
            for a in arcs:
                arc_post[a] += share
        keep_arc = [k and p >= min_posterior - 1e-9 for k, p in zip(keep_arc, arc_post)]
        keep_start = [k and p >= min_posterior - 1e-9 for k, p in zip(keep_start, start_post)]
        keep_final = [k and p >= min_posterior - 1e-9 for k, p in zip(keep_final, final_post)]
    start = [s if k else NEG_INF for s, k in zip(g.start_weights.tolist(), keep_start)]
    final = [f if k else NEG_INF for f, k in zip(g.final_weights.tolist(), keep_final)]
    arcs = [a for a in range(g.num_arcs) if keep_arc[a]]
    marked = Graph.from_arcs(g.num_nodes, g.src[arcs], g.dst[arcs], g.ilabel[arcs], g.olabel[arcs], g.weights[arcs],
                             start_weights=start, final_weights=final, dtype=g.dtype)
    on_path = {n for first, arcs_, last, _ in paths_with_ends(marked)
               for n in [first, last] + [int(marked.src[a]) for a in arcs_]}
    nodes = sorted(on_path)
    renumber = {n: i for i, n in enumerate(nodes)}
    kept = [a for a in range(marked.num_arcs) if int(marked.src[a]) in on_path and int(marked.dst[a]) in on_path]
    return Graph.from_arcs(len(nodes), [renumber[int(marked.src[a])] for a in kept],
                           [renumber[int(marked.dst[a])] for a in kept], marked.ilabel[kept], marked.olabel[kept],
                           marked.weights[kept], start_weights=[start[n] for n in nodes],
                           final_weights=[final[n] for n in nodes], dtype=g.dtype)


def same_graph(got: Graph, want: Graph) -> None:
    assert got.num_nodes == want.num_nodes and got.num_arcs == want.num_arcs
    for name in ("src", "dst", "ilabel", "olabel", "weights", "start_weights", "final_weights"):
        assert torch.equal(getattr(got, name).detach(), getattr(want, name).detach()), name


# Beams off the 0.001 grid of the strategies' weights, so no path sits on a beam's edge.
@given(graphs(max_nodes=6, max_arcs=10), st.sampled_from([None, 0.0, 0.3337, 1.2345, 100.0]),
       st.sampled_from([None, 0.0501, 0.3337, 1.0]))
def test_prune_matches_enumeration(g, beam, min_posterior):
    if beam is None and min_posterior is None:
        beam = 0.7771
    same_graph(prune(g, beam, min_posterior=min_posterior), expected_prune(g, beam, min_posterior))


@given(graphs(max_nodes=6, max_arcs=12, acyclic=False, num_labels=2), st.sampled_from([0.3337, 1.2345, 100.0]))
def test_prune_matches_openfst(g, beam):
    """OpenFst's Prune on the same machine (its super-start state's epsilon arcs carry the start
    weights), cyclic graphs included: the same states and arcs are kept."""
    f = to_openfst(g, "standard")
    theirs = fst.prune(f, weight=beam)
    ours = prune(g, beam)
    kept_starts = int((ours.start_weights > NEG_INF).sum())
    assert theirs.num_states() == (ours.num_nodes + 1 if ours.num_nodes else 0)
    assert sum(theirs.num_arcs(s) for s in theirs.states()) == ours.num_arcs + kept_starts


def test_prune_keeps_the_best_path_and_gradients():
    """Beam 0 keeps exactly the best path (ties aside); the result's weights are gathers of the
    input's, so gradients reach the kept arcs (gradcheck) and only them."""
    g = Graph.from_arcs(4, [0, 0, 1, 2, 1, 0], [1, 2, 3, 3, 2, 3], [1, 2, 3, 1, 2, 3],
                        weights=[0.5, 0.2, 0.1, 0.3, -1.0, -0.4], start=[0], accept=[3], dtype=torch.float64)
    best = viterbi_path(g)
    pruned = prune(g, 0.0)
    assert pruned.num_arcs == best.num_arcs == 2 and math.isclose(float(viterbi_score(pruned)), float(viterbi_score(g)))
    w = g.weights.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda w: forward_score(prune(g.with_weights(w), 0.45)), (w,))
    forward_score(prune(g.with_weights(w), 0.0)).backward()
    assert w.grad.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_prune_batches_float32_and_errors():
    good = Graph.from_arcs(3, [0, 0, 1], [1, 2, 2], [1, 2, 1], weights=[0.0, -3.0, 0.0], start=[0], accept=[2])
    no_path = Graph.from_arcs(2, [0], [1], [1], start=[0])
    batch = prune([good, no_path, good], 1.0)
    assert batch.num_graphs == 3 and [h.num_arcs for h in batch.unbatch()] == [2, 0, 2]
    assert batch.dtype == torch.float32
    assert prune(good, min_posterior=0.5).num_arcs == 2
    for bad in ({}, {"beam": -1.0}, {"beam": float("nan")}, {"min_posterior": 0.0}, {"min_posterior": 1.5}):
        with pytest.raises(ArgumentValueError):
            prune(good, **bad)
