"""Files and drawing: OpenFst text, symbol tables, gtn_py's own exact format, Graphviz.

OpenFst text ("AT&T format", what ``fstprint`` writes and ``fstcompile`` reads) has one
line per arc, ``src dst ilabel olabel [cost]`` (acceptors: ``src dst label [cost]``), and
one line per final state, ``state [cost]``; fields are separated by tabs or spaces, blank
lines are ignored, a missing cost is 0 and ``Infinity`` is the impossible cost. OpenFst
weights are *costs*, gtn_py's are *scores*: a cost is written as ``-score`` and read as
``score = -cost``. OpenFst has a single start state, the source state of the first line,
and no start weights; a graph with several start nodes, a nonzero start weight or no start
node is written through a new super-start state (numbered ``num_nodes``) with one epsilon
arc per start node carrying its start weight.

A symbol table (:data:`SymbolTable`) is a plain ``dict`` from label to symbol, as OpenFst
symbol-table files hold (``symbol<TAB>id`` lines, see :func:`read_symbols`); ``dict(t)``
turns a ``pywrapfst.SymbolTable`` into one. Label 0 (epsilon) is written as ``<eps>`` and
``<eps>`` is read as 0 when the table does not name label 0 itself.

:func:`save` / :func:`load` keep everything bit for bit (see :func:`save` for the format);
:func:`draw` returns a ``graphviz.Digraph``.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from typing import IO, TYPE_CHECKING, Any, Dict, List, Mapping, NamedTuple, Tuple, Union

import numpy as np
import torch

from .errors import ArgumentTypeError, BackendUnavailableError, FormatError, GraphError, InvalidGraphError, LabelError
from .graph import EPSILON, NEG_INF, Graph, as_device, as_graph, as_integer

if TYPE_CHECKING:  # graphviz is imported on use: importing gtn_py need not load it.
    import graphviz

SymbolTable = Dict[int, str]
"""Label -> symbol (OpenFst's symbol table as a dict; ``dict(pywrapfst_table)`` converts)."""

PathLike = Union[str, "os.PathLike[str]"]
EPSILON_SYMBOL = "<eps>"
_INT = np.int64
# The first bytes of a binary FST (what fstcompile and pynini's Fst.write write): OpenFst's
# magic number 2125659606, a little-endian int32.
_OPENFST_BINARY_MAGIC = (2125659606).to_bytes(4, "little")
_BOM = "\ufeff"
# Longest token parsed as a fixed-width numpy string column: numpy sizes every entry of such a
# column like the longest one, so longer (absurd, but legal) numbers are parsed one by one.
_LONGEST_NUMBER = 64
# Above this many missing node ids (ids that no line mentions) a file's states are renumbered
# densely, as fstcompile does, instead of kept: a file naming state 2**62 is not 2**62 nodes.
_MAX_UNUSED_STATE_IDS = 1 << 20


# ---------------------------------------------------------------------- small helpers
def _excerpt(token: str, limit: int = 40) -> str:
    """``repr(token)``, cut to ``limit`` characters: messages quote user input, which can be huge."""
    return repr(token) if len(token) <= limit else repr(token[:limit]) + "..."


def _read_text(source: PathLike | IO[str], what: str = "OpenFst text") -> Tuple[str, str | None]:
    """The text of ``source`` and the name to report in errors (None for literal text).

    A ``str`` containing a newline or a NUL (or empty) is the text itself, ``bytes`` with a
    newline or a NUL a file's contents; any other ``str``, ``bytes`` or ``os.PathLike`` is a
    path; anything with ``read`` is a file (text or binary). The text must be UTF-8; a leading
    byte-order mark is skipped. A binary FST is refused with a FormatError saying how to turn
    it into text.
    """
    name: str | None
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        name = None if name is None else str(name)
        try:
            data = source.read()  # type: ignore[union-attr]
        except UnicodeDecodeError as error:  # a file opened as text in an encoding that does not fit
            raise FormatError(f"the file is not text in its encoding ({error.reason}); {what} is UTF-8 text "
                              "(a binary FST is converted with 'fstprint')", path=name) from None
    elif isinstance(source, str) and ("\n" in source or source == "" or "\0" in source):
        data, name = source, None  # no path holds a NUL byte: this is content (binary read as text)
    elif isinstance(source, (bytes, bytearray)) and (b"\n" in source or not source or b"\0" in source):
        data, name = bytes(source), None  # a file's bytes, e.g. open(path, "rb").read()
    else:
        try:
            path = os.fspath(source)  # type: ignore[arg-type]
        except TypeError:
            raise ArgumentTypeError(f"expected a path, a file or {what} as a str, not "
                                    f"{type(source).__name__}") from None
        with open(path, "rb") as f:
            data, name = f.read(), os.fsdecode(path)
    # A binary FST as bytes, or as text decoded byte for byte (latin-1) by a caller.
    head = bytes(data[:4]) if isinstance(data, (bytes, bytearray)) else \
        data[:4].encode("latin-1", "replace") if isinstance(data, str) else b""
    if head == _OPENFST_BINARY_MAGIC:
        raise FormatError("this is a binary FST (as fstcompile and pynini's Fst.write write); gtn_py "
                          "reads OpenFst text: convert it with 'fstprint file.fst file.txt' or, in pynini, "
                          "write fst.print() to a file", path=name)
    if isinstance(data, (bytes, bytearray)):
        raw = bytes(data)
        try:
            data = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            line = raw[:error.start].count(b"\n") + 1
            raise FormatError(f"byte {error.start} is not UTF-8 ({error.reason}); {what} is UTF-8 text "
                              "(a binary FST is converted with 'fstprint')", line, name) from None
    if not isinstance(data, str):
        raise ArgumentTypeError(f"{what}: read() returned {type(data).__name__}, not str or bytes")
    return (data[1:] if data.startswith(_BOM) else data), name


def _write_text(text: str, target: PathLike | IO[str] | None) -> None:
    if target is None:
        return
    if hasattr(target, "write"):
        target.write(text)  # type: ignore[union-attr]
        return
    with open(os.fspath(target), "w", encoding="utf-8") as f:  # type: ignore[arg-type]
        f.write(text)


def _parse(tokens: List[str], lines: List[int], dtype: type, what: str, path: str | None,
           hint: str = "") -> np.ndarray:
    """Parse a column of tokens at once; on failure find and name the first bad line."""
    if not tokens:
        return np.zeros(0, dtype)
    convert = int if dtype is _INT else float

    def parsed_one_by_one() -> np.ndarray:
        out: np.ndarray = np.empty(len(tokens), dtype)
        for k, (token, line) in enumerate(zip(tokens, lines)):
            try:
                value = convert(token)
                out[k] = value  # raises OverflowError for an integer outside int64
            except ValueError:
                kind = "an integer" if dtype is _INT else "a number"
                raise FormatError(f"{what} {_excerpt(token)} is not {kind}{hint}", line, path) from None
            except OverflowError:
                raise FormatError(f"{what} {_excerpt(token)} is outside the int64 range", line, path) from None
        return out

    if max(map(len, tokens)) > _LONGEST_NUMBER:
        return parsed_one_by_one()
    try:
        return np.array(tokens, dtype=np.str_).astype(dtype)
    except (ValueError, OverflowError):
        return parsed_one_by_one()


def _first_bad(mask: np.ndarray) -> int | None:
    hit = np.flatnonzero(mask)
    return int(hit[0]) if hit.size else None


def _check_table(table: object, what: str) -> None:
    """A symbol table is a mapping from integer labels to symbols (strings)."""
    if table is None:
        return
    if not isinstance(table, Mapping):
        raise ArgumentTypeError(f"{what} must be a dict from label to symbol, not {type(table).__name__}")
    for label, symbol in table.items():
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not isinstance(symbol, str):
            raise ArgumentTypeError(f"{what} must map integer labels to str symbols, not "
                                    f"{_excerpt(repr(label))} to {_excerpt(repr(symbol))}")


def _check_symbol(symbol: str, what: str) -> str:
    if not symbol or any(c.isspace() for c in symbol):
        raise FormatError(f"{what}: symbol {_excerpt(symbol)} is empty or contains whitespace and cannot be written")
    return symbol


# ---------------------------------------------------------------------- symbol tables
def read_symbols(source: PathLike | IO[str]) -> SymbolTable:
    """Read an OpenFst symbol-table text file (``symbol id`` per line, tabs or spaces)."""
    text, path = _read_text(source, "a symbol table")
    table: SymbolTable = {}
    seen: Dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise FormatError(f"{len(fields)} columns; a symbol-table line is 'symbol id'", number, path)
        symbol, token = fields
        label = int(_parse([token], [number], _INT, "label", path)[0])
        if label < 0:
            raise FormatError(f"label {label} is negative", number, path)
        if label in table:
            raise FormatError(f"label {label} is named twice ({_excerpt(table[label])} and {_excerpt(symbol)})",
                              number, path)
        if symbol in seen:
            raise FormatError(f"symbol {_excerpt(symbol)} is given two labels ({seen[symbol]} and {label})",
                              number, path)
        table[label] = symbol
        seen[symbol] = label
    return table


def write_symbols(table: SymbolTable, target: PathLike | IO[str] | None = None) -> str:
    """Write a symbol table as OpenFst text (``symbol<TAB>id`` lines, by label); returns the text."""
    if table is None:
        raise ArgumentTypeError("table must be a dict from label to symbol, not None")
    _check_table(table, "table")
    text = "".join(f"{_check_symbol(table[label], f'label {label}')}\t{label}\n" for label in sorted(table))
    _write_text(text, target)
    return text


def _symbols_of(labels: np.ndarray, table: SymbolTable | None, column: str, arcs: np.ndarray) -> List[str]:
    """Labels as the strings to write: numbers, or symbols through ``table``."""
    if table is None:
        return labels.astype(str).tolist()
    out = []
    for arc, label in zip(arcs.tolist(), labels.tolist()):
        symbol = table.get(label, EPSILON_SYMBOL if label == EPSILON else None)
        if symbol is None:
            raise LabelError(f"arc {arc}: {column} {label} is not in the symbol table")
        out.append(_check_symbol(symbol, f"arc {arc}: {column} {label}"))
    return out


def _labels_of(tokens: List[str], lines: List[int], table: SymbolTable | None, column: str,
               path: str | None, hint: str = "") -> np.ndarray:
    """Parse a label column: integers, or symbols through ``table``."""
    if table is None:
        labels = _parse(tokens, lines, _INT, column, path, hint)
        bad = _first_bad(labels < 0)
        if bad is not None:
            raise FormatError(f"{column} {labels[bad]} is negative (labels are >= 0; 0 is epsilon)", lines[bad], path)
        return labels
    ids = {symbol: label for label, symbol in table.items()}
    if EPSILON not in table:
        ids.setdefault(EPSILON_SYMBOL, EPSILON)
    out = np.empty(len(tokens), _INT)
    for k, (token, line) in enumerate(zip(tokens, lines)):
        if token not in ids:
            raise FormatError(f"{column} symbol {_excerpt(token)} is not in the symbol table{hint}", line, path)
        out[k] = ids[token]
    return out


# ---------------------------------------------------------------------- OpenFst text
def _format_costs(scores: np.ndarray) -> np.ndarray:
    """Costs (``-score``) as the shortest strings that read back to the same value in the
    scores' dtype; ``""`` for cost 0 (OpenFst leaves weight One out)."""
    costs = np.subtract(scores.dtype.type(0), scores)  # 0 - x, so that a zero score gives +0
    text = costs.astype(str)
    # float32's shortest repr is parsed through float64 like every other number: where that
    # double rounding would miss (rare), spell out 9 significant digits, always exact.
    back = text.astype(np.float64).astype(scores.dtype)
    inexact = back != costs
    if inexact.any():
        text[inexact] = np.array([f"{c:.9g}" for c in costs[inexact].tolist()])
    text = np.where(costs == np.inf, "Infinity", text)
    return np.where(costs == 0, "", text)


def write_openfst(g: Graph, path_or_file: PathLike | IO[str] | None = None,
                  isymbols: SymbolTable | None = None, osymbols: SymbolTable | None = None,
                  acceptor: bool | None = None) -> str:
    """Write ``g`` as OpenFst text (what ``fstcompile`` reads); returns the text and writes it to
    ``path_or_file`` when given.

    The transducer form (``src dst ilabel olabel [cost]``) is the default, as ``fstprint``'s;
    ``acceptor=True`` writes ``src dst label [cost]`` (``g`` must be an acceptor). Costs are
    ``-score``, written with enough digits to read back exactly in ``g``'s dtype, and left
    out when 0. With symbol tables, labels are written as symbols (``isymbols`` for input
    labels, ``osymbols`` for output labels, which default to ``isymbols`` for an acceptor).

    States keep their node ids. The start state comes first; several start nodes, a nonzero
    start weight or no start node at all are written through a super-start state numbered
    ``g.num_nodes``. A start state without a line of its own (no arcs, not final) and a last
    node that no line mentions get a final line with cost ``Infinity``, i.e. not final.
    A batch cannot be written as one FST: write ``g[i]`` for each graph.
    """
    as_graph(g)
    _check_table(isymbols, "isymbols")
    _check_table(osymbols, "osymbols")
    if g.is_batch:
        raise InvalidGraphError(f"a batch of {g.num_graphs} graphs is not one FST; write each g[i]")
    if acceptor and not g.is_acceptor:
        bad = int((g.ilabel != g.olabel).nonzero()[0, 0])
        raise InvalidGraphError(f"arc {bad}: ilabel != olabel, so the graph cannot be written as an acceptor")
    if acceptor and osymbols is None:
        osymbols = isymbols
    n = g.num_nodes
    if n == 0:
        _write_text("", path_or_file)
        return ""
    src, dst, ilabel, olabel = (t.cpu().numpy() for t in (g.src, g.dst, g.ilabel, g.olabel))
    weights, start, final = (t.detach().cpu().numpy() for t in (g.weights, g.start_weights, g.final_weights))
    arc_ids = np.arange(src.shape[0])

    starts = np.flatnonzero(start > NEG_INF)
    if starts.size == 1 and start[starts[0]] == 0:
        start_state = int(starts[0])
    else:  # a super-start state with an epsilon arc per start node carrying its start weight
        start_state = n
        src = np.concatenate([src, np.full(starts.size, n)])
        dst = np.concatenate([dst, starts])
        ilabel = np.concatenate([ilabel, np.zeros(starts.size, ilabel.dtype)])
        olabel = np.concatenate([olabel, np.zeros(starts.size, olabel.dtype)])
        weights = np.concatenate([weights, start[starts]])
        # super-start arcs get no arc index in error messages: they carry only epsilons
        arc_ids = np.concatenate([arc_ids, np.full(starts.size, -1)])

    finals = np.flatnonzero(final > NEG_INF)
    final_costs = _format_costs(final[finals])
    # Lines for states that need one and have none: the start state (OpenFst's start is the
    # first line's state) and the last node (so that the node count survives a round trip).
    has_line = np.zeros(max(n, start_state + 1), bool)
    has_line[src] = True
    has_line[finals] = True
    padding = [start_state] if not has_line[start_state] else []
    if n - 1 != start_state and not (has_line[n - 1] or (dst == n - 1).any()):
        padding.append(n - 1)
    finals = np.concatenate([finals, np.array(padding, finals.dtype)])
    final_costs = np.concatenate([final_costs, np.full(len(padding), "Infinity")])

    isyms = _symbols_of(ilabel, isymbols, "ilabel", arc_ids)
    osyms = isyms if acceptor else _symbols_of(olabel, osymbols, "olabel", arc_ids)
    arc_costs = _format_costs(weights).tolist()
    if acceptor:
        arc_lines = [f"{s}\t{d}\t{i}" for s, d, i in zip(src.tolist(), dst.tolist(), isyms)]
    else:
        arc_lines = [f"{s}\t{d}\t{i}\t{o}" for s, d, i, o in zip(src.tolist(), dst.tolist(), isyms, osyms)]
    arc_lines = [line + "\t" + c if c else line for line, c in zip(arc_lines, arc_costs)]
    final_lines = [f"{s}\t{c}" if c else str(s) for s, c in zip(finals.tolist(), final_costs.tolist())]

    # OpenFst's order: state by state, the start state first, each state's arcs before its final line.
    states = np.concatenate([src, finals])
    rank = np.where(states == start_state, -1, states)
    kind = np.concatenate([np.zeros(src.size, _INT), np.ones(finals.size, _INT)])
    order = np.lexsort((np.arange(states.size), kind, rank))
    lines = arc_lines + final_lines
    text = "".join(lines[k] + "\n" for k in order.tolist())
    _write_text(text, path_or_file)
    return text


def read_openfst(path_or_text_or_file: PathLike | IO[str], isymbols: SymbolTable | None = None,
                 osymbols: SymbolTable | None = None, acceptor: bool | None = None,
                 dtype: torch.dtype = torch.float32) -> Graph:
    """Read OpenFst text into a Graph (scores ``= -cost``).

    The argument is a path (``str`` without a newline, or ``os.PathLike``), a file, or the
    text itself (a ``str`` with a newline, or a file's ``bytes``), UTF-8 (a leading byte-order
    mark is skipped; a binary FST raises :class:`FormatError` with how to print it as text).
    ``acceptor=None`` decides from the lines: 3-column arc lines make an acceptor file,
    5-column ones a transducer file, and a file with only 4-column arc lines is read as a
    transducer (``fstcompile``'s default; pass ``acceptor=True`` for an acceptor whose arcs
    all carry costs). A file mixing 3-column arc lines with 4- or 5-column ones is refused
    unless ``acceptor`` is given, since its 4th column could be a cost or an output label
    (``fstcompile`` rejects it without ``--acceptor``).

    Node ids are the file's state ids (the graph has ``max id + 1`` nodes), unless more than
    2**20 ids below the largest are unused: then the states are renumbered densely as
    ``fstcompile`` does, the start state as 0 and the others in increasing id order. The
    first line's state is the start node, with start weight 0. A final cost ``Infinity``
    means not final; an arc cost ``Infinity`` is an impossible arc (score -inf). Malformed
    text, and a binary FST (convert it with ``fstprint``), raise :class:`FormatError`
    naming the line.
    """
    if dtype not in (torch.float32, torch.float64):
        raise InvalidGraphError(f"weights must be float32 or float64, not {dtype}")
    _check_table(isymbols, "isymbols")
    _check_table(osymbols, "osymbols")
    text, path = _read_text(path_or_text_or_file)
    guessed = acceptor is None
    arcs: List[Tuple[int, List[str]]] = []
    finals: List[Tuple[int, List[str]]] = []
    first_line_with: Dict[int, int] = {}  # arc line width -> its first line (to explain a mix)
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2:
            arcs.append((number, fields))
            first_line_with.setdefault(len(fields), number)
        else:
            finals.append((number, fields))
    if guessed and 3 in first_line_with and (4 in first_line_with or 5 in first_line_with):
        wide = 4 if 4 in first_line_with else 5
        three, other = first_line_with[3], first_line_with[wide]
        raise FormatError(
            f"arc lines of 3 columns (line {three}) and {wide} (line {other}): an acceptor file has 3 or 4 "
            f"(label, cost) and a transducer file 4 or 5 (ilabel, olabel, cost); pass acceptor=True "
            f"(fstcompile --acceptor) or acceptor=False to say which this is", max(three, other), path)
    if guessed:
        acceptor = True if 3 in first_line_with else (False if 5 in first_line_with else None)
    guessed = guessed and acceptor is None
    arc_columns = (3, 4) if acceptor else (4, 5)
    for number, fields in arcs:
        if len(fields) not in arc_columns:
            form = "an acceptor" if acceptor else "a transducer"
            raise FormatError(f"{len(fields)} columns; in {form} file an arc line has {arc_columns[0]} or "
                              f"{arc_columns[1]} and a final line 1 or 2", number, path)
    if acceptor and osymbols is None:
        osymbols = isymbols

    arc_lines = [number for number, _ in arcs]
    final_lines = [number for number, _ in finals]
    cost_column = arc_columns[0]

    def column(rows: List[Tuple[int, List[str]]], k: int, default: str = "0") -> List[str]:
        return [fields[k] if len(fields) > k else default for _, fields in rows]

    src = _parse(column(arcs, 0), arc_lines, _INT, "state", path)
    dst = _parse(column(arcs, 1), arc_lines, _INT, "state", path)
    ilabel = _labels_of(column(arcs, 2), arc_lines, isymbols, "ilabel", path)
    hint = (" (read as a transducer file since every arc line has 4 columns; pass acceptor=True for an "
            "acceptor file)") if guessed else ""
    olabel = ilabel if acceptor else _labels_of(column(arcs, 3), arc_lines, osymbols, "olabel", path, hint)
    arc_costs = _parse(column(arcs, cost_column), arc_lines, np.float64, "cost", path)
    final_states = _parse(column(finals, 0), final_lines, _INT, "state", path)
    final_costs = _parse(column(finals, 1), final_lines, np.float64, "cost", path)

    for states, lines in ((src, arc_lines), (dst, arc_lines), (final_states, final_lines)):
        bad = _first_bad(states < 0)
        if bad is not None:
            raise FormatError(f"state {states[bad]} is negative", lines[bad], path)
    for costs, lines in ((arc_costs, arc_lines), (final_costs, final_lines)):
        bad = _first_bad(np.isnan(costs) | (costs == -np.inf))
        if bad is not None:
            raise FormatError(f"cost {costs[bad]} is NaN or -Infinity (a score of +inf)", lines[bad], path)
    _check_unique_finals(final_states, final_lines, path)

    states = np.concatenate([src, dst, final_states])
    first_line = min(arc_lines[:1] + final_lines[:1], default=None)
    start_state = None
    if first_line is not None:
        start_state = int(src[0]) if arc_lines and arc_lines[0] == first_line else int(final_states[0])
    num_nodes = int(states.max()) + 1 if states.size else 0
    if num_nodes > _MAX_UNUSED_STATE_IDS:
        ids = np.unique(states)
        if num_nodes - ids.size > _MAX_UNUSED_STATE_IDS:  # sparse ids: renumbered, the start state as 0
            ids = np.concatenate([[start_state], ids[ids != start_state]])
            order = np.argsort(ids, kind="stable")
            src, dst, final_states = (order[np.searchsorted(ids, x, sorter=order)] for x in (src, dst, final_states))
            num_nodes, start_state = int(ids.size), 0
    start_weights = torch.full((num_nodes,), NEG_INF, dtype=torch.float64)
    if start_state is not None:
        start_weights[start_state] = 0.0
    final_weights = torch.full((num_nodes,), NEG_INF, dtype=torch.float64)
    final_weights[torch.from_numpy(final_states)] = torch.from_numpy(0.0 - final_costs)
    return Graph.from_arcs(num_nodes, torch.from_numpy(src), torch.from_numpy(dst), torch.from_numpy(ilabel),
                           torch.from_numpy(olabel), torch.from_numpy(0.0 - arc_costs).to(dtype),
                           start_weights=start_weights.to(dtype), final_weights=final_weights.to(dtype),
                           dtype=dtype)


class ArpaModel(NamedTuple):
    """A back-off n-gram language model read by :func:`read_arpa`."""

    graph: Graph          # acceptor over word labels, back-off arcs labelled ``phi``
    symbols: SymbolTable  # label -> word (and the back-off symbol)
    phi: int              # the back-off arcs' label: compose(g, graph, phi=phi)


_LOG_OF_10 = math.log(10.0)


def read_arpa(source: PathLike | IO[str], symbols: SymbolTable | None = None, *, phi_symbol: str = "#phi",
              dtype: torch.dtype = torch.float32) -> ArpaModel:
    """Read an ARPA back-off n-gram language model into an acceptor with failure arcs.

    The argument is a path, a file or the text (as for :func:`read_openfst`). Each history
    that an n-gram extends (or that has a back-off weight) is a node, the empty history node 0;
    each n-gram ``h w`` is an arc from ``h``'s node reading ``w`` with score ``ln 10 *`` its
    log10 probability, to the node of the longest suffix of ``h w`` that is a history; each
    history has a back-off arc (label ``phi``, its back-off weight, 0 when the file gives none)
    to the node of its longest proper suffix; an n-gram ``h </s>`` is ``h``'s final score; the
    start node is ``<s>``'s. Composed with ``phi`` (``compose(words, model.graph, phi=model.phi)``)
    a word sequence scores exactly ``log P(w_1 .. w_n </s> | <s>)`` under the back-off formula
    (a back-off arc is taken only for a word its history has no n-gram for);
    dense intersection takes it as it is (``intersect_dense(..., phi=model.phi)``, and
    ``viterbi_align``), and ``remove_failure_arcs(model.graph, model.phi)`` gives the same model
    with ordinary arcs (for ``dense_score``).

    ``symbols``: a symbol table whose labels the words take (words it lacks, and
    ``phi_symbol``, get new labels after its largest); default: ``<eps>`` is 0 and the words
    are numbered from 1 in the order of the unigrams, ``phi_symbol`` last. ``<s>`` and ``</s>``
    are not labels. Malformed text raises :class:`FormatError` naming the line.
    """
    if dtype not in (torch.float32, torch.float64):
        raise InvalidGraphError(f"weights must be float32 or float64, not {dtype}")
    _check_table(symbols, "symbols")
    text, path = _read_text(source, "ARPA text")
    ngrams = _arpa_ngrams(text, path)
    table: SymbolTable = dict(symbols) if symbols is not None else {EPSILON: EPSILON_SYMBOL}
    label_of = {word: label for label, word in table.items()}

    def label(word: str) -> int:
        if word not in label_of:
            label_of[word] = max(table, default=0) + 1
            table[label_of[word]] = word
        return label_of[word]

    order = max(ngrams)
    history: Dict[Tuple[str, ...], int] = {(): 0}  # each history's node
    for n in range(1, order + 1):
        for words, (_, backoff) in ngrams[n].items():
            for context in ((words[:-1],) if n > 1 else ()) + ((words,) if backoff is not None else ()):
                history.setdefault(context, len(history))

    def node_of(words: Tuple[str, ...]) -> int:
        while words not in history:
            words = words[1:]
        return history[words]

    src: List[int] = []
    dst: List[int] = []
    labels: List[int] = []
    weights: List[float] = []
    final = [NEG_INF] * len(history)
    for n in range(1, order + 1):
        for words, (logprob, _) in ngrams[n].items():
            context, word = words[:-1], words[-1]
            if word == "</s>":
                final[history[context]] = logprob * _LOG_OF_10
            elif word != "<s>":
                src.append(history[context])
                dst.append(node_of(words))
                labels.append(label(word))
                weights.append(logprob * _LOG_OF_10)
    phi = label(phi_symbol)
    for words, node in history.items():
        if words:
            src.append(node)
            dst.append(node_of(words[1:]))
            labels.append(phi)
            backoff = ngrams[len(words)].get(words, (0.0, None))[1]
            weights.append((backoff or 0.0) * _LOG_OF_10)
    graph = Graph.from_arcs(len(history), src, dst, labels, labels, weights=weights, start=[node_of(("<s>",))],
                            final_weights=final, dtype=dtype)
    return ArpaModel(graph, table, phi)


def _arpa_ngrams(text: str, path: str | None) -> Dict[int, Dict[Tuple[str, ...], Tuple[float, float | None]]]:
    """The n-grams of ARPA text by order: words -> (log10 probability, log10 back-off or None),
    checked against the counts of its ``\\data\\`` section."""
    lines = text.splitlines()
    number = 0
    while number < len(lines) and lines[number].strip() != "\\data\\":
        number += 1
    if number == len(lines):
        raise FormatError("no \\data\\ line: not an ARPA language model", path=path)
    counts: Dict[int, int] = {}
    number += 1
    while number < len(lines) and not lines[number].strip().startswith("\\"):
        line = lines[number].strip()
        if line:
            key, _, value = line.partition("=")
            fields = key.split()
            if len(fields) != 2 or fields[0] != "ngram" or not fields[1].isdigit() or not value.strip().isdigit():
                raise FormatError(f"expected 'ngram N=COUNT' in the \\data\\ section, not {_excerpt(line)}",
                                  number + 1, path)
            counts[int(fields[1])] = int(value)
        number += 1
    if not counts or sorted(counts) != list(range(1, max(counts) + 1)):
        raise FormatError(f"the \\data\\ section must count the n-grams of orders 1..N, not {sorted(counts)}",
                          number + 1, path)
    ngrams: Dict[int, Dict[Tuple[str, ...], Tuple[float, float | None]]] = {n: {} for n in counts}
    current = 0
    while number < len(lines):
        line = lines[number].strip()
        number += 1
        if not line:
            continue
        if line == "\\end\\":
            for n, count in counts.items():
                if len(ngrams[n]) != count:
                    raise FormatError(f"the \\data\\ section counts {count} {n}-grams but {len(ngrams[n])} "
                                      "are listed", number, path)
            return ngrams
        if line.startswith("\\"):
            header = line[1:].split("-grams:")
            if len(header) != 2 or header[1] or not header[0].isdigit() or int(header[0]) not in counts:
                raise FormatError(f"expected a section header '\\N-grams:' with N in 1..{max(counts)}, not "
                                  f"{_excerpt(line)}", number, path)
            current = int(header[0])
            continue
        if not current:
            raise FormatError(f"an n-gram line before any '\\N-grams:' header: {_excerpt(line)}", number, path)
        fields = line.split()
        if len(fields) not in (current + 1, current + 2):
            raise FormatError(f"a {current}-gram line has a log10 probability, {current} words and an optional "
                              f"back-off weight, not {len(fields)} fields: {_excerpt(line)}", number, path)
        try:
            logprob = float(fields[0])
            backoff = float(fields[-1]) if len(fields) == current + 2 else None
        except ValueError:
            raise FormatError(f"not a number in {_excerpt(line)}", number, path) from None
        if not math.isfinite(logprob) or logprob > 0 or (backoff is not None and not math.isfinite(backoff)):
            raise FormatError(f"log10 probabilities are finite and <= 0, back-off weights finite: {_excerpt(line)}",
                              number, path)
        ngrams[current][tuple(fields[1:current + 1])] = (logprob, backoff)
    raise FormatError("no \\end\\ line: the file is cut short", len(lines), path)


def _check_unique_finals(states: np.ndarray, lines: List[int], path: str | None) -> None:
    order = np.argsort(states, kind="stable")
    repeated = _first_bad(states[order][1:] == states[order][:-1])
    if repeated is not None:
        first, again = lines[order[repeated]], lines[order[repeated + 1]]
        raise FormatError(f"state {states[order[repeated]]} has a second final line (the first is line {first})",
                          again, path)


# ---------------------------------------------------------------------- exact save / load
_FORMAT = "gtn_py graph v1"
_ARRAYS = ("src", "dst", "ilabel", "olabel", "weights", "start_weights", "final_weights", "node_graph")


def save(g: Graph, path_or_file: PathLike | IO[bytes]) -> None:
    """Save ``g`` exactly (weights bit for bit, dtype, start/final weights, batch layout).

    The file is an uncompressed NumPy ``.npz`` archive (a zip of ``.npy`` arrays, readable with
    ``numpy.load(path, allow_pickle=False)``) holding ``format`` (the string
    ``"gtn_py graph v1"``), ``num_graphs``, the int64 arrays ``src``, ``dst``, ``ilabel``,
    ``olabel``, ``node_graph`` (all zeros for a single graph; ``num_graphs == 0`` marks a
    single graph) and the float arrays ``weights``, ``start_weights``, ``final_weights``.
    Autograd state and the device are not saved.
    """
    as_graph(g)
    if not hasattr(path_or_file, "write") and not isinstance(path_or_file, (str, os.PathLike)):
        raise ArgumentTypeError(f"save needs a path or a binary file, not {type(path_or_file).__name__}")
    arrays: Dict[str, Any] = {name: t.detach().cpu().numpy() for name, t in (
        ("src", g.src), ("dst", g.dst), ("ilabel", g.ilabel), ("olabel", g.olabel), ("weights", g.weights),
        ("start_weights", g.start_weights), ("final_weights", g.final_weights), ("node_graph", g.node_graph))}
    arrays["format"] = np.array(_FORMAT)
    arrays["num_graphs"] = np.array(g.num_graphs if g.is_batch else 0, _INT)
    if hasattr(path_or_file, "write"):
        np.savez(path_or_file, **arrays)
        return
    # np.savez appends ".npz" to a path without it; through a file object the path is kept.
    with open(os.fspath(path_or_file), "wb") as f:  # type: ignore[arg-type]
        np.savez(f, **arrays)


def _read_archive(data: bytes, name: str | None) -> Dict[str, np.ndarray]:
    """The arrays of a gtn_py graph file, each checked against the bytes that hold it before
    numpy allocates it (numpy would allocate what an ``.npy`` header declares, even 4 TB)."""
    if data.startswith(b"\x93NUMPY"):
        raise FormatError("not a gtn_py graph file (a single .npy array, not an .npz archive)", path=name)
    if not data.startswith(b"PK"):
        raise FormatError("not a gtn_py graph file (not an .npz archive)", path=name)
    arrays: Dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {info.filename: info for info in archive.infolist()}
            if "format.npy" not in members:
                raise FormatError("not a gtn_py graph file (it has no format array)", path=name)
            missing = [key for key in (*_ARRAYS, "num_graphs") if key + ".npy" not in members]
            if missing:
                raise FormatError(f"arrays {missing} are missing", path=name)
            for key in ("format", "num_graphs", *_ARRAYS):
                info = members[key + ".npy"]
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > len(data):
                    raise FormatError(f"array {key} is compressed or larger than the file; gtn_py's save "
                                      "stores arrays uncompressed", path=name)
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(member)
                    size = math.prod(shape) * dtype.itemsize
                    if dtype.hasobject or size > info.file_size:
                        raise FormatError(f"array {key} declares shape {shape} of {dtype} ({size} bytes) in "
                                          f"{info.file_size} bytes of the file", path=name)
                with archive.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    except FormatError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, SyntaxError) as error:
        raise FormatError(f"not a gtn_py graph file ({_excerpt(str(error), 200)})", path=name) from None
    return arrays


def load(path_or_file: PathLike | IO[bytes], device: torch.device | str = "cpu") -> Graph:
    """Load a graph written by :func:`save` (exactly as saved) onto ``device``.

    Raises :class:`FormatError` for a file that is not one :func:`save` wrote, or whose
    arrays do not make a valid graph. Nothing is allocated from a size the file declares
    before it is checked against the bytes the file holds (every array lies uncompressed in
    the file, as :func:`save` writes it), and a batch may declare at most as many graphs as
    it has nodes plus bytes in the file (more would be empty graphs that the file cannot
    hold any trace of).
    """
    if hasattr(path_or_file, "read"):
        name = getattr(path_or_file, "name", None)
        name = None if name is None else str(name)
        data = path_or_file.read()  # type: ignore[union-attr]
        if not isinstance(data, (bytes, bytearray)):
            raise ArgumentTypeError("load needs a file opened in binary mode ('rb'), or a path")
    else:
        try:
            path = os.fspath(path_or_file)  # type: ignore[arg-type]
        except TypeError:
            raise ArgumentTypeError(f"load needs a path or a binary file, not {type(path_or_file).__name__}") from None
        name = os.fsdecode(path)
        with open(path, "rb") as f:
            data = f.read()
    device = as_device(device)
    arrays = _read_archive(bytes(data), name)
    fmt = arrays["format"]
    if fmt.shape != () or fmt.dtype.kind != "U" or str(fmt) != _FORMAT:
        shown = _excerpt(str(fmt)) if fmt.dtype.kind == "U" else f"a {fmt.dtype} array"
        raise FormatError(f"not a gtn_py graph file (format {shown}, expected {_FORMAT!r})", path=name)
    for key in ("src", "dst", "ilabel", "olabel", "node_graph"):
        if arrays[key].dtype != np.int64 or arrays[key].ndim != 1:
            raise FormatError(f"{key} must be a 1-d int64 array, not {arrays[key].dtype}{arrays[key].shape}", path=name)
    dtypes = {arrays[key].dtype for key in ("weights", "start_weights", "final_weights")}
    if len(dtypes) != 1 or dtypes.pop() not in (np.float32, np.float64):
        raise FormatError(f"weights must share dtype float32 or float64, not {sorted(map(str, dtypes))}", path=name)
    num_graphs = arrays["num_graphs"]
    if num_graphs.shape != () or num_graphs.dtype != np.int64 or int(num_graphs) < 0:
        raise FormatError(f"num_graphs must be an int64 scalar >= 0, not {_excerpt(repr(num_graphs))}", path=name)
    if int(num_graphs) > arrays["start_weights"].shape[0] + len(data):
        raise FormatError(f"num_graphs is {int(num_graphs)}, more than the file's {arrays['start_weights'].shape[0]} "
                          f"nodes plus {len(data)} bytes could describe", path=name)

    t = {key: torch.from_numpy(arrays[key]).to(device) for key in _ARRAYS}
    g = Graph.from_tensors(t["src"], t["dst"], t["ilabel"], t["olabel"], t["weights"], t["start_weights"],
                            t["final_weights"])
    try:
        g.validate()
    except GraphError as error:
        raise FormatError(f"the saved arrays are not a valid graph: {error}", path=name) from None
    batches = int(num_graphs)
    if batches == 0:
        return g
    node_graph = t["node_graph"]
    if node_graph.shape[0] != g.num_nodes:
        raise FormatError(f"node_graph has {node_graph.shape[0]} entries for {g.num_nodes} nodes", path=name)
    if node_graph.numel() and (int(node_graph.min()) < 0 or int(node_graph.max()) >= batches):
        raise FormatError(f"node_graph has graph ids outside [0, {batches})", path=name)
    crossing = _first_bad((node_graph[g.src] != node_graph[g.dst]).cpu().numpy())
    if crossing is not None:
        raise FormatError(f"arc {crossing} joins two graphs of the batch", path=name)
    return Graph.from_tensors(g.src, g.dst, g.ilabel, g.olabel, g.weights, g.start_weights, g.final_weights,
                               node_graph=node_graph, num_graphs=batches)


# ---------------------------------------------------------------------- drawing
_RENDERED = (".svg", ".pdf", ".png")


def _label_text(label: int, table: SymbolTable | None) -> str:
    if label == EPSILON:
        return "ε"
    if table is not None and label in table:
        # graphviz reads backslash escapes (\n, \l) in labels; a symbol means itself
        return table[label].replace("\\", "\\\\")
    return str(label)


def _weight_text(w: float) -> str:
    return f"{w:.4g}"


DRAW_EXCERPT_ARCS = 300
"""How many arcs (and nodes) a graph shown in Jupyter (``Graph._repr_svg_``) draws at most;
a larger graph is drawn as an excerpt with a caption, since Graphviz needs minutes for
ten thousand arcs. ``draw(g)`` draws everything unless given ``max_arcs``."""


def _excerpt_nodes(g: Graph, max_arcs: int) -> Tuple[np.ndarray, np.ndarray]:
    """The nodes and arcs of a bounded excerpt of ``g``: the longest prefix of the nodes in
    breadth-first order from the start nodes (then from the lowest unvisited node), at most
    ``max_arcs`` of them, up to the first whose arcs among them outnumber ``max_arcs``; of
    those arcs, the first ``max_arcs`` in that order. Costs O(arcs) in numpy and a Python
    step per node kept."""
    n = g.num_nodes
    src, dst = g.src.cpu().numpy(), g.dst.cpu().numpy()
    by_src = np.argsort(src, kind="stable")
    first_arc = np.searchsorted(src[by_src], np.arange(n + 1))
    rank = np.full(n, n, _INT)  # breadth-first position; n: not reached
    order: List[int] = []
    queue = [int(v) for v in g.start_nodes.tolist()]
    head, next_seed = 0, 0
    while len(order) < min(n, max_arcs):
        if head == len(queue):  # nothing left to reach: go on from the lowest unvisited node
            while rank[next_seed] < n:
                next_seed += 1
            queue.append(next_seed)
        node = queue[head]
        head += 1
        if rank[node] < n:
            continue
        rank[node] = len(order)
        order.append(node)
        targets = dst[by_src[first_arc[node]:first_arc[node + 1]]]
        queue.extend(targets[rank[targets] == n][: max_arcs].tolist())
    # Arcs among the first k nodes are those whose later end has rank < k. Keep the nodes up to
    # the first whose arcs overflow max_arcs, and of the arcs the first max_arcs by that rank.
    arc_rank = np.maximum(rank[src], rank[dst])
    counts = np.bincount(arc_rank[arc_rank < n], minlength=len(order)).cumsum()
    keep = min(len(order), int(np.searchsorted(counts, max_arcs, side="right")) + 1)
    arcs = np.flatnonzero(arc_rank < keep)
    arcs = np.sort(arcs[np.argsort(arc_rank[arcs], kind="stable")][:max_arcs])
    return np.array(order[:keep], _INT), arcs


def draw(g: Graph, path: PathLike | None = None, isymbols: SymbolTable | None = None,
         osymbols: SymbolTable | None = None, max_arcs: int | None = None) -> graphviz.Digraph:
    """Draw ``g`` (left to right) as a ``graphviz.Digraph``; with ``path``, also write it.

    Start nodes are bold with an incoming arrow (labelled with the start weight when it is
    not 0); accept nodes are double circles, labelled ``node/final weight`` when the final
    weight is not 0. Arcs read ``ilabel:olabel/weight`` (acceptors ``label/weight``), labels
    through the symbol tables where they name them (numbers otherwise), epsilon as ε. A batch
    draws each graph in its own box, nodes numbered as in the batch. A ``path`` ending in
    .svg, .pdf or .png is rendered there with Graphviz's ``dot`` (which must be installed;
    no intermediate file is left); any other path receives the DOT source.

    With ``max_arcs``, a graph of more arcs or nodes than that is drawn as an excerpt: the
    first nodes in breadth-first order from the start nodes and the arcs among them, at most
    ``max_arcs`` of each, under a caption "showing N of M nodes, K of L arcs". Jupyter shows
    graphs so, with ``max_arcs=DRAW_EXCERPT_ARCS``; ``draw(g)`` draws everything.
    """
    import graphviz

    as_graph(g)
    _check_table(isymbols, "isymbols")
    _check_table(osymbols, "osymbols")
    if max_arcs is not None:
        max_arcs = as_integer(max_arcs, "max_arcs", InvalidGraphError)
        if max_arcs < 1:
            raise InvalidGraphError(f"max_arcs is {max_arcs}; an excerpt draws at least 1 arc (None: all)")
    if osymbols is None and g.is_acceptor:
        osymbols = isymbols
    dot = graphviz.Digraph(graph_attr={"rankdir": "LR"}, node_attr={"shape": "circle"})
    if max_arcs is not None and max(g.num_arcs, g.num_nodes) > max_arcs:
        nodes, arcs = _excerpt_nodes(g, max_arcs)
        dot.attr(label=f"showing {nodes.size} of {g.num_nodes} nodes, {arcs.size} of {g.num_arcs} arcs "
                       "(draw(g) draws all)", labelloc="t")
    else:
        nodes, arcs = np.arange(g.num_nodes), np.arange(g.num_arcs)
    node_ids = torch.from_numpy(nodes).to(g.device)
    start = g.start_weights.detach().index_select(0, node_ids).tolist()
    final = g.final_weights.detach().index_select(0, node_ids).tolist()
    node_graph = g.node_graph.index_select(0, node_ids).tolist()
    if g.is_batch:
        boxes = {b: graphviz.Digraph(name=f"cluster_{b}", graph_attr={"label": f"graph {b}"})
                 for b in sorted(set(node_graph))}
    else:
        boxes = {0: dot}
    for node, s, f, b in zip(nodes.tolist(), start, final, node_graph):
        box = boxes[b]
        attrs = {}
        label = str(node)
        if f > NEG_INF:
            attrs["shape"] = "doublecircle"
            if f != 0:
                label += "/" + _weight_text(f)
        if s > NEG_INF:
            attrs["style"] = "bold"
            box.node(f"start{node}", shape="point", style="invis", width="0")
            weight = {"label": _weight_text(s)} if s != 0 else {}
            box.edge(f"start{node}", str(node), **weight)
        box.node(str(node), label, **attrs)
    if g.is_batch:
        for box in boxes.values():
            dot.subgraph(box)
    acceptor = g.is_acceptor
    arc_ids = torch.from_numpy(arcs).to(g.device)
    columns = (g.src, g.dst, g.ilabel, g.olabel, g.weights.detach())
    for src, dst, ilabel, olabel, weight in zip(*(c.index_select(0, arc_ids).tolist() for c in columns)):
        text = _label_text(ilabel, isymbols)
        if not acceptor:
            text += ":" + _label_text(olabel, osymbols)
        dot.edge(str(src), str(dst), label=f"{text}/{_weight_text(weight)}")
    if path is not None:
        _write_drawing(dot, os.fspath(path))
    return dot


def _write_drawing(dot: graphviz.Digraph, path: str) -> None:
    import graphviz

    extension = os.path.splitext(path)[1].lower()
    if extension not in _RENDERED:
        with open(path, "w", encoding="utf-8") as f:
            f.write(dot.source)
        return
    try:
        data = dot.pipe(format=extension[1:])
    except graphviz.ExecutableNotFound as error:
        raise BackendUnavailableError(f"rendering {path} needs Graphviz's 'dot' program: {error}") from None
    with open(path, "wb") as f:
        f.write(data)


__all__ = ["SymbolTable", "read_openfst", "write_openfst", "read_symbols", "write_symbols", "save", "load", "draw"]
