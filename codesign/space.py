"""Search spaces: the YAML schema, its validation, and Optuna suggestions -> `Candidate`.

A search space file has these sections (every key optional unless marked; see
`search_spaces/digits_mlp.yaml` for a commented example):

    name: digits_mlp                     # study name (default: the file name)
    task:       dataset (a name in codesign.data.DATASET_NAMES, or a path to an .npz, a CIFAR
                archive, a folder of IDX files or of class sub-folders of images), data_dir,
                split (by_class | by_examples), source_classes, target_classes,
                target_examples_per_class, seed
    model:      family (mlp | cnn), widths (maximum hidden widths; a cnn's 3 conv channel counts)
    pretrain:   steps, learning_rate, batch_size
    finetune:   steps, learning_rate, batch_size, eval_draws
    hardware:   preset, overrides (fixed Accelerator fields, e.g. {tiles: 32})
    search:     widths, sparsity, granularity, tile, analog_fraction, adc_bits
    objectives: [energy, accuracy, latency, tiles, lifecycle_energy]   (energy, accuracy required)
    lifecycle_inferences: number of inferences for lifecycle_energy
    budgets:    max_energy_j, max_latency_s, max_tiles, min_accuracy
    sampler:    name (energy-aware | nsga2 | tpe | gp | random), seed, population_size (nsga2)
    trials, batch: default trial count and candidates per ask/tell batch

A searched dimension is a fixed value, `{choices: [...]}`, or `{low, high, step}` (step optional
for floats, default 1 for ints); `per_layer: true` searches one value per layer instead of one
shared value. Every error is a `CodesignError` of one line naming the file, the key path and the
valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any

import numpy as np
import yaml

from codesign.checks import choice, fail, int_list, override, parse_tile, section, typed
from codesign.data import DATASET_NAMES, SPLITS, looks_like_path
from codesign.errors import CodesignError
from codesign.evaluate import Evaluator
from codesign.hardware import Accelerator
from codesign.networks import FAMILIES
from codesign.presets import DEFAULT_PRESET, PRESETS, get_preset
from codesign.problem import OBJECTIVES, Budgets, Candidate, Model, Problem, Task, Training
from codesign.pruning import GRANULARITIES

__all__ = [
    "SAMPLERS",
    "Candidate",
    "Dimension",
    "Sampler",
    "SearchSpace",
    "load_space",
    "parse_space",
    "parse_tile",
]

SAMPLERS = ("energy-aware", "nsga2", "tpe", "gp", "random")
_BUDGETS = tuple(f.name for f in dataclasses.fields(Budgets))
_SEARCHED = ("widths", "sparsity", "granularity", "tile", "analog_fraction", "adc_bits")


@dataclasses.dataclass(frozen=True)
class Dimension:
    """A searched (or fixed) value: choices, or a low..high range with an optional step."""

    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    is_int: bool = False
    per_layer: bool = False
    is_tile: bool = False  # choices are tile sizes (an int or "ROWSxCOLS")

    @property
    def fixed(self):
        """The value when the dimension has a single choice, else None."""
        return self.choices[0] if self.choices is not None and len(self.choices) == 1 else None

    def sample(self, rng, count: int) -> list:
        """count uniform random values on the dimension's grid, without Optuna."""
        if self.choices is not None:
            return [self.choices[i] for i in rng.integers(len(self.choices), size=count)]
        if self.step:
            steps = rng.integers(int(round((self.high - self.low) / self.step)) + 1, size=count)
            values = np.minimum(self.low + self.step * steps, self.high)  # no drift past high
            return (
                [int(v) for v in values] if self.is_int else [round(float(v), 12) for v in values]
            )
        if self.is_int:
            return [int(v) for v in rng.integers(int(self.low), int(self.high) + 1, size=count)]
        return [float(v) for v in rng.uniform(self.low, self.high, size=count)]

    def features(self, value) -> list[float]:
        """A value as points in [0, 1]: a range scaled linearly, tiles by log2 of their cell
        count, numeric choices by value, other choices one-hot (two categories 1 apart)."""
        if self.choices is None:
            return [(float(value) - self.low) / ((self.high - self.low) or 1.0)]
        if self.is_tile:
            cells = [math.log2(math.prod(parse_tile(c, "search.tile", ""))) for c in self.choices]
            mine = math.log2(math.prod(parse_tile(value, "search.tile", "")))
            return [(mine - min(cells)) / ((max(cells) - min(cells)) or 1.0)]
        if all(isinstance(c, int | float) and not isinstance(c, bool) for c in self.choices):
            low, high = min(self.choices), max(self.choices)
            return [(float(value) - low) / ((high - low) or 1.0)]
        return [1.0 / math.sqrt(2.0) if value == c else 0.0 for c in self.choices]

    def contains(self, value) -> bool:
        """Whether value is a point of this dimension (tiles compared as (rows, cols))."""
        if self.choices is not None:
            if self.is_tile:
                tiles = [parse_tile(c, "search.tile", "") for c in self.choices]
                pair = isinstance(value, list | tuple) and len(value) == 2
                return pair and tuple(value) in tiles
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.is_int and value != int(value):
            return False
        return math.isfinite(value) and self.low - 1e-9 <= value <= self.high + 1e-9

    def suggest(self, trial, name: str):
        if self.choices is not None:
            if len(self.choices) == 1:
                return self.choices[0]
            return trial.suggest_categorical(name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1))
        return trial.suggest_float(name, self.low, self.high, step=self.step)


@dataclasses.dataclass(frozen=True)
class Sampler:
    name: str = "energy-aware"
    seed: int = 0
    population_size: int = 16  # nsga2


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A validated search space file: the problem, what varies, and how it is searched."""

    path: str
    name: str
    problem: Problem
    dims: dict  # name -> Dimension
    sampler: Sampler
    trials: int
    batch: int
    raw: dict = dataclasses.field(default_factory=dict, compare=False)  # the file as parsed

    @property
    def tiles(self) -> list[tuple[int, int]]:
        """Every tile size the space may choose, as (rows, cols) in cells."""
        return [parse_tile(v, "search.tile", self.path) for v in self.dims["tile"].choices]

    def accelerator(self, candidate: Candidate | None = None) -> Accelerator:
        return self.problem.accelerator(candidate)

    def with_finetune(self, **changes) -> SearchSpace:
        """The same space with some fine-tune settings changed (e.g. steps=40)."""
        finetune = dataclasses.replace(self.problem.finetune, **changes)
        return dataclasses.replace(
            self, problem=dataclasses.replace(self.problem, finetune=finetune)
        )

    def evaluator(self, *, cache_dir=None, log=None) -> Evaluator:
        """The space's evaluator (its smallest tile bounds the engine's row tiles)."""
        min_rows = min(rows for rows, _ in self.tiles)
        return Evaluator(self.problem, min_tile_rows=min_rows, cache_dir=cache_dir, log=log)

    def param_names(self) -> dict[str, list[str]]:
        """Optuna parameter names per searched dimension (fixed dimensions have none)."""
        model = self.problem.model
        counts = {"widths": model.num_hidden, "tile": 1, "adc_bits": 1}
        names = {}
        for key, dim in self.dims.items():
            count = counts.get(key, model.num_layers)
            if dim.fixed is not None:
                names[key] = []
            elif dim.per_layer and count > 1:
                names[key] = [f"{key}_{i}" for i in range(count)]
            else:
                names[key] = [key]
        return names

    def param_dims(self) -> dict[str, Dimension]:
        """Each Optuna parameter's dimension, in a fixed order."""
        return {n: self.dims[key] for key, names in self.param_names().items() for n in names}

    def sample_params(self, rng, count: int) -> list[dict]:
        """count uniform random Optuna param dicts of this space."""
        columns = [(name, dim.sample(rng, count)) for name, dim in self.param_dims().items()]
        return [{name: column[i] for name, column in columns} for i in range(count)]

    def candidate(self, params: dict) -> Candidate:
        """The candidate that Optuna params describe."""
        model, names = self.problem.model, self.param_names()

        def values(key, count):
            if not names[key]:
                return (self.dims[key].fixed,) * count
            if len(names[key]) == 1:
                return (params[names[key][0]],) * count
            return tuple(params[name] for name in names[key])

        n = model.num_layers
        return Candidate(
            widths=tuple(int(w) for w in values("widths", model.num_hidden)),
            sparsity=tuple(float(s) for s in values("sparsity", n)),
            granularity=values("granularity", n),
            analog_fraction=tuple(float(a) for a in values("analog_fraction", n)),
            tile=parse_tile(values("tile", 1)[0], "search.tile", self.path),
            adc_bits=int(values("adc_bits", 1)[0]),
        )

    def check(self, candidate: Candidate, where: str) -> None:
        """Raise unless the candidate is a point of this space (one line naming the field)."""
        model = self.problem.model
        counts = {"widths": model.num_hidden, "tile": None, "adc_bits": None}
        for key, dim in self.dims.items():
            value = getattr(candidate, key)
            count = counts.get(key, model.num_layers)
            if count is not None and not isinstance(value, list | tuple):
                raise CodesignError(f"{where}: candidate.{key} must be a list of {count} values")
            values = [value] if count is None else list(value)
            if count is not None and len(values) != count:
                raise CodesignError(
                    f"{where}: candidate.{key} has {len(values)} values; this space's model "
                    f"needs {count}"
                )
            for v in values:
                if not dim.contains(v):
                    raise CodesignError(
                        f"{where}: candidate.{key} = {v!r} is not a point of the design's search "
                        f"space ({_describe(dim)})"
                    )

    def suggest(self, trial) -> Candidate:
        """Ask an Optuna trial for its params, then build the candidate (Optuna stays here).

        The tile is asked first: the order earlier versions used, so seeded studies replay.
        """
        dims = self.param_dims()
        order = sorted(dims, key=lambda name: name != "tile")  # stable: the rest keep order
        return self.candidate({name: dims[name].suggest(trial, name) for name in order})


def _describe(dim: Dimension) -> str:
    if dim.choices is not None:
        return "choices: " + ", ".join(map(str, dim.choices))
    return f"{dim.low:g}..{dim.high:g}"


def load_space(path: str | pathlib.Path) -> SearchSpace:
    """Read and validate a search space YAML file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CodesignError(f"{path}: no such search space file")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise CodesignError(f"{path}: not a text (UTF-8) file; a search space is YAML") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise CodesignError(f"{path}:{where} YAML syntax error: {problem}") from None
    return parse_space(data, str(path))


# --- validation helpers ---


def _dimension(spec, key: str, path: str, *, kind, low=None, high=None, choices=None) -> Dimension:
    """Parse one searched dimension: a fixed value, {choices: [...]}, or {low, high, step}."""
    full = f"search.{key}"
    if not isinstance(spec, dict):
        spec = {"choices": [spec]}
    spec = section(spec, full, path, ("choices", "low", "high", "step", "per_layer"))
    per_layer = typed(spec, "per_layer", full, path, bool, False)
    if "choices" in spec:
        if any(k in spec for k in ("low", "high", "step")):
            fail(path, full, "give either choices or low/high/step, not both")
        values = spec["choices"]
        if not isinstance(values, list) or not values:
            fail(path, f"{full}.choices", "must be a non-empty list")
        checked = []
        for v in values:
            if choices is not None:
                checked.append(choice(v, f"{full}.choices", path, choices))
            elif key == "tile":
                parse_tile(v, f"{full}.choices", path)
                checked.append(v if isinstance(v, str) else int(v))
            else:
                wrapper = {"v": v}
                checked.append(typed(wrapper, "v", f"{full}.choices", path, kind, None, low, high))
        return Dimension(
            choices=tuple(checked), is_int=kind is int, per_layer=per_layer, is_tile=key == "tile"
        )
    if choices is not None or key == "tile":
        fail(path, full, "takes choices: [...], not a range")
    if "low" not in spec or "high" not in spec:
        fail(path, full, "a range needs both low and high (or give choices: [...])")
    lo = typed(spec, "low", full, path, kind, None, low, high)
    hi = typed(spec, "high", full, path, kind, None, low, high)
    if lo > hi:
        fail(path, full, f"empty range: low {lo} > high {hi}")
    step = spec.get("step")
    if step is not None:
        step = typed(spec, "step", full, path, kind, None)
        if step <= 0:
            fail(path, f"{full}.step", f"must be > 0, got {step}")
    return Dimension(low=lo, high=hi, step=step, is_int=kind is int, per_layer=per_layer)


def parse_space(data: Any, path: str = "<space>") -> SearchSpace:
    """Validate a parsed YAML document (a dict) into a `SearchSpace`."""
    top = section(
        data,
        "",
        path,
        (
            "name",
            "task",
            "model",
            "pretrain",
            "finetune",
            "hardware",
            "search",
            "objectives",
            "lifecycle_inferences",
            "budgets",
            "sampler",
            "trials",
            "batch",
        ),
    )
    name = typed(top, "name", "", path, str, pathlib.Path(path).stem)

    t = section(
        top.get("task"),
        "task",
        path,
        (
            "dataset",
            "data_dir",
            "split",
            "source_classes",
            "target_classes",
            "target_examples_per_class",
            "seed",
        ),
    )
    dataset = typed(t, "dataset", "task", path, str, "digits")
    if dataset not in DATASET_NAMES:
        if not looks_like_path(dataset):
            choice(dataset, "task.dataset", path, DATASET_NAMES + ("<file>.npz", "<folder>"))
        beside = pathlib.Path(path).parent / dataset  # relative to the space file, else to here
        if beside.exists():
            dataset = str(beside.resolve())
        elif not pathlib.Path(dataset).expanduser().exists():
            fail(path, "task.dataset", f"no such file or folder {dataset!r}")
    split = choice(t.get("split", "by_class"), "task.split", path, SPLITS)
    given = {
        key: int_list(t[key], f"task.{key}", path)
        for key in ("source_classes", "target_classes")
        if key in t
    }
    if split == "by_class":
        source_classes = given.get("source_classes", Task.source_classes)
        target_classes = given.get("target_classes", Task.target_classes)
    elif len(set(given.values())) > 1:
        fail(
            path,
            "task.source_classes",
            "with task.split: by_examples source and target share their classes; "
            "give task.target_classes only",
        )
    else:  # by_examples: one class list for both tasks, every class if none is given
        source_classes = target_classes = next(iter(given.values()), None)
    few_shot = t.get("target_examples_per_class")
    if few_shot is not None and (type(few_shot) is not int or few_shot < 1):
        fail(path, "task.target_examples_per_class", f"must be an integer >= 1, got {few_shot!r}")
    data_dir = t.get("data_dir")
    if data_dir is not None:
        data_dir = typed(t, "data_dir", "task", path, str, None)
    task = Task(
        dataset=dataset,
        source_classes=source_classes,
        target_classes=target_classes,
        seed=typed(t, "seed", "task", path, int, 0, 0),
        split=split,
        target_examples_per_class=few_shot,
        data_dir=data_dir,
    )
    if target_classes is not None and len(target_classes) < 2:
        fail(path, "task.target_classes", "needs at least 2 classes")

    m = section(top.get("model"), "model", path, ("family", "widths"))
    family = choice(m.get("family", "mlp"), "model.family", path, FAMILIES)
    default_widths = list(Model.widths) if family == "mlp" else [32, 32, 32]
    model = Model(
        family=family,
        widths=int_list(m.get("widths", default_widths), "model.widths", path, low=1),
    )
    if family == "cnn" and len(model.widths) != 3:
        fail(path, "model.widths", "a cnn has 3 conv layers: give 3 channel counts")

    def training(key, steps, lr, batch, extra=()):
        s = section(top.get(key), key, path, ("steps", "learning_rate", "batch_size", *extra))
        return Training(
            steps=typed(s, "steps", key, path, int, steps, 1),
            learning_rate=typed(s, "learning_rate", key, path, float, lr, 1e-8, 10.0),
            batch_size=typed(s, "batch_size", key, path, int, batch, 1),
            eval_draws=typed(s, "eval_draws", key, path, int, 3, 1, 100),
        )

    pretrain = training("pretrain", 500, 3e-3, 64)
    finetune = training("finetune", 100, 3e-3, 64, ("eval_draws",))

    h = section(top.get("hardware"), "hardware", path, ("preset", "overrides"))
    preset = choice(h.get("preset", DEFAULT_PRESET), "hardware.preset", path, tuple(PRESETS))
    fields = [f.name for f in dataclasses.fields(Accelerator) if f.name not in ("energy", "name")]
    overrides = section(h.get("overrides"), "hardware.overrides", path, tuple(fields))
    overrides = {k: override(overrides, k, path) for k in overrides}

    s = section(top.get("search"), "search", path, _SEARCHED)
    widest = max(model.widths)
    dims = {
        "widths": _dimension(
            s.get("widths", {"low": 1, "high": widest}),
            "widths",
            path,
            kind=int,
            low=1,
            high=widest,
        ),
        "sparsity": _dimension(
            s.get("sparsity", 0.0), "sparsity", path, kind=float, low=0.0, high=0.95
        ),
        "granularity": _dimension(
            s.get("granularity", "unstructured"),
            "granularity",
            path,
            kind=str,
            choices=GRANULARITIES,
        ),
        "tile": _dimension(s.get("tile", 256), "tile", path, kind=str),
        "analog_fraction": _dimension(
            s.get("analog_fraction", 0.5), "analog_fraction", path, kind=float, low=0.0, high=1.0
        ),
        "adc_bits": _dimension(s.get("adc_bits", 6), "adc_bits", path, kind=int, low=1, high=16),
    }
    if float(get_preset(preset).tiles) == 0 and dims["analog_fraction"].fixed != 0.0:
        fail(path, "search.analog_fraction", f"preset {preset!r} has no analog tiles; use 0")

    objectives = top.get("objectives", ["energy", "accuracy"])
    if not isinstance(objectives, list) or not objectives:
        fail(path, "objectives", f"must be a list from {', '.join(OBJECTIVES)}")
    for o in objectives:
        choice(o, "objectives", path, tuple(OBJECTIVES))
    if "energy" not in objectives or "accuracy" not in objectives:
        fail(path, "objectives", "must include energy and accuracy")
    if len(set(objectives)) != len(objectives):
        fail(path, "objectives", "lists an objective twice")

    b = section(top.get("budgets"), "budgets", path, _BUDGETS)
    budgets = Budgets(**{k: typed(b, k, "budgets", path, float, None, 0.0) for k in b})

    sm = section(top.get("sampler"), "sampler", path, ("name", "seed", "population_size"))
    sampler = Sampler(
        name=choice(sm.get("name", Sampler.name), "sampler.name", path, SAMPLERS),
        seed=typed(sm, "seed", "sampler", path, int, 0, 0),
        population_size=typed(sm, "population_size", "sampler", path, int, 16, 2),
    )
    problem = Problem(
        task=task,
        model=model,
        pretrain=pretrain,
        finetune=finetune,
        preset=preset,
        overrides=overrides,
        budgets=budgets,
        objectives=tuple(objectives),
        lifecycle_inferences=typed(top, "lifecycle_inferences", "", path, float, 1e6, 1.0),
    )
    return SearchSpace(
        path=path,
        name=name,
        problem=problem,
        dims=dims,
        sampler=sampler,
        trials=typed(top, "trials", "", path, int, 40, 1),
        batch=typed(top, "batch", "", path, int, 8, 1, 1024),
        raw=dict(top),
    )
