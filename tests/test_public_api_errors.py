"""Every exception the public API raises on bad input derives from gtn_py.GraphError.

Each public function (gtn_py's exports, gtn_py.criteria's and gtn_py.losses') has a call that
works (``GOOD``); each row of the table replaces one of its arguments with one bad value of
the argument's kind (wrong type, None, an empty graph, a batch of the wrong size, a float64
or meta-device tensor, a negative, fractional, NaN or infinite number, an unknown name...).
A row passes when the call returns or raises a GraphError subclass within a few seconds;
anything else (a TypeError, an IndexError from deep inside, a hang) fails that row alone.
A path that does not exist raises FileNotFoundError, as ``open`` does (see _allowed).
"""

from __future__ import annotations

import inspect
import io
import math
import os
import signal
from typing import Any, Callable, Dict, List, Tuple

import pytest
import torch

import gtn_py as gtn
from gtn_py import Graph, GraphError, losses


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_SEED)


def rand(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=_SEED)


_SEED = torch.Generator().manual_seed(0)
A = gtn.string_graph([1, 2])                       # acceptor, float32
B = gtn.Graph.from_arcs(3, [0, 1, 0], [1, 2, 2], [1, 2, 0], [2, 1, 0], [-0.5, -1.0, -2.0], start=[0], accept=[2])
C = gtn.closure(gtn.string_graph([1], weights=[-1.0]))  # cyclic
EM = randn(4, 3).log_softmax(-1)             # [T, V]
LP = randn(5, 1, 4).log_softmax(-1)          # CTC [T, N, C]
UN = randn(3, 2)                              # CRF unary [T, K]
TR = randn(2, 2)
HMMS = gtn.hmm_units(2, 2)
LEX = gtn.lexicon({1: [0, 1]}, HMMS)
GOOD: Dict[str, Tuple[Callable[..., Any], tuple, dict]] = {
    "Graph": (gtn.Graph, (), {}),
    "Graph.from_arcs": (gtn.Graph.from_arcs, (2, [0], [1], [1]), dict(start=[0], accept=[1])),
    "Graph.add_arc": (lambda s, d, i, o=None, weight=0.0: _two().add_arc(s, d, i, o, weight), (0, 1, 1), {}),
    "Graph.add_node": (lambda start=False, accept=False, **kw: Graph().add_node(start, accept, **kw), (True, False),
                       dict(start_weight=0.0)),
    "Graph.make_accept": (lambda node, weight=0.0: _two().make_accept(node, weight), (1, -0.5), {}),
    "Graph.batch": (gtn.Graph.batch, ([A, A],), {}),
    "Graph.to": (lambda device=None, dtype=None: A.to(device, dtype), ("cpu", torch.float64), {}),
    "Graph.with_weights": (lambda w: A.with_weights(w), (torch.zeros(2),), {}),
    "Graph.__getitem__": (lambda i: gtn.Graph.batch([A, A])[i], (1,), {}),
    "linear_graph": (gtn.linear_graph, (2, 3), {}),
    "string_graph": (gtn.string_graph, ([1, 2],), {}),
    "scalar_graph": (gtn.scalar_graph, (-0.5, 1), {}),
    "check_compatible": (gtn.check_compatible, (A, A), {}),
    "LogSemiring": (gtn.LogSemiring, (0.5,), {}),
    "get_semiring": (gtn.get_semiring, ("log",), {}),
    "is_acyclic": (gtn.is_acyclic, (A,), {}),
    "topological_order": (gtn.topological_order, (A,), {}),
    "arcsort": (gtn.arcsort, (B, "olabel"), {}),
    "clone": (gtn.clone, (A,), {}),
    "closure": (gtn.closure, (A,), {}),
    "concat": (gtn.concat, ([A, A],), {}),
    "connect": (gtn.connect, (B,), {}),
    "equal": (gtn.equal, (A, A), dict(tol=1e-6)),
    "equivalent": (gtn.equivalent, (A, A), dict(semiring="log", tol=1e-5, max_paths=100)),
    "invert": (gtn.invert, (B,), {}),
    "project_input": (gtn.project_input, (B,), {}),
    "project_output": (gtn.project_output, (B,), {}),
    "reverse": (gtn.reverse, (B,), {}),
    "topsort": (gtn.topsort, (B,), {}),
    "union": (gtn.union, ([A, B],), {}),
    "write_openfst": (gtn.write_openfst, (B,), dict(isymbols=None, acceptor=None)),
    "read_openfst": (gtn.read_openfst, ("0 1 1 1 0.5\n1\n",), dict(acceptor=None, dtype=torch.float32)),
    "read_arpa": (gtn.read_arpa, ("\\data\\\nngram 1=2\n\\1-grams:\n-0.5 a\n-0.2 </s>\n\\end\\\n",),
                  dict(symbols={0: "<eps>"}, phi_symbol="#phi", dtype=torch.float32)),
    "read_symbols": (gtn.read_symbols, ("a 1\nb 2\n",), {}),
    "write_symbols": (gtn.write_symbols, ({1: "a"},), {}),
    "save": (gtn.save, (A, io.BytesIO()), {}),
    "draw": (gtn.draw, (B,), dict(max_arcs=2)),
    "arc_posteriors": (gtn.arc_posteriors, (B,), {}),
    "forward_score": (gtn.forward_score, (C,), {}),
    "n_best": (gtn.n_best, (B, 2), dict(distinct_outputs=False, max_paths=100)),
    "prune": (gtn.prune, (B, 1.0), {}),
    "sample": (gtn.sample, (B, 2), {}),
    "push": (gtn.push, (B, "log"), dict(toward="start")),
    "path_entropy": (gtn.path_entropy, (B,), {}),
    "shortest_distance": (gtn.shortest_distance, (B, "log"), dict(reverse=False)),
    "total_score": (gtn.total_score, (C, "log"), {}),
    "viterbi_path": (gtn.viterbi_path, (B,), {}),
    "viterbi_score": (gtn.viterbi_score, (C,), {}),
    "compose": (gtn.compose, (B, A), {}),
    "intersect": (gtn.intersect, (A, A), {}),
    "determinize": (gtn.determinize, (A, "tropical"), {}),
    "minimize": (gtn.minimize, (A, "tropical"), dict(delta=1e-4)),
    "remove_epsilon": (gtn.remove_epsilon, (B, "log"), {}),
    "dense_score": (gtn.dense_score, (A, EM), dict(lengths=[4])),
    "dense_lattice": (gtn.dense_lattice, (A, EM), dict(lengths=[4], beam=5.0)),
    "intersect_dense": (gtn.intersect_dense, (A, EM), dict(lengths=[4], beam=5.0)),
    "intersect_dense_searched": (gtn.intersect_dense, (A, EM), dict(lengths=[4], beam=5.0, search_beam=3.0,
                                                                    max_active=4)),
    "viterbi_align_searched": (gtn.viterbi_align, (A, EM), dict(lengths=[4], search_beam=3.0, max_active=4)),
    "viterbi_align": (gtn.viterbi_align, (A, EM), dict(lengths=[4])),
    "ctc_loss": (gtn.ctc_loss, (LP, torch.tensor([[1, 2]]), [5], [2]), dict(blank=0, reduction="mean")),
    "CTCLoss": (lambda *a, **k: gtn.CTCLoss(**k)(*a), (LP, torch.tensor([[1, 2]]), [5], [2]), dict(blank=0)),
    "ctc_graph": (gtn.ctc_graph, ([[1, 2]],), dict(blank=0)),
    "ctc_expand": (gtn.ctc_expand, (A,), dict(blank=0)),
    "ctc_topology": (gtn.ctc_topology, (3,), dict(blank=0)),
    "ctc_decoding_graph": (gtn.ctc_decoding_graph, (gtn.closure(A), 3), dict(blank=0)),
    "rnnt_loss": (gtn.rnnt_loss, (randn(1, 3, 3, 4), torch.tensor([[1, 2]]), [3], [2]), dict(blank=0)),
    "rnnt_lattice": (gtn.rnnt_lattice, (randn(1, 3, 3, 4).log_softmax(-1), torch.tensor([[1, 2]]), [3], [2]), {}),
    "rnnt_graph_lattice": (gtn.rnnt_graph_lattice, (randn(1, 3, 3, 4).log_softmax(-1), A, [3]), dict(blank=0)),
    "rnnt_graph_loss": (gtn.rnnt_graph_loss, (randn(1, 3, 3, 4), A, [3]), dict(blank=0)),
    "rnnt_greedy_decode": (gtn.rnnt_greedy_decode, (randn(2, 3, 4), [3, 2], lambda labels, state: (
        torch.zeros(labels.shape[0], 4), state), lambda frames, outputs: frames + outputs), dict(blank=0)),
    "rnnt_beam_search": (gtn.rnnt_beam_search, (randn(2, 3, 4), [3, 2], lambda labels, state: (
        torch.zeros(labels.shape[0], 4), state), lambda frames, outputs: frames + outputs),
        dict(beam=2, blank=0, grammar=gtn.Graph.from_arcs(1, [0, 0], [0, 0], [1, 2], [1, 2], start=[0], accept=[0]),
             grammar_scale=0.5)),
    "rnnt_loss_simple": (gtn.rnnt_loss_simple, (randn(1, 3, 4), randn(1, 3, 4), torch.tensor([[1, 2]]), [3], [2]),
                         dict(blank=0)),
    "rnnt_prune_ranges": (gtn.rnnt_prune_ranges, (randn(1, 3, 4), randn(1, 3, 4), torch.tensor([[1, 2]]), [3], [2],
                                                  2), dict(blank=0)),
    "rnnt_prune": (gtn.rnnt_prune, (randn(1, 3, 5), randn(1, 3, 5), torch.tensor([[0, 0, 1]]), 2), {}),
    "rnnt_loss_pruned": (gtn.rnnt_loss_pruned, (randn(1, 3, 2, 4), torch.tensor([[1, 2]]), torch.tensor([[0, 0, 1]]),
                                                [3], [2]), dict(blank=0)),
    "compose_phi": (lambda g1, g2, phi: gtn.compose(g1, g2, phi=phi), (A, gtn.Graph.from_arcs(
        2, [0, 1], [0, 0], [1, 9], [1, 9], start=[1], accept=[0]), 9), {}),
    "remove_failure_arcs": (gtn.remove_failure_arcs, (gtn.Graph.from_arcs(
        2, [0, 1], [0, 0], [1, 9], [1, 9], start=[1], accept=[0]), 9), {}),
    "ctc_graph_loss": (gtn.ctc_graph_loss, (LP, gtn.label_sequences([[1, 2]]), [5]), dict(blank=0)),
    "ctc_greedy_decode": (gtn.ctc_greedy_decode, (EM[None],), dict(lengths=[4], blank=0)),
    "ctc_decode": (gtn.ctc_decode, (EM[None],), dict(lengths=[4], blank=0)),
    "viterbi_decode": (gtn.viterbi_decode, (gtn.ctc_topology(3), EM), dict(lengths=[4])),
    "label_sequences": (gtn.label_sequences, ([[1, 2]],), {}),
    "asg_transition_graph": (gtn.asg_transition_graph, (TR,), {}),
    "asg_target_graphs": (gtn.asg_target_graphs, ([[0, 1]], [2], TR), {}),
    "asg_loss": (gtn.asg_loss, (randn(1, 4, 2), [[0, 1]], TR), dict(input_lengths=[4], target_lengths=[2])),
    "crf_graph": (gtn.crf_graph, (UN, TR), {}),
    "crf_log_partition": (gtn.crf_log_partition, (UN, TR), {}),
    "crf_marginals": (gtn.crf_marginals, (UN, TR), {}),
    "crf_viterbi": (gtn.crf_viterbi, (UN, TR), {}),
    "crf_nll": (gtn.crf_nll, (UN, TR, torch.tensor([0, 1, 1])), {}),
    "dtw_distance": (gtn.dtw_distance, (rand(3, 4),), dict(gamma=0.1)),
    "dtw_graph": (gtn.dtw_graph, (rand(3, 4),), {}),
    "dtw_path": (gtn.dtw_path, (rand(3, 4),), {}),
    "local_distances": (gtn.local_distances, (rand(3, 5), rand(4, 5)), {}),
    "hmm_topology": (gtn.hmm_topology, (3,), dict(first_label=1)),
    "hmm_units": (gtn.hmm_units, (2, 2), {}),
    "word_model": (gtn.word_model, ([0, 1], HMMS, 1), {}),
    "lexicon": (gtn.lexicon, ({1: [0, 1]}, HMMS), {}),
    "decoding_graph": (gtn.decoding_graph, (LEX,), {}),
    "transcript_graphs": (gtn.transcript_graphs, (LEX, [[1]]), {}),
    "hmm_score": (gtn.hmm_score, (gtn.transcript_graphs(LEX, [[1]]), randn(4, 5).log_softmax(-1)), {}),
    "hmm_nll": (gtn.hmm_nll, (gtn.transcript_graphs(LEX, [[1]]), randn(4, 5).log_softmax(-1)), {}),
    "hmm_lattice": (gtn.hmm_lattice, (gtn.transcript_graphs(LEX, [[1]]), randn(4, 5).log_softmax(-1)), dict(beam=5.0)),
    "hmm_decode": (gtn.hmm_decode, (gtn.decoding_graph(LEX), randn(4, 5).log_softmax(-1)), {}),
    "forced_align": (gtn.forced_align, (LEX, [[1]], randn(4, 5).log_softmax(-1)), {}),
    "span_table": (gtn.span_table, (3, 2), {}),
    "segmentation_graph": (gtn.segmentation_graph, (3, 2), {}),
    "recognition_graph": (gtn.recognition_graph, (gtn.segmentation_graph(3, 2), randn(5, 2)), {}),
    "free_energy": (losses.free_energy, (B,), dict(beta=1.0)),
    "energy": (losses.energy, (B,), {}),
    "energy_loss": (losses.energy_loss, (A,), dict(reduction="mean")),
    "nll": (losses.nll, (A, B), dict(beta=1.0)),
    "perceptron": (losses.perceptron, (A, B), {}),
    "hinge": (losses.hinge, (A, B), dict(margin=1.0)),
    "log_loss": (losses.log_loss, (A, B), {}),
    "mce": (losses.mce, (A, B), {}),
    "mee": (losses.mee, (A, B), dict(beta=1.0)),
    "mmi": (losses.mmi, (A, B), dict(beta=1.0)),
    "lvq2": (losses.lvq2, (A, B), dict(saturation=1.0)),
    "square_exp": (losses.square_exp, (A, B), dict(beta=1.0)),
    "square_square": (losses.square_square, (A, B), dict(margin=1.0)),
    "hamming_cost": (losses.hamming_cost, ([1, 2], 3), dict(margin=1.0)),
    "most_offending_incorrect": (losses.most_offending_incorrect, (A, B), {}),
    "rejecting_acceptor": (losses.rejecting_acceptor, (A, torch.tensor([1, 2, 3])), {}),
    "reduce_losses": (losses.reduce_losses, (torch.ones(2),), dict(reduction="sum")),
}


def _two() -> Graph:
    g = Graph()
    g.add_node(start=True)
    g.add_node(accept=True)
    return g

GRAPH_NAMES = {"g", "g1", "g2", "graphs", "correct", "all_answers", "grammar", "lexicon_graph", "decoding",
               "decoding_graph", "seg", "target_graphs", "cost", "unit_hmms"}
TENSOR_NAMES = {"emissions", "log_probs", "logits", "logit_lengths", "encoder_out", "targets", "lengths", "am", "lm",
                "ranges", "predictor_out",
                "input_lengths", "target_lengths", "weights", "w",
                "transitions", "unary", "tags", "distances", "templates", "inputs", "span_scores", "alphabet",
                "losses", "references", "transcripts", "ilabels", "units", "pronunciations", "src", "dst", "ilabel",
                "start", "accept", "table", "path_or_file"}
INT_NAMES = {"num_nodes", "k", "n", "node", "i", "s", "d", "blank", "num_labels", "num_states", "num_units", "word",
             "label_offset", "max_paths", "first_label", "num_frames", "max_arcs", "max_span", "num_pieces",
             "max_symbols_per_frame", "s_range", "max_active"}
FLOAT_NAMES = {"weight", "beta", "beam", "tol", "delta", "margin", "gamma", "saturation", "start_weight",
               "search_beam"}
STR_NAMES = {"semiring", "toward", "reduction", "by", "backend", "path_or_text_or_file", "source", "device"}

META = torch.zeros(2, device="meta")
BAD: Dict[str, List[Tuple[str, Callable[[], Any]]]] = {
    "graph": [("None", lambda: None), ("str", lambda: "not a graph"), ("empty_graph", Graph),
              ("float64_graph", lambda: A.double()), ("batch_of_3", lambda: Graph.batch([A, A, A])),
              ("empty_list", list), ("tensor", lambda: EM)],
    "tensor": [("None", lambda: None), ("str", lambda: "x"), ("empty", lambda: torch.zeros(0)),
               ("nan", lambda: torch.full((2,), math.nan)), ("rank4", lambda: torch.zeros(2, 2, 2, 2)),
               ("float64", lambda: EM.double()), ("meta", lambda: META), ("fractions", lambda: [1.5]),
               ("negative", lambda: [-1])],
    "int": [("None", lambda: None), ("negative", lambda: -1), ("fraction", lambda: 1.5), ("nan", lambda: math.nan),
            ("inf", lambda: math.inf), ("str", lambda: "x")],
    "float": [("None", lambda: None), ("nan", lambda: math.nan), ("inf", lambda: math.inf),
              ("negative", lambda: -1.0), ("str", lambda: "x")],
    "str": [("None", lambda: None), ("unknown", lambda: "no such thing"), ("int", lambda: 3)],
    "other": [("None", lambda: None), ("str", lambda: "x"), ("negative", lambda: -1)],
}


def _kind(name: str) -> str:
    for kind, names in (("graph", GRAPH_NAMES), ("tensor", TENSOR_NAMES), ("int", INT_NAMES),
                        ("float", FLOAT_NAMES), ("str", STR_NAMES)):
        if name in names:
            return kind
    return "other"


def _rows() -> List[Any]:
    rows = []
    for name, (fn, args, kwargs) in GOOD.items():
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        slots = [(k, positional[k] if k < len(positional) else f"arg{k}") for k in range(len(args))]
        slots += [(key, key) for key in kwargs]
        for slot, param in slots:
            for label, make in BAD[_kind(param)]:
                rows.append(pytest.param(name, slot, make, id=f"{name}-{param}-{label}"))
    return rows


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang()


def _allowed(error: BaseException, name: str) -> bool:
    """A GraphError; or, for the file functions, FileNotFoundError for a path that is not there."""
    if isinstance(error, GraphError):
        return True
    return isinstance(error, FileNotFoundError) and name in ("read_openfst", "read_arpa", "read_symbols", "load",
                                                             "save")


@pytest.fixture(scope="module")
def scratch_directory(tmp_path_factory):
    """Run in a scratch directory: a bad path argument names a file there, not in the checkout."""
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("bad_arguments"))
    yield
    os.chdir(here)


def test_good_calls_run():
    for fn, args, kwargs in GOOD.values():
        fn(*args, **kwargs)  # the table below breaks calls that work, one argument at a time


@pytest.mark.parametrize("name, slot, make", _rows())
def test_bad_argument_raises_a_graph_error(name, slot, make, scratch_directory):
    fn, args, kwargs = GOOD[name]
    args, kwargs = list(args), dict(kwargs)
    if isinstance(slot, int):
        args[slot] = make()
    else:
        kwargs[slot] = make()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 10.0)
    try:
        fn(*args, **kwargs)
    except _Hang:
        pytest.fail(f"{name} ran for more than 10 s")
    except Exception as error:  # noqa: BLE001 - the point is to look at whatever comes out
        if not _allowed(error, name):
            raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_front_door_errors_name_the_argument():
    with pytest.raises(gtn.ArgumentTypeError, match="unary must be a floating-point tensor, not list"):
        gtn.crf_log_partition([[0.5, 1.0]], TR)
    with pytest.raises(gtn.DtypeMismatchError, match="tags must be an integer tensor"):
        gtn.crf_nll(UN, TR, torch.zeros(3))
    with pytest.raises(gtn.ArgumentValueError, match="transitions is on the meta device"):
        gtn.asg_transition_graph(torch.zeros(2, 2, device="meta"))
    with pytest.raises(gtn.InvalidGraphError, match="square"):
        gtn.asg_transition_graph(torch.zeros(2, 3))
    with pytest.raises(gtn.ArgumentValueError, match="num_states must be an integer, not 1.5"):
        gtn.hmm_units(2, 1.5)
    with pytest.raises(gtn.LabelError, match="must hold integers"):
        gtn.word_model([0.5], HMMS, 1)
    with pytest.raises(gtn.ArgumentValueError, match="alphabet must be sorted"):
        losses.rejecting_acceptor(A, torch.tensor([2, 1]))
    with pytest.raises(gtn.LabelError, match="alphabet holds 0"):
        losses.rejecting_acceptor(A, torch.tensor([0, 1]))
    with pytest.raises(gtn.ArgumentValueError, match="gamma .* is nan"):
        gtn.dtw_distance(rand(3, 4), gamma=math.nan)
    with pytest.raises(gtn.ArgumentValueError, match="decoding_graph is an empty list"):
        gtn.viterbi_decode([], EM)


def test_decoding_a_graph_without_paths_finds_none():
    """An empty decoding graph has no path: no words and score -inf, not an index error."""
    emissions = randn(4, 5).log_softmax(-1)
    assert gtn.viterbi_decode(Graph(), emissions, lengths=[4]) == [[]]
    found = gtn.hmm_decode(Graph(), emissions)
    assert found.words == [[]] and found.scores.tolist() == [-math.inf] and found.states.tolist() == [[-1] * 4]


def test_lexicon_takes_a_tensor_of_pronunciations():
    as_tensor = gtn.lexicon(torch.tensor([[0, 1], [1, 0]]), HMMS)
    as_lists = gtn.lexicon([[0, 1], [1, 0]], HMMS)
    assert gtn.equal(as_tensor, as_lists)
