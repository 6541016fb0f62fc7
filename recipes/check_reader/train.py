"""Training: isolated-digit pretraining, then end to end through the graphs, data-parallel with
torch.distributed (process groups, checkpoints, metrics and progress from :mod:`recipes.common`).

As in LeCun et al. (1998), the recogniser is first trained alone, by cross-entropy on crops of
the candidate spans of training strings (:func:`pretrain`): a span whose ends lie within
2 pixels of a true digit's boundaries is that digit; a span that cuts a digit or straddles two
is *garbage*, scored against a fixed logit of 0 so that a well-formed digit gets positive span
scores and a mis-segmented span negative ones (the graph uses the raw scores). Then the whole
reader is trained globally through the graph (``--criterion``). The CTC baseline is pretrained
the same way on its column windows (a window centred on a digit is that digit, any other is
blank), so both start from the same kind of recogniser.

Every step draws a fresh global batch of strings from the training digits with a generator
seeded by ``(seed, step)`` (pretraining steps by ``(seed, -1 - step)``), so a run is
reproducible, resumes exactly after an interruption (the checkpoint holds the model, the
optimiser and the step; it is first written when pretraining ends) and splits the same global
batch over any number of processes (process ``r`` of ``N`` takes strings ``r, r+N, ...``; the
loss is scaled so that the averaged gradient is the single-process one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import common
from ..common import CHECKPOINT, METRICS
from .data import DigitSet, GeneratorConfig, load_digits, make_strings, sample_strings, split_digits
from .evaluate import evaluate_strings
from .model import GARBAGE, READERS, ModelConfig, Reader, build_reader

__all__ = ["CHECKPOINT", "METRICS", "TrainConfig", "digit_split", "learning_rate", "load_model", "pretrain",
           "pretrain_loss", "train"]

@dataclass
class TrainConfig:
    criterion: str = "nll"          # nll | perceptron | hinge | ctc
    steps: int = 600
    batch_size: int = 16            # global batch (strings per step, over all processes)
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.0
    margin: float = 1.0             # hinge margin
    pretrain_steps: int = 0         # isolated-digit cross-entropy steps before the global training
    pretrain_batch: int = 32        # strings per pretraining step (their spans are the examples)
    seed: int = 0                   # initialisation and the strings drawn at each step
    split_seed: int = 0             # the digit split: readers trained from several seeds share it
    digits: str = ""                # digit-set .npz ('' = the embedded MNIST sample)
    init: str = ""                  # checkpoint whose weights start this reader's (same recogniser size)
    held_out: float = 0.125         # fraction of digits kept out of training (split by digit)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    valid_strings: int = 200        # strings of held-out digits decoded at each validation
    valid_every: int = 100
    checkpoint_every: int = 50
    log_every: int = 10

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["generator"] = GeneratorConfig(**d.get("generator", {}))
        d.setdefault("split_seed", d.get("seed", 0))  # older checkpoints split by their seed
        return cls(**d)


def digit_split(config: TrainConfig) -> tuple[DigitSet, DigitSet]:
    return split_digits(load_digits(config.digits or None), config.held_out, seed=config.split_seed)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    return common.warmup_cosine(step, config.steps, config.lr, config.warmup)


def load_model(path: str | Path | Sequence[str | Path], device: torch.device | str = "cpu",
               cuts: Mapping[str, int] | None = None) -> tuple[Reader, dict]:
    """A reader from a checkpoint written by :func:`train`, and the checkpoint. Several checkpoints
    of segmentation readers with the same cuts make one reader whose recogniser is their
    :class:`~recipes.common.Committee` (the state returned is the first one's). ``cuts`` reads with these
    :class:`CutConfig` settings instead of the checkpoints' (e.g. ``{"grid": 4}``; segmentation
    readers only), so readers trained with other cuts can make one committee."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    configs: list[ModelConfig] = []

    def build(p: str | Path, state: dict) -> Reader:
        config = reader_config(p, state)
        if cuts:
            if config.kind != "segmentation":
                raise common.InputError(f"{p}: cuts (--grid, --min-piece) are for segmentation readers; "
                                        "a CTC reader reads column windows")
            config.cuts = replace(config.cuts, **cuts)
        if len(paths) > 1 and (config.kind != "segmentation" or (configs and config.cuts != configs[0].cuts)):
            raise common.InputError(f"{p}: a committee needs segmentation readers with the same cuts as {paths[0]}")
        configs.append(config)
        return build_reader(config)

    models, states = common.load_models(paths, device, build)
    reader = cast(Reader, models[0])
    if len(models) > 1:
        reader.recogniser = common.Committee([cast(Reader, m).recogniser for m in models])
        # Crops with the surroundings when some member reads them; the others read the span alone.
        reader.config.context = any(config.context for config in configs)
    return reader, states[0]


def reader_config(path: str | Path, state: dict) -> ModelConfig:
    """The :class:`ModelConfig` of a check reader's checkpoint; :class:`~recipes.common.InputError`
    for a checkpoint of something else (a speech model, say)."""
    try:
        config = ModelConfig.from_dict(state["model_config"])
        TrainConfig.from_dict(state["train_config"])
        int(state["step"])
    except (KeyError, TypeError, ValueError) as error:
        raise common.InputError(f"{path}: not a check reader's checkpoint ({type(error).__name__}: {error})") \
            from None
    if config.kind not in READERS:
        raise common.InputError(f"{path}: not a check reader's checkpoint (model kind {config.kind!r})")
    return config


# ---------------------------------------------------------------------- pretraining
def pretrain_loss(model: Reader, crops: Tensor, targets: Tensor,
                  counts: tuple[float, float] | None = None) -> Tensor:
    """Mean cross-entropy over the digits plus mean cross-entropy over the garbage (so their
    proportions do not matter); ``counts`` = (digits, garbage) to divide by instead of this batch's
    (the global batch's, under data parallelism). Segmentation: garbage is a fixed zero logit
    beside the ten digit scores; CTC: garbage is the blank output (label 0, digits d + 1)."""
    scores, labels = model.pretrain_logits(crops, targets)
    each = F.cross_entropy(scores, labels, reduction="none")
    is_garbage = targets == GARBAGE
    parts = (~is_garbage, is_garbage)
    if counts is None:
        counts = (float(parts[0].sum()), float(parts[1].sum()))
    return sum(((each * part).sum() / max(1.0, n) for part, n in zip(parts, counts)), scores.new_zeros(()))


def pretrain(model: Reader, config: TrainConfig, train_digits: DigitSet, world: common.World,
             metrics: common.MetricsLog, show_progress: bool = True) -> None:
    """``config.pretrain_steps`` steps of :func:`pretrain_loss` (Adam, warm-up + cosine decay),
    logged as the ``pretrain`` split."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

    def step_loss(step: int) -> common.StepLoss:
        rng = np.random.default_rng([config.seed, 1 << 30, step])
        mine = slice(world.rank, None, world.size)
        samples = sample_strings(train_digits, config.pretrain_batch, rng, config.generator)[mine]
        rngs = [np.random.default_rng([config.seed, 1 << 30, step, i]) for i in range(config.pretrain_batch)][mine]
        crops, targets = model.pretrain_examples(samples, rngs)
        garbage = float((targets == GARBAGE).sum())
        counts = common.sum_over_processes([len(targets) - garbage, garbage], world)
        # The global batch's loss, its crops weighted as one batch (global counts): each process
        # holds the part of its own crops, and the parts add up to it.
        loss = pretrain_loss(model, crops, targets, (counts[0], counts[1]))
        return common.StepLoss(loss * world.size, float(loss.detach()), 1.0 / world.size)

    schedule = common.Schedule(config.pretrain_steps, config.lr, config.warmup, log_every=config.log_every)
    common.run_training(model, optimizer, world, schedule, step_loss, metrics, split="pretrain",
                        show_progress=show_progress)


# ---------------------------------------------------------------------- the global training
def _save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
          model_config: ModelConfig, config: TrainConfig) -> None:
    common.save_checkpoint(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                                  "model_config": model_config.to_dict(), "train_config": asdict(config)})


def train(out: str | Path, model_config: ModelConfig, config: TrainConfig, resume: bool = False,
          device: str = "cpu", progress: bool = True) -> Path:
    """Train into ``out`` (checkpoint.pt + metrics.jsonl); returns the checkpoint path."""
    dev = common.process_device(device)
    world = common.init_world(dev)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    torch.manual_seed(config.seed)
    model = build_reader(model_config).to(dev)
    if config.init:
        # Fine-tuning: another run's weights, read through this run's cuts, grammar and schedule.
        state = common.load_checkpoint(config.init, dev)
        if reader_config(config.init, state).kind != model_config.kind:
            raise common.InputError(f"{config.init}: a {state['model_config']['kind']} reader cannot start a "
                                    f"{model_config.kind} reader")
        common.load_weights(model, state["model"], f"--init {config.init}",
                            "this reader (--channels, --hidden, --context must be the same)")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    train_digits, held_digits = digit_split(config)
    metrics = common.MetricsLog(out / METRICS, enabled=world.main)
    step = 0
    if resume and ckpt_path.exists():
        step = common.restore(ckpt_path, model, optimizer, dev)
    else:
        common.broadcast_parameters(model, world)
        if config.pretrain_steps:
            pretrain(model, config, train_digits, world, metrics, progress)
            if world.main:
                _save(ckpt_path, model, optimizer, 0, model_config, config)

    valid = make_strings(held_digits, config.valid_strings, seed=config.seed + 10_000,
                         config=replace(config.generator, distort=0.0))  # deformations train only

    def step_loss(step: int) -> common.StepLoss:
        rng = np.random.default_rng([config.seed, step])
        strings = sample_strings(train_digits, config.batch_size, rng, config.generator)[world.rank::world.size]
        losses = model.losses([s.image for s in strings], [s.label for s in strings], config.criterion, config.margin)
        finite = torch.isfinite(losses)
        kept = losses[finite]
        return common.StepLoss(kept.sum() * world.size / config.batch_size, float(kept.detach().sum()),
                               float(finite.sum()), int((~finite).sum()))

    schedule = common.Schedule(config.steps, config.lr, config.warmup, log_every=config.log_every,
                               valid_every=config.valid_every, checkpoint_every=config.checkpoint_every)
    try:
        common.run_training(model, optimizer, world, schedule, step_loss, metrics, start=step,
                            show_progress=progress,
                            validate=lambda _: evaluate_strings(model, valid, batch_size=32).summary(),
                            save=lambda done: _save(ckpt_path, model, optimizer, done, model_config, config))
    finally:
        metrics.close()
    common.leave_world(world)
    return ckpt_path
