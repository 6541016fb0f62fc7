"""What every recipe's command line shares: progress bars, JSON-lines metrics, atomic checkpoints,
learning-rate schedules, thread settings, torchrun data parallelism (gloo on CPU, nccl on CUDA),
and error counts (the alignment of a reading with its reference: words, or a string's digits).

Data parallelism follows one rule that makes runs reproducible and resumable: step ``s`` of a run
with seed ``k`` always works on the same *global* batch (drawn from ``(k, s)``), and process ``r`` of
``N`` takes items ``r, r + N, ...`` of it; each process scales its loss so that the averaged
gradient (:func:`average_gradients`) equals the single-process one. A checkpoint holds the model,
the optimiser and the step, so ``--resume`` continues exactly where a run stopped.

Checkpoints hold only tensors, numbers, strings and plain containers (configs as dicts) and are
read with ``torch.load(weights_only=True)``: a checkpoint file from elsewhere can hold weights,
never code that loading would run. Bad input to a command (a missing or unreadable file, an
option out of range) raises :class:`InputError`; :func:`run_command` prints it as one line
``error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import pickle
import re
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gtn_py.errors import GraphError

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


class InputError(GraphError, ValueError):
    """Bad input to a recipe command: a missing or unreadable file, data that is not what the
    command reads, an option it does not know. The message says what to do in the user's terms."""


# ---------------------------------------------------------------------- processes and threads
def set_threads(threads: int = 0) -> None:
    """``threads`` torch threads, or (0) the CPU cores shared out among torchrun's processes."""
    if threads:
        torch.set_num_threads(threads)
    elif "WORLD_SIZE" in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["WORLD_SIZE"])))


@dataclass
class World:
    """This process's place among the data-parallel processes."""

    rank: int = 0
    size: int = 1
    owns_group: bool = False  # init_world joined the process group, so leave_world leaves it

    @property
    def main(self) -> bool:
        return self.rank == 0


def process_device(device: torch.device | str) -> torch.device:
    """``device`` with its index: a bare ``cuda`` means this process's GPU under torchrun
    (LOCAL_RANK), else the current one; it also becomes the current CUDA device (nccl needs one
    GPU per process)."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        # torch 2.11's set_device refuses a device without an index
        local_rank = os.environ.get("LOCAL_RANK")
        dev = torch.device("cuda", int(local_rank) if local_rank is not None else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def init_world(device: torch.device | str = "cpu") -> World:
    """Join torchrun's process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return World()
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group(backend="nccl" if torch.device(device).type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), joined)


def broadcast_parameters(model: nn.Module, world: World) -> None:
    """Make every process start from process 0's weights."""
    if world.size > 1:
        for p in model.state_dict().values():
            dist.broadcast(p, 0)


def average_gradients(model: nn.Module, world: World) -> None:
    """All-reduce the gradients (mean over processes) in one flat buffer. A parameter without a
    gradient in some process counts as a zero gradient there, so every process sends the same
    buffer layout."""
    if world.size == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def mean_over_processes(values: list[float], world: World) -> list[float]:
    """The mean over processes of a few numbers (for logging)."""
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / world.size).tolist()


def sum_over_processes(values: list[float], world: World) -> list[float]:
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def leave_world(world: World) -> None:
    """Wait for every process, then leave the process group if init_world joined it: a gloo group
    left to the interpreter's exit sometimes aborted a process ("terminate called without an
    active exception", SIGABRT) after its work was done."""
    if world.size > 1:
        dist.barrier()
        if world.owns_group:
            dist.destroy_process_group()


# ---------------------------------------------------------------------- schedules
def warmup_cosine(step: int, steps: int, lr: float, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor * lr`` at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# ---------------------------------------------------------------------- error counts
Pair = tuple[str | None, str | None]


def align_words(ref: Sequence[str], hyp: Sequence[str]) -> list[Pair]:
    """A minimum-cost word alignment (Levenshtein) as ``(reference word, hypothesis word)`` pairs,
    matches included; ``None`` on the hypothesis side is a deletion, on the reference side an
    insertion."""
    # row[j] = (errors, pairs) of a best alignment of ref[:i] with hyp[:j], prev is row i - 1;
    # ties keep the first found (a match or substitution, then a deletion, then an insertion).
    prev: list[tuple[int, tuple[Pair, ...]]] = [(j, tuple((None, w) for w in hyp[:j])) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        row: list[tuple[int, tuple[Pair, ...]]] = [(i, tuple((w, None) for w in ref[:i]))]
        for j in range(1, len(hyp) + 1):
            diag = (prev[j - 1][0] + (ref[i - 1] != hyp[j - 1]), prev[j - 1][1] + ((ref[i - 1], hyp[j - 1]),))
            up = (prev[j][0] + 1, prev[j][1] + ((ref[i - 1], None),))
            left = (row[j - 1][0] + 1, row[j - 1][1] + ((None, hyp[j - 1]),))
            row.append(min(diag, up, left, key=lambda c: c[0]))
        prev = row
    return list(prev[-1][1])


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> tuple[int, int, int]:
    """``(substitutions, deletions, insertions)`` of :func:`align_words`' alignment."""
    pairs = align_words(ref, hyp)
    return (sum(r is not None and h is not None and r != h for r, h in pairs),
            sum(h is None for _, h in pairs), sum(r is None for r, _ in pairs))


def confusions(references: Iterable[Sequence[str]], hypotheses: Iterable[Sequence[str]],
               top: int = 10) -> list[dict[str, Any]]:
    """The ``top`` most frequent errors of :func:`align_words` over pairs of sequences:
    ``{"reference", "hypothesis", "count"}``, "-" for the missing side of a deletion or insertion."""
    counts = collections.Counter((r or "-", h or "-") for ref, hyp in zip(references, hypotheses)
                                 for r, h in align_words(ref, hyp) if r != h)
    return [{"reference": r, "hypothesis": h, "count": n} for (r, h), n in counts.most_common(top)]


def proportion_interval(share: float, count: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95 % for ``z = 1.96``) of a share measured on ``count`` trials:
    how far a figure read on a sample of this size may be from the figure on all strings."""
    if count <= 0:
        return 0.0, 1.0
    centre = (share + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(share * (1 - share) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return max(0.0, centre - half), min(1.0, centre + half)


def format_confusions(errors: Sequence[dict[str, Any]]) -> str:
    """``eight -> six 12, oh -> - 9`` for :func:`confusions`' list; "none" for an empty one."""
    return ", ".join(f"{e['reference']} -> {e['hypothesis']} {e['count']}" for e in errors) or "none"


# ---------------------------------------------------------------------- files
def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically (a temporary file beside it, then a rename): a reader never
    sees half a file, and an interrupted write leaves the old one."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (see :func:`write_text`)."""
    write_text(path, json.dumps(obj, indent=1) + "\n")


def _check_plain(value: Any, where: str = "state") -> None:
    """Refuse (TypeError) what ``torch.load(weights_only=True)`` would not read back: anything
    but tensors, numbers, strings, None and dicts, lists and tuples of them."""
    if isinstance(value, (torch.Tensor, str, bytes, int, float, bool, type(None), torch.Size, torch.dtype)):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, f"{where} key")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    else:
        raise TypeError(f"{where} is a {type(value).__name__}: a checkpoint holds only tensors, numbers, strings "
                        "and dicts/lists of them (store configs as dicts), so that it loads with weights_only=True")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` atomically: a reader (or a run killed mid-write) never sees a partial file.
    The state must hold plain values only (see :func:`load_checkpoint`)."""
    _check_plain(state)
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, read with ``weights_only=True``: tensors,
    numbers, strings and containers only, so a file from elsewhere cannot run code on loading.
    Raises :class:`InputError` for a missing file, a file that is not a checkpoint, and one that
    holds other objects (refused unread)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file" if not path.exists() else f"{path}: not a file")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message names what it refused: "... Unsupported global: GLOBAL io.open was not ..."
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused:
            raise InputError(f"{path}: refused: loading it would call {refused.group(1)}; a checkpoint holds only "
                             "tensors, numbers, strings and containers of them") from None
        found = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
        raise InputError(f"{path}: not a checkpoint ({found.group(1).strip() if found else 'unreadable pickle'})") \
            from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError) as error:
        detail = ": ".join(part for part in (type(error).__name__, str(error).strip()[:200]) if part)
        raise InputError(f"{path}: not a checkpoint written by torch.save ({detail})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise InputError(f"{path}: not a checkpoint written by a recipe's train (no 'model' weights)")
    return state


def load_weights(module: nn.Module, weights: Mapping[str, Any], source: str, advice: str = "") -> None:
    """``module.load_state_dict(weights)``; weights of other names or shapes (a checkpoint of
    another model or size) raise :class:`InputError` naming ``source``, in one line."""
    try:
        module.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        detail = " ".join(str(error).split())[:300]
        raise InputError(f"{source}: its weights do not fit {advice or 'the model its config describes'} "
                         f"({detail})") from None


def restore(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
            device: torch.device | str = "cpu") -> int:
    """Load a run's checkpoint into ``model`` and ``optimizer``; the step it was written at."""
    state = load_checkpoint(path, device)
    if "optimizer" not in state:
        raise InputError(f"{path} holds weights only (an average or a reading copy), no optimizer state: "
                         "start a run from it with --init, not --resume")
    load_weights(model, state["model"], str(path), "this run's model")
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def load_models(paths: Sequence[str | Path], device: torch.device | str,
                build: Callable[[str | Path, dict[str, Any]], nn.Module]
                ) -> tuple[list[nn.Module], list[dict[str, Any]]]:
    """The model of each checkpoint (``build(path, state)`` makes it from the checkpoint's config),
    given its weights and set to reading (``eval``), and the checkpoints."""
    models, states = [], []
    for path in paths:
        state = load_checkpoint(path, device)
        model = build(path, state).to(device)
        load_weights(model, state["model"], str(path), "the model its config describes")
        models.append(model.eval())
        states.append(state)
    return models, states


class Committee(nn.Module):
    """Trained models reading as one: every member scores every view of the input, and the
    log-scores of all (member, view) pairs are averaged (a product of experts in the log domain).
    ``views`` maps an input to the list of its views, the input as given first and then
    test-time transformations of it (None: the input alone). A member returns its log-scores, or
    a tuple of them and more (lengths, say): then the committee returns the mean scores with the
    rest of the first member's output on the first view."""

    def __init__(self, members: Sequence[nn.Module], views: nn.Module | None = None):
        super().__init__()
        if not members:
            raise ValueError("a committee needs at least one member")
        self.members = nn.ModuleList(members)
        self.views = views

    def forward(self, inputs: Any) -> Any:
        views = [inputs] if self.views is None else self.views(inputs)
        outputs = [member(view) for member in self.members for view in views]
        if isinstance(outputs[0], tuple):
            return (torch.stack([out[0] for out in outputs]).mean(0), *outputs[0][1:])
        return torch.stack(outputs).mean(0)


def reading_copy(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's weights in float16 with its configs and step, without the optimizer state:
    a sixth of the size (Adam keeps two more copies), small enough to keep in the repository. It reads (``evaluate``,
    ``decode``; the weights are cast back on loading) and starts runs (``--init``), but does
    not ``--resume``. Readings differ from the full checkpoint's by float16's rounding."""
    out = {k: v for k, v in state.items() if k != "optimizer"}
    out["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    return out


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, Any]:
    """The uniform average of the weights of several checkpoints of one model (a "model soup",
    Wortsman et al. 2022). Runs fine-tuned from one ancestor usually lie in one basin of the loss,
    where their average reads better than each of them; runs trained from different starts do
    not, so average only relatives. Every checkpoint must have the first one's model config and
    tensors; integer tensors (counters) must be equal. The optimizer state is dropped: the result
    is for reading and for ``--init``, not for ``--resume``. ``averaged_from`` records the inputs."""
    if len(paths) < 2:
        raise InputError("averaging needs at least two checkpoints")
    states = [load_checkpoint(p) for p in paths]
    first = states[0]
    for path, state in zip(paths[1:], states[1:]):
        if state["model_config"] != first["model_config"]:
            raise InputError(f"{path}: its model config differs from {paths[0]}'s")
        shapes = {k: v.shape for k, v in state["model"].items()}
        if shapes != {k: v.shape for k, v in first["model"].items()}:
            raise InputError(f"{path}: its tensors differ from {paths[0]}'s in names or shapes")
    weights = {}
    for name, tensor in first["model"].items():
        if tensor.is_floating_point():
            mean = torch.stack([s["model"][name].to(torch.float64) for s in states]).mean(0)
            weights[name] = mean.to(tensor.dtype)
        elif all(torch.equal(s["model"][name], tensor) for s in states[1:]):
            weights[name] = tensor
        else:
            raise InputError(f"{name}: integer tensors differ between the checkpoints, so they cannot be averaged")
    out = {k: v for k, v in first.items() if k != "optimizer"}
    out.update(model=weights, averaged_from=[str(p) for p in paths])
    return out


@dataclass(frozen=True)
class Schedule:
    """How :func:`run_training` steps: ``steps`` optimiser steps at learning rate ``lr`` (linear
    warm-up over ``warmup`` steps, then cosine decay to a tenth), gradients clipped to norm
    ``clip`` (None: not clipped), metrics every ``log_every`` steps, validation every
    ``valid_every`` and a checkpoint every ``checkpoint_every`` (0: never; both at the last step too)."""

    steps: int
    lr: float
    warmup: int
    clip: float | None = None
    log_every: int = 10
    valid_every: int = 0
    checkpoint_every: int = 0


class StepLoss(NamedTuple):
    """What one step of a recipe gives :func:`run_training`: ``share``, this process's share of
    the global batch's loss (scaled so that the processes' averaged gradient is the
    one-process gradient of the global mean); ``total`` and ``examples``, this process's part of
    the sum of the losses and of the number of examples they average, so that the logged loss
    is the global ``sum(total) / sum(examples)``; ``dropped``, examples left out (infinite loss)."""

    share: Tensor
    total: float
    examples: float
    dropped: int = 0


def run_training(model: nn.Module, optimizer: torch.optim.Optimizer, world: World, schedule: Schedule,
                 step_loss: Callable[[int], StepLoss], metrics: MetricsLog, start: int = 0, split: str = "train",
                 show_progress: bool = True, validate: Callable[[int], dict[str, Any]] | None = None,
                 save: Callable[[int], None] | None = None) -> int:
    """The training loop of every recipe, from step ``start`` to ``schedule.steps``: each step
    sets the learning rate, takes ``step_loss(step)`` (the recipe draws step ``step``'s batch,
    always the same for a step, so a resumed run continues exactly), averages the gradients
    over the processes, clips them and steps the optimiser; metrics records of ``split`` (mean
    loss, learning rate, gradient norm, dropped examples, seconds), ``validate(step)``'s record
    and ``save(step)`` on the main process. Returns the last step."""
    bar = Progress(schedule.steps, start, enabled=show_progress and world.main, unit=f"{split} step")
    began = time.time()
    step = start
    try:
        while step < schedule.steps:
            model.train()
            lr = warmup_cosine(step, schedule.steps, schedule.lr, schedule.warmup)
            set_learning_rate(optimizer, lr)
            optimizer.zero_grad()
            result = step_loss(step)
            result.share.backward()
            average_gradients(model, world)
            norm = nn.utils.clip_grad_norm_(model.parameters(), schedule.clip if schedule.clip else float("inf"))
            optimizer.step()
            step += 1
            total, examples, dropped = sum_over_processes([result.total, result.examples, float(result.dropped)],
                                                          world)
            record = {"step": step, "loss": total / max(examples, 1e-12), "lr": lr, "grad_norm": round(float(norm), 3),
                      "dropped": int(dropped), "time": round(time.time() - began, 1)}
            bar.update(step, f"loss {record['loss']:.3f}")
            last = step == schedule.steps
            if step % schedule.log_every == 0 or last:
                metrics.write({"split": split, **record})
            if world.main and validate is not None and schedule.valid_every and (
                    step % schedule.valid_every == 0 or last):
                metrics.write({"split": "valid", "step": step, "time": round(time.time() - began, 1),
                               **validate(step)})
            if world.main and save is not None and schedule.checkpoint_every and (
                    step % schedule.checkpoint_every == 0 or last):
                save(step)
    finally:
        bar.close()
    return step


class MetricsLog:
    """JSON-lines metrics (``{"split": ..., "step": ..., ...}`` a line), appended so a resumed run
    continues the same file; a no-op outside the main process."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.file: TextIO | None = open(path, "a", encoding="utf-8") if enabled else None

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (one JSON object per line); a line that is not one
    raises :class:`InputError` naming the file and line."""
    with open(path, encoding="utf-8") as f:
        return [json_object(line, f"{path}:{number}") for number, line in enumerate(f, start=1) if line.strip()]


def json_object(text: str, where: str) -> dict[str, Any]:
    """A JSON object from ``text``, or an :class:`InputError` saying ``where`` it is not one."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{where}: not JSON ({error})") from None
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object")
    return record


# ---------------------------------------------------------------------- command lines
def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of every recipe's ``train`` command: run folder, resume, device, threads, quiet."""
    parser.add_argument("--out", required=True, help="run folder: checkpoint.pt and metrics.jsonl go here")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (0: auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def show_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Write each option's default into its ``--help`` line, in ``parser`` and its sub-commands
    (argparse's ArgumentDefaultsHelpFormatter skips options without help text). Flags and
    options whose default is empty or None (meaning "not given") are left as they are."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                show_defaults(sub)
            continue
        if not action.option_strings or action.help == argparse.SUPPRESS or "%(default)" in (action.help or ""):
            continue
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or default in ("", [], ()):
            continue
        action.help = f"{action.help} (default: %(default)s)" if action.help else "default: %(default)s"
    return parser


USER_ERRORS = (GraphError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


class CommandRefused(SystemExit):
    """How :func:`run_command` stops on bad input: exit status 2, the message (already printed on
    stderr) kept as the exception's text for callers of a command's ``main()``."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def run_command(command: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> Any:
    """Run a command; bad input (a :class:`~gtn_py.errors.GraphError`, such as :class:`InputError`,
    or a file that cannot be opened) is printed as one line ``error: ...`` on stderr and exits with
    status 2, without a traceback: it is the user's to fix, not a bug."""
    try:
        return command(args)
    except BrokenPipeError:
        # The reader of our output went away (`| head`): stop quietly, as a shell tool does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
    except USER_ERRORS as error:
        if isinstance(error, OSError) and error.filename is not None:
            message = f"{error.filename}: {error.strerror or error}"
        else:
            message = str(error)
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
        raise CommandRefused(message) from None


# ---------------------------------------------------------------------- the checkpoint verbs
def export_command(args: argparse.Namespace) -> None:
    """``export``: a reading copy (float16 weights and the configs, no optimizer state)."""
    save_checkpoint(args.out, reading_copy(load_checkpoint(args.checkpoint)))
    print(f"written: {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB, float16 weights for reading and --init)")


def average_command(args: argparse.Namespace) -> None:
    """``average``: one checkpoint of the mean weights of several of one model config."""
    save_checkpoint(args.out, average_checkpoints(args.checkpoint))
    print(f"written: {args.out} (the mean of {len(args.checkpoint)} checkpoints' weights)")


def add_checkpoint_commands(commands: Any) -> None:
    """The ``export`` and ``average`` verbs, the same in every recipe (``commands``: the
    subparsers; each verb's function is ``func``)."""
    p = commands.add_parser("export", help="a reading copy of a checkpoint: float16 weights and configs, no "
                                           "optimizer state (for evaluate, decode and --init; a few MB)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by train or average")
    p.add_argument("--out", required=True, type=Path, help="the reading copy")
    p.set_defaults(func=export_command)
    p = commands.add_parser("average", help="average the weights of runs fine-tuned from one ancestor "
                                            "(a model soup: one model, read at one model's cost)")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="a checkpoint written by train (repeat it; all of one model config)")
    p.add_argument("--out", required=True, type=Path, help="the averaged checkpoint (for evaluate, decode, --init)")
    p.set_defaults(func=average_command)


# ---------------------------------------------------------------------- progress
class Progress:
    """A dependency-free progress bar on stderr (one line per update when not a terminal, at most
    every ``every`` seconds then, so logs of background runs stay short)."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, unit: str = "step",
                 every: float = 10.0):
        self.total, self.start, self.enabled, self.unit = total, start, enabled, unit
        self.t0 = self.last = time.time()
        self.tty = sys.stderr.isatty()
        self.every = 0.0 if self.tty else every

    def update(self, done: int, text: str = "") -> None:
        if not self.enabled:
            return
        now = time.time()
        if now - self.last < self.every and done < self.total:
            return
        self.last = now
        rate = (done - self.start) / max(1e-9, now - self.t0)
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        bar = "#" * int(30 * done / max(1, self.total))
        line = f"[{bar:<30}] {done}/{self.total} {text} {rate:.2f} {self.unit}/s eta {eta:.0f}s"
        sys.stderr.write("\r" + line if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def progress(items: Iterable[Any], total: int, enabled: bool = True, unit: str = "item") -> Iterable[Any]:
    """Iterate with a progress bar."""
    bar = Progress(total, enabled=enabled, unit=unit)
    try:
        for i, item in enumerate(items, start=1):
            yield item
            bar.update(i)
    finally:
        bar.close()
