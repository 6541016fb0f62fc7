"""gtn_py.losses against their formulas computed by brute-force path enumeration."""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Tuple
from unittest import mock

import oracle
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import graphs

from gtn_py import Graph, InvalidGraphError, LabelError, losses, string_graph, union

INF = float("inf")
NEG_INF = float("-inf")


# ---------------------------------------------------------------------- brute force
def scored_outputs(g: Graph, max_arcs: int = 12) -> List[Tuple[Tuple[int, ...], float]]:
    return [(oracle.strings_of(g, path)[1], score) for path, score in oracle.paths(g, max_arcs)]


def brute_energy(g: Graph) -> float:
    return -max((s for _, s in scored_outputs(g)), default=NEG_INF)


def brute_free_energy(g: Graph, beta: float) -> float:
    return -oracle.logsumexp([beta * s for _, s in scored_outputs(g)]) / beta


def brute_offending(correct: Graph, all_answers: Graph, max_arcs: int = 12) -> float:
    answers = {out for out, _ in scored_outputs(correct)}
    return -max((s for out, s in scored_outputs(all_answers, max_arcs) if out not in answers), default=NEG_INF)


def gap(fy: float, fw: float) -> float:
    if math.isinf(fy):
        return fy
    return fy - fw  # -inf where there is no incorrect answer


def difference(fy: float, fa: float) -> float:
    return fy if math.isinf(fy) else fy - fa


def square(f: float) -> float:
    return f * f


FORMULAS: Dict[str, Callable[[Graph, Graph], float]] = {
    "energy_loss": lambda c, a: brute_energy(c),
    "perceptron": lambda c, a: difference(brute_energy(c), brute_energy(a)),
    "hinge": lambda c, a: max(0.0, 0.7 + gap(brute_energy(c), brute_offending(c, a))),
    "log_loss": lambda c, a: math.log1p(math.exp(gap(brute_energy(c), brute_offending(c, a))))
    if gap(brute_energy(c), brute_offending(c, a)) < 30 else gap(brute_energy(c), brute_offending(c, a)),
    "lvq2": lambda c, a: min(0.5, max(0.0, gap(brute_energy(c), brute_offending(c, a)))),
    "mce": lambda c, a: 1 / (1 + math.exp(-gap(brute_energy(c), brute_offending(c, a)))),
    "square_square": lambda c, a: square(brute_energy(c)) + square(max(0.0, 0.7 - brute_offending(c, a))),
    "square_exp": lambda c, a: square(brute_energy(c)) + 0.5 * math.exp(-brute_offending(c, a)),
    "nll": lambda c, a: difference(brute_free_energy(c, 2.0), brute_free_energy(a, 2.0)),
    "mee": lambda c, a: 1 - math.exp(-2.0 * difference(brute_free_energy(c, 2.0), brute_free_energy(a, 2.0))),
}

CALLS: Dict[str, Callable[..., torch.Tensor]] = {
    "energy_loss": lambda c, a, **kw: losses.energy_loss(c, **kw),
    "perceptron": losses.perceptron,
    "hinge": lambda c, a, **kw: losses.hinge(c, a, margin=0.7, **kw),
    "log_loss": losses.log_loss,
    "lvq2": lambda c, a, **kw: losses.lvq2(c, a, saturation=0.5, **kw),
    "mce": losses.mce,
    "square_square": lambda c, a, **kw: losses.square_square(c, a, margin=0.7, **kw),
    "square_exp": lambda c, a, **kw: losses.square_exp(c, a, beta=0.5, **kw),
    "nll": lambda c, a, **kw: losses.nll(c, a, beta=2.0, **kw),
    "mee": lambda c, a, **kw: losses.mee(c, a, beta=2.0, **kw),
}


def close(got: float, want: float) -> bool:
    if math.isinf(want) or math.isinf(got):
        return got == want
    return math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6)


# ---------------------------------------------------------------------- against the formulas
answer_graphs = graphs(max_nodes=5, max_arcs=8, num_labels=2)


@given(pairs=st.lists(st.tuples(answer_graphs, answer_graphs), min_size=1, max_size=3))
def test_losses_equal_formulas(pairs: List[Tuple[Graph, Graph]]) -> None:
    correct = [c for c, _ in pairs]
    # the correct answers are among all answers, as in training; plus other answers
    all_answers = [union([c, a]) for c, a in pairs]
    for name in sorted(FORMULAS):
        got = CALLS[name](correct, all_answers, reduction="none")
        assert got.shape == (len(pairs),)
        for i, (c, a) in enumerate(zip(correct, all_answers)):
            want = FORMULAS[name](c, a)
            assert close(float(got[i]), want), f"{name}, example {i}: got {float(got[i])}, want {want}"


@given(correct=answer_graphs, other=answer_graphs, enumerated=st.sampled_from([0, 1, 8]))
def test_most_offending_incorrect_answer(correct: Graph, other: Graph, enumerated: int) -> None:
    """Correct strings enumerated (up to 1 or 8), or their language determinized (0)."""
    all_answers = union([correct, other])
    with mock.patch.object(losses, "MAX_ENUMERATED_STRINGS", enumerated):
        found = losses.most_offending_incorrect(correct, all_answers)
    want = brute_offending(correct, all_answers)
    assert close(float(found.energies[0]), want)
    answers = {out for out, _ in scored_outputs(correct)}
    if math.isinf(want):
        assert found.strings == [[]]
    else:
        assert tuple(found.strings[0]) not in answers
        best_of_string = max(s for out, s in scored_outputs(all_answers) if out == tuple(found.strings[0]))
        assert math.isclose(-best_of_string, want, abs_tol=1e-9)


@given(correct=graphs(max_nodes=3, max_arcs=4, num_labels=2),
       other=graphs(max_nodes=3, max_arcs=5, num_labels=2, acyclic=False))
def test_most_offending_incorrect_answer_of_cyclic_graphs(correct: Graph, other: Graph) -> None:
    """The all-answers graph may be cyclic (its cycles have negative scores, so paths of up to
    8 arcs, a few laps, contain every string's best path on graphs this small)."""
    all_answers = union([correct, other])
    found = losses.most_offending_incorrect(correct, all_answers)
    assert close(float(found.energies[0]), brute_offending(correct, all_answers, max_arcs=8))


def test_float32() -> None:
    correct, all_answers = answers(torch.float32)
    want_correct, want_all = answers(torch.float64)
    for name, call in CALLS.items():
        got = call(correct, all_answers)
        assert got.dtype == torch.float32, name
        assert float(got) == pytest.approx(float(call(want_correct, want_all)), rel=1e-5, abs=1e-5), name


# ---------------------------------------------------------------------- fixed cases and gradients
def answers(dtype: torch.dtype = torch.float64) -> Tuple[Graph, Graph]:
    """Correct answer "3 4" (two alignments); competitors "3" and "5", and "3 4" again."""
    correct = union([string_graph([1, 2], [3, 4], [0.1, 0.2], dtype=dtype),
                     string_graph([2, 2], [3, 4], [-0.4, 0.3], dtype=dtype)])
    others = union([string_graph([1], [3], [0.5], dtype=dtype), string_graph([2], [5], [-1.0], dtype=dtype),
                    string_graph([1, 1], [3, 4], [0.9, 0.05], dtype=dtype)])
    return correct, union([correct, others])


@pytest.mark.parametrize("name", sorted(CALLS))
def test_gradcheck(name: str) -> None:
    correct, all_answers = answers()

    def loss(wc: torch.Tensor, wa: torch.Tensor) -> torch.Tensor:
        return CALLS[name](correct.with_weights(wc), all_answers.with_weights(wa), reduction="sum")

    wc = correct.weights.clone().requires_grad_()
    wa = all_answers.weights.clone().requires_grad_()
    assert torch.autograd.gradcheck(loss, (wc, wa))


def test_known_values_and_reductions() -> None:
    correct, all_answers = answers()
    # F(y) = -0.3 (best alignment of "3 4"), F(ŷ) = -0.5 ("3"), margin 1: hinge = 1.2
    assert float(losses.hinge(correct, all_answers, margin=1.0)) == pytest.approx(1.2)
    # perceptron: the best answer overall is "3 4" via the competitor's alignment (0.95)
    assert float(losses.perceptron(correct, all_answers)) == pytest.approx(0.95 - 0.3)
    batch = losses.log_loss([correct, correct], [all_answers, all_answers], reduction="none")
    assert torch.allclose(losses.log_loss([correct] * 2, [all_answers] * 2, reduction="sum"), batch.sum())
    assert torch.allclose(losses.log_loss([correct] * 2, [all_answers] * 2, reduction="mean"), batch.mean())
    assert losses.log_loss(correct, all_answers, reduction="none").dim() == 0
    with pytest.raises(ValueError, match="reduction"):
        losses.nll(correct, all_answers, reduction="max")
    assert losses.mmi is losses.nll


def test_impossible_correct_answer_is_infinite_with_zero_gradient() -> None:
    _, all_answers = answers()
    empty = Graph(dtype=torch.float64)
    empty.add_node(start=True)  # no accept node: no answer at all
    weights = all_answers.weights.clone().requires_grad_()
    for name in sorted(set(CALLS) - {"energy_loss"}):
        loss = CALLS[name](empty, all_answers.with_weights(weights))
        if name in ("mce", "lvq2", "mee"):
            assert torch.isfinite(loss), name  # bounded losses saturate
        else:
            assert loss == INF, name
        loss.backward()
        assert weights.grad is not None and torch.all(weights.grad == 0), name
        weights.grad = None


def test_no_incorrect_answer_costs_nothing_to_push_up() -> None:
    correct, _ = answers()
    weights = correct.weights.clone().requires_grad_()
    found = losses.most_offending_incorrect(correct, correct)
    assert found.energies[0] == INF and found.strings == [[]] and found.paths.num_nodes == 0
    graph = correct.with_weights(weights)
    loss = losses.hinge(graph, graph, margin=1.0)
    assert loss == 0
    loss.backward()
    assert torch.all(weights.grad == 0)


def test_loss_augmented_hinge_with_hamming_cost() -> None:
    # all answers: every 2-label string over {1, 2, 3}, scores from a table
    scores = torch.tensor([[0.2, 0.5, -0.1], [0.3, -0.2, 0.4]], dtype=torch.float64)
    position = torch.arange(2).repeat_interleave(3)
    label = torch.arange(1, 4).repeat(2)
    all_answers = Graph.from_arcs(3, position, position + 1, label, label, scores.reshape(-1),
                                  start=[0], accept=[2])
    reference = [1, 3]
    correct = string_graph(reference, weights=[0.2, 0.4], dtype=torch.float64)
    cost = losses.hamming_cost(reference, 3, margin=0.25, dtype=torch.float64)
    got = losses.hinge(correct, all_answers, cost=cost)
    best = max(float(scores[0, a - 1] + scores[1, b - 1]) + 0.25 * ((a != 1) + (b != 3))
               for a in range(1, 4) for b in range(1, 4))
    assert float(got) == pytest.approx(best - 0.6)
    # a batch of references gives a batch of cost graphs
    costs = losses.hamming_cost([[1, 3], [2, 2]], 3, margin=0.25, dtype=torch.float64)
    assert costs.num_graphs == 2
    assert float(oracle.total(costs[1], "tropical")) == pytest.approx(0.5)  # a string differing at both positions
    with pytest.raises(LabelError, match="outside"):
        losses.hamming_cost([0, 1], 3)


def test_mismatched_batches_raise() -> None:
    correct, all_answers = answers()
    with pytest.raises(InvalidGraphError, match="correct-answer graphs"):
        losses.perceptron([correct, correct], [all_answers])


@pytest.mark.parametrize("call", [
    lambda c, a: losses.hinge(c, a, margin=math.nan),
    lambda c, a: losses.hinge(c, a, margin=math.inf),
    lambda c, a: losses.lvq2(c, a, saturation=0.0),
    lambda c, a: losses.lvq2(c, a, saturation=math.nan),
    lambda c, a: losses.square_square(c, a, margin=math.nan),
    lambda c, a: losses.square_exp(c, a, beta=-1.0),
], ids=["hinge nan", "hinge inf", "lvq2 zero", "lvq2 nan", "square_square nan", "square_exp negative"])
def test_bad_settings_raise(call: Callable[[Graph, Graph], object]) -> None:
    """A NaN margin made every loss NaN and a saturation of 0 every loss 0, without a word."""
    correct, all_answers = answers()
    with pytest.raises(ValueError, match="must be finite"):
        call(correct, all_answers)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda() -> None:
    correct, all_answers = answers()
    cpu = losses.hinge(correct, all_answers)
    gpu = losses.hinge(correct.to("cuda"), all_answers.to("cuda"))
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu)
