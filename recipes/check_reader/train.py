"""Training: end to end through the graphs, data-parallel with torch.distributed.

Every step draws a fresh global batch of strings from the training digits with a generator
seeded by ``(seed, step)``, so a run is reproducible, resumes exactly after an interruption
(the checkpoint holds the model, the optimiser and the step) and splits the same global
batch over any number of processes (process ``r`` of ``N`` takes strings ``r, r+N, ...``;
the loss is scaled so that the averaged gradient is the single-process one).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from gtn_py.criteria.ctc import ctc_loss as gtn_ctc_loss

from .data import DigitSet, GeneratorConfig, load_digits, make_strings, sample_strings, split_digits
from .model import ModelConfig, build_reader, label_ids
from .objectives import sequence_loss

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


@dataclass
class TrainConfig:
    criterion: str = "nll"          # nll | perceptron | hinge | ctc
    steps: int = 600
    batch_size: int = 16            # global batch (strings per step, over all processes)
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.0
    margin: float = 1.0             # hinge margin
    seed: int = 0
    digits: str = ""                # digit-set .npz ('' = the embedded MNIST sample)
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
        return cls(**d)


def digit_split(config: TrainConfig) -> tuple[DigitSet, DigitSet]:
    return split_digits(load_digits(config.digits or None), config.held_out, seed=config.seed)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ---------------------------------------------------------------------- distributed
@dataclass
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_world(device: torch.device) -> World:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def average_gradients(model: nn.Module, world: World) -> None:
    """All-reduce the gradients (mean over processes), one flat buffer per step."""
    if world.size == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


# ---------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    model_config: ModelConfig, train_config: TrainConfig) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "model_config": model_config.to_dict(), "train_config": asdict(train_config)}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    state = torch.load(path, map_location=device, weights_only=False)
    model = build_reader(ModelConfig.from_dict(state["model_config"])).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


# ---------------------------------------------------------------------- the loop
class Progress:
    """A dependency-free progress bar on stderr (one line per update when not a terminal)."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True):
        self.total, self.start, self.enabled = total, start, enabled
        self.t0 = time.time()
        self.tty = sys.stderr.isatty()

    def update(self, step: int, text: str) -> None:
        if not self.enabled:
            return
        done = step - self.start
        rate = done / max(1e-9, time.time() - self.t0)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        bar = "#" * int(30 * step / self.total)
        line = f"[{bar:<30}] {step}/{self.total} {text} {rate:.2f} step/s eta {eta:.0f}s"
        if self.tty:
            sys.stderr.write("\r" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def batch_loss(model: nn.Module, config: TrainConfig, images: list[np.ndarray], labels: list[str],
               global_batch: int, world_size: int) -> tuple[torch.Tensor, int]:
    """This process's share of the global mean loss, and how many of its strings had an infinite loss."""
    if config.criterion == "ctc":
        log_probs, lengths = model(images)
        targets = torch.tensor([x for s in labels for x in label_ids(s)], device=log_probs.device)
        target_lengths = torch.tensor([len(s) for s in labels], device=log_probs.device)
        losses = ctc_loss(log_probs, targets, lengths, target_lengths)
    else:
        losses = sequence_loss(config.criterion, model(images).graphs, labels, config.margin)
    finite = torch.isfinite(losses)
    return losses[finite].sum() * world_size / global_batch, int((~finite).sum())


def ctc_loss(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
    """Per-string CTC losses (blank = 0) ``[B]``, by gtn_py's dense intersection."""
    return gtn_ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="none")


def train(out: str | Path, model_config: ModelConfig, config: TrainConfig, resume: bool = False,
          device: str = "cpu", progress: bool = True) -> Path:
    """Train into ``out`` (checkpoint.pt + metrics.jsonl); returns the checkpoint path."""
    from .evaluate import evaluate_strings  # evaluation imports the model; keep import order simple

    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # one GPU per torchrun process
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    world = init_world(dev)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    torch.manual_seed(config.seed)
    model = build_reader(model_config).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step = 0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=dev, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
    elif world.size > 1:
        # Same initial weights everywhere (they already are, by the seed; this makes it certain).
        for p in model.parameters():
            dist.broadcast(p.data, 0)

    train_digits, held_digits = digit_split(config)
    valid = make_strings(held_digits, config.valid_strings, seed=config.seed + 10_000, config=config.generator)
    metrics = open(out / METRICS, "a") if world.main else None
    bar = Progress(config.steps, step, enabled=progress and world.main)
    t0 = time.time()
    try:
        while step < config.steps:
            model.train()
            rng = np.random.default_rng([config.seed, step])
            strings = sample_strings(train_digits, config.batch_size, rng, config.generator)[world.rank::world.size]
            lr = learning_rate(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad()
            loss, dropped = batch_loss(model, config, [s.image for s in strings], [s.label for s in strings],
                                       config.batch_size, world.size)
            loss.backward()
            average_gradients(model, world)
            optimizer.step()
            step += 1
            record = {"step": step, "loss": float(loss.detach()), "lr": lr, "dropped": dropped,
                      "time": round(time.time() - t0, 2)}
            if world.size > 1:
                summed = torch.tensor([float(loss.detach()), float(dropped)])
                dist.all_reduce(summed)
                record["loss"], record["dropped"] = float(summed[0]) / world.size, int(summed[1])
            bar.update(step, f"loss {record['loss']:.3f}")
            if metrics is not None and (step % config.log_every == 0 or step == config.steps):
                metrics.write(json.dumps({"split": "train", **record}) + "\n")
                metrics.flush()
            if metrics is not None and (step % config.valid_every == 0 or step == config.steps):
                result = evaluate_strings(model, valid, batch_size=32)
                metrics.write(json.dumps({"split": "valid", "step": step, "time": round(time.time() - t0, 2),
                                          **result.summary()}) + "\n")
                metrics.flush()
            if world.main and (step % config.checkpoint_every == 0 or step == config.steps):
                save_checkpoint(ckpt_path, model, optimizer, step, model_config, config)
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    if world.size > 1:
        dist.barrier()
    return ckpt_path
