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
import pathlib
from typing import Any

import yaml

from codesign.energy import GRANULARITIES
from codesign.errors import CodesignError
from codesign.hardware import PRESETS, Accelerator, get_preset, with_tile

__all__ = [
    "OBJECTIVES",
    "SAMPLERS",
    "Candidate",
    "Dimension",
    "SearchSpace",
    "load_space",
    "parse_space",
    "parse_tile",
]

DATASETS = ("digits", "mnist1d")
FAMILIES = ("mlp", "cnn")
SAMPLERS = ("energy-aware", "nsga2", "tpe", "gp", "random")
# name -> (Optuna direction, metric name shown by optuna-dashboard and the `optuna` CLI)
OBJECTIVES = {
    "energy": ("minimize", "energy_j"),
    "accuracy": ("maximize", "accuracy"),
    "latency": ("minimize", "latency_s"),
    "tiles": ("minimize", "tiles"),
    "lifecycle_energy": ("minimize", "lifecycle_energy_j"),
}
BUDGETS = ("max_energy_j", "max_latency_s", "max_tiles", "min_accuracy")
_SEARCHED = ("widths", "sparsity", "granularity", "tile", "analog_fraction", "adc_bits")


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
    def from_dict(cls, data: dict) -> Candidate:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclasses.dataclass(frozen=True)
class Dimension:
    """A searched (or fixed) value: choices, or a low..high range with an optional step."""

    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    is_int: bool = False
    per_layer: bool = False

    @property
    def fixed(self):
        """The value when the dimension has a single choice, else None."""
        return self.choices[0] if self.choices is not None and len(self.choices) == 1 else None

    def sample(self, rng):
        """A uniform random value (on the step grid), without Optuna."""
        if self.choices is not None:
            return self.choices[rng.integers(len(self.choices))]
        if self.step:
            count = int(round((self.high - self.low) / self.step)) + 1
            value = self.low + self.step * rng.integers(count)
            return int(value) if self.is_int else float(value)
        if self.is_int:
            return int(rng.integers(int(self.low), int(self.high) + 1))
        return float(rng.uniform(self.low, self.high))

    def suggest(self, trial, name: str):
        if self.choices is not None:
            if len(self.choices) == 1:
                return self.choices[0]
            return trial.suggest_categorical(name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1))
        return trial.suggest_float(name, self.low, self.high, step=self.step)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A validated search space file."""

    path: str
    name: str
    task: dict
    model: dict
    pretrain: dict
    finetune: dict
    preset: str
    overrides: dict
    dims: dict  # name -> Dimension
    objectives: tuple[str, ...]
    lifecycle_inferences: float
    budgets: dict
    sampler: dict
    trials: int
    batch: int
    raw: dict = dataclasses.field(default_factory=dict, compare=False)  # the file as parsed

    @property
    def tiles(self) -> list[tuple[int, int]]:
        """Every tile size the space may choose, as (rows, cols) in cells."""
        return [parse_tile(v, "search.tile", self.path) for v in self.dims["tile"].choices]

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o][0] for o in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        return [OBJECTIVES[o][1] for o in self.objectives]

    def accelerator(self, candidate: Candidate | None = None) -> Accelerator:
        """The preset with the file's overrides and, if given, the candidate's tile and ADC."""
        acc = dataclasses.replace(get_preset(self.preset), **self.overrides)
        if candidate is not None:
            acc = with_tile(acc, *candidate.tile)
            acc = dataclasses.replace(acc, adc_bits=float(candidate.adc_bits))
        return acc

    def param_names(self, num_hidden: int, num_layers: int) -> dict[str, list[str]]:
        """Optuna parameter names per searched dimension (fixed dimensions have none)."""
        counts = {
            "widths": num_hidden,
            "sparsity": num_layers,
            "granularity": num_layers,
            "analog_fraction": num_layers,
            "tile": 1,
            "adc_bits": 1,
        }
        names = {}
        for key, dim in self.dims.items():
            if dim.fixed is not None:
                names[key] = []
            elif dim.per_layer and counts[key] > 1:
                names[key] = [f"{key}_{i}" for i in range(counts[key])]
            else:
                names[key] = [key]
        return names

    def sample_params(self, rng, num_hidden: int, num_layers: int) -> dict:
        """Uniform random Optuna params for this space (see `suggest` for the names)."""
        return {
            name: self.dims[key].sample(rng)
            for key, names in self.param_names(num_hidden, num_layers).items()
            for name in names
        }

    def candidate(self, params: dict, num_hidden: int, num_layers: int) -> Candidate:
        """The candidate that Optuna params describe (what `suggest` builds from a trial)."""
        names = self.param_names(num_hidden, num_layers)

        def values(key, count):
            if not names[key]:
                return (self.dims[key].fixed,) * count
            if len(names[key]) == 1:
                return (params[names[key][0]],) * count
            return tuple(params[name] for name in names[key])

        return Candidate(
            widths=tuple(int(w) for w in values("widths", num_hidden)),
            sparsity=tuple(float(s) for s in values("sparsity", num_layers)),
            granularity=values("granularity", num_layers),
            analog_fraction=tuple(float(a) for a in values("analog_fraction", num_layers)),
            tile=parse_tile(values("tile", 1)[0], "search.tile", self.path),
            adc_bits=int(values("adc_bits", 1)[0]),
        )

    def suggest(self, trial, num_hidden: int, num_layers: int) -> Candidate:
        """Ask Optuna for one candidate (Optuna stays here, at the edge)."""

        def values(name, count):
            dim = self.dims[name]
            if dim.per_layer and count > 1:
                return tuple(dim.suggest(trial, f"{name}_{i}") for i in range(count))
            return (dim.suggest(trial, name),) * count

        tile = self.dims["tile"].suggest(trial, "tile")
        return Candidate(
            widths=tuple(int(w) for w in values("widths", num_hidden)),
            sparsity=tuple(float(s) for s in values("sparsity", num_layers)),
            granularity=values("granularity", num_layers),
            analog_fraction=tuple(float(a) for a in values("analog_fraction", num_layers)),
            tile=parse_tile(tile, "search.tile", self.path),
            adc_bits=int(self.dims["adc_bits"].suggest(trial, "adc_bits")),
        )


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
        return Dimension(choices=tuple(checked), is_int=kind is int, per_layer=per_layer)
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
        _choice(dataset, "task.dataset", path, DATASETS + ("<file>.npz",))
    elif (
        not (pathlib.Path(path).parent / dataset).is_file() and not pathlib.Path(dataset).is_file()
    ):
        _fail(path, "task.dataset", f"no such file {dataset!r}")
    task = {
        "dataset": dataset,
        "source_classes": _int_list(
            t.get("source_classes", [0, 1, 2, 3, 4]), "task.source_classes", path
        ),
        "target_classes": _int_list(
            t.get("target_classes", [5, 6, 7, 8, 9]), "task.target_classes", path
        ),
        "seed": _typed(t, "seed", "task", path, int, 0, 0),
    }
    if len(task["target_classes"]) < 2:
        _fail(path, "task.target_classes", "needs at least 2 classes")

    m = _section(top.get("model"), "model", path, ("family", "widths"))
    family = _choice(m.get("family", "mlp"), "model.family", path, FAMILIES)
    default_widths = [128, 128] if family == "mlp" else [32, 32, 32]
    model = {
        "family": family,
        "widths": _int_list(m.get("widths", default_widths), "model.widths", path, low=1),
    }
    if family == "cnn" and len(model["widths"]) != 3:
        _fail(path, "model.widths", "a cnn has 3 conv layers: give 3 channel counts")

    def training(key, steps, lr, batch, extra=()):
        s = _section(top.get(key), key, path, ("steps", "learning_rate", "batch_size", *extra))
        out = {
            "steps": _typed(s, "steps", key, path, int, steps, 1),
            "learning_rate": _typed(s, "learning_rate", key, path, float, lr, 1e-8, 10.0),
            "batch_size": _typed(s, "batch_size", key, path, int, batch, 1),
        }
        if "eval_draws" in extra:
            out["eval_draws"] = _typed(s, "eval_draws", key, path, int, 3, 1, 100)
        return out

    pretrain = training("pretrain", 500, 3e-3, 64)
    finetune = training("finetune", 100, 3e-3, 64, ("eval_draws",))

    h = _section(top.get("hardware"), "hardware", path, ("preset", "overrides"))
    preset = _choice(h.get("preset", "hybrid-22nm"), "hardware.preset", path, tuple(PRESETS))
    fields = [f.name for f in dataclasses.fields(Accelerator) if f.name not in ("energy", "name")]
    overrides = _section(h.get("overrides"), "hardware.overrides", path, tuple(fields))
    overrides = {
        k: _typed(overrides, k, "hardware.overrides", path, float, None, 0.0) for k in overrides
    }

    s = _section(top.get("search"), "search", path, _SEARCHED)
    widest = max(model["widths"])
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

    b = _section(top.get("budgets"), "budgets", path, BUDGETS)
    budgets = {k: _typed(b, k, "budgets", path, float, None, 0.0) for k in b}

    sm = _section(top.get("sampler"), "sampler", path, ("name", "seed", "population_size"))
    sampler = {
        "name": _choice(sm.get("name", "energy-aware"), "sampler.name", path, SAMPLERS),
        "seed": _typed(sm, "seed", "sampler", path, int, 0, 0),
        "population_size": _typed(sm, "population_size", "sampler", path, int, 16, 2),
    }
    return SearchSpace(
        path=path,
        name=name,
        task=task,
        model=model,
        pretrain=pretrain,
        finetune=finetune,
        preset=preset,
        overrides=overrides,
        dims=dims,
        objectives=tuple(objectives),
        lifecycle_inferences=_typed(top, "lifecycle_inferences", "", path, float, 1e6, 1.0),
        budgets=budgets,
        sampler=sampler,
        trials=_typed(top, "trials", "", path, int, 40, 1),
        batch=_typed(top, "batch", "", path, int, 8, 1, 1024),
        raw=dict(top),
    )
