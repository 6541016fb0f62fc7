"""Linear-chain CRF graphs against brute-force enumeration of all taggings."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gtn_py import InvalidGraphError, LabelError
from gtn_py.criteria.crf import LinearChainCRF, crf_graph, crf_log_partition, crf_marginals, crf_nll, crf_viterbi


def tagging_score(unary, transitions, tags, start=None, end=None, seq=0):
    score = sum(float(unary[t, j]) for t, j in enumerate(tags))
    for t in range(1, len(tags)):
        edge = transitions[seq, t - 1] if transitions.dim() == 4 else transitions
        score += float(edge[tags[t - 1], tags[t]])
    if tags and start is not None:
        score += float(start[tags[0]]) + float(end[tags[-1]])
    return score


def brute_force(unary, transitions, length, start=None, end=None, seq=0):
    """log Z, node marginals, edge marginals, best tagging, by enumerating all taggings."""
    num_tags = unary.shape[-1]
    taggings = list(itertools.product(range(num_tags), repeat=length))
    scores = [tagging_score(unary, transitions, list(tags), start, end, seq) for tags in taggings]
    log_z = max(scores) + math.log(sum(math.exp(s - max(scores)) for s in scores))
    nodes = torch.zeros(unary.shape, dtype=torch.float64)
    edges = torch.zeros(max(unary.shape[0] - 1, 0), num_tags, num_tags, dtype=torch.float64)
    for tags, s in zip(taggings, scores):
        p = math.exp(s - log_z)
        for t, j in enumerate(tags):
            nodes[t, j] += p
            if t:
                edges[t - 1, tags[t - 1], j] += p
    best = list(taggings[max(range(len(scores)), key=scores.__getitem__)])
    return log_z, nodes, edges, best, max(scores)


@pytest.mark.parametrize("per_position", [False, True])
def test_against_brute_force(per_position: bool) -> None:
    torch.manual_seed(0)
    num_seqs, num_positions, num_tags = 3, 4, 3
    unary = torch.randn(num_seqs, num_positions, num_tags, dtype=torch.float64)
    transitions = torch.randn(*((num_seqs, num_positions - 1) if per_position else ()), num_tags, num_tags,
                              dtype=torch.float64)
    start, end = torch.randn(num_tags, dtype=torch.float64), torch.randn(num_tags, dtype=torch.float64)
    lengths = torch.tensor([4, 2, 3])
    kw = dict(start_scores=start, end_scores=end)
    log_z = crf_log_partition(unary, transitions, lengths, **kw)
    marginals = crf_marginals(unary, transitions, lengths, **kw)
    best = crf_viterbi(unary, transitions, lengths, **kw)
    for b, length in enumerate(lengths.tolist()):
        want_z, want_nodes, want_edges, want_best, want_score = brute_force(
            unary[b], transitions, length, start, end, seq=b)
        want_nodes[length:] = 0
        want_edges[max(length - 1, 0):] = 0
        assert float(log_z[b]) == pytest.approx(want_z)
        assert torch.allclose(marginals.nodes[b], want_nodes)
        assert torch.allclose(marginals.edges[b], want_edges)
        assert best.tags[b, :length].tolist() == want_best
        assert torch.all(best.tags[b, length:] == -1)
        assert float(best.scores[b]) == pytest.approx(want_score)
        tags = torch.tensor(want_best + [0] * (num_positions - length))
        nll = crf_nll(unary[b:b + 1], transitions[b:b + 1] if per_position else transitions, tags[None],
                      lengths[b:b + 1], reduction="sum", **kw)
        assert float(nll) == pytest.approx(want_z - want_score)


def test_single_sequence_and_empty_sequence() -> None:
    torch.manual_seed(1)
    unary = torch.randn(3, 2, dtype=torch.float64)
    transitions = torch.randn(2, 2, dtype=torch.float64)
    want_z, _, _, want_best, _ = brute_force(unary, transitions, 3)
    assert crf_log_partition(unary, transitions).dim() == 0
    assert float(crf_log_partition(unary, transitions)) == pytest.approx(want_z)
    assert crf_viterbi(unary, transitions).tags.tolist() == want_best
    assert crf_graph(unary, transitions).num_nodes == 1 + 3 * 2
    empty = crf_log_partition(unary[None], transitions, torch.tensor([0]))
    assert float(empty[0]) == 0.0  # one tagging (the empty one), score 0


def test_gradcheck() -> None:
    torch.manual_seed(2)
    unary = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    transitions = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    edges = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    tags = torch.tensor([[0, 2, 1], [1, 1, 0]])
    lengths = torch.tensor([3, 2])
    assert torch.autograd.gradcheck(lambda u, w: crf_nll(u, w, tags, lengths), (unary, transitions))
    assert torch.autograd.gradcheck(lambda u, w: crf_log_partition(u, w, lengths), (unary, edges))
    # d log Z / d unary = node marginals
    log_z = crf_log_partition(unary, transitions, lengths).sum()
    (grad,) = torch.autograd.grad(log_z, unary)
    assert torch.allclose(grad, crf_marginals(unary.detach(), transitions.detach(), lengths).nodes)


def test_bad_input() -> None:
    unary = torch.zeros(1, 3, 2)
    with pytest.raises(InvalidGraphError, match="transitions"):
        crf_log_partition(unary, torch.zeros(3, 3))
    with pytest.raises(InvalidGraphError, match="length 5"):
        crf_log_partition(unary, torch.zeros(2, 2), torch.tensor([5]))
    with pytest.raises(LabelError, match="position 1: tag 7"):
        crf_nll(unary, torch.zeros(2, 2), torch.tensor([[0, 7, 1]]))


def test_cnn_crf_learns_tagging() -> None:
    """A convolution + CRF tags noisy sequences of a sticky Markov chain."""
    torch.manual_seed(0)
    num_tags, dim, num_positions = 3, 4, 12

    def data(n: int):
        tags = torch.zeros(n, num_positions, dtype=torch.long)
        tags[:, 0] = torch.randint(num_tags, (n,))
        for t in range(1, num_positions):
            switch = torch.rand(n) < 0.2
            tags[:, t] = torch.where(switch, torch.randint(num_tags, (n,)), tags[:, t - 1])
        signal = torch.nn.functional.one_hot(tags, dim).float() * 2.0
        return signal + torch.randn(n, num_positions, dim), tags

    x, y = data(64)
    x_test, y_test = data(64)
    conv = torch.nn.Conv1d(dim, num_tags, 3, padding=1)
    crf = LinearChainCRF(num_tags)
    optimizer = torch.optim.Adam(list(conv.parameters()) + list(crf.parameters()), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        loss = crf(conv(x.transpose(1, 2)).transpose(1, 2), y)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        tags = crf.decode(conv(x_test.transpose(1, 2)).transpose(1, 2)).tags
    accuracy = float((tags == y_test).float().mean())
    assert accuracy >= 0.9, accuracy


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda() -> None:
    unary = torch.randn(2, 4, 3, dtype=torch.float64)
    transitions = torch.randn(3, 3, dtype=torch.float64)
    cpu = crf_log_partition(unary, transitions)
    gpu = crf_log_partition(unary.cuda(), transitions.cuda())
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu)
    assert torch.equal(crf_viterbi(unary.cuda(), transitions.cuda()).tags.cpu(), crf_viterbi(unary, transitions).tags)
