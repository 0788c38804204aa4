"""Search spaces: the YAML schema, its validation, and Optuna suggestions -> `Candidate`.

A search space file has these sections (every key optional unless marked; see
`search_spaces/digits_mlp.yaml` for a commented example):

    name: digits_mlp                     # study name (default: the file name)
    task:       dataset (digits | mnist1d | path/to/data.npz), source_classes, target_classes, seed
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

import contextlib
import dataclasses
import difflib
import math
import pathlib
from typing import Any

import numpy as np
import yaml

from codesign.data import BUILTIN_DATASETS
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

    def suggest(self, trial) -> Candidate:
        """Ask an Optuna trial for its params, then build the candidate (Optuna stays here).

        The tile is asked first: the order earlier versions used, so seeded studies replay.
        """
        dims = self.param_dims()
        order = sorted(dims, key=lambda name: name != "tile")  # stable: the rest keep order
        return self.candidate({name: dims[name].suggest(trial, name) for name in order})


def load_space(path: str | pathlib.Path) -> SearchSpace:
    """Read and validate a search space YAML file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CodesignError(f"{path}: no such search space file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise CodesignError(f"{path}:{where} YAML syntax error: {problem}") from None
    return parse_space(data, str(path))


# --- validation helpers ---


def _fail(path: str, key: str, message: str):
    raise CodesignError(f"{path}: {key}: {message}")


def _section(data: Any, key: str, path: str, allowed: tuple[str, ...]) -> dict:
    section = {} if data is None else data
    if not isinstance(section, dict):
        _fail(path, key, f"must be a mapping with keys {', '.join(allowed)}")
    for name in section:
        if name not in allowed:
            close = difflib.get_close_matches(str(name), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            full = f"{key}.{name}" if key else str(name)
            _fail(path, full, f"unknown key{hint}; valid keys: {', '.join(allowed)}")
    return section


def _typed(section: dict, key: str, where: str, path: str, kind, default, low=None, high=None):
    value = section.get(key, default)
    full = f"{where}.{key}" if where else key
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is float and isinstance(value, str):
        with contextlib.suppress(ValueError):  # YAML reads 1e-6 as a string
            value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        _fail(path, full, f"must be {kind.__name__}, got {value!r}")
    if low is not None and value < low or high is not None and value > high:
        _fail(path, full, f"must lie in [{low}, {high}], got {value!r}")
    return value


def _choice(value, key: str, path: str, valid) -> str:
    if value not in valid:
        close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        _fail(path, key, f"unknown value {value!r}{hint}; valid: {', '.join(map(str, valid))}")
    return value


def parse_tile(value, key: str, path: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return (value, value)
    if isinstance(value, str):
        parts = value.lower().split("x")
        if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
            return (int(parts[0]), int(parts[1]))
    _fail(path, key, f"{value!r} is not a tile size: an int (square) or 'ROWSxCOLS'")


def _int_list(value, key: str, path: str, low: int = 0) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        _fail(path, key, f"must be a non-empty list of integers, got {value!r}")
    for v in value:
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            _fail(path, key, f"must hold integers >= {low}, got {v!r}")
    return tuple(value)


def _dimension(spec, key: str, path: str, *, kind, low=None, high=None, choices=None) -> Dimension:
    """Parse one searched dimension: a fixed value, {choices: [...]}, or {low, high, step}."""
    full = f"search.{key}"
    if not isinstance(spec, dict):
        spec = {"choices": [spec]}
    spec = _section(spec, full, path, ("choices", "low", "high", "step", "per_layer"))
    per_layer = _typed(spec, "per_layer", full, path, bool, False)
    if "choices" in spec:
        if any(k in spec for k in ("low", "high", "step")):
            _fail(path, full, "give either choices or low/high/step, not both")
        values = spec["choices"]
        if not isinstance(values, list) or not values:
            _fail(path, f"{full}.choices", "must be a non-empty list")
        checked = []
        for v in values:
            if choices is not None:
                checked.append(_choice(v, f"{full}.choices", path, choices))
            elif key == "tile":
                parse_tile(v, f"{full}.choices", path)
                checked.append(v if isinstance(v, str) else int(v))
            else:
                wrapper = {"v": v}
                checked.append(_typed(wrapper, "v", f"{full}.choices", path, kind, None, low, high))
        return Dimension(
            choices=tuple(checked), is_int=kind is int, per_layer=per_layer, is_tile=key == "tile"
        )
    if choices is not None or key == "tile":
        _fail(path, full, "takes choices: [...], not a range")
    if "low" not in spec or "high" not in spec:
        _fail(path, full, "a range needs both low and high (or give choices: [...])")
    lo = _typed(spec, "low", full, path, kind, None, low, high)
    hi = _typed(spec, "high", full, path, kind, None, low, high)
    if lo > hi:
        _fail(path, full, f"empty range: low {lo} > high {hi}")
    step = spec.get("step")
    if step is not None:
        step = _typed(spec, "step", full, path, kind, None)
        if step <= 0:
            _fail(path, f"{full}.step", f"must be > 0, got {step}")
    return Dimension(low=lo, high=hi, step=step, is_int=kind is int, per_layer=per_layer)


def parse_space(data: Any, path: str = "<space>") -> SearchSpace:
    """Validate a parsed YAML document (a dict) into a `SearchSpace`."""
    top = _section(
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
    name = _typed(top, "name", "", path, str, pathlib.Path(path).stem)

    t = _section(
        top.get("task"), "task", path, ("dataset", "source_classes", "target_classes", "seed")
    )
    dataset = _typed(t, "dataset", "task", path, str, "digits")
    if not dataset.endswith(".npz"):
        _choice(dataset, "task.dataset", path, BUILTIN_DATASETS + ("<file>.npz",))
    elif (
        not (pathlib.Path(path).parent / dataset).is_file() and not pathlib.Path(dataset).is_file()
    ):
        _fail(path, "task.dataset", f"no such file {dataset!r}")
    task = Task(
        dataset=dataset,
        source_classes=_int_list(
            t.get("source_classes", list(Task.source_classes)), "task.source_classes", path
        ),
        target_classes=_int_list(
            t.get("target_classes", list(Task.target_classes)), "task.target_classes", path
        ),
        seed=_typed(t, "seed", "task", path, int, 0, 0),
    )
    if len(task.target_classes) < 2:
        _fail(path, "task.target_classes", "needs at least 2 classes")

    m = _section(top.get("model"), "model", path, ("family", "widths"))
    family = _choice(m.get("family", "mlp"), "model.family", path, FAMILIES)
    default_widths = list(Model.widths) if family == "mlp" else [32, 32, 32]
    model = Model(
        family=family,
        widths=_int_list(m.get("widths", default_widths), "model.widths", path, low=1),
    )
    if family == "cnn" and len(model.widths) != 3:
        _fail(path, "model.widths", "a cnn has 3 conv layers: give 3 channel counts")

    def training(key, steps, lr, batch, extra=()):
        s = _section(top.get(key), key, path, ("steps", "learning_rate", "batch_size", *extra))
        return Training(
            steps=_typed(s, "steps", key, path, int, steps, 1),
            learning_rate=_typed(s, "learning_rate", key, path, float, lr, 1e-8, 10.0),
            batch_size=_typed(s, "batch_size", key, path, int, batch, 1),
            eval_draws=_typed(s, "eval_draws", key, path, int, 3, 1, 100),
        )

    pretrain = training("pretrain", 500, 3e-3, 64)
    finetune = training("finetune", 100, 3e-3, 64, ("eval_draws",))

    h = _section(top.get("hardware"), "hardware", path, ("preset", "overrides"))
    preset = _choice(h.get("preset", DEFAULT_PRESET), "hardware.preset", path, tuple(PRESETS))
    fields = [f.name for f in dataclasses.fields(Accelerator) if f.name not in ("energy", "name")]
    overrides = _section(h.get("overrides"), "hardware.overrides", path, tuple(fields))
    overrides = {
        k: _typed(overrides, k, "hardware.overrides", path, float, None, 0.0) for k in overrides
    }

    s = _section(top.get("search"), "search", path, _SEARCHED)
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
        _fail(path, "search.analog_fraction", f"preset {preset!r} has no analog tiles; use 0")

    objectives = top.get("objectives", ["energy", "accuracy"])
    if not isinstance(objectives, list) or not objectives:
        _fail(path, "objectives", f"must be a list from {', '.join(OBJECTIVES)}")
    for o in objectives:
        _choice(o, "objectives", path, tuple(OBJECTIVES))
    if "energy" not in objectives or "accuracy" not in objectives:
        _fail(path, "objectives", "must include energy and accuracy")
    if len(set(objectives)) != len(objectives):
        _fail(path, "objectives", "lists an objective twice")

    b = _section(top.get("budgets"), "budgets", path, _BUDGETS)
    budgets = Budgets(**{k: _typed(b, k, "budgets", path, float, None, 0.0) for k in b})

    sm = _section(top.get("sampler"), "sampler", path, ("name", "seed", "population_size"))
    sampler = Sampler(
        name=_choice(sm.get("name", Sampler.name), "sampler.name", path, SAMPLERS),
        seed=_typed(sm, "seed", "sampler", path, int, 0, 0),
        population_size=_typed(sm, "population_size", "sampler", path, int, 16, 2),
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
        lifecycle_inferences=_typed(top, "lifecycle_inferences", "", path, float, 1e6, 1.0),
    )
    return SearchSpace(
        path=path,
        name=name,
        problem=problem,
        dims=dims,
        sampler=sampler,
        trials=_typed(top, "trials", "", path, int, 40, 1),
        batch=_typed(top, "batch", "", path, int, 8, 1, 1024),
        raw=dict(top),
    )
