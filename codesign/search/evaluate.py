"""Evaluation without Optuna: a candidate becomes arrays, then numbers, then one `Result`.

    Candidate --arrays--> energy model (vmapped; microseconds) --> Result, untrained
              --arrays--> engine (one compiled population fine-tune) + energy of the real masks
                          --> Result, trained

`Problem` (`codesign.search.problem`) is what a search evaluates and `Candidate` one point of it.
`Result` holds one evaluated candidate's numbers and is the only code that knows how they are
stored as trial attributes (`to_attrs` / `from_attrs`); budgets (`Budgets.violations`) and
objectives (`Problem.objective_values`) are functions of it.
Nothing here imports Optuna or the YAML layer: the study and the space sit at the edge.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from operator import attrgetter

import jax
import jax.numpy as jnp
import numpy as np

from codesign.data import datasets as data
from codesign.engine import finetune as transfer
from codesign.engine.core import Scores
from codesign.hardware.accelerator import TRAINING_J_PER_FLOP, Accelerator
from codesign.hardware.energy import (
    COMPONENTS,
    Design,
    counts_from_masks,
    estimate_energy,
    estimate_energy_batch,
)
from codesign.nn import networks, pruning
from codesign.search import early_stop, gradient
from codesign.search.problem import OBJECTIVES, Budgets, Candidate, Model, Problem, Task, Training

__all__ = [
    "OBJECTIVES",  # re-exported from codesign.search.problem, with the types below
    "Baseline",
    "Budgets",
    "Candidate",
    "Estimates",
    "Evaluator",
    "Model",
    "Problem",
    "Result",
    "Task",
    "Training",
    "failure_attrs",
]

DIVERGED = "fine-tune diverged"  # how a diverged fine-tune's fail reason starts
EARLY_STOPPED = "early-stopped"  # how an early-stopped fine-tune's reason starts


# --- what comes out ---


@dataclasses.dataclass(frozen=True)
class Result:
    """One evaluated candidate. Accuracy is None until it is fine-tuned (over budget: never)."""

    energy_j: float
    latency_s: float
    tiles: int
    tops_per_w: float
    energy_layers_j: dict  # component -> [per layer] joules per inference
    candidate: Candidate | None = None
    seed: int | None = None
    accuracy: float | None = None  # target validation, under analog noise
    test_accuracy: float | None = None
    digital_test_accuracy: float | None = None  # the same weights on an exact digital chip
    final_loss: float | None = None
    finetune_flops: float = 0.0
    diverged: bool = False
    empty_layers: int = 0  # layers left without a single weight (width or pruning)
    layer_widths: tuple[int, ...] = ()  # kept output units of every weight layer, the head last
    # Early stopping (`codesign.search.early_stop`): validation accuracy probed at each rung
    # reached, and the step a dominated candidate stopped at (None: it trained fully).
    rung_accuracies: tuple[float, ...] = ()
    stopped_at_step: int | None = None

    @property
    def trained(self) -> bool:
        return self.accuracy is not None

    @property
    def early_stopped(self) -> bool:
        return self.stopped_at_step is not None

    @property
    def ok(self) -> bool:
        """Trained to a finite accuracy without diverging, every layer holding a weight."""
        finite = self.trained and math.isfinite(self.accuracy)
        return finite and not self.diverged and not self.empty_layers

    @property
    def spent(self) -> bool:
        """Fine-tuned, fully or until stopped early."""
        return self.trained or self.early_stopped

    @property
    def finetune_energy_j(self) -> float:
        return self.finetune_flops * TRAINING_J_PER_FLOP

    def lifecycle_energy_j(self, inferences: float) -> float:
        return self.finetune_energy_j + inferences * self.energy_j

    def feasible(self, constraints: Mapping[str, float]) -> bool:
        """On the front's terms: trained, and every constraint met (`Problem.violations`)."""
        return self.ok and all(v <= 0 for v in constraints.values())

    @property
    def fail_reason(self) -> str | None:
        if self.diverged:
            return f"{DIVERGED} (final loss {self.final_loss})"
        if self.trained and self.empty_layers:  # the estimate skips these: the API trained one
            return (
                f"{self.empty_layers} layer(s) left without a weight by its widths and pruning: "
                "trained, but no working network"
            )
        if self.early_stopped:
            return (
                f"{EARLY_STOPPED} at step {self.stopped_at_step}: another candidate of its batch "
                "had no more energy and a validation accuracy higher by the margin"
            )
        return None

    def to_attrs(self) -> dict:
        """JSON-ready trial attributes (the names optuna-dashboard shows)."""
        attrs = {
            "candidate": self.candidate.to_dict() if self.candidate else None,
            "seed": self.seed,
            "skipped_training": not self.trained and not self.early_stopped,
            "energy_j": self.energy_j,
            "latency_s": self.latency_s,
            "tiles": self.tiles,
            "tops_per_w": self.tops_per_w,
            "energy_layers_j": self.energy_layers_j,
            "accuracy": self.accuracy,
            "test_accuracy": self.test_accuracy,
            "digital_test_accuracy": self.digital_test_accuracy,
            "final_loss": self.final_loss,
            "diverged": self.diverged if self.trained else None,
            "finetune_flops": self.finetune_flops if self.spent else None,
            "finetune_energy_j": self.finetune_energy_j if self.spent else None,
            "empty_layers": self.empty_layers,
            "layer_widths": list(self.layer_widths) or None,
            "rung_val_accuracies": list(self.rung_accuracies) or None,
            "early_stopped_at_step": self.stopped_at_step,
            **failure_attrs(self.fail_reason),
        }
        return {k: v for k, v in attrs.items() if v is not None}

    @classmethod
    def from_attrs(cls, attrs: Mapping) -> Result | None:
        """The result stored in a trial's attributes; None for a trial never evaluated."""
        if "energy_j" not in attrs:
            return None
        trained = not attrs.get("skipped_training", False) and "accuracy" in attrs
        return cls(
            energy_j=float(attrs["energy_j"]),
            latency_s=float(attrs.get("latency_s", 0.0)),
            tiles=int(attrs.get("tiles", 0)),
            tops_per_w=float(attrs.get("tops_per_w", 0.0)),
            energy_layers_j=attrs.get("energy_layers_j", {}),
            candidate=_candidate(attrs.get("candidate")),
            seed=attrs.get("seed"),
            accuracy=float(attrs["accuracy"]) if trained else None,
            test_accuracy=attrs.get("test_accuracy"),
            digital_test_accuracy=attrs.get("digital_test_accuracy"),
            final_loss=attrs.get("final_loss"),
            finetune_flops=float(attrs.get("finetune_flops", 0.0)),
            # A field since 2026-12; studies written before say it only in fail_reason.
            diverged=bool(
                attrs.get("diverged", str(attrs.get("fail_reason", "")).startswith(DIVERGED))
            ),
            empty_layers=int(attrs.get("empty_layers", 0)),
            layer_widths=tuple(attrs.get("layer_widths", ())),
            rung_accuracies=tuple(attrs.get("rung_val_accuracies", ())),
            stopped_at_step=attrs.get("early_stopped_at_step"),
        )


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The dense all-digital design of a space (its largest network, unpruned, on the digital
    chip), fine-tuned like any candidate: the point a front's hypervolume is measured from.
    Stored in the study's user attribute "baseline" (`to_attrs`, `from_attrs`)."""

    energy_j: float
    accuracy: float = float("nan")
    test_accuracy: float = float("nan")
    candidate: dict = dataclasses.field(default_factory=dict)
    label: str = "dense all-digital"

    def to_attrs(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_attrs(cls, attrs: dict | None) -> Baseline | None:
        if not attrs:
            return None
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in attrs.items() if k in fields})


def _candidate(values) -> Candidate | None:
    """The stored candidate, or None where a trial holds none (or not one of codesign's)."""
    try:
        return Candidate.from_dict(values) if isinstance(values, dict) else None
    except (TypeError, ValueError):
        return None


def failure_attrs(reason: str | None) -> dict:
    """The attribute that says why a trial failed (diverged, stale worker, surplus)."""
    return {"fail_reason": reason} if reason else {}


# --- candidates -> arrays -> results ---


class Estimates(Sequence):
    """Energy-only results of a batch of candidates, as columns: `Result`s built on access.

    `Evaluator.estimate` returns one, so scoring 100,000 candidates costs the energy model and
    a few array reductions, not 100,000 Python objects: read the columns (`energy_j`, ...) for
    bulk work, index or iterate for `Result`s.
    """

    accuracy = None  # energy only: nothing trained (as the budgets read it)

    def __init__(self, report, cands: list[Candidate], layer_widths):
        layers = {c: np.asarray(report.layer_j[c], np.float64) for c in COMPONENTS}
        self.energy_j = sum(v.sum(-1) for v in layers.values())  # [N]
        macs = np.asarray(report.macs, np.float64)
        self.latency_s = np.asarray(report.latency_s, np.float64)
        self.tiles = np.asarray(report.tiles_used)
        self.empty_layers = (np.asarray(report.layer_macs) == 0).sum(-1)
        self.tops_per_w = np.divide(
            2.0 * macs / 1e12, self.energy_j, out=np.zeros_like(self.energy_j),
            where=self.energy_j > 0,
        )  # fmt: skip
        self.energy_layers_j = layers  # component -> [N, layers]
        self.layer_widths = np.asarray(layer_widths, np.int64)  # [N, layers] kept output units
        self.candidates = list(cands)

    def __len__(self) -> int:
        return len(self.candidates)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]  # IndexError past the end, negative indices from it
        return Result(
            energy_j=float(self.energy_j[i]),
            latency_s=float(self.latency_s[i]),
            tiles=int(self.tiles[i]),
            tops_per_w=float(self.tops_per_w[i]),
            energy_layers_j={c: v[i].tolist() for c, v in self.energy_layers_j.items()},
            candidate=self.candidates[i],
            empty_layers=int(self.empty_layers[i]),
            layer_widths=tuple(self.layer_widths[i].tolist()),
        )


def _rows(values: np.ndarray, n: int, width: int, fields) -> np.ndarray:
    """n candidates' values of `fields` read in one stream, as [n, width] rows."""
    if values.size != n * width:
        raise ValueError(f"candidates of another network: each needs {width} values of {fields}")
    return values.reshape(n, width)


class Evaluator:
    """Scores candidates of one problem: data, base network, engine and accelerators."""

    def __init__(
        self,
        problem: Problem,
        *,
        min_tile_rows: int,
        row_block: int = 0,
        cache_dir=None,
        log: Callable | None = None,
    ):
        self.problem = problem
        task = problem.task
        self.task = data.transfer_split(
            task.dataset,
            source_classes=task.source_classes,
            target_classes=task.target_classes,
            seed=task.seed,
            split=task.split,
            target_examples_per_class=task.target_examples_per_class,
            data_dir=task.data_dir,
        )
        source = self.task.source
        self.spec = networks.spec_for(problem.model, source.input_shape, source.num_classes)
        self.target_spec = dataclasses.replace(self.spec, num_classes=self.task.target.num_classes)
        self.shapes = networks.layer_shapes(self.target_spec)
        ft, pre = problem.finetune, problem.pretrain
        self.finetune = transfer.FinetuneConfig(
            steps=ft.steps,
            learning_rate=ft.learning_rate,
            batch_size=ft.batch_size,
            eval_draws=ft.eval_draws,
            device=problem.device,
            tile_scaling=problem.tile_scaling,
            inference_time=ft.inference_time,
            max_row_tiles=transfer.row_tile_bound(self.shapes, min_tile_rows),
            row_block=row_block or min_tile_rows,
        )
        self.pretrain = transfer.PretrainConfig(
            steps=pre.steps,
            learning_rate=pre.learning_rate,
            batch_size=pre.batch_size,
            seed=task.seed,
            checkpoint=problem.model.checkpoint or None,
        )
        self._cache_dir = cache_dir
        self._log = log
        self._engine = None
        self._rungs = None  # the engine's fine-tunes in rungs, with early stopping
        self._accelerators: dict[tuple, Accelerator] = {}
        self._relaxations: dict[tuple, gradient.Relaxation] = {}

    @property
    def engine(self) -> transfer.Engine:
        """Built on first use, so budget-only work never pretrains."""
        if self._engine is None:
            self._engine = transfer.Engine(
                self.spec,
                self.task,
                self.finetune,
                self.pretrain,
                cache_dir=self._cache_dir,
                log=self._log,
            )
        return self._engine

    def accelerator(self, cand: Candidate) -> Accelerator:
        """The candidate's accelerator; a space has few (tile, ADC) pairs, each built once."""
        key = (cand.tile, cand.adc_bits)
        if key not in self._accelerators:
            self._accelerators[key] = self.problem.accelerator(cand)
        return self._accelerators[key]

    def arrays(self, cands: list[Candidate]) -> tuple[Design, Accelerator, dict]:
        """The one candidate -> arrays adapter: energy-model designs and accelerators, and the
        engine's per-candidate knobs (its tile columns are logical: weights, not cells)."""
        keys = list(map(attrgetter("tile", "adc_bits"), cands))
        for key in dict.fromkeys(keys):  # a space has a few (tile, ADC) pairs: each built once
            if key not in self._accelerators:
                self._accelerators[key] = self.problem.accelerator(cands[keys.index(key)])
        order = {key: i for i, key in enumerate(self._accelerators)}
        index = np.fromiter(map(order.__getitem__, keys), np.int64, len(keys))
        stacked = jax.tree.map(
            lambda *xs: np.asarray(xs, np.float32)[index], *self._accelerators.values()
        )
        # Every candidate's numbers read in one pass of C iterators into one array, so 100,000
        # candidates take a fraction of a second (`Evaluator.estimate` stays close to the model).
        n, groups, layers = len(cands), len(self.spec.widths), len(self.shapes)
        fields = {"widths": groups, "sparsity": layers, "analog_fraction": layers}
        numbers = chain.from_iterable(chain.from_iterable(map(attrgetter(*fields), cands)))
        table = _rows(np.fromiter(numbers, np.float32), n, sum(fields.values()), list(fields))
        group_widths, sparsity, analog_fraction = np.split(table, [groups, groups + layers], 1)
        code = {g: i for i, g in enumerate(pruning.GRANULARITIES)}.__getitem__
        names = chain.from_iterable(map(attrgetter("granularity"), cands))
        granularity = _rows(np.fromiter(map(code, names), np.int32), n, layers, ["granularity"])
        adc_bits = np.fromiter(map(attrgetter("adc_bits"), cands), np.float32, n)
        design = Design(
            widths=networks.layer_widths(self.target_spec, group_widths)[1],
            analog_fraction=analog_fraction,
            sparsity=sparsity,
            granularity=granularity,
        )
        cells = np.ceil(stacked.weight_bits / stacked.cell_bits)
        knobs = {
            "widths": group_widths.astype(np.int32),
            "sparsity": design.sparsity,
            "granularity": design.granularity,
            "analog_fraction": design.analog_fraction,
            "tile_rows": stacked.tile_rows.astype(np.int32),
            "tile_cols": np.maximum(1, stacked.tile_cols // cells).astype(np.int32),
            "adc_bits": adc_bits.astype(np.int32),
            "dac_bits": stacked.dac_bits.astype(np.int32),
        }
        return design, stacked, knobs

    def estimate(self, cands: list[Candidate], pad_to: int | None = None) -> Estimates:
        """Energy-only results (from the designs' statistics) in one vmapped call.

        `pad_to` pads the batch to a fixed size, so batches up to it share one compiled program.
        """
        rows = [*cands, *[cands[0]] * ((pad_to or len(cands)) - len(cands))]
        design, accs, _ = self.arrays(rows)
        report = estimate_energy_batch(self.shapes, design, accs)
        report = jax.tree.map(lambda x: np.asarray(x)[: len(cands)], report)
        return Estimates(report, cands, design.widths[: len(cands)])

    def budget_energies(self, cands: list[Candidate], chunk: int = 256) -> np.ndarray:
        """Energy per candidate, np.inf where it is not worth training (a budget broken, or a
        layer left empty: `Problem.worth_training`)."""
        out = []
        for start in range(0, len(cands), chunk):
            results = self.estimate(cands[start : start + chunk], pad_to=chunk)
            out.append(np.where(self.problem.worth_training(results), results.energy_j, np.inf))
        return np.concatenate(out) if out else np.zeros(0)

    def population(self, cands: list[Candidate], seeds: list[int]) -> transfer.Population:
        _, _, knobs = self.arrays(cands)
        arrays = {**knobs, "seed": np.asarray(seeds, np.int32)}
        return transfer.Population(**{k: jnp.asarray(v) for k, v in arrays.items()})

    def evaluate(
        self, cands: list[Candidate], seeds: list[int], chunk: int | None = None
    ) -> list[Result]:
        """Fine-tune and score; energy recomputed exactly from the real masks. With early
        stopping on (`finetune.early_stop`), dominated candidates stop at a rung."""
        population = self.population(cands, seeds)
        stop = self.problem.finetune.early_stop
        energies: dict[int, Result] = {}
        if stop is None or len(cands) < 2:  # one candidate is never dominated
            out = self.engine.evaluate_population(population, chunk=chunk, keep_params=True)
        else:

            def energy_j(rows, masks):  # the exact energy, known before training
                for j, i in enumerate(rows):
                    energies[i] = self._energy(cands[i], [m[j] for m in masks])
                return np.asarray([energies[i].energy_j for i in rows])

            if self._rungs is None:
                self._rungs = early_stop.Rungs(self.engine)
            out = self._rungs.evaluate_population(
                population, energy_j, stop, chunk=chunk, keep_params=True
            )
        pairs = enumerate(zip(cands, seeds, strict=True))
        return [self._trained(cand, seed, out, i, energies.get(i)) for i, (cand, seed) in pairs]

    def train(self, cand: Candidate, seed: int) -> tuple[Result, list[dict], list[np.ndarray]]:
        """One candidate fine-tuned and scored, with its trained parameters and masks."""
        out = self.engine.evaluate_population(self.population([cand], [seed]), keep_params=True)
        params = jax.tree.map(lambda x: np.asarray(x[0]), out.params)
        return self._trained(cand, seed, out, 0), params, [np.asarray(m[0]) for m in out.masks]

    def _energy(self, cand: Candidate, masks: list[np.ndarray]) -> Result:
        """The energy-only result of a candidate from its real masks."""
        acc = self.accelerator(cand)
        counts = counts_from_masks(self.shapes, masks, np.asarray(cand.analog_fraction), acc)
        report = estimate_energy(self.shapes, counts, acc)
        report = jax.tree.map(lambda x: np.asarray(x)[None], report)  # a batch of one
        widths = networks.layer_widths(self.target_spec, np.asarray([cand.widths]))[1]
        return Estimates(report, [cand], widths)[0]

    def _trained(
        self, cand: Candidate, seed: int, out: Scores, i: int, energy: Result | None = None
    ) -> Result:
        """The result of row i of the engine's scores: the one place a `Result` is built from
        them."""
        if energy is None:
            energy = self._energy(cand, [np.asarray(m[i]) for m in out.masks])
        steps_run = self.finetune.steps if out.steps_run is None else int(out.steps_run[i])
        stopped = steps_run < self.finetune.steps
        rungs = () if out.rung_val_accuracies is None else out.rung_val_accuracies[i]
        return dataclasses.replace(
            energy,
            seed=int(seed),
            accuracy=None if stopped else float(out.val_accuracy[i]),
            test_accuracy=None if stopped else float(out.test_accuracy[i]),
            digital_test_accuracy=None if stopped else float(out.digital_test_accuracy[i]),
            final_loss=float(out.final_loss[i]),
            finetune_flops=float(out.finetune_flops[i]),
            diverged=bool(out.diverged[i]),
            rung_accuracies=tuple(float(a) for a in rungs if np.isfinite(a)),
            stopped_at_step=steps_run if stopped else None,
        )

    def codesign(
        self, cands: list[Candidate], seeds, lambdas, bounds, config
    ) -> tuple[list[Candidate], gradient.Learned]:
        """Differentiable co-design (`codesign.search.gradient`) from these starting candidates,
        each with its trade-off weight: the learned designs as candidates, with continuous values
        (snap them onto the space's grid before scoring them), and what the run learned."""
        if (config, bounds) not in self._relaxations:
            self._relaxations[config, bounds] = gradient.Relaxation(self.engine, config, bounds)
        design, accs, _ = self.arrays(cands)
        widths = np.asarray([c.widths for c in cands], np.float32)
        out = self._relaxations[config, bounds](design, accs, widths, lambdas, seeds)
        learned = [
            dataclasses.replace(
                cand,
                widths=tuple(float(w) for w in out.widths[i]),
                sparsity=tuple(float(v) for v in out.sparsity[i]),
                analog_fraction=tuple(float(v) for v in out.analog_fraction[i]),
                adc_bits=float(out.adc_bits[i]),
            )
            for i, cand in enumerate(cands)
        ]
        return learned, out

    def dense_digital(self, tile: tuple[int, int]) -> Candidate:
        return Candidate.dense_digital(
            self.problem.model, tile, int(self.problem.accelerator().adc_bits)
        )

    def baseline(self, tile: tuple[int, int], seed: int, chunk: int | None = None) -> Baseline:
        """The dense all-digital baseline, fine-tuned like any candidate."""
        cand = self.dense_digital(tile)
        (result,) = self.evaluate([cand], [seed * 1_000_003 - 1], chunk=chunk)
        return Baseline(result.energy_j, result.accuracy, result.test_accuracy, cand.to_dict())
