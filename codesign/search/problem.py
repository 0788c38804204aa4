"""What a search evaluates: the task, the model, its training, the hardware, the budgets and the
objectives (`Problem`), and one point of it (`Candidate`).

Plain frozen dataclasses: the YAML layer (`codesign.search.space`) builds them, the evaluator
(`codesign.search.evaluate`) reads them, and budgets and objectives are functions of a `Result`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from codesign.hardware.accelerator import Accelerator, with_tile
from codesign.hardware.presets import DEFAULT_PRESET, get_preset
from codesign.nn.model import Model

__all__ = [
    "OBJECTIVES",
    "Budgets",
    "Candidate",
    "EarlyStop",
    "Model",
    "Priced",
    "Problem",
    "Scored",
    "Task",
    "Training",
]


class Priced(Protocol):
    """What budgets and constraints read of a design: a `codesign.search.evaluate.Result`, or its
    `Estimates` before training (a column per field, one row per candidate)."""

    energy_j: Any
    latency_s: Any
    tiles: Any
    empty_layers: Any
    accuracy: Any


class Scored(Priced, Protocol):
    """What the objectives read of a result (`codesign.search.evaluate.Result`)."""

    trained: bool

    def lifecycle_energy_j(self, inferences: float) -> float: ...


# name -> (Optuna direction, metric name shown by optuna-dashboard and the `optuna` CLI)
OBJECTIVES = {
    "energy": ("minimize", "energy_j"),
    "accuracy": ("maximize", "accuracy"),
    "latency": ("minimize", "latency_s"),
    "tiles": ("minimize", "tiles"),
    "lifecycle_energy": ("minimize", "lifecycle_energy_j"),
}


@dataclasses.dataclass(frozen=True)
class Task:
    """The data: a dataset cut into a source (pretraining) and a target (fine-tune) task."""

    dataset: str = (
        "digits"  # a name in codesign.data.datasets.DATASET_NAMES, or a file or folder path
    )
    source_classes: tuple[int, ...] | None = (0, 1, 2, 3, 4)  # None: every class (by_examples)
    target_classes: tuple[int, ...] | None = (5, 6, 7, 8, 9)
    seed: int = 0
    split: str = "by_class"  # by_class (disjoint classes) | by_examples (shared classes)
    target_examples_per_class: int | None = None  # few-shot target: N training examples a class
    data_dir: str | None = None  # where standard datasets are (default $CODESIGN_CACHE/datasets)


@dataclasses.dataclass(frozen=True)
class EarlyStop:
    """Fine-tunes run in rungs; after each, a candidate whose (energy, validation accuracy so
    far) another candidate of its batch beats by `margin` stops (`codesign.search.early_stop`)."""

    rungs: tuple[float, ...] = (0.25, 0.5)  # rung ends, as fractions of the fine-tune's steps
    margin: float = 0.05  # accuracy by which the other must be better, at no more energy


@dataclasses.dataclass(frozen=True)
class Training:
    steps: int = 100
    learning_rate: float = 3e-3
    batch_size: int = 64
    eval_draws: int = 3  # analog noise draws averaged at evaluation (fine-tunes only)
    early_stop: EarlyStop | None = None  # fine-tunes only; None: every candidate trains fully
    inference_time: float = 0.0  # fine-tunes only: seconds after programming (pcm drifts)


@dataclasses.dataclass(frozen=True)
class Budgets:
    """Limits a design must meet; energy, latency and tiles are checked before training."""

    max_energy_j: float | None = None
    max_latency_s: float | None = None
    max_tiles: float | None = None
    min_accuracy: float | None = None

    @property
    def accuracy_floor(self) -> float:
        return self.min_accuracy or 0.0

    def violations(self, result: Priced) -> dict[str, float]:
        """Constraint values per budget set (> 0 means violated).

        An untrained design (accuracy None) counts as accuracy 0 against min_accuracy.
        """
        out = {}
        if self.max_energy_j is not None:
            out["max_energy_j"] = result.energy_j / self.max_energy_j - 1.0
        if self.max_latency_s is not None:
            out["max_latency_s"] = result.latency_s / self.max_latency_s - 1.0
        if self.max_tiles is not None:
            out["max_tiles"] = _number(result.tiles) - self.max_tiles
        if self.min_accuracy is not None:
            out["min_accuracy"] = self.min_accuracy - (result.accuracy or 0.0)
        return out


def _number(value):
    """A float, or float columns for a batch (`Estimates`)."""
    return float(value) if np.ndim(value) == 0 else np.asarray(value, np.float64)


@dataclasses.dataclass(frozen=True)
class Problem:
    """Everything that decides a candidate's numbers, except the candidate itself."""

    task: Task = Task()
    model: Model = Model()
    pretrain: Training = Training(steps=500)
    finetune: Training = Training()
    preset: str = DEFAULT_PRESET
    device: str = "sram"  # the analog cells' device model (`codesign.hardware.analog.DEVICES`)
    tile_scaling: str = "layer"  # input and weight scales per layer or per row tile
    overrides: Mapping[str, float] = dataclasses.field(default_factory=dict)
    budgets: Budgets = Budgets()
    objectives: tuple[str, ...] = ("energy", "accuracy")
    lifecycle_inferences: float = 1e6

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o][0] for o in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        return [OBJECTIVES[o][1] for o in self.objectives]

    def accelerator(self, candidate: Candidate | None = None) -> Accelerator:
        """The preset with the overrides and, if given, the candidate's tile and ADC bits."""
        acc = dataclasses.replace(get_preset(self.preset), **self.overrides)
        if candidate is not None:
            acc = with_tile(acc, *candidate.tile)
            acc = dataclasses.replace(acc, adc_bits=float(candidate.adc_bits))
        return acc

    def objective_values(self, result: Scored) -> list[float]:
        """The study's objective values of a result (an untrained one has accuracy 0)."""
        values = {
            "energy": result.energy_j,
            "accuracy": result.accuracy if result.trained else 0.0,
            "latency": result.latency_s,
            "tiles": float(result.tiles),
            "lifecycle_energy": result.lifecycle_energy_j(self.lifecycle_inferences),
        }
        return [values[o] for o in self.objectives]

    def violations(self, result: Priced) -> dict[str, float]:
        """Every constraint a design must meet (> 0 means violated): the budgets, and no layer
        left without a weight (such a network computes a constant: it costs little and guesses).
        Every Optuna client reads these as the trial's constraints."""
        return {**self.budgets.violations(result), "empty_layers": _number(result.empty_layers)}

    def worth_training(self, result: Priced) -> bool | np.ndarray:
        """Every constraint that is known before training (all but min_accuracy) is met: for a
        `Result` a bool, for `Estimates` (columns) a bool per candidate."""
        known = [v for k, v in self.violations(result).items() if k != "min_accuracy"]
        ok = np.all(np.asarray(known) <= 0, axis=0)
        return bool(ok) if ok.ndim == 0 else ok


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One point of a search space: the network's and the accelerator's searched choices."""

    widths: tuple[int, ...]  # kept units per hidden layer
    sparsity: tuple[float, ...]  # per weight layer
    granularity: tuple[str, ...]  # per weight layer, from GRANULARITIES
    analog_fraction: tuple[float, ...]  # per weight layer
    tile: tuple[int, int]  # analog tile rows x columns, in cells
    adc_bits: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Candidate:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    @classmethod
    def dense_digital(cls, model: Model, tile: tuple[int, int], adc_bits: int) -> Candidate:
        """The maximum network, unpruned, all digital: the baseline fronts are compared to."""
        n = model.num_layers
        return cls(
            widths=tuple(model.widths),
            sparsity=(0.0,) * n,
            granularity=("unstructured",) * n,
            analog_fraction=(0.0,) * n,
            tile=tuple(tile),
            adc_bits=int(adc_bits),
        )
