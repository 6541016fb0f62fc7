"""Bad input to graph construction, files and drawing: the right answer or a typed GraphError
with a message in the user's terms (never a truncated label, a detached gradient, an allocator
error or a drawing that takes minutes)."""

import io
import math
import shutil
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

import gtn_py as gtn
from gtn_py import (
    ArgumentTypeError,
    FormatError,
    Graph,
    GraphError,
    InvalidGraphError,
    LabelError,
    WeightError,
    draw,
    load,
    read_openfst,
    save,
    write_openfst,
)
from gtn_py.io import DRAW_EXCERPT_ARCS


def two_nodes() -> Graph:
    g = Graph()
    g.add_node(start=True)
    g.add_node(accept=True)
    return g


# ---------------------------------------------------------------------- builder API
@pytest.mark.parametrize("call, error, message", [
    (lambda g: g.make_start(0, math.inf), WeightError, "node 0: start weight inf is NaN or \\+inf"),
    (lambda g: g.make_accept(1, math.nan), WeightError, "node 1: final weight nan is NaN or \\+inf"),
    (lambda g: g.make_accept(1, torch.tensor(math.nan)), WeightError, "final weight nan"),
    (lambda g: g.add_node(final_weight=math.inf), WeightError, "node 2: final weight inf"),
    (lambda g: g.add_arc(0, 0, 1.7), LabelError, "arc 0: ilabel must be an integer, not 1.7"),
    (lambda g: g.add_arc(0, 0, 2.0), LabelError, "ilabel must be an integer"),
    (lambda g: g.add_arc(0, 1, 1, np.float32(3)), LabelError, "olabel must be an integer"),
    (lambda g: g.add_arc(0, 1, torch.tensor(1.5)), LabelError, "ilabel must be an integer"),
    (lambda g: g.add_arc(0, 1, True), ArgumentTypeError, "ilabel must be an integer, not the bool True"),
    (lambda g: g.add_arc(0, 1, "1"), ArgumentTypeError, "ilabel must be an integer, not str"),
    (lambda g: g.add_arc(0, 1, None), ArgumentTypeError, "ilabel must be an integer, not NoneType"),
    (lambda g: g.add_arc(0.5, 1, 1), InvalidGraphError, "arc 0: src node must be an integer"),
    (lambda g: g.add_arc(0, 2, 1), InvalidGraphError, "dst node 2 does not exist"),
    (lambda g: g.add_arc(0, 1, 1, weight="0.5"), ArgumentTypeError, "weight must be a number"),
    (lambda g: g.add_arc(0, 1, 1, weight=torch.zeros(2)), ArgumentTypeError, "one-element tensor"),
    (lambda g: g.make_start(1.0), InvalidGraphError, "node must be an integer"),
])
def test_builder_refuses_bad_arguments(call, error, message):
    g = two_nodes()
    with pytest.raises(error, match=message):
        call(g)
    assert g.num_arcs == 0  # nothing half-added


def test_builder_takes_numpy_and_torch_integers():
    g = two_nodes()
    g.add_arc(np.int64(0), torch.tensor(1), np.int32(2), torch.tensor(3, dtype=torch.int8), weight=np.float32(-0.5))
    assert (g.ilabel.tolist(), g.olabel.tolist(), g.weights.tolist()) == ([2], [3], [-0.5])


def test_builder_weights_that_require_grad_keep_their_gradient():
    arc = torch.tensor(-0.5, requires_grad=True)
    final = torch.tensor([-0.25], dtype=torch.float64, requires_grad=True)
    start = torch.tensor(0.0, requires_grad=True)
    g = Graph()
    g.add_node(start_weight=start)
    g.add_node()
    g.add_arc(0, 1, 1, weight=0.0)
    g.add_arc(0, 1, 2, weight=arc)
    g.make_accept(1, final)
    score = gtn.forward_score(g)
    score.backward()
    total = math.log(1 + math.exp(-0.5)) - 0.25
    assert float(score.detach()) == pytest.approx(total)
    assert float(arc.grad) == pytest.approx(math.exp(-0.5) / (1 + math.exp(-0.5)))
    assert float(final.grad) == pytest.approx(1.0) and float(start.grad) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(num_nodes=-1), InvalidGraphError, "num_nodes is -1"),
    (dict(num_nodes=2.0), InvalidGraphError, "num_nodes must be an integer"),
    (dict(start_weights=[0.0, 0.0, 0.0]), InvalidGraphError, "start_weights has shape \\(3,\\), expected \\(2,\\)"),
    (dict(final_weights=[0.0]), InvalidGraphError, "final_weights has shape \\(1,\\), expected \\(2,\\)"),
    (dict(start=[5]), InvalidGraphError, "start: node 5 does not exist"),
    (dict(accept=[-1]), InvalidGraphError, "accept: node -1 does not exist"),
    (dict(src="ab"), ArgumentTypeError, "src must be a tensor or a sequence of numbers"),
    (dict(ilabel=[1.5]), InvalidGraphError, "ilabel: node ids and labels must be integers"),
    (dict(weights=[math.nan]), WeightError, "arc 0: weight nan"),
    (dict(dtype=torch.float16), gtn.DtypeMismatchError, "float32 or float64"),
    (dict(device="no such device"), ArgumentTypeError, "is not a device torch knows"),
])
def test_from_arcs_names_the_bad_argument(kwargs, error, message):
    args = dict(num_nodes=2, src=[0], dst=[1], ilabel=[1], start=[0], accept=[1])
    args.update(kwargs)
    with pytest.raises(error, match=message):
        Graph.from_arcs(**args)


def test_written_node_weights_read_back():
    g = two_nodes()
    g.add_arc(0, 1, 1)
    g.make_accept(1, -1.5)
    h = read_openfst(write_openfst(g))
    assert h.final_weights.tolist() == [-math.inf, -1.5]


# ---------------------------------------------------------------------- OpenFst text
@pytest.mark.parametrize("text, acceptor, line, message", [
    ("0 1 3 7\n1 2 4\n2\n", None, 2, r"3 columns \(line 2\) and 4 \(line 1\).*pass acceptor=True"),
    ("0 1 1\n1 2 3 0.5\n2\n", None, 2, r"3 columns \(line 1\) and 4 \(line 2\)"),
    ("0 1 1 1 0.5\n1 2 3\n2\n", None, 2, r"3 columns \(line 2\) and 5 \(line 1\)"),
    ("0 1 1 1\n1 2 3\n2\n", False, 2, "3 columns; in a transducer file"),
    ("0 1 1\n1 2 3 4 5\n2\n", True, 2, "5 columns; in an acceptor file"),
])
def test_mixed_columns_are_refused_as_fstcompile_does(text, acceptor, line, message):
    with pytest.raises(FormatError, match=message) as caught:
        read_openfst(text, acceptor=acceptor)
    assert caught.value.line == line


def test_mixed_columns_read_as_the_caller_says():
    acceptor = read_openfst("0 1 3 7\n1 2 4\n2\n", acceptor=True)
    assert acceptor.ilabel.tolist() == [3, 4] and acceptor.weights.tolist() == [-7.0, 0.0]
    transducer = read_openfst("0 1 3 7\n1 2 4 4 0.5\n2\n")  # 4 and 5 columns: a transducer
    assert transducer.olabel.tolist() == [7, 4] and transducer.weights.tolist() == [0.0, -0.5]


def test_binary_fst_is_refused_with_advice(tmp_path):
    # the first bytes of what fstcompile / pynini's Fst.write produce: magic, then "vector"
    binary = (2125659606).to_bytes(4, "little") + b"\x06\x00\x00\x00vector\x08\x00\x00\x00standard"
    path = tmp_path / "g.fst"
    path.write_bytes(binary)
    for source in (path, str(path), io.BytesIO(binary), binary, binary.decode("latin-1")):
        with pytest.raises(FormatError, match="binary FST.*fstprint"):
            read_openfst(source)
    path.write_bytes(b"0 1 1 1\n\xff\xfe\n")
    with pytest.raises(FormatError, match="byte 8 is not UTF-8") as caught:
        read_openfst(path)
    assert caught.value.line == 2 and str(caught.value).startswith(str(path))


def test_byte_order_mark_is_skipped(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeff0 1 1 1 0.5\n1\n".encode("utf-8"))
    for source in (path, path.read_text(encoding="utf-8")):
        g = read_openfst(source)
        assert g.num_nodes == 2 and g.start_nodes.tolist() == [0] and g.weights.tolist() == [-0.5]


def test_sparse_state_ids_are_renumbered():
    g = read_openfst("0 99999999999 1 1\n99999999999\n")
    assert (g.num_nodes, g.src.tolist(), g.dst.tolist(), g.accept_nodes.tolist()) == (2, [0], [1], [1])
    # the start state (first line) becomes 0, the others keep their order
    g = read_openfst(f"{2**63 - 1} 0 1 1\n0 5 2 2 0.5\n5\n")
    assert (g.num_nodes, g.src.tolist(), g.dst.tolist()) == (3, [0, 1], [1, 2])
    assert g.start_nodes.tolist() == [0] and g.accept_nodes.tolist() == [2]
    assert float(gtn.forward_score(g)) == pytest.approx(-0.5)
    # dense enough ids are kept as they are (round trips keep node ids)
    assert read_openfst("0 1000 1 1\n1000\n").num_nodes == 1001
    with pytest.raises(FormatError, match="state '9223372036854775808' is outside the int64 range"):
        read_openfst(f"0 {2**63} 1 1\n")


def test_huge_token_gives_a_short_message_in_bounded_memory():
    token = "7" * 10_000_000
    text = "0 1 1 1\n" * 20 + f"0 1 {token} 1\n1\n"
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=r"21: ilabel '7{40}'\.\.\. is not an integer") as caught:
            read_openfst(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(str(caught.value)) < 120
    assert peak < 60e6  # the text and its fields (10 MB each); a numpy string column would be 40 MB a row
    with pytest.raises(FormatError, match=r"ilabel symbol 'xxx.{37}'\.\.\. is not in the symbol table"):
        read_openfst(f"0 1 {'x' * 1_000_000} a\n1\n", {1: "a"}, {1: "a"})


def test_long_but_valid_numbers_still_read():
    g = read_openfst("0 1 1 1 " + "0" * 100 + "1.5\n1\n")
    assert g.weights.tolist() == [-1.5]


# ---------------------------------------------------------------------- save / load
def _saved_arrays() -> dict:
    buffer = io.BytesIO()
    save(Graph.from_arcs(2, [0], [1], [1], start=[0], accept=[1]), buffer)
    with np.load(io.BytesIO(buffer.getvalue())) as archive:
        return dict(archive)


def _archive(arrays: dict, declared: dict | None = None, compress: bool = False) -> bytes:
    """An .npz archive of ``arrays``, with the .npy headers of ``declared`` claiming other shapes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            member = io.BytesIO()
            if declared and key in declared:
                header = {"descr": np.lib.format.dtype_to_descr(value.dtype), "fortran_order": False,
                          "shape": declared[key]}
                np.lib.format.write_array_header_1_0(member, header)
                member.write(value.tobytes())
            else:
                np.save(member, value)
            archive.writestr(key + ".npy", member.getvalue())
    return out.getvalue()


@pytest.mark.parametrize("key", ["src", "weights", "final_weights", "node_graph", "format"])
def test_load_checks_declared_sizes_before_allocating(key):
    arrays = _saved_arrays()
    data = _archive(arrays, {key: (10**12,)})
    with pytest.raises(FormatError, match=f"array {key} declares shape \\(1000000000000,\\)"):
        load(io.BytesIO(data))


def test_load_checks_the_declared_number_of_graphs():
    arrays = _saved_arrays()
    arrays.update(num_graphs=np.array(10**12, np.int64), node_graph=np.array([0, 0]))
    with pytest.raises(FormatError, match="num_graphs is 1000000000000, more than"):
        load(io.BytesIO(_archive(arrays)))
    arrays.update(num_graphs=np.array(3, np.int64))  # a batch whose last graphs are empty is fine
    assert load(io.BytesIO(_archive(arrays))).num_graphs == 3
    empty = Graph.batch([Graph(), Graph()])
    buffer = io.BytesIO()
    save(empty, buffer)
    buffer.seek(0)
    assert load(buffer).num_graphs == 2


def test_load_refuses_compressed_members_and_wrong_arguments(tmp_path):
    with pytest.raises(FormatError, match="compressed"):
        load(io.BytesIO(_archive(_saved_arrays(), compress=True)))
    with pytest.raises(ArgumentTypeError, match="binary mode"):
        load(io.StringIO("text"))
    with pytest.raises(ArgumentTypeError, match="a path or a binary file, not int"):
        load(5)
    save(Graph(), tmp_path / "g.npz")
    with pytest.raises(ArgumentTypeError, match="not a device torch knows"):
        load(tmp_path / "g.npz", device="nowhere")


# ---------------------------------------------------------------------- drawing
def _chain(num_arcs: int) -> Graph:
    nodes = torch.arange(num_arcs)
    return Graph.from_arcs(num_arcs + 1, nodes, nodes + 1, torch.ones(num_arcs, dtype=torch.long),
                           start=[0], accept=[num_arcs])


def test_large_graphs_are_drawn_as_an_excerpt():
    source = draw(_chain(20_000), max_arcs=50).source
    assert "showing 50 of 20001 nodes, 49 of 20000 arcs" in source
    assert source.count("->") == 50  # 49 arcs and the start arrow
    lattice = gtn.linear_graph(100, 30)  # 30 parallel arcs a frame
    source = draw(lattice, max_arcs=40).source
    assert "showing 3 of 101 nodes, 40 of 3000 arcs" in source
    assert "1 -> 2" in source  # breadth-first: the second frame's arcs after the first's
    small = draw(gtn.string_graph([1, 2]), max_arcs=DRAW_EXCERPT_ARCS).source
    assert "showing" not in small and draw(_chain(400)).source.count("->") == 401  # draw(g) draws all
    batch = draw(Graph.batch([_chain(5), _chain(100)]), max_arcs=8).source
    assert "cluster_0" in batch and "showing" in batch
    with pytest.raises(InvalidGraphError, match="max_arcs is 0"):
        draw(lattice, max_arcs=0)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (make system-deps)")
def test_jupyter_draws_a_20000_arc_graph_quickly():
    g = _chain(20_000)
    began = time.perf_counter()
    svg = g._repr_svg_()
    assert time.perf_counter() - began < 2.0
    assert f"showing {DRAW_EXCERPT_ARCS} of 20001 nodes" in svg


def test_errors_here_are_graph_errors():
    assert issubclass(ArgumentTypeError, GraphError) and issubclass(ArgumentTypeError, TypeError)


def test_arcsort_with_labels_near_2_to_the_62():
    big = 2**62
    g = Graph.from_arcs(3, [1, 0, 1, 0], [2, 1, 2, 1], [big + 1, big, 3, 2**63 - 1], start=[0], accept=[2])
    sorted_g = gtn.arcsort(g)
    assert sorted_g.src.tolist() == [0, 0, 1, 1]
    assert sorted_g.ilabel.tolist() == [big, 2**63 - 1, 3, big + 1]
