"""The one engine: the train state, loss, masked optimizer step, scanned training loop, scores
and key streams (`core`), pretraining a base (`pretraining`) and fine-tuning a population of
candidates with analog non-idealities (`finetune`). The only part of codesign that imports
optax or scans over training steps."""

from codesign.engine.core import (
    DEVICES_ENV,
    Scores,
    TrainState,
    compiled,
    cross_entropy,
    local_devices,
    streams,
    train,
)
from codesign.engine.finetune import Engine, FinetuneConfig, Population, pruning_masks
from codesign.engine.pretraining import (
    PretrainConfig,
    enable_compilation_cache,
    load_or_pretrain,
    pretrain,
)

__all__ = [
    "DEVICES_ENV",
    "Engine",
    "FinetuneConfig",
    "Population",
    "PretrainConfig",
    "Scores",
    "TrainState",
    "compiled",
    "cross_entropy",
    "enable_compilation_cache",
    "load_or_pretrain",
    "local_devices",
    "pretrain",
    "pruning_masks",
    "streams",
    "train",
]
