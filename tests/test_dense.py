"""Dense intersection: fused totals, lattice, alignment, against a brute-force sum over paths."""

from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from oracle import paths, plus
from strategies import graphs

import gtn_py
from gtn_py import Graph, LabelError, WeightError
from gtn_py.ops import dense
from gtn_py.ops.dense import dense_lattice, dense_score, intersect_dense, triton_kernels, viterbi_align
from gtn_py.ops.dense.dispatch import choose_kernels as choose_kernels_for
from gtn_py.ops.dense.layout import Layout

NEG_INF = float("-inf")


def kernels(enabled: bool):
    """Use the compiled kernels or the tensor formulation inside the block."""
    return dense.dense_kernels("auto" if enabled else "torch")


backends = pytest.mark.parametrize("use_kernels", [True, False], ids=["kernels", "tensors"])


def brute_total(g: Graph, emissions: torch.Tensor, length: int, semiring: str) -> float:
    """Sum (max) over paths of exactly ``length`` arcs of graph + emission scores."""
    ilabel = g.ilabel.tolist()
    scores = [s + sum(float(emissions[t, ilabel[a]]) for t, a in enumerate(path))
              for path, s in paths(g, length) if len(path) == length]
    return plus(scores, semiring)


def random_case(data, num_labels=3, max_frames=4):
    num_seqs = data.draw(st.integers(1, 3))
    gs = [data.draw(graphs(max_nodes=4, max_arcs=7, num_labels=num_labels - 1, acyclic=False, acceptor=False))
          for _ in range(num_seqs)]
    frames = data.draw(st.integers(0, max_frames))
    lengths = [data.draw(st.integers(0, frames)) for _ in range(num_seqs)]
    seed = data.draw(st.integers(0, 2**16))
    emissions = torch.randn(num_seqs, frames, num_labels, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(seed))
    return gs, emissions, lengths


@backends
@pytest.mark.parametrize("semiring", ["log", "tropical"])
@given(data=st.data())
def test_dense_score_matches_brute_force(use_kernels, semiring, data):
    gs, emissions, lengths = random_case(data)
    with kernels(use_kernels):
        got = dense_score(gs, emissions, lengths, semiring=semiring)
    assert got.shape == (len(gs),)
    for b, g in enumerate(gs):
        want = brute_total(g, emissions[b], lengths[b], semiring)
        assert math.isclose(float(got[b]), want, rel_tol=1e-9, abs_tol=1e-9) or (want == NEG_INF == float(got[b]))


@given(data=st.data())
def test_lattice_total_equals_fused_total(data):
    gs, emissions, lengths = random_case(data)
    lattice = intersect_dense(gs, emissions, lengths)
    fused = dense_score(gs, emissions, lengths)
    for b in range(len(gs)):
        sub = lattice[b]
        assert math.isclose(plus([s for _, s in paths(sub, max(lengths[b], 1))], "log"), float(fused[b]),
                            rel_tol=1e-9, abs_tol=1e-9) or float(fused[b]) == NEG_INF
    # every lattice node is on a successful path: as many arcs as frames, ordered by frame
    assert lattice.num_graphs == len(gs)


def test_lattice_forward_score_and_gradients_match_fused():
    shortest = pytest.importorskip("gtn_py.ops.shortest")
    torch.manual_seed(0)
    g = Graph.from_arcs(3, [0, 0, 1, 1, 2, 0, 2], [1, 0, 2, 1, 2, 2, 0], [0, 1, 2, 0, 1, 2, 2],
                        weights=torch.randn(7, dtype=torch.float64),
                        start_weights=[0.0, -1.0, NEG_INF], final_weights=[NEG_INF, 0.3, 0.0], dtype=torch.float64)
    weights = g.weights.clone().requires_grad_()
    emissions = torch.randn(3, 6, 3, dtype=torch.float64, requires_grad=True)
    h = g.with_weights(weights)
    lengths = [6, 4, 1]
    fused = dense_score(h, emissions, lengths)
    lattice = intersect_dense(h, emissions, lengths)
    materialised = shortest.forward_score(lattice)
    assert torch.allclose(fused, materialised, atol=1e-10)
    g1 = torch.autograd.grad(fused.sum(), (weights, emissions))
    g2 = torch.autograd.grad(materialised.sum(), (weights, emissions))
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-10)


@backends
@pytest.mark.parametrize("semiring", ["log", "tropical"])
def test_gradcheck_emissions_and_graph_weights(use_kernels, semiring, choose_kernels):
    choose_kernels("auto" if use_kernels else "torch")
    torch.manual_seed(1)
    g = Graph.from_arcs(4, [0, 0, 1, 1, 2, 3, 3, 0], [1, 2, 1, 3, 3, 3, 0, 3], [1, 2, 0, 1, 2, 0, 1, 0],
                        weights=torch.randn(8, dtype=torch.float64),
                        start_weights=[0.0, -0.5, NEG_INF, NEG_INF], final_weights=[NEG_INF, 0.2, NEG_INF, 0.0],
                        dtype=torch.float64)
    emissions = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    weights = g.weights.clone().requires_grad_()
    start = torch.tensor([0.0, -0.5, NEG_INF, NEG_INF], dtype=torch.float64, requires_grad=True)
    final = torch.tensor([NEG_INF, 0.2, NEG_INF, 0.0], dtype=torch.float64, requires_grad=True)

    def total(w, s, f, e):
        return dense_score(g.with_weights(w, f, s), e, [5, 3], semiring=semiring)

    # -inf start/final entries have zero gradient; gradcheck perturbs only finite entries sensibly
    assert torch.autograd.gradcheck(lambda w, e: total(w, start, final, e), (weights, emissions))
    w_s = start.detach().clone()
    w_s[2:] = -30.0
    w_f = final.detach().clone()
    w_f[[0, 2]] = -30.0
    w_s.requires_grad_()
    w_f.requires_grad_()
    assert torch.autograd.gradcheck(lambda s, f: total(weights.detach(), s, f, emissions.detach()), (w_s, w_f))


def test_kernels_and_tensors_agree_float32(choose_kernels):
    torch.manual_seed(2)
    gs = [Graph.from_arcs(3, [0, 1, 1, 2, 0], [1, 1, 2, 2, 2], [1, 2, 3, 0, 3], start=[0], accept=[2]),
          Graph.from_arcs(2, [0, 0, 1], [0, 1, 1], [1, 2, 3], start=[0], accept=[1])]
    emissions = torch.randn(2, 40, 4).log_softmax(-1).requires_grad_()
    results = []
    for kernels in (True, False):
        choose_kernels("auto" if kernels else "torch")
        total = dense_score(gs, emissions, [40, 25])
        results.append((total, torch.autograd.grad(total.sum(), emissions)[0]))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5)


@backends
def test_impossible_sequence_is_minus_inf_with_zero_gradient(use_kernels, choose_kernels):
    choose_kernels("auto" if use_kernels else "torch")
    g = Graph.from_arcs(3, [0, 1], [1, 2], [1, 2], start=[0], accept=[2], dtype=torch.float64)
    emissions = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    total = dense_score(g, emissions, [4, 2])      # needs exactly 2 frames
    assert float(total[0].detach()) == NEG_INF and math.isfinite(float(total[1].detach()))
    grad, = torch.autograd.grad(total[0] + 0 * total[1], emissions)
    assert torch.all(grad == 0)


@backends
@pytest.mark.parametrize("semiring", ["log", "tropical"])
def test_graph_without_arcs_and_empty_sequence(use_kernels, semiring, choose_kernels):
    """Only a length-0 sequence has a path through a graph with no arcs: its total is the
    final weight, and the backward pass (Viterbi backtracking included) has no arc to visit."""
    choose_kernels("auto" if use_kernels else "torch")
    final = torch.tensor([0.25], dtype=torch.float64, requires_grad=True)
    g = Graph.from_arcs(1, [], [], [], start=[0], dtype=torch.float64).with_weights(
        torch.zeros(0, dtype=torch.float64), final_weights=final)
    emissions = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    total = dense_score([g, g], emissions, [0, 2], semiring)
    assert total[0].item() == 0.25 and total[1].item() == NEG_INF
    total[0].backward()
    assert final.grad.tolist() == [1.0]
    assert emissions.grad is None or torch.all(emissions.grad == 0)


def test_single_sequence_and_shared_graph():
    g = Graph.from_arcs(2, [0, 0, 1], [0, 1, 1], [0, 1, 2], start=[0], accept=[1], dtype=torch.float64)
    emissions = torch.randn(3, 5, 3, dtype=torch.float64)
    shared = dense_score(g, emissions)
    listed = dense_score([g, g, g], emissions)
    assert torch.allclose(shared, listed)
    single = dense_score(g, emissions[1])
    assert single.dim() == 0 and torch.allclose(single, shared[1])
    align = viterbi_align(g, emissions)
    assert int(align.arcs.max()) < g.num_arcs  # ids of the graph given, not of its replicas


@backends
def test_viterbi_align_matches_best_path(use_kernels, choose_kernels):
    choose_kernels("auto" if use_kernels else "torch")
    torch.manual_seed(3)
    g = Graph.from_arcs(3, [0, 0, 1, 1, 2, 0], [1, 0, 2, 1, 2, 2], [0, 1, 2, 0, 1, 2],
                        weights=torch.randn(6, dtype=torch.float64), start=[0], accept=[2], dtype=torch.float64)
    emissions = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    lengths = [5, 3]
    align = viterbi_align(g, emissions, lengths)
    best = dense_score(g, emissions, lengths, semiring="tropical")
    assert torch.allclose(align.scores, best)
    assert align.labels.shape == (2, 5) and align.labels[1, 3:].tolist() == [-1, -1]
    for b in range(2):
        arcs = align.arcs[b, : lengths[b]].tolist()
        src, dst = g.src.tolist(), g.dst.tolist()
        assert all(dst[a] == src[c] for a, c in zip(arcs, arcs[1:]))
        assert align.labels[b, : lengths[b]].tolist() == [g.ilabel.tolist()[a] for a in arcs]
        path = align.path[b]
        assert path.num_arcs == lengths[b]
        by_enumeration = plus([s for _, s in paths(path, lengths[b])], "tropical")
        assert math.isclose(by_enumeration, float(best[b].detach()), rel_tol=1e-9)
    # the path graph's weights are differentiable gathers of the emissions
    grad, = torch.autograd.grad(align.path.weights.sum(), emissions)
    assert float(grad.sum()) == sum(lengths)


@backends
def test_beam_prunes_to_the_best_paths(use_kernels, choose_kernels):
    choose_kernels("auto" if use_kernels else "torch")
    torch.manual_seed(4)
    g = Graph.from_arcs(2, [0, 0, 1, 1], [0, 1, 1, 0], [0, 1, 2, 1], start=[0], accept=[0, 1], dtype=torch.float64)
    emissions = torch.randn(1, 8, 3, dtype=torch.float64) * 3
    full = dense_lattice(g, emissions)
    narrow = dense_lattice(g, emissions, beam=0.0)
    wide = dense_lattice(g, emissions, beam=1e9)
    assert narrow.graph.num_arcs < full.graph.num_arcs == wide.graph.num_arcs
    best = float(dense_score(g, emissions, semiring="tropical")[0])
    kept = [s for _, s in paths(narrow.graph, 8)]
    assert kept and all(math.isclose(s, best, rel_tol=1e-9) for s in kept)
    # arc maps: weight = graph arc weight + emission at the frame
    lat = full
    want = g.weights[lat.arc_map] + emissions[0, lat.frame, g.ilabel[lat.arc_map]]
    assert torch.allclose(lat.graph.weights, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_viterbi_kernels_match_tensor_sweeps(dtype):
    """The CPU's compiled Viterbi (forward with best slots, backtracking) against the tensor
    formulation on a batch of random cyclic graphs: the same paths, scores and gradients."""
    gen = torch.Generator().manual_seed(5)
    graphs = []
    for nodes, arcs in [(5, 12), (30, 200), (300, 1500)]:
        src, dst = torch.randint(0, nodes, (arcs,), generator=gen), torch.randint(0, nodes, (arcs,), generator=gen)
        weights = torch.randn(arcs, generator=gen, dtype=dtype)
        weights[::7] = NEG_INF
        graphs.append(Graph.from_arcs(nodes, src, dst, torch.randint(0, 6, (arcs,), generator=gen), weights=weights,
                                      start=[0, 1], accept=list(range(nodes // 2)), dtype=dtype))
    emissions = torch.randn(3, 40, 6, generator=gen, dtype=dtype).log_softmax(-1)
    lengths = [40, 17, 33]
    results = []
    for compiled in (True, False):
        with kernels(compiled):
            e = emissions.clone().requires_grad_()
            align = viterbi_align(graphs, e, lengths)
            total = dense_score(graphs, e, lengths, semiring="tropical")
            results.append((align.arcs, align.scores.detach(), total.detach(), torch.autograd.grad(total.sum(), e)[0]))
    assert torch.isfinite(results[0][2]).all()
    assert torch.equal(results[0][0], results[1][0])
    for mine, theirs in zip(results[0][1:], results[1][1:]):
        torch.testing.assert_close(mine, theirs)


_FLOAT_POINTERS = {"alpha", "totals", "arc_weight", "columns", "start", "final", "beta", "grad_w", "grad_columns",
                   "grad_start", "grad_final", "shift", "grad_totals"}
_SIZES = {"num_nodes", "num_slots", "num_columns", "num_frames"}


@pytest.mark.skipif(not triton_kernels.TRITON_AVAILABLE or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="compiles the Triton kernels for CUDA without a GPU: needs triton, not its interpreter "
                           "(make test-triton)")
@pytest.mark.parametrize("target", [(90, "Hopper"), (80, "Ampere")], ids=lambda t: t[1] if isinstance(t, tuple) else t)
@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
def test_triton_kernels_compile_for_cuda(target, dtype):
    """Every Triton kernel, in every variant the launches use, compiles to a CUDA binary (Triton's
    own ptxas, no GPU needed): what the interpreter cannot check (types, atomics, lowering)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    def build(kernel, warps=4, **constexprs):
        types = {name: "constexpr" if name in constexprs else "i32" if name in _SIZES
                 else f"*{dtype}" if name in _FLOAT_POINTERS else "*i64" for name in kernel.arg_names}
        source = ASTSource(fn=kernel, signature=types, constexprs=constexprs)
        compiled = triton.compile(source, target=GPUTarget("cuda", target[0], 32), options={"num_warps": warps})
        assert compiled.asm["cubin"]

    for tropical, keep in [(False, False), (True, False), (True, True)]:
        build(triton_kernels.forward_kernel_cuda, MAX_PLUS=tropical, KEEP_SLOTS=keep, SLOTS=4, BLOCK=1024, warps=8)
    build(triton_kernels.forward_kernel_cuda, MAX_PLUS=False, KEEP_SLOTS=False, SLOTS=64, BLOCK=16)
    build(triton_kernels.backward_log_kernel_cuda, SLOTS=4, BLOCK=1024, warps=8)
    build(triton_kernels.backward_log_kernel_cuda, SLOTS=64, BLOCK=16)
    build(triton_kernels.backtrack_kernel_cuda)


def test_label_outside_emissions_raises():
    g = Graph.from_arcs(2, [0], [1], [5], start=[0], accept=[1])
    with pytest.raises(LabelError, match="arc 0: ilabel 5"):
        dense_score(g, torch.zeros(1, 2, 3))


@backends
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_plus_inf_emission_raises(use_kernels, bad, choose_kernels):
    """A NaN that meets no finite score used to vanish in the max-shifted sums (a finite total for
    NaN input). Every operation that reads emissions says where it is; beyond a sequence's
    length nothing is read, so nothing is checked there."""
    choose_kernels("auto" if use_kernels else "torch")
    g = Graph.from_arcs(2, [0, 0, 1], [0, 1, 1], [1, 2, 1], start=[0], accept=[1], dtype=torch.float64)
    emissions = torch.randn(2, 5, 3, dtype=torch.float64)
    emissions[1, 3, 1] = bad
    operations = [lambda e: dense_score(g, e), lambda e: dense_score(g, e, semiring="tropical"),
                  lambda e: viterbi_align(g, e), lambda e: dense_lattice(g, e),
                  lambda e: gtn_py.ctc_loss(e.transpose(0, 1), torch.tensor([[1, 2], [2, 1]]), [5, 5], [2, 2])]
    for operation in operations:
        with pytest.raises(WeightError, match=r"emissions\[1, 3, 1\] is (nan|inf)"):
            operation(emissions)
    padded = dense_score(g, emissions, [5, 3])  # frame 3 of sequence 1 is past its length
    assert torch.allclose(padded, dense_score(g, emissions.nan_to_num(posinf=0.0), [5, 3]))
    unread = emissions.clone()
    unread[1, 3, 1], unread[1, 3, 0] = 0.0, bad  # label 0 is read by no arc
    assert torch.isfinite(dense_score(g, unread)).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    torch.manual_seed(5)
    g = Graph.from_arcs(3, [0, 0, 1, 1, 2], [1, 0, 2, 1, 2], [0, 1, 2, 0, 1], start=[0], accept=[2],
                        dtype=torch.float64)
    emissions = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    cpu = dense_score(g, emissions, [6, 4])
    gpu_e = emissions.detach().cuda().requires_grad_()
    gpu = dense_score(g.to("cuda"), gpu_e, [6, 4])
    assert torch.allclose(cpu, gpu.cpu())
    assert torch.allclose(torch.autograd.grad(cpu.sum(), emissions)[0],
                          torch.autograd.grad(gpu.sum(), gpu_e)[0].cpu())


def _kernel_case(dtype: torch.dtype):
    """Totals and gradients (of arc, start and final weights and emissions) on cyclic graphs of
    uneven degree (one larger than a Triton program's block of nodes, one without arcs), with
    -inf weights and emissions, lengths T, shorter and 0: ``run(device, compiled, semiring)``
    (tropical: the Viterbi alignment's arcs too)."""
    gen = torch.Generator().manual_seed(3)
    num_frames, num_labels = 30, 7
    sizes = [(6, 14), (40, 300), (6000, 20000), (2, 0)]  # nodes, arcs
    lengths = [num_frames, 11, num_frames - 1, 0]
    leaves = []
    for nodes, arcs in sizes:
        src, dst = torch.randint(0, nodes, (arcs,), generator=gen), torch.randint(0, nodes, (arcs,), generator=gen)
        weights = (torch.randn(arcs, generator=gen) * 0.3).to(dtype)
        weights[::11] = NEG_INF
        start, final = torch.randn(nodes, generator=gen).to(dtype), torch.randn(nodes, generator=gen).to(dtype)
        start[nodes // 2:] = NEG_INF
        final[: nodes // 3] = NEG_INF
        leaves.append((src, dst, torch.randint(0, num_labels, (arcs,), generator=gen), weights, start, final))
    emissions = torch.randn(len(sizes), num_frames, num_labels, generator=gen).to(dtype).log_softmax(-1)
    emissions[0, 2, :3] = NEG_INF

    def run(device: str, compiled: bool, semiring: str = "log"):
        params = [[t.detach().to(device).requires_grad_() for t in leaf[3:]] for leaf in leaves]
        graphs = [Graph.from_arcs(nodes, src.to(device), dst.to(device), ilabel.to(device), weights=w,
                                  start_weights=s, final_weights=f)
                  for (nodes, _), (src, dst, ilabel, *_), (w, s, f) in zip(sizes, leaves, params)]
        e = emissions.detach().to(device).requires_grad_()  # fresh leaves: .to() on the CPU is the tensor itself
        with kernels(compiled):
            totals = dense_score(graphs, e, lengths, semiring)
            flat = [p for group in params for p in group] + [e]
            grads = torch.autograd.grad(totals.sum(), flat, allow_unused=True)
            alignment = [viterbi_align(graphs, e, lengths).arcs] if semiring == "tropical" else []
        return [t.cpu() for t in (totals, *grads, *alignment) if t is not None]

    return run


def _kernel_tolerance(dtype: torch.dtype) -> dict:
    return {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-10}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("semiring", ["log", "tropical"])
def test_cuda_kernel_sweeps_match_cpu(dtype, semiring):
    """CUDA's compiled kernels (Triton) against the CPU's numba kernels and CUDA's tensor
    formulation (:func:`_kernel_case`)."""
    run = _kernel_case(dtype)
    cpu = run("cpu", True, semiring)
    assert torch.isfinite(cpu[0][:3]).all()
    for compiled in (True, False):
        for mine, theirs in zip(run("cuda", compiled, semiring), cpu, strict=True):
            torch.testing.assert_close(mine, theirs, **_kernel_tolerance(dtype))


@pytest.mark.skipif(not (triton_kernels.TRITON_AVAILABLE and os.environ.get("TRITON_INTERPRET") == "1"),
                    reason="checks the Triton kernels without a GPU: needs triton and TRITON_INTERPRET=1 "
                           "(make test-triton)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_kernels_interpreted_match_numba(dtype, choose_kernels):
    """The CUDA kernels' code run by Triton's interpreter on the CPU against the numba kernels
    (:func:`_kernel_case`): what CI can check of them without a GPU (not races or compilation)."""
    run = _kernel_case(dtype)
    numba_results = {semiring: run("cpu", True, semiring) for semiring in ("log", "tropical")}
    choose_kernels("triton")
    lay = Layout.of(Graph.batch([gtn_py.ctc_graph([[1, 2]])]), 1, 3)
    with dense.dense_kernels("triton"):
        assert choose_kernels_for(lay, torch.zeros(1, 1, dtype=dtype), gtn_py.get_semiring("log")).name == "triton"
    for semiring, theirs_all in numba_results.items():
        for mine, theirs in zip(run("cpu", True, semiring), theirs_all, strict=True):
            torch.testing.assert_close(mine, theirs, **_kernel_tolerance(dtype))
    # CTC with an impossible target (6 labels, 2 of them repeats, in 7 frames): +inf, zero gradient.
    log_probs = torch.randn(7, 3, 5, generator=torch.Generator().manual_seed(4), dtype=dtype).log_softmax(-1)
    targets, lengths = torch.tensor([[1, 2, 2, 3, 3, 4], [1, 2, 3, 0, 0, 0], [4, 4, 0, 0, 0, 0]]), [6, 3, 2]

    def ctc(triton_on_cpu: bool):
        choose_kernels("triton" if triton_on_cpu else "auto")
        x = log_probs.clone().requires_grad_()
        losses = gtn_py.ctc_loss(x, targets, [7, 7, 5], lengths, reduction="none")
        zeroed = gtn_py.ctc_loss(x, targets, [7, 7, 5], lengths, reduction="sum", zero_infinity=True)
        return losses, torch.autograd.grad(zeroed, x)[0]

    (triton_losses, triton_grad), (numba_losses, numba_grad) = ctc(True), ctc(False)
    assert math.isinf(float(triton_losses[0].detach())) and torch.isfinite(triton_losses[1:]).all()
    torch.testing.assert_close(triton_losses, numba_losses, **_kernel_tolerance(dtype))
    torch.testing.assert_close(triton_grad, numba_grad, **_kernel_tolerance(dtype))
    assert torch.isfinite(triton_grad).all() and triton_grad.abs().sum() > 0
    # A NaN arc weight written after construction: NaN for its sequence only (the GPU's maxima drop
    # NaNs, so the kernels add a NaN term), the same in both kernels, gradients included.
    graphs = gtn_py.ctc_graph(targets[1:], lengths[1:], dtype=dtype)
    weights = graphs.weights.detach().clone()
    weights[0] = math.nan
    weights.requires_grad_()
    nan_graphs = graphs.replace(weights=weights)
    emissions = log_probs[:, 1:].transpose(0, 1)
    for semiring in ("log", "tropical"):
        results = []
        for triton_on_cpu in (True, False):
            choose_kernels("triton" if triton_on_cpu else "auto")
            totals = dense_score(nan_graphs, emissions, [7, 5], semiring=semiring)
            results.append((totals, torch.autograd.grad(totals.sum(), weights)[0]))
        (triton_totals, triton_grads), (numba_totals, numba_grads) = results
        assert math.isnan(float(triton_totals[0].detach())) and math.isfinite(float(triton_totals[1].detach()))
        torch.testing.assert_close(triton_totals, numba_totals, equal_nan=True, **_kernel_tolerance(dtype))
        torch.testing.assert_close(triton_grads, numba_grads, equal_nan=True, **_kernel_tolerance(dtype))


def test_dense_kernels_choose_in_one_place():
    """``dense_kernels`` chooses for its block only: numba on CPU tensors where it applies (the
    log semiring at temperature 1, float32/64), the tensor sweeps otherwise or when asked, a
    given SweepKernels object where it applies; an unknown choice is refused."""
    lay = Layout.of(Graph.batch([gtn_py.ctc_graph([[1, 2]])]), 1, 3)
    columns = torch.zeros(4, 3)
    log, tempered = gtn_py.get_semiring("log"), gtn_py.LogSemiring(0.5)
    assert choose_kernels_for(lay, columns, log).name == "numba"
    assert choose_kernels_for(lay, columns, tempered).name == "torch"  # no compiled kernel for beta != 1
    assert choose_kernels_for(lay, columns.half(), log).name == "torch"
    with dense.dense_kernels("torch"):
        assert choose_kernels_for(lay, columns, log).name == "torch"
        with dense.dense_kernels("numba"):
            assert choose_kernels_for(lay, columns, log).name == "numba"
        assert choose_kernels_for(lay, columns, log).name == "torch"
    stub = triton_kernels.TritonKernels("cpu", kernels=(None, None, None))
    with dense.dense_kernels(stub):
        assert choose_kernels_for(lay, columns, log) is stub
        assert choose_kernels_for(lay, columns, tempered).name == "torch"
    assert choose_kernels_for(lay, columns, log).name == "numba"
    with pytest.raises(ValueError, match="kernels must be one of"):
        with dense.dense_kernels("cuda"):
            pass
