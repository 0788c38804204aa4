"""Found designs: export a trial as versioned JSON, load it back, and train it for longer.

A design file holds everything needed to rebuild the candidate without the study: the search
space it came from (task, network family, training settings, hardware preset and overrides), the
candidate's choices (widths, pruning, tile, analog split, ADC bits), the full accelerator
configuration, seeds, and where it was found (study, storage, trial).
"""

from __future__ import annotations

import dataclasses
import json
import operator
import pathlib

import jax
import numpy as np

from codesign.errors import CodesignError
from codesign.space import Candidate, SearchSpace, parse_space

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
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "network": {
                "family": space.model["family"],
                "max_widths": list(space.model["widths"]),
                "widths": list(self.candidate.widths),
            },
            "pruning": {
                "sparsity": list(self.candidate.sparsity),
                "granularity": list(self.candidate.granularity),
            },
            "accelerator": _accelerator_json(acc),
            "candidate": self.candidate.to_dict(),
            "seeds": {"finetune": self.seed, "data": space.task["seed"]},
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
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CodesignError(
                f"{path}: design format version {version!r} is newer than this codesign reads "
                f"({FORMAT_VERSION}); upgrade codesign"
            )
        try:
            return cls(
                space=data["space"],
                space_path=data.get("space_path", path),
                candidate=Candidate.from_dict(data["candidate"]),
                seed=int(data["seeds"]["finetune"]),
                metrics=dict(data.get("metrics", {})),
                source=dict(data.get("source", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CodesignError(
                f"{path}: malformed design file ({type(err).__name__}: {err})"
            ) from None


def _accelerator_json(acc) -> dict:
    def plain(x):
        return (
            {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
            if (dataclasses.is_dataclass(x))
            else (x if isinstance(x, str) else float(x))
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


def _metric(trial, name: str):
    return trial.user_attrs.get(_ALIASES.get(name, name))


def export_design(
    study, *, trial: int | None = None, pick: str | None = None, storage_desc: str = ""
) -> FoundDesign:
    """The design of trial number `trial`, or the front trial chosen by `pick`."""
    from codesign import pareto

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if trial is not None:
        if trial not in trials:
            raise CodesignError(
                f"--trial {trial}: no such trial in study {study.study_name!r} "
                f"(trials 0..{max(trials, default=-1)})"
            )
        chosen = trials[trial]
        if chosen.state.name != "COMPLETE" or "candidate" not in chosen.user_attrs:
            raise CodesignError(
                f"--trial {trial}: trial is {chosen.state.name}, not a scored design"
            )
    else:
        metric, symbol, threshold, direction, goal = parse_pick(pick or "accuracy>=0:min-energy")
        ok = [
            t
            for t in pareto.front(study)
            if _metric(t, metric) is not None and _OPS[symbol](_metric(t, metric), threshold)
        ]
        if not ok:
            raise CodesignError(
                f"--pick {pick!r}: no feasible front trial satisfies {metric}{symbol}{threshold}"
            )
        if _metric(ok[0], goal) is None:
            raise CodesignError(f"--pick {pick!r}: unknown metric {goal!r}")
        chosen = (min if direction == "min" else max)(ok, key=lambda t: _metric(t, goal))
    attrs = chosen.user_attrs
    metrics = {
        k: attrs[k]
        for k in (
            "energy_j",
            "accuracy",
            "test_accuracy",
            "digital_test_accuracy",
            "latency_s",
            "tiles",
            "finetune_flops",
        )
        if k in attrs
    }
    return FoundDesign(
        space=study.user_attrs["space"],
        space_path=study.user_attrs.get("space_path", ""),
        candidate=Candidate.from_dict(attrs["candidate"]),
        seed=int(attrs["seed"]),
        metrics=metrics,
        source={"study": study.study_name, "storage": storage_desc, "trial": chosen.number},
    )


def save_design(design: FoundDesign, path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    if path.is_dir():
        raise CodesignError(f"-o {str(path)!r} is a directory; give a file name like design.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(design.to_json(), indent=2) + "\n")
    tmp.replace(path)
    return path


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
    """Weights with removed units physically gone: smaller arrays that compute the same thing."""
    compact, keep_prev = [], None
    for i, (layer, shape) in enumerate(zip(params, shapes, strict=True)):
        w, b = np.asarray(layer["w"]) * np.asarray(masks[i]), np.asarray(layer["b"])
        if keep_prev is not None:  # drop the rows of units the previous layer removed
            rows = (keep_prev[:, None] * shape.kernel_area + np.arange(shape.kernel_area)).ravel()
            w = w[rows]
        if i < spec.num_hidden:
            keep = np.flatnonzero(np.any(w != 0, axis=0) | (b != 0))
            w, b = w[:, keep], b[keep]
            keep_prev = keep
        compact.append({"w": w, "b": b, "kept_units": keep_prev if i < spec.num_hidden else None})
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
    import orbax.checkpoint as ocp

    from codesign.energy import counts_from_masks, estimate_energy
    from codesign.search import TRAINING_J_PER_FLOP, Evaluator, _energy_attrs

    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CodesignError(f"--out {str(out)!r} exists and is not a directory")
    if steps is not None and steps < 1:
        raise CodesignError(f"--steps must be >= 1, got {steps}")
    space = design.search_space()
    steps = steps or 5 * space.finetune["steps"]
    space = dataclasses.replace(space, finetune={**space.finetune, "steps": steps})
    evaluator = Evaluator(space, cache_dir=cache_dir, log=log)
    cand = design.candidate
    if log:
        log(f"fine-tuning the design for {steps} steps under analog noise")
    result = evaluator.engine.evaluate_population(
        evaluator.population([cand], [design.seed]), keep_params=True
    )
    params = jax.tree.map(lambda x: np.asarray(x[0]), result["params"])
    masks = [np.asarray(m[0]) for m in result["masks"]]
    if bool(result["diverged"][0]):
        raise CodesignError(f"training diverged (final loss {float(result['final_loss'][0])})")

    out.mkdir(parents=True, exist_ok=True)
    checkpoint = (out / "checkpoint").resolve()
    if checkpoint.exists():
        import shutil

        shutil.rmtree(checkpoint)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(checkpoint, {"params": params, "masks": masks})
    checkpointer.wait_until_finished()

    spec = evaluator.engine.spec
    compact = _compact(params, masks, spec, evaluator.shapes)
    arrays = {"num_layers": np.asarray(len(compact))}
    for i, layer in enumerate(compact):
        arrays[f"layer{i}_w"], arrays[f"layer{i}_b"] = layer["w"], layer["b"]
        if layer["kept_units"] is not None:
            arrays[f"layer{i}_kept_units"] = layer["kept_units"]
    np.savez(out / "weights.npz", **arrays)

    acc = space.accelerator(cand)
    counts = counts_from_masks(evaluator.shapes, masks, np.asarray(cand.analog_fraction), acc)
    energy = _energy_attrs(estimate_energy(evaluator.shapes, counts, acc))
    flops = float(result["finetune_flops"][0])
    train_j = flops * TRAINING_J_PER_FLOP
    n = space.lifecycle_inferences if inferences is None else inferences
    report = {
        "design": design.source,
        "steps": steps,
        "test_accuracy_analog": float(result["test_accuracy"][0]),
        "test_accuracy_digital": float(result["digital_test_accuracy"][0]),
        "val_accuracy_analog": float(result["val_accuracy"][0]),
        "energy": energy,
        "finetune_flops": flops,
        "finetune_energy_j": train_j,
        "training_j_per_flop": TRAINING_J_PER_FLOP,
        "inferences": n,
        "lifecycle_energy_j": train_j + n * energy["energy_j"],
        "breakeven_inferences": train_j / energy["energy_j"],
        "dense_weights": int(sum(np.asarray(p["w"]).size for p in params)),
        "compact_weights": int(sum(c["w"].size for c in compact)),
        "files": {"checkpoint": "checkpoint", "weights": "weights.npz"},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
