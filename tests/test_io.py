"""Files and drawing: OpenFst text against pywrapfst, symbol tables, exact save/load, draw."""

from __future__ import annotations

import io
import math
import shutil
from collections import defaultdict
from typing import Dict, List

import numpy as np
import pytest
import pywrapfst as fst
import torch
from hypothesis import given
from hypothesis import strategies as st
from oracle import Strings, assert_relations_close, plus, relation
from strategies import graphs

from gtn_py import (
    FormatError,
    Graph,
    InvalidGraphError,
    LabelError,
    draw,
    load,
    read_openfst,
    read_symbols,
    save,
    write_openfst,
    write_symbols,
)

NEG_INF = float("-inf")
ARC_TYPES = {"log": "log", "tropical": "standard"}
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


# ---------------------------------------------------------------------- pywrapfst helpers
def compile_text(text: str, semiring: str = "log", acceptor: bool = False, isymbols=None, osymbols=None) -> fst.Fst:
    compiler = fst.Compiler(arc_type=ARC_TYPES[semiring], acceptor=acceptor, isymbols=isymbols, osymbols=osymbols)
    compiler.write(text)
    return compiler.compile()


def fst_relation(f: fst.Fst, semiring: str) -> Dict[Strings, float]:
    """The weighted relation of an acyclic pywrapfst FST, as scores (-cost), by path enumeration."""
    groups: Dict[Strings, List[float]] = defaultdict(list)

    def walk(state: int, ins: tuple, outs: tuple, score: float) -> None:
        final = -float(f.final(state))
        if final > NEG_INF:
            groups[(ins, outs)].append(score + final)
        for arc in f.arcs(state):
            walk(arc.nextstate, ins + ((arc.ilabel,) if arc.ilabel else ()),
                 outs + ((arc.olabel,) if arc.olabel else ()), score - float(arc.weight))

    if f.start() != fst.NO_STATE_ID:
        walk(f.start(), (), (), 0.0)
    return {k: plus(v, semiring) for k, v in groups.items() if plus(v, semiring) > NEG_INF}


def reversed_relation(rel: Dict[Strings, float]) -> Dict[Strings, float]:
    return {(i[::-1], o[::-1]): w for (i, o), w in rel.items()}


@st.composite
def precise_graphs(draw_, dtype: torch.dtype, **kwargs) -> Graph:
    """Random graphs whose arc, start and final weights use every bit of ``dtype``."""
    g = draw_(graphs(dtype=dtype, **kwargs))
    width = 32 if dtype == torch.float32 else 64
    # any value the dtype holds, -inf (an impossible arc) included, +inf (invalid) excluded
    value = st.floats(allow_nan=False, width=width).map(lambda x: -x if x == math.inf else x)

    def like(t: torch.Tensor, keep_neg_inf: bool) -> torch.Tensor:
        new = torch.tensor(draw_(st.lists(value, min_size=t.numel(), max_size=t.numel())), dtype=dtype)
        return torch.where(t == NEG_INF, t, new) if keep_neg_inf else new

    return g.with_weights(like(g.weights, False), final_weights=like(g.final_weights, True),
                          start_weights=like(g.start_weights, True))


def sorted_arcs(g: Graph, nodes: int | None = None) -> torch.Tensor:
    """Arcs (of src < nodes) as rows ``src dst ilabel olabel weight`` in a canonical order (float64)."""
    rows = torch.stack([g.src.double(), g.dst.double(), g.ilabel.double(), g.olabel.double(),
                        g.weights.double()], 1)
    if nodes is not None:
        rows = rows[g.src < nodes]
    keys = rows.numpy()
    return rows[np.lexsort(keys.T[::-1]).copy()]


# ---------------------------------------------------------------------- OpenFst text vs pywrapfst
@pytest.mark.parametrize("semiring", ["log", "tropical"])
@given(g=graphs(max_nodes=5, max_arcs=8))
def test_written_text_compiles_to_the_same_relation(g, semiring):
    f = compile_text(write_openfst(g), semiring)
    assert_relations_close(fst_relation(f, semiring), relation(g, semiring))


@given(g=graphs(acceptor=True))
def test_written_acceptor_text_compiles_to_the_same_relation(g):
    text = write_openfst(g, acceptor=True)
    assert all(len(line.split()) in (1, 2, 3, 4) for line in text.splitlines())
    f = compile_text(text, acceptor=True)
    assert_relations_close(fst_relation(f, "log"), relation(g, "log"))
    assert_relations_close(relation(read_openfst(text, acceptor=True, dtype=g.dtype)), relation(g))


def _rmepsilon(f: fst.Fst) -> fst.Fst:
    return f.copy().rmepsilon()


OPENFST_OPS = {"print": lambda f: f, "reverse": fst.reverse, "rmepsilon": _rmepsilon,
               "push": lambda f: fst.push(f, push_weights=True)}


@pytest.mark.parametrize("op", sorted(OPENFST_OPS))
@pytest.mark.parametrize("semiring", ["log", "tropical"])
@given(g=graphs(max_nodes=5, max_arcs=8))
def test_reading_openfst_output_gives_its_relation(g, op, semiring):
    f = OPENFST_OPS[op](compile_text(write_openfst(g), semiring))
    h = read_openfst(f.print(), dtype=torch.float64)
    want = fst_relation(f, semiring)
    assert_relations_close(relation(h, semiring), want)
    original = relation(g, semiring)
    assert_relations_close(want, reversed_relation(original) if op == "reverse" else original)


@given(g=graphs(acceptor=True, epsilons=False))
def test_reading_determinized_acceptor(g):
    f = fst.determinize(compile_text(write_openfst(g, acceptor=True), "tropical", acceptor=True))
    h = read_openfst(f.print(acceptor=True), acceptor=True, dtype=torch.float64)
    assert_relations_close(relation(h, "tropical"), relation(g, "tropical"))


# ---------------------------------------------------------------------- exact text round trip
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(data=st.data())
def test_text_round_trip_is_exact(dtype, data):
    g = data.draw(precise_graphs(dtype, max_nodes=5, max_arcs=8))
    text = write_openfst(g)
    h = read_openfst(text, dtype=dtype)
    n = g.num_nodes
    starts = g.start_nodes
    direct = starts.numel() == 1 and float(g.start_weights[starts[0]]) == 0.0
    assert h.num_nodes == (n if direct else n + 1)
    assert torch.equal(sorted_arcs(h, n), sorted_arcs(g))
    assert torch.equal(h.final_weights[:n], g.final_weights)
    if direct:
        assert torch.equal(h.start_weights, g.start_weights)
    else:  # through a super-start node n with an epsilon arc per start node carrying its weight
        assert h.start_nodes.tolist() == [n]
        from_super = h.src == n
        assert (h.ilabel[from_super] == 0).all() and (h.olabel[from_super] == 0).all()
        assert sorted(h.dst[from_super].tolist()) == starts.tolist()
        order = torch.argsort(h.dst[from_super])
        assert torch.equal(h.weights[from_super][order], g.start_weights[starts])


def test_write_openfst_layout():
    g = Graph.from_arcs(4, [2, 0, 2], [3, 2, 1], [1, 0, 2], [1, 3, 2], [0.0, -0.5, float("-inf")],
                        start=[2], final_weights=[NEG_INF, 0.0, NEG_INF, 1.5])
    assert write_openfst(g) == "2\t3\t1\t1\n2\t1\t2\t2\tInfinity\n0\t2\t0\t3\t0.5\n1\n3\t-1.5\n"


def test_write_openfst_states_that_have_no_line_of_their_own():
    g = Graph.from_arcs(3, [1], [1], [1], start=[0], accept=[1])
    text = write_openfst(g)
    assert text == "0\tInfinity\n1\t1\t1\t1\n1\n2\tInfinity\n"
    h = read_openfst(text)
    assert h.num_nodes == 3 and h.start_nodes.tolist() == [0] and h.accept_nodes.tolist() == [1]
    no_start = Graph.from_arcs(2, [0], [1], [1], accept=[1])
    assert write_openfst(no_start).splitlines()[0] == "2\tInfinity"
    assert relation(read_openfst(write_openfst(no_start))) == {}
    assert write_openfst(Graph()) == "" and read_openfst("").num_nodes == 0


def test_read_openfst_forms_and_sources(tmp_path):
    text = "0 1 1 2 0.5\n\n1\t2   3 4\n2 -1\n"
    g = read_openfst(text)
    assert g.src.tolist() == [0, 1] and g.olabel.tolist() == [2, 4]
    assert g.weights.tolist() == [-0.5, 0.0] and g.final_weights.tolist() == [NEG_INF, NEG_INF, 1.0]
    assert g.start_weights.tolist() == [0.0, NEG_INF, NEG_INF]
    acceptor = read_openfst("0 1 1\n1 2 3\n2\n")  # 3 columns: an acceptor file
    assert acceptor.is_acceptor and acceptor.ilabel.tolist() == [1, 3]
    # 3 and 4 columns: an acceptor only when the caller says so (fstcompile --acceptor)
    acceptor = read_openfst("0 1 1\n1 2 3 0.25\n2\n", acceptor=True)
    assert acceptor.is_acceptor and acceptor.ilabel.tolist() == [1, 3] and acceptor.weights.tolist() == [0, -0.25]
    path = tmp_path / "g.txt"
    write_openfst(g, str(path))
    assert path.read_text() == write_openfst(g)
    for source in (path, str(path), io.StringIO(path.read_text())):
        assert torch.equal(read_openfst(source).weights, g.weights)
    buffer = io.StringIO()
    write_openfst(g, buffer)
    assert buffer.getvalue() == write_openfst(g)
    assert read_openfst(text, dtype=torch.float64).dtype == torch.float64
    first_final = read_openfst("1\n0 1 2 2\n")
    assert first_final.start_nodes.tolist() == [1]


def test_impossible_costs():
    g = read_openfst("0 1 1 1 Infinity\n0 1 2 2\n1 Infinity\n2 inf\n0 2 1 1\n")
    assert g.weights.tolist() == [NEG_INF, 0.0, 0.0]
    assert g.accept_nodes.numel() == 0


# ---------------------------------------------------------------------- symbol tables
SYMBOLS = {0: "<eps>", 1: "a", 2: "b", 3: "c"}
OUT_SYMBOLS = {0: "<eps>", 1: "x", 2: "y", 3: "z"}


def test_symbol_tables_round_trip_with_openfst(tmp_path):
    path = tmp_path / "syms.txt"
    write_symbols(SYMBOLS, path)
    theirs = fst.SymbolTable.read_text(str(path))
    assert dict(theirs) == SYMBOLS
    theirs.add_symbol("d")
    theirs.write_text(str(path))
    assert read_symbols(path) == {**SYMBOLS, 4: "d"}
    assert read_symbols("\n<eps> 0\n a\t1\n") == {0: "<eps>", 1: "a"}


@given(g=graphs(num_labels=3))
def test_symbolic_text_agrees_with_openfst(g):
    isyms, osyms = fst.SymbolTable(), fst.SymbolTable()
    for label in range(4):
        isyms.add_symbol(SYMBOLS[label], label)
        osyms.add_symbol(OUT_SYMBOLS[label], label)
    text = write_openfst(g, isymbols=SYMBOLS, osymbols=OUT_SYMBOLS)
    assert not any(token.isdigit() for line in text.splitlines() for token in line.split()[2:4])
    f = compile_text(text, isymbols=isyms, osymbols=osyms)
    assert_relations_close(fst_relation(f, "log"), relation(g))
    h = read_openfst(f.print(isymbols=isyms, osymbols=osyms), SYMBOLS, OUT_SYMBOLS, dtype=torch.float64)
    assert_relations_close(relation(h), relation(g))


def test_epsilon_symbol_defaults_to_eps():
    g = Graph.from_arcs(2, [0, 0], [1, 1], [0, 1], start=[0], accept=[1])
    text = write_openfst(g, isymbols={1: "a"}, acceptor=True)
    assert text == "0\t1\t<eps>\n0\t1\ta\n1\n"
    assert read_openfst(text, {1: "a"}, acceptor=True).ilabel.tolist() == [0, 1]


def test_symbol_table_write_errors():
    g = Graph.from_arcs(2, [0], [1], [5], start=[0], accept=[1])
    with pytest.raises(LabelError, match="arc 0: ilabel 5"):
        write_openfst(g, isymbols=SYMBOLS)
    with pytest.raises(FormatError, match="whitespace"):
        write_symbols({1: "a b"})
    with pytest.raises(FormatError, match="whitespace"):
        write_openfst(g, isymbols={5: "a b"}, acceptor=True)


def test_write_openfst_errors():
    g = Graph.from_arcs(2, [0], [1], [1], [2], start=[0], accept=[1])
    with pytest.raises(InvalidGraphError, match="arc 0: ilabel != olabel"):
        write_openfst(g, acceptor=True)
    with pytest.raises(InvalidGraphError, match="batch"):
        write_openfst(Graph.batch([g, g]))


# ---------------------------------------------------------------------- malformed text
@pytest.mark.parametrize("text, line, message", [
    ("0 1 1 1\n0 1 1 1 0 7\n", 2, "6 columns"),
    ("0 1 1 1 0.5\n1 2 3\n", 2, r"arc lines of 3 columns \(line 2\) and 5 \(line 1\)"),
    ("0 1 1\n1 2 3 4 5\n", 2, r"arc lines of 3 columns \(line 1\) and 5 \(line 2\)"),
    ("0 1 3 7\n1 2 4\n2\n", 2, "3 columns .* and 4 .* pass acceptor=True"),  # fstcompile rejects it too
    ("0 1 1 1\nx 1 1 1\n", 2, "state 'x' is not an integer"),
    ("0 1 1 1\n1.5\n", 2, "state '1.5' is not an integer"),
    ("0 -1 1 1\n", 1, "state -1 is negative"),
    ("0 1 1 1\n\n1 2 -3 1\n", 3, "ilabel -3 is negative"),
    ("0 1 1 b\n", 1, "olabel 'b' is not an integer"),
    ("0 1 1 1 nan\n", 1, "cost nan is NaN"),
    ("0 1 1 1\n1 -Infinity\n", 2, "cost -inf is NaN or -Infinity"),
    ("0 1 1 1 heavy\n", 1, "cost 'heavy' is not a number"),
    ("0 1 1 1\n1\n0 1 2 2\n1 0.5\n", 4, "state 1 has a second final line \\(the first is line 2\\)"),
    ("0 1 1 99999999999999999999\n", 1, "is outside the int64 range"),
])
def test_malformed_text_names_the_line(text, line, message):
    with pytest.raises(FormatError, match=message) as caught:
        read_openfst(text)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{line}: ")


def test_malformed_acceptor_hint():
    with pytest.raises(FormatError, match="pass acceptor=True") as caught:
        read_openfst("0 1 1 0.5\n1\n")
    assert caught.value.line == 1


def test_unknown_symbol_names_the_line():
    with pytest.raises(FormatError, match="ilabel symbol 'q' is not in the symbol table") as caught:
        read_openfst("0 1 a x\n1 2 q z\n", SYMBOLS, OUT_SYMBOLS)
    assert caught.value.line == 2


def test_malformed_file_names_path_and_line(tmp_path):
    path = tmp_path / "bad.fst.txt"
    path.write_text("0 1 1 1\n1 2 1 1 1 1\n")
    with pytest.raises(FormatError) as caught:
        read_openfst(path)
    assert str(caught.value).startswith(f"{path}:2: ") and caught.value.path == str(path)


@pytest.mark.parametrize("text, line, message", [
    ("a 1\nb\n", 2, "1 columns"),
    ("a one\n", 1, "label 'one' is not an integer"),
    ("a -1\n", 1, "label -1 is negative"),
    ("a 1\nb 1\n", 2, "label 1 is named twice"),
    ("a 1\n\na 2\n", 3, "symbol 'a' is given two labels"),
])
def test_malformed_symbol_table_names_the_line(text, line, message):
    with pytest.raises(FormatError, match=message) as caught:
        read_symbols(text)
    assert caught.value.line == line


# ---------------------------------------------------------------------- save / load
def assert_identical(h: Graph, g: Graph) -> None:
    assert h.dtype == g.dtype and h.is_batch == g.is_batch and h.num_graphs == g.num_graphs
    for name in ("src", "dst", "ilabel", "olabel", "weights", "start_weights", "final_weights", "node_graph"):
        a, b = getattr(h, name), getattr(g, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(data=st.data())
def test_save_load_is_exact(dtype, data, tmp_path_factory):
    parts = data.draw(st.lists(precise_graphs(dtype, acyclic=data.draw(st.booleans())), min_size=1, max_size=3))
    g = Graph.batch(parts) if data.draw(st.booleans()) else parts[0]
    buffer = io.BytesIO()
    save(g, buffer)
    buffer.seek(0)
    assert_identical(load(buffer), g)
    path = tmp_path_factory.mktemp("save") / "graph.gtn"  # no .npz appended
    save(g, path)
    assert_identical(load(str(path)), g)


def test_save_keeps_impossible_arcs_and_empty_graphs(tmp_path):
    g = Graph.from_arcs(2, [0, 0], [1, 1], [1, 2], weights=[float("-inf"), -0.0], start=[0], accept=[1])
    save(g, tmp_path / "g")
    h = load(tmp_path / "g")
    assert_identical(h, g)
    assert math.copysign(1.0, float(h.weights[1])) == -1.0  # even the sign of zero
    save(Graph(dtype=torch.float64), tmp_path / "empty")
    assert_identical(load(tmp_path / "empty"), Graph(dtype=torch.float64))


def _npz(path, **changes):
    g = Graph.from_arcs(2, [0], [1], [1], start=[0], accept=[1])
    save(g, path)
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("changes, message", [
    (dict(format=np.array("something else")), "not a gtn_py graph file"),
    (dict(format=None), "not a gtn_py graph file"),
    (dict(weights=None), r"arrays \['weights'\] are missing"),
    (dict(src=np.array([0.0])), "src must be a 1-d int64 array"),
    (dict(weights=np.array([0.0], np.float16)), "weights must share dtype"),
    (dict(dst=np.array([7])), "not a valid graph: arc 0: dst node 7 does not exist"),
    (dict(final_weights=np.array([np.nan, 0.0], np.float32)), "not a valid graph"),
    (dict(num_graphs=np.array(2), node_graph=np.array([0, 1])), "arc 0 joins two graphs"),
    (dict(num_graphs=np.array(1), node_graph=np.array([0, 3])), "graph ids outside"),
])
def test_load_rejects_malformed_archives(tmp_path, changes, message):
    path = tmp_path / "g.npz"
    _npz(path, **changes)
    with pytest.raises(FormatError, match=message) as caught:
        load(path)
    assert str(caught.value).startswith(str(path))


def test_load_rejects_other_files(tmp_path):
    text = tmp_path / "g.txt"
    text.write_text("0 1 1 1\n1\n")
    with pytest.raises(FormatError, match="not a gtn_py graph file"):
        load(text)
    array = tmp_path / "a.npy"
    np.save(array, np.zeros(3))
    with pytest.raises(FormatError, match="single .npy array"):
        load(array)
    truncated = tmp_path / "t.npz"
    save(Graph.from_arcs(2, [0], [1], [1], start=[0], accept=[1]), truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(FormatError):
        load(truncated)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")


# ---------------------------------------------------------------------- drawing
def _example() -> Graph:
    return Graph.from_arcs(3, [0, 0, 1], [1, 2, 2], [1, 0, 2], [3, 2, 0], [0.5, -1.25, 0.0],
                           start_weights=[0.0, -2.0, NEG_INF], final_weights=[NEG_INF, NEG_INF, 0.75])


def test_draw_source():
    source = draw(_example()).source
    for piece in ('"1:3/0.5"', '"ε:2/-1.25"', '"2:ε/0"', "rankdir=LR", '"2/0.75"', "doublecircle", "style=bold",
                  "label=-2"):
        assert piece in source, piece
    named = draw(_example(), isymbols=SYMBOLS, osymbols=OUT_SYMBOLS).source
    assert '"a:z/0.5"' in named and '"ε:y/-1.25"' in named and '"b:ε/0"' in named
    acceptor = draw(Graph.from_arcs(2, [0], [1], [1], weights=[0.5], start=[0], accept=[1]), isymbols=SYMBOLS).source
    assert '"a/0.5"' in acceptor and "doublecircle" in acceptor


def test_draw_batch_as_clusters():
    source = draw(Graph.batch([_example(), _example()])).source
    assert "subgraph cluster_0" in source and "subgraph cluster_1" in source
    assert "3 -> 4" in source  # node ids of the batch


@needs_dot
@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".pdf", b"%PDF"), (".png", b"\x89PNG")])
def test_draw_renders_only_the_file(tmp_path, suffix, magic):
    path = tmp_path / f"graph{suffix}"
    draw(_example(), path)
    assert path.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    if suffix == ".svg":
        assert b"</svg>" in path.read_bytes()


def test_draw_writes_dot_source_for_other_paths(tmp_path):
    path = tmp_path / "graph.dot"
    dot = draw(_example(), str(path))
    assert path.read_text() == dot.source


@needs_dot
def test_repr_svg():
    svg = _example()._repr_svg_()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "1:3/0.5" in svg


# ---------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs(tmp_path):
    g = _example().to("cuda")
    assert write_openfst(g) == write_openfst(_example())
    save(g, tmp_path / "g")
    h = load(tmp_path / "g", device="cuda")
    assert h.device.type == "cuda"
    assert_identical(h.cpu(), _example())
    assert "1:3/0.5" in draw(g).source
