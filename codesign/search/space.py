"""Search spaces: the YAML schema, its validation, and Optuna suggestions -> `Candidate`.

A search space file has these sections (every key optional unless marked; see
`search_spaces/digits_mlp.yaml` for a commented example):

    name: digits_mlp                     # study name (default: the file name)
    task:       dataset (a name in codesign.data.datasets.DATASET_NAMES, or a path to an .npz, a
    CIFAR
                archive, a folder of IDX files or of class sub-folders of images), data_dir,
                split (by_class | by_examples), source_classes, target_classes,
                target_examples_per_class, seed
    model:      family (mlp | cnn | resnet | module), widths (maximum hidden widths; a cnn's 3 conv
                channel counts; a resnet's 3 stage widths), depth (resnet: 6n + 2, e.g. 8 or 20);
                or your own NNX model: module ("package.module:Class"), kwargs, groups (lists of
                layer names whose outputs share a width)
    pretrain:   steps, learning_rate, batch_size, or checkpoint (your own base: .npz or orbax)
    finetune:   steps, learning_rate, batch_size, eval_draws, early_stop ({rungs, margin}: off
                unless given; see `codesign.search.early_stop`), inference_time (seconds or 1h, 1d,
                1y after programming at which candidates are trained and scored; pcm only)
    hardware:   preset, overrides (fixed Accelerator fields, e.g. {tiles: 32}), device (the
                analog cells' noise model: sram, every shipped preset's, or pcm; see
                `codesign.hardware.analog`), tile_scaling (layer, or tile: input and weight scales
                per row tile, as aihwkit maps a layer)
    search:     widths, sparsity, granularity, tile, analog_fraction, adc_bits
    objectives: [energy, accuracy, latency, tiles, lifecycle_energy]   (energy, accuracy required)
    lifecycle_inferences: number of inferences for lifecycle_energy
    budgets:    max_energy_j, max_latency_s, max_tiles, min_accuracy
    sampler:    name (energy-aware | gradient | nsga2 | tpe | gp | random), seed, population_size
                (nsga2), steps, lambdas [low, high], design_learning_rate (gradient)
    trials, batch: default trial count and candidates per ask/tell batch

A searched dimension is a fixed value, `{choices: [...]}`, or `{low, high, step}` (step optional
for floats, default 1 for ints); `per_layer: true` searches one value per layer instead of one
shared value. Every error is a `CodesignError` of one line naming the file, the key path and the
valid choices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import pathlib
from typing import Any

from codesign.data.datasets import DATASET_NAMES, SPLITS, looks_like_path
from codesign.engine import finetune as transfer
from codesign.errors import CodesignError
from codesign.files import load_yaml
from codesign.hardware.accelerator import Accelerator
from codesign.hardware.analog import DEVICES, TILE_SCALINGS
from codesign.hardware.presets import DEFAULT_PRESET, PRESETS, get_preset
from codesign.nn import families
from codesign.nn.families import FAMILIES
from codesign.nn.model import model_from_section
from codesign.nn.pruning import GRANULARITIES
from codesign.search import early_stop
from codesign.search.checks import choice, fail, int_list, override, parse_tile, section, typed
from codesign.search.dimensions import Dimension, parse_dimension
from codesign.search.evaluate import Evaluator
from codesign.search.gradient import Bounds
from codesign.search.problem import (
    OBJECTIVES,
    Budgets,
    Candidate,
    EarlyStop,
    Model,
    Problem,
    Task,
    Training,
)
from codesign.search.sampler import SAMPLERS, Sampler, parse_sampler

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

_BUDGETS = tuple(f.name for f in dataclasses.fields(Budgets))
_SEARCHED = ("widths", "sparsity", "granularity", "tile", "analog_fraction", "adc_bits")


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
        """The space's evaluator (its smallest tile bounds the engine's row tiles). Data and a
        `pretrain.checkpoint` that does not fit the model fail here, before any study is written."""
        rows = [rows for rows, _ in self.tiles]
        evaluator = Evaluator(
            self.problem,
            min_tile_rows=min(rows),
            row_block=math.gcd(*rows),
            cache_dir=cache_dir,
            log=log,
        )
        if self.problem.model.checkpoint:
            try:
                transfer.load_checkpoint(evaluator.spec, self.problem.model.checkpoint)
            except CodesignError as err:
                raise CodesignError(f"{self.path}: {err}") from None
        return evaluator

    def param_names(self) -> dict[str, list[str]]:
        """Optuna parameter names per searched dimension (fixed dimensions have none)."""
        return {key: list(names) for key, names in self._param_names.items()}

    @functools.cached_property
    def _param_names(self) -> dict[str, tuple[str, ...]]:  # read per candidate: made once
        model = self.problem.model
        counts = {"widths": model.num_hidden, "tile": 1, "adc_bits": 1}
        names = {}
        for key, dim in self.dims.items():
            count = counts.get(key, model.num_layers)
            if dim.fixed is not None:
                names[key] = ()
            elif dim.per_layer and count > 1:
                names[key] = tuple(f"{key}_{i}" for i in range(count))
            else:
                names[key] = (key,)
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
        model, names = self.problem.model, self._param_names

        def values(key, count):
            if not names[key]:
                return (self.dims[key].fixed,) * count
            if len(names[key]) == 1:
                return (params[names[key][0]],) * count
            return tuple(params[name] for name in names[key])

        n = model.num_layers
        return Candidate(
            widths=tuple(  # a group keeps at most its maximum width
                min(int(w), top)
                for w, top in zip(values("widths", model.num_hidden), model.widths, strict=True)
            ),
            sparsity=tuple(float(s) for s in values("sparsity", n)),
            granularity=values("granularity", n),
            analog_fraction=tuple(float(a) for a in values("analog_fraction", n)),
            tile=parse_tile(values("tile", 1)[0], "search.tile", self.path),
            adc_bits=int(values("adc_bits", 1)[0]),
        )

    def bounds(self) -> Bounds:
        """Each searched knob's range, for the gradient sampler (a fixed knob: low == high)."""

        def span(key, top=None):
            dim = self.dims[key]
            if dim.choices is not None:
                values = [float(c) for c in dim.choices]
                low, high = min(values), max(values)
            else:
                low, high = float(dim.low), float(dim.high)
            return (min(low, top), min(high, top)) if top is not None else (low, high)

        return Bounds(
            widths=tuple(span("widths", top) for top in self.problem.model.widths),
            sparsity=span("sparsity"),
            analog_fraction=span("analog_fraction"),
            adc_bits=span("adc_bits"),
        )

    def params_of(self, candidate: Candidate) -> dict:
        """Optuna params for a (relaxed) candidate, each value snapped onto its dimension's
        grid; a per-layer value of a dimension the space shares is their mean (or first)."""
        params = {}
        for key, names in self.param_names().items():
            dim, value = self.dims[key], getattr(candidate, key)
            if key == "tile":
                tiles = {tuple(parse_tile(c, "search.tile", self.path)): c for c in dim.choices}
                values = [tiles[tuple(value)]]
            else:
                values = list(value) if isinstance(value, tuple) else [value]
            if len(names) == 1 and len(values) > 1:
                numeric = all(isinstance(v, int | float) for v in values)
                values = [sum(values) / len(values)] if numeric else values[:1]
            params.update({name: dim.snap(v) for name, v in zip(names, values, strict=True)})
        return params

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
                        f"space ({dim.describe()})"
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
    return parse_space(load_yaml(path, "a search space"), str(path))


# --- validation helpers ---


def _module_model(m: dict, task: Task, path: str) -> Model:
    """Your own NNX module, traced on the source task's input shape (`codesign.nn.nnx_model`)."""
    from codesign.data import datasets as data

    if "widths" in m:
        fail(path, "model.widths", "a module's widths are its own: set them through kwargs")
    dataset = data.load_dataset(task.dataset, seed=task.seed, classes=task.source_classes)
    try:
        return model_from_section(m, dataset.x_train.shape[1:])
    except CodesignError as err:
        raise CodesignError(f"{path}: {err}") from None


_SECONDS = {"s": 1.0, "h": 3600.0, "d": 86400.0, "y": 365.0 * 86400.0}


def _duration(value: Any, path: str) -> float:
    """`finetune.inference_time`: seconds, or a number with a unit s, h, d or y ("1d", "1y")."""
    key = "finetune.inference_time"
    if isinstance(value, str):  # "1d"; YAML also reads 1e6 as a string
        number, unit = (value[:-1], value[-1]) if value[-1:] in _SECONDS else (value, "s")
        with contextlib.suppress(ValueError):
            value = float(number) * _SECONDS[unit]
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(path, key, f"must be seconds or a duration such as 1h, 1d, 1y, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= 1e10:
        fail(path, key, f"must be seconds in [0, 1e10] (0: right after programming), got {value!r}")
    return float(value)


def _early_stop(data: Any, steps: int, path: str) -> EarlyStop:
    """`finetune.early_stop`: rungs (increasing fractions of the steps in (0, 1), each ending
    at its own step) and a margin in [0, 1]."""
    key = "finetune.early_stop"
    s = section(data, key, path, ("rungs", "margin"))
    rungs = s.get("rungs", list(EarlyStop.rungs))
    if (
        not isinstance(rungs, list)
        or not rungs
        or not all(isinstance(f, int | float) and not isinstance(f, bool) for f in rungs)
        or not all(0 < f < 1 for f in rungs)
    ):
        fail(path, f"{key}.rungs", f"must be a list of fractions in (0, 1), got {rungs!r}")
    try:
        early_stop.rung_steps(steps, rungs)
    except ValueError:
        ends = [round(f * steps) for f in rungs]
        fail(
            path,
            f"{key}.rungs",
            f"must increase and each end at its own step in 1..{steps - 1} of the {steps} "
            f"fine-tune steps, got {rungs!r} (steps {ends})",
        )
    margin = typed(s, "margin", key, path, float, EarlyStop.margin, 0.0, 1.0)
    return EarlyStop(rungs=tuple(float(f) for f in rungs), margin=margin)


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

    m = section(
        top.get("model"), "model", path, ("family", "widths", "depth", "module", "kwargs", "groups")
    )
    family = m.get("family", "module" if "module" in m else "mlp")
    family = choice(family, "model.family", path, FAMILIES)
    kind = families.family(family)
    model = Model(
        family=family,
        widths=int_list(m.get("widths", list(kind.default_widths)), "model.widths", path, low=1),
        depth=typed(m, "depth", "model", path, int, Model.depth, 8),
    )
    if kind.width_count is not None and len(model.widths) != kind.width_count:
        fail(path, "model.widths", f"a {family} has {kind.widths_rule}")
    if "depth" in m and not kind.takes_depth:
        fail(path, "model.depth", "only a resnet takes a depth")
    if (model.depth - 2) % 6:
        fail(path, "model.depth", f"a resnet's depth is 6n + 2 (8, 14, 20, ...), got {model.depth}")
    if kind.user_module:
        model = _module_model(m, task, path)
    elif any(k in m for k in ("module", "kwargs", "groups")):
        fail(path, "model.module", "module, kwargs and groups belong to family: module")

    def training(key, steps, lr, batch, extra=()):
        s = section(top.get(key), key, path, ("steps", "learning_rate", "batch_size", *extra))
        return Training(
            steps=typed(s, "steps", key, path, int, steps, 1),
            learning_rate=typed(s, "learning_rate", key, path, float, lr, 1e-8, 10.0),
            batch_size=typed(s, "batch_size", key, path, int, batch, 1),
            eval_draws=typed(s, "eval_draws", key, path, int, 3, 1, 100),
        )

    pretrain = training("pretrain", 500, 3e-3, 64, ("checkpoint",))
    checkpoint = (top.get("pretrain") or {}).get("checkpoint")
    if checkpoint is not None:
        checkpoint = typed(top["pretrain"], "checkpoint", "pretrain", path, str, None)
        beside = pathlib.Path(path).parent / checkpoint
        checkpoint = str(beside) if beside.exists() else checkpoint
        if not pathlib.Path(checkpoint).exists():
            fail(path, "pretrain.checkpoint", f"no such file or directory {checkpoint!r}")
        model = dataclasses.replace(model, checkpoint=checkpoint)
    finetune = training("finetune", 100, 3e-3, 64, ("eval_draws", "early_stop", "inference_time"))
    if "early_stop" in (top.get("finetune") or {}):
        stop = _early_stop(top["finetune"]["early_stop"], finetune.steps, path)
        finetune = dataclasses.replace(finetune, early_stop=stop)

    hardware_keys = ("preset", "overrides", "device", "tile_scaling")
    h = section(top.get("hardware"), "hardware", path, hardware_keys)
    preset = choice(h.get("preset", DEFAULT_PRESET), "hardware.preset", path, tuple(PRESETS))
    device = choice(h.get("device", "sram"), "hardware.device", path, DEVICES)
    scaling = choice(h.get("tile_scaling", "layer"), "hardware.tile_scaling", path, TILE_SCALINGS)
    if "inference_time" in (top.get("finetune") or {}):
        seconds = _duration(top["finetune"]["inference_time"], path)
        if seconds and device != "pcm":
            fail(
                path,
                "finetune.inference_time",
                "only a drifting device has one: set hardware.device: pcm",
            )
        finetune = dataclasses.replace(finetune, inference_time=seconds)
    fields = [f.name for f in dataclasses.fields(Accelerator) if f.name not in ("energy", "name")]
    overrides = section(h.get("overrides"), "hardware.overrides", path, tuple(fields))
    overrides = {k: override(overrides, k, path) for k in overrides}

    s = section(top.get("search"), "search", path, _SEARCHED)
    widest = max(model.widths)
    dims = {
        "widths": parse_dimension(
            s.get("widths", {"low": 1, "high": widest}),
            "widths",
            path,
            kind=int,
            low=1,
            high=widest,
        ),
        "sparsity": parse_dimension(
            s.get("sparsity", 0.0), "sparsity", path, kind=float, low=0.0, high=0.95
        ),
        "granularity": parse_dimension(
            s.get("granularity", "unstructured"),
            "granularity",
            path,
            kind=str,
            choices=GRANULARITIES,
        ),
        "tile": parse_dimension(s.get("tile", 256), "tile", path, kind=str),
        "analog_fraction": parse_dimension(
            s.get("analog_fraction", 0.5), "analog_fraction", path, kind=float, low=0.0, high=1.0
        ),
        "adc_bits": parse_dimension(
            s.get("adc_bits", 6), "adc_bits", path, kind=int, low=1, high=16
        ),
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

    sampler = parse_sampler(top.get("sampler"), path)
    problem = Problem(
        task=task,
        model=model,
        pretrain=pretrain,
        finetune=finetune,
        preset=preset,
        device=device,
        tile_scaling=scaling,
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
