"""Found designs: export a trial as versioned JSON, load it back, and train it for longer.

A design file holds everything needed to rebuild the candidate without the study: the search
space it came from (task, network family, training settings, hardware preset and overrides), the
candidate's choices (widths, pruning, tile, analog split, ADC bits), the full accelerator
configuration, seeds, and where it was found (study, storage, trial).
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import pathlib

import numpy as np

from codesign.data.datasets import cache_root
from codesign.errors import CodesignError, check_stop
from codesign.files import atomic_write, writable_folder
from codesign.hardware.accelerator import TRAINING_J_PER_FLOP
from codesign.nn import networks
from codesign.search.evaluate import Result
from codesign.search.problem import Candidate
from codesign.search.space import SearchSpace, parse_space

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FoundDesign",
    "export_design",
    "load_compact_weights",
    "load_design",
    "parse_pick",
    "save_design",
    "train_design",
]

FORMAT = "codesign.design"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class FoundDesign:
    """A candidate picked from a study, with what it takes to rebuild and retrain it."""

    space: dict  # the search space as parsed from its YAML file
    space_path: str
    candidate: Candidate
    seed: int
    metrics: dict
    source: dict  # study name, storage, trial number

    def search_space(self) -> SearchSpace:
        return parse_space(self.space, self.space_path)

    def to_json(self) -> dict:
        space = self.search_space()
        acc = space.accelerator(self.candidate)
        model = space.problem.model
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "network": {
                "family": model.family,
                "max_widths": list(model.widths),
                "widths": list(self.candidate.widths),
            },
            "pruning": {
                "sparsity": list(self.candidate.sparsity),
                "granularity": list(self.candidate.granularity),
            },
            "accelerator": _accelerator_json(acc),
            "candidate": self.candidate.to_dict(),
            "seeds": {"finetune": self.seed, "data": space.problem.task.seed},
            "metrics": self.metrics,
            "source": self.source,
            "space_path": self.space_path,
            "space": self.space,
        }

    @classmethod
    def from_json(cls, data: dict, path: str = "<design>") -> FoundDesign:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CodesignError(f"{path}: not a codesign design file (no format: {FORMAT!r})")
        version = data.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise CodesignError(
                f"{path}: format_version must be a whole number from 1 to {FORMAT_VERSION}, "
                f"got {version!r}"
            )
        if version > FORMAT_VERSION:
            raise CodesignError(
                f"{path}: design format version {version} is newer than this codesign reads "
                f"({FORMAT_VERSION}); upgrade codesign"
            )
        try:
            design = cls(
                space=data["space"],
                space_path=data.get("space_path", path),
                candidate=Candidate.from_dict(data["candidate"]),
                seed=int(data["seeds"]["finetune"]),
                metrics=dict(data.get("metrics", {})),
                source=dict(data.get("source", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CodesignError(
                f"{path}: malformed design file ({type(err).__name__}: {err})"
            ) from None
        design.search_space().check(design.candidate, path)  # a point of its own space
        _check_copies(data, design.to_json(), path)
        return design


def _check_copies(data: dict, made: dict, path: str) -> None:
    """The readable copies of a design's choices (`network`, `pruning`, `accelerator`) must say
    what its `candidate` says: codesign reads the candidate, so an edit of a copy alone would be
    ignored silently. Refuse the file instead, naming the first field that disagrees."""
    for section in ("network", "pruning", "accelerator"):
        if section not in data:
            continue  # optional: the candidate is what counts
        got, want = data[section], made[section]
        for key, value in _flat(want):
            have = _lookup(got, key)
            if have != value:
                raise CodesignError(
                    f"{path}: {section}.{key} is {have!r} but the design's candidate gives "
                    f"{value!r}; codesign reads `candidate`: edit it (or export the design again)"
                )


def _flat(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _lookup(tree, dotted: str):
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return "<missing>"
        tree = tree[key]
    return tree


def _accelerator_json(acc) -> dict:
    def plain(x):
        return (
            {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
            if (dataclasses.is_dataclass(x))
            else (x if isinstance(x, str) or x is None else float(x))
        )

    return plain(acc)


_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def parse_pick(text: str):
    """'accuracy>=0.9:min-energy' -> (metric, op, threshold, goal, goal_metric)."""
    condition, _, goal = text.partition(":")
    for symbol in (">=", "<=", ">", "<"):
        metric, found, value = condition.partition(symbol)
        if found:
            break
    else:
        raise CodesignError(
            f"--pick {text!r}: expected METRIC>=VALUE:min-METRIC, e.g. 'accuracy>=0.9:min-energy'"
        )
    try:
        threshold = float(value)
    except ValueError:
        raise CodesignError(f"--pick {text!r}: {value!r} is not a number") from None
    direction, _, goal_metric = (goal or "min-energy").partition("-")
    if direction not in ("min", "max") or not goal_metric:
        raise CodesignError(f"--pick {text!r}: the goal must be min-METRIC or max-METRIC")
    return metric.strip(), symbol, threshold, direction, goal_metric.strip()


_ALIASES = {"energy": "energy_j", "latency": "latency_s"}
# What a design's metrics hold, and what --pick may name (with the aliases above).
METRICS = (
    "energy_j",
    "accuracy",
    "test_accuracy",
    "digital_test_accuracy",
    "latency_s",
    "tiles",
    "finetune_flops",
)


def _metrics(result: Result) -> dict:
    attrs = result.to_attrs()
    return {k: attrs[k] for k in METRICS if k in attrs}


def _metric_name(name: str, pick: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in METRICS:
        valid = ", ".join([*_ALIASES, *METRICS])
        raise CodesignError(f"--pick {pick!r}: unknown metric {name!r}; valid: {valid}")
    return name


def export_design(
    study, *, trial: int | None = None, pick: str | None = None, storage_desc: str = ""
) -> FoundDesign:
    """The design of trial number `trial`, or the front trial chosen by `pick`."""
    from codesign.search import pareto
    from codesign.search.study import result_of

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if trial is not None:
        if trial not in trials:
            raise CodesignError(
                f"--trial {trial}: no such trial in study {study.study_name!r} "
                f"(trials 0..{max(trials, default=-1)})"
            )
        chosen = trials[trial]
        result = result_of(chosen)
        if chosen.state.name != "COMPLETE" or result is None or result.candidate is None:
            raise CodesignError(
                f"--trial {trial}: trial is {chosen.state.name}, not a scored design"
            )
    else:
        if pick is not None and not pick.strip():
            raise CodesignError("--pick is empty: give e.g. 'accuracy>=0.9:min-energy'")
        text = pick or "accuracy>=0:min-energy"
        metric, symbol, threshold, direction, goal = parse_pick(text)
        metric, goal = _metric_name(metric, text), _metric_name(goal, text)
        ok = [
            (t, m)
            for t in pareto.front(study)
            if (value := (m := _metrics(result_of(t))).get(metric)) is not None
            and _OPS[symbol](value, threshold)
        ]
        if not ok:
            raise CodesignError(
                f"--pick {pick!r}: no feasible front trial satisfies {metric}{symbol}{threshold}"
            )
        pick_of = min if direction == "min" else max
        chosen, _ = pick_of(ok, key=lambda tm: tm[1].get(goal, math.inf))
        result = result_of(chosen)
        if result.candidate is None:
            raise CodesignError(f"--pick {pick!r}: trial {chosen.number} holds no codesign design")
    return FoundDesign(
        space=study.user_attrs["space"],
        space_path=study.user_attrs.get("space_path", ""),
        candidate=result.candidate,
        seed=int(result.seed),
        metrics=_metrics(result),
        source={"study": study.study_name, "storage": storage_desc, "trial": chosen.number},
    )


def save_design(design: FoundDesign, path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    if path.is_dir():
        raise CodesignError(f"-o {str(path)!r} is a directory; give a file name like design.json")
    writable_folder(path.parent, "-o", make=True)
    text = json.dumps(design.to_json(), indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def load_design(path: str | pathlib.Path) -> FoundDesign:
    path = pathlib.Path(path)
    if not path.is_file():
        raise CodesignError(f"{path}: no such design file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CodesignError(f"{path}: not valid JSON ({err})") from None
    return FoundDesign.from_json(data, str(path))


# --- training a design for longer ---


def _compact(params, masks, spec, shapes):
    """Weights with removed units physically gone: smaller arrays that compute the same thing.

    A unit of a width group (`networks.layer_groups`: a hidden layer, a ResNet stage) is kept
    where a layer that writes the group keeps a weight or bias for it; every layer then keeps the
    columns of its output group's kept units and the rows of its input group's.
    """
    groups = networks.layer_groups(spec)
    layers = [
        (np.asarray(p["w"]) * np.asarray(m), np.asarray(p["b"]))
        for p, m in zip(params, masks, strict=True)
    ]
    alive = {}
    for (w, b), (_, g) in zip(layers, groups, strict=True):
        if g >= 0:
            alive[g] = alive.get(g, False) | np.any(w != 0, axis=0) | (b != 0)
    keep = {g: np.flatnonzero(v) for g, v in alive.items()}
    compact = []
    for (w, b), shape, (g_in, g_out) in zip(layers, shapes, groups, strict=True):
        if g_in >= 0:  # drop the rows of units the group removed
            area = shape.kernel_area
            w = w[(keep[g_in][:, None] * area + np.arange(area)).ravel()]
        if g_out >= 0:
            w, b = w[:, keep[g_out]], b[keep[g_out]]
        compact.append({"w": w, "b": b, "kept_units": keep[g_out] if g_out >= 0 else None})
    return compact


def load_compact_weights(path: str | pathlib.Path) -> list[dict]:
    """[{'w': [K, N], 'b': [N]}, ...] from a trained design's weights.npz, for any framework."""
    with np.load(path) as f:
        n = int(f["num_layers"])
        return [{"w": f[f"layer{i}_w"], "b": f[f"layer{i}_b"]} for i in range(n)]


def train_design(
    design: FoundDesign,
    *,
    steps: int | None = None,
    out_dir: str | pathlib.Path = "trained",
    inferences: float | None = None,
    cache_dir=None,
    log=None,
) -> dict:
    """Fine-tune the design for longer; save checkpoint, compact weights and a report."""
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CodesignError(f"--out {str(out)!r} exists and is not a directory")
    if steps is not None and steps < 1:
        raise CodesignError(f"--steps must be >= 1, got {steps}")
    space = design.search_space()
    steps = steps or 5 * space.problem.finetune.steps
    space = space.with_finetune(steps=steps)
    problem = space.problem
    writable_folder(out, "--out")  # before the training, not after it
    writable_folder(cache_root(), "CODESIGN_CACHE")
    evaluator = space.evaluator(cache_dir=cache_dir, log=log)
    check_stop()  # a stop dropped while the base was loaded or pretrained ends it before training
    if log:
        log(f"fine-tuning the design for {steps} steps under analog noise")
    result, params, masks = evaluator.train(design.candidate, design.seed)
    check_stop()  # ... and after it: nothing is written for a run that was asked to stop
    if result.diverged:
        raise CodesignError(f"training diverged (final loss {result.final_loss})")

    writable_folder(out, "--out", make=True)
    _save_checkpoint((out / "checkpoint").resolve(), {"params": params, "masks": masks})
    spec = evaluator.engine.spec
    compact = _compact(params, masks, spec, evaluator.shapes)
    arrays = {"num_layers": np.asarray(len(compact))}
    for i, layer in enumerate(compact):
        arrays[f"layer{i}_w"], arrays[f"layer{i}_b"] = layer["w"], layer["b"]
        if layer["kept_units"] is not None:
            arrays[f"layer{i}_kept_units"] = layer["kept_units"]
    atomic_write(out / "weights.npz", lambda tmp: _savez(tmp, arrays))

    energy = {
        "energy_j": result.energy_j,
        "latency_s": result.latency_s,
        "tiles": result.tiles,
        "tops_per_w": result.tops_per_w,
        "energy_layers_j": result.energy_layers_j,
    }
    train_j = result.finetune_energy_j
    n = problem.lifecycle_inferences if inferences is None else inferences
    report = {
        "design": design.source,
        "steps": steps,
        "test_accuracy_analog": result.test_accuracy,
        "test_accuracy_digital": result.digital_test_accuracy,
        "val_accuracy_analog": result.accuracy,
        "energy": energy,
        "finetune_flops": result.finetune_flops,
        "finetune_energy_j": train_j,
        "training_j_per_flop": TRAINING_J_PER_FLOP,
        "inferences": n,
        "lifecycle_energy_j": result.lifecycle_energy_j(n),
        "breakeven_inferences": train_j / result.energy_j,
        "dense_weights": int(sum(np.asarray(p["w"]).size for p in params)),
        "compact_weights": int(sum(c["w"].size for c in compact)),
        "files": {"checkpoint": "checkpoint", "weights": "weights.npz", "design": "design.json"},
    }
    save_design(design, out / "design.json")  # the trained directory is self-contained
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(out / "report.json", lambda tmp: tmp.write_text(text))
    return report


def _savez(path: pathlib.Path, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to a name
        np.savez(f, **arrays)


def _save_checkpoint(path: pathlib.Path, tree) -> None:
    """An orbax checkpoint written under a temporary name, then renamed over `path` whole; a
    failed write (a full disk) removes its part and leaves any previous checkpoint intact."""
    import shutil
    import uuid

    import orbax.checkpoint as ocp

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp, tree)
        checkpointer.wait_until_finished()
        old = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    except (OSError, ValueError, RuntimeError) as err:  # orbax wraps some I/O errors
        shutil.rmtree(tmp, ignore_errors=True)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CodesignError(f"{path}: could not write the checkpoint ({reason})") from None
