"""Every kind of speech-digits model, by the name ``--model`` gives it: the one place that
knows them all (the model modules import :mod:`.models`, never each other or this one)."""

from __future__ import annotations

from .hybrid import HybridModel
from .models import CTCModel, ModelConfig, Recognizer, option_fields
from .templates import TemplateModel
from .transducer import TransducerModel

MODELS: dict[str, type[Recognizer]] = {"ctc": CTCModel, "hybrid": HybridModel, "dtw": TemplateModel,
                                       "rnnt": TransducerModel}
MODEL_KINDS = tuple(MODELS)
READERS = tuple(kind for kind, model in MODELS.items() if model.reads_alone)  # read connected speech


def build_model(config: ModelConfig) -> Recognizer:
    if config.kind not in MODELS:
        raise ValueError(f"unknown model kind {config.kind!r} ({', '.join(MODEL_KINDS)})")
    return MODELS[config.kind](config)


def options_help() -> str:
    """Every kind's settings with their defaults, for ``--option``'s help."""
    parts = []
    for kind, model in MODELS.items():
        settings = [f"{name}={default}" + (f" of {'|'.join(kind_of)}" if isinstance(kind_of, tuple) else "")
                    + f" ({help})" for name, kind_of, default, help, _ in option_fields(model.Options)]
        if settings:
            parts.append(f"{kind}: " + ", ".join(settings))
    return "; ".join(parts)
