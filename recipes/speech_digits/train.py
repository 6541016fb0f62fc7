"""Training of every model kind: one loop, data-parallel with torchrun, resumable.

Step ``s`` always trains on the same global batch: epochs are permutations of the training
utterances drawn from ``(seed, epoch)``, cut into batches of similar lengths (less padding);
process ``r`` of ``N`` takes utterances ``r, r + N, ...`` of each batch (recipes.common).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from .. import common
from .data import Utterance
from .evaluate import evaluate_model
from .frontend import DEFAULT_CONFIG, frequency_mask, frequency_warp
from .kinds import MODEL_KINDS, MODELS, build_model
from .models import (
    CommitteeReader,
    FrameScorer,
    MixtureOfExperts,
    ModelConfig,
    ProductOfExperts,
    Recognizer,
    make_batch,
    option_fields,
)

NUM_FILTERS = DEFAULT_CONFIG.num_filters


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 16        # global batch, utterances per step over all processes
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 1e-5
    clip: float = 5.0           # gradient norm clipping
    seed: int = 0
    valid_size: int = 150       # training utterances kept out for validation
    valid_voices: int = 0       # > 0: validate on this many voices held out of training (split_valid)
    valid_every: int = 500
    checkpoint_every: int = 100
    log_every: int = 10
    augment: bool = False       # perturb training features (see augment_features)
    freq_mask: int = 0          # with augment: mask one band of up to this many mel filters


def split_valid(utterances: Sequence[Utterance], valid_size: int, valid_voices: int = 0,
                voices: Mapping[str, str] | None = None) -> tuple[list[Utterance], list[Utterance]]:
    """Training and validation utterances. By default every k-th utterance is for validation (the
    corpus's utterances are independent draws, so this spreads voices over both). With
    ``valid_voices`` > 0, every utterance of that many voices (``voices``: utterance id -> voice)
    leaves training and up to ``valid_size`` of them validate: unseen voices, as in the test split.
    The voices are drawn by a fixed seed, so every run on one corpus holds out the same ones."""
    if valid_voices > 0:
        if voices is None or any(u.utt_id not in voices for u in utterances):
            raise ValueError("valid_voices needs the voice of every training utterance")
        names = sorted({voices[u.utt_id] for u in utterances})
        if valid_voices >= len(names):
            raise ValueError(f"valid_voices={valid_voices}, but the training utterances have {len(names)} voices")
        held_out = set(np.random.default_rng(0).choice(names, size=valid_voices, replace=False).tolist())
        train_set = [u for u in utterances if voices[u.utt_id] not in held_out]
        pool = [u for u in utterances if voices[u.utt_id] in held_out]
        return train_set, pool[::max(1, len(pool) // max(1, valid_size))][:valid_size]
    if valid_size <= 0:
        return list(utterances), []
    k = max(2, len(utterances) // valid_size)
    valid = [u for i, u in enumerate(utterances) if i % k == k - 1][:valid_size]
    chosen = {id(u) for u in valid}
    return [u for u in utterances if id(u) not in chosen], valid


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """One epoch's batches (utterance indices): a permutation from ``(seed, epoch)``, sorted by length
    within windows of 32 batches, cut into batches, the batches shuffled."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = 32 * batch_size
    chunks = [order[i:i + window] for i in range(0, len(order), window)]
    ordered = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
    batches = [ordered[i:i + batch_size] for i in range(0, len(ordered) - batch_size + 1, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def augment_features(features: np.ndarray, rng: np.random.Generator, freq_mask: int = 0) -> np.ndarray:
    """A perturbed copy of one utterance's features, to generalise to unseen voices and rates:
    a tempo change (frames resampled by linear interpolation, factor 0.85-1.15), a vocal tract
    warp of the spectrum (frequencies scaled by 0.8-1.45, unequally, :func:`frequency_warp`),
    a random gain per cepstral coefficient (a further spectral-envelope change), and one masked
    stretch of up to 10 frames (SpecAugment's time mask; features are mean-normalised, so zero is
    the mean); with ``freq_mask`` > 0 also one band of up to that many mel filters held at its mean
    (SpecAugment's frequency mask, :func:`frequency_mask`)."""
    frames = len(features)
    length = max(1, int(round(frames / rng.uniform(0.85, 1.15))))
    position = np.linspace(0, frames - 1, length)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, frames - 1)
    frac = (position - low)[:, None]
    out = (1 - frac) * features[low] + frac * features[high]
    # The warp: one factor for the whole spectrum, log-uniform from a longer vocal tract (0.8) to
    # a child's (1.45), times a smooth per-filter wobble (formants moving unequally).
    wobble = np.interp(np.arange(NUM_FILTERS), [0, NUM_FILTERS // 2, NUM_FILTERS - 1], rng.normal(0.0, 0.08, 3))
    out = out @ frequency_warp(np.exp(rng.uniform(np.log(0.8), np.log(1.45)) + wobble))
    gain = np.concatenate([[1.0], rng.normal(1.0, 0.15, features.shape[1] - 1)])
    out = out * gain
    width = int(rng.integers(0, 11))
    if width and length > 4 * width:
        start = int(rng.integers(0, length - width))
        out[start:start + width] = 0.0
    if freq_mask > 0:  # drawn after the others, so that freq_mask = 0 perturbs as before
        band = int(rng.integers(1, freq_mask + 1))
        out = out @ frequency_mask(int(rng.integers(0, NUM_FILTERS - band + 1)), band)
    return out.astype(np.float32)


def batch_for_step(lengths: np.ndarray, config: TrainConfig, step: int) -> np.ndarray:
    per_epoch = max(1, len(lengths) // config.batch_size)
    return epoch_batches(lengths, config.batch_size, config.seed, step // per_epoch)[step % per_epoch]


def checkpoint_state(model: Recognizer, optimizer: torch.optim.Optimizer, step: int, model_config: ModelConfig,
                     config: TrainConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "model_config": model_config.to_dict(), "train_config": asdict(config), **(extra or {})}


def model_config_of(path: str | Path, state: Mapping[str, Any]) -> ModelConfig:
    """The :class:`ModelConfig` of a speech checkpoint; :class:`~recipes.common.InputError` for a
    checkpoint of something else (a check reader, say)."""
    try:
        config = ModelConfig.from_dict(state["model_config"])
    except (KeyError, TypeError, ValueError) as error:
        raise common.InputError(f"{path}: not a speech-digits model (its model config does not read: "
                                f"{type(error).__name__} {error})") from None
    if config.kind not in MODEL_KINDS:
        raise common.InputError(f"{path}: a {config.kind!r} model, not a speech-digits model "
                                f"({', '.join(MODEL_KINDS)})")
    return config


COMBINE = ("auto", "frames", "answers", "mixture")


def load_model(path: str | Path | Sequence[str | Path], device: torch.device | str = "cpu",
               warps: Sequence[float] = (), options: Mapping[str, Any] | None = None, combine: str = "auto"
               ) -> tuple[Recognizer, dict[str, Any]]:
    """A model from a checkpoint written by :func:`train`, and the checkpoint. Several checkpoints,
    or vocal tract ``warps`` of the input to average over, read as one (the state returned is the
    first one's): ``combine="frames"`` averages frame scores (:class:`~.models.CommitteeReader`: CTC
    or hybrid models of one kind), ``"answers"`` sums each member's energy of the answers they
    read (:class:`~.models.ProductOfExperts`: any kinds that read connected speech), ``"mixture"``
    averages their posteriors of those answers instead (:class:`~.models.MixtureOfExperts`), ``"auto"``
    frames where it can. ``options`` replace settings of the checkpoints' model kinds for reading
    (e.g. an RNN-T's ``beam``; values as given on the command line, checked by the kind's
    ``Options``); with kinds mixed, each applies to the kinds that have it."""
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}")
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    options = dict(options or {})
    used: set[str] = set()

    def build(p: str | Path, state: dict[str, Any]) -> Recognizer:
        config = model_config_of(p, state)
        known = {name for name, *_ in option_fields(MODELS[config.kind].Options)}
        mine = options if len(paths) == 1 else {k: v for k, v in options.items() if k in known}
        used.update(mine)
        config.options = {**config.options, **mine}
        return build_model(config)

    loaded, states = common.load_models(paths, device, build)
    models = cast(list[Recognizer], loaded)
    if set(options) - used:
        kinds = {m.config.kind for m in models}
        raise common.InputError(f"--option {', '.join(sorted(set(options) - used))}: not a setting of any model "
                                f"read ({', '.join(sorted(kinds))})")
    if len(models) == 1 and not warps:
        return models[0], states[0]
    one_frame_kind = CommitteeReader.can_read_with(models)
    if combine == "frames" or (combine == "auto" and one_frame_kind):
        if not one_frame_kind:
            raise common.InputError(f"{', '.join(map(str, paths))}: frame scores average over CTC or hybrid models "
                                    "of one kind with the same options and stride (--combine answers reads with "
                                    "any kinds)")
        return CommitteeReader(cast(list[FrameScorer], models), warps or (1.0,)).eval(), states[0]
    experts = MixtureOfExperts if combine == "mixture" else ProductOfExperts
    try:
        return experts(models, warps or (1.0,)).eval(), states[0]
    except ValueError as error:
        raise common.InputError(f"{', '.join(map(str, paths))}: {error}") from None


def train(out: str | Path, model_config: ModelConfig, config: TrainConfig, utterances: Sequence[Utterance],
          resume: bool = False, device: str = "cpu", show_progress: bool = True,
          extra: dict[str, Any] | None = None, init: str | Path | None = None,
          voices: Mapping[str, str] | None = None) -> Path:
    """Train into ``out`` (checkpoint.pt, metrics.jsonl); returns the checkpoint path. ``extra``
    goes into the checkpoint (e.g. where the training data came from); ``init``: a checkpoint
    whose encoder weights start this model's encoder (ignored when resuming); ``voices``:
    utterance id -> voice, for ``config.valid_voices``."""
    dev = common.process_device(device)  # under torchrun, cuda means this process's GPU
    world = common.init_world(dev)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / common.CHECKPOINT
    torch.manual_seed(config.seed)
    model = build_model(model_config).to(dev)
    train_set, valid_set = split_valid(utterances, config.valid_size, config.valid_voices, voices)
    model.prepare([u.features for u in train_set], [u.words for u in train_set])  # feature statistics, priors
    if init:
        # Start from another model's encoder (e.g. a trained hybrid's), same encoder settings.
        encoder = {k[len("encoder."):]: v for k, v in common.load_checkpoint(init, dev)["model"].items()
                   if k.startswith("encoder.")}
        common.load_weights(model.encoder, encoder, f"--init {init}",
                            "this model's encoder (--channels, --context, --hidden, --layers must be the same)")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step = 0
    if resume and ckpt_path.exists():
        step = common.restore(ckpt_path, model, optimizer, dev)
    else:
        common.broadcast_parameters(model, world)

    lengths = np.array([len(u.features) for u in train_set])

    def step_loss(step: int) -> common.StepLoss:
        indices = batch_for_step(lengths, config, step)[world.rank::world.size]
        chosen = [train_set[i] for i in indices]
        features = [u.features for u in chosen]
        if config.augment:
            features = [augment_features(f, np.random.default_rng([config.seed, step, int(i)]), config.freq_mask)
                        for f, i in zip(features, indices)]
        losses = model.losses(make_batch(features, [u.words for u in chosen], [u.utt_id for u in chosen], dev))
        finite = torch.isfinite(losses)
        kept = losses[finite]
        return common.StepLoss(kept.sum() * world.size / config.batch_size, float(kept.detach().sum()),
                               float(finite.sum()), int((~finite).sum()))

    def save(step: int) -> None:
        common.save_checkpoint(ckpt_path, checkpoint_state(model, optimizer, step, model_config, config, extra))

    schedule = common.Schedule(config.steps, config.lr, config.warmup, config.clip, config.log_every,
                               config.valid_every if valid_set else 0, config.checkpoint_every)
    metrics = common.MetricsLog(out / common.METRICS, enabled=world.main)
    try:
        common.run_training(model, optimizer, world, schedule, step_loss, metrics, start=step,
                            show_progress=show_progress,
                            validate=lambda _: evaluate_model(model, valid_set, batch_size=32, device=dev).summary(),
                            save=save)
    finally:
        metrics.close()
    common.leave_world(world)
    return ckpt_path
