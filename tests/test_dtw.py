"""DTW graphs against the classic dynamic programme and against alignment enumeration."""

from __future__ import annotations

import math

import oracle
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gtn_py import InvalidGraphError, LabelError, losses
from gtn_py.criteria.dtw import ElasticTemplates, dtw_distance, dtw_graph, dtw_path, local_distances

INF = float("inf")


def classic_dtw(d, steps=((1, 0), (0, 1), (1, 1)), weights=(1.0, 1.0, 1.0), gamma=0.0):
    """The textbook recursion D(i, j) = d(i, j) * w + (soft)min D(i - di, j - dj)."""
    n, m = len(d), len(d[0]) if len(d) else 0
    if n == 0 or m == 0:
        return INF
    D = [[INF] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                D[0][0] = d[0][0]
                continue
            options = [D[i - di][j - dj] + w * d[i][j] for (di, dj), w in zip(steps, weights)
                       if i >= di and j >= dj]
            options = [o for o in options if o < INF]
            if not options:
                continue
            if gamma == 0:
                D[i][j] = min(options)
            else:
                D[i][j] = -gamma * oracle.logsumexp([-o / gamma for o in options])
    return D[n - 1][m - 1]


def alignments(n, m):
    """Every monotone alignment path of the symmetric pattern, as lists of cells."""
    def walk(i, j):
        if (i, j) == (n - 1, m - 1):
            yield [(i, j)]
            return
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            if i + di < n and j + dj < m:
                for rest in walk(i + di, j + dj):
                    yield [(i, j)] + rest
    yield from walk(0, 0)


matrices = st.integers(1, 4).flatmap(lambda n: st.integers(1, 4).flatmap(
    lambda m: st.lists(st.lists(st.floats(0, 3).map(lambda x: round(x, 3)), min_size=m, max_size=m),
                       min_size=n, max_size=n)))


@given(d=matrices, gamma=st.sampled_from([0.0, 0.5, 1.0]))
def test_dtw_equals_classic_recursion(d, gamma) -> None:
    got = float(dtw_distance(torch.tensor(d, dtype=torch.float64), gamma=gamma))
    assert math.isclose(got, classic_dtw(d, gamma=gamma), rel_tol=1e-9, abs_tol=1e-9)


@given(d=matrices)
def test_paths_are_the_alignments(d) -> None:
    """The graph's paths are exactly the alignments, each scored minus its accumulated distance."""
    g = dtw_graph(torch.tensor(d, dtype=torch.float64))
    n, m = len(d), len(d[0])
    want = {tuple(j + 1 for _, j in path): -sum(d[i][j] for i, j in path) for path in alignments(n, m)}
    got = {}
    for path, score in oracle.paths(g, max_arcs=n + m):
        cells = oracle.strings_of(g, path)
        key = cells[1]
        assert len(cells[0]) == len(cells[1])
        got.setdefault(key, []).append(score)
    # distinct alignments can share their input-frame string: compare the multisets of scores
    all_want = sorted(-sum(d[i][j] for i, j in path) for path in alignments(n, m))
    all_got = sorted(s for scores in got.values() for s in scores)
    assert len(all_got) == len(all_want) and all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(all_got, all_want))
    assert set(got) == set(want)


def test_batched_lengths_step_weights_and_path() -> None:
    torch.manual_seed(0)
    d = torch.rand(3, 5, 6, dtype=torch.float64)
    n, m = torch.tensor([5, 3, 2]), torch.tensor([6, 4, 1])
    steps, weights = ((1, 0), (0, 1), (1, 1), (1, 2)), (1.0, 1.0, 2.0, 3.0)
    got = dtw_distance(d, n, m, steps=steps, step_weights=weights)
    for b in range(3):
        sub = d[b, : n[b], : m[b]].tolist()
        assert float(got[b]) == pytest.approx(classic_dtw(sub, steps, weights))
    paths = dtw_path(d, n, m)
    for b, path in enumerate(paths):
        sub = d[b, : n[b], : m[b]].tolist()
        cells = [tuple(c) for c in path.tolist()]
        assert cells[0] == (0, 0) and cells[-1] == (n[b] - 1, m[b] - 1)
        assert sum(sub[i][j] for i, j in cells) == pytest.approx(classic_dtw(sub))
    assert float(dtw_distance(d, [0, 1, 1], [3, 0, 1])[0]) == INF  # empty sequences: no alignment


def test_gradcheck() -> None:
    torch.manual_seed(1)
    templates = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    inputs = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    for gamma in (0.0, 0.3):
        assert torch.autograd.gradcheck(
            lambda t, x, gamma=gamma: dtw_distance(local_distances(t, x), None, torch.tensor([4, 3]), gamma),
            (templates, inputs))


def test_soft_dtw_tends_to_hard_dtw() -> None:
    d = torch.rand(4, 5, dtype=torch.float64)
    hard = float(dtw_distance(d))
    assert float(dtw_distance(d, gamma=1e-3)) == pytest.approx(hard, abs=1e-2)
    assert float(dtw_distance(d, gamma=1.0)) < hard  # the soft minimum lies below the minimum


def test_bad_input() -> None:
    with pytest.raises(InvalidGraphError, match="steps"):
        dtw_distance(torch.zeros(2, 2), steps=((0, 0),))
    with pytest.raises(InvalidGraphError, match="input length 7"):
        dtw_distance(torch.zeros(1, 2, 2), None, [7])
    with pytest.raises(LabelError, match="classes"):
        dtw_graph(torch.zeros(1, 2, 2), classes=[0])
    with pytest.raises(ValueError, match="gamma"):
        dtw_distance(torch.zeros(2, 2), gamma=-1.0)


def spoken_words(n: int, generator: torch.Generator):
    """Three 'words': sequences of 2-d feature vectors following different trajectories,
    randomly time-warped (variable length and speed) and noisy."""
    shapes = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]],
                           [[0.0, -1.0], [0.0, 1.0], [0.0, -1.0]],
                           [[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0]]])
    labels = torch.randint(3, (n,), generator=generator)
    lengths = torch.randint(6, 11, (n,), generator=generator)
    inputs = torch.zeros(n, 10, 2)
    for b in range(n):
        # a random monotone warp of the 3 key frames onto lengths[b] frames
        cuts = torch.sort(torch.rand(2, generator=generator)).values * float(lengths[b])
        frame = torch.arange(int(lengths[b])).float()
        segment = (frame[:, None] >= cuts[None, :]).sum(1)
        noise = 0.3 * torch.randn(int(lengths[b]), 2, generator=generator)
        inputs[b, : lengths[b]] = shapes[labels[b], segment] + noise
    return inputs, labels, lengths


def test_elastic_templates_learn_to_classify_words() -> None:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x, y, lengths = spoken_words(48, generator)
    x_test, y_test, lengths_test = spoken_words(48, generator)
    model = ElasticTemplates(num_classes=3, num_frames=4, dim=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(30):
        optimizer.zero_grad()
        correct, everything = model.answer_graphs(x, y, lengths)
        loss = losses.log_loss(correct, everything)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predictions = model(x_test, lengths_test).argmin(1)
    accuracy = float((predictions == y_test).float().mean())
    assert accuracy >= 0.9, accuracy


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda() -> None:
    d = torch.rand(2, 4, 5, dtype=torch.float64)
    for gamma in (0.0, 0.5):
        assert torch.allclose(dtw_distance(d.cuda(), gamma=gamma).cpu(), dtw_distance(d, gamma=gamma))
