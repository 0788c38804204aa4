"""Pareto fronts of finished studies: the feasible front, its hypervolume, tables and plots.

`format_front` is a plain function of numbers, and so are dominance and hypervolume
(`codesign.search.fronts`); `front`, `front_rows`, `report` and `plot_front` are the thin adapter
that reads them from an Optuna study.

The front is computed here, from the trials' stored values and constraints, rather than taken
from the sampler, so that it is the same whatever sampler ran and whatever storage holds it.
Hypervolume is measured on (log10 energy per inference, accuracy): energies span orders of
magnitude, and a log axis makes a 2x saving count the same at every scale.
"""

from __future__ import annotations

import csv
import io
import json
import pathlib

import numpy as np
import optuna

from codesign.files import atomic_write
from codesign.search.evaluate import Baseline
from codesign.search.fronts import dominated, hypervolume
from codesign.search.study import baseline_of, feasible, result_of

__all__ = [
    "feasible",
    "format_front",
    "front",
    "front_rows",
    "hypervolume",
    "plot_front",
    "progress_line",
    "report",
]

TABLE_COLUMNS = (
    "trial",
    "energy_j",
    "accuracy",
    "test_accuracy",
    "tiles",
    "latency_s",
    "widths",
    "sparsity",
    "granularity",
    "tile",
    "analog_fraction",
    "adc_bits",
)


def _signed(study, trial) -> np.ndarray:
    """Objective values turned into 'smaller is better'."""
    signs = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in study.directions]
    return np.asarray(trial.values) * signs


def front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible non-dominated trials, sorted by energy (ties kept: the same set as Optuna's
    `study.best_trials`)."""
    trials = [t for t in study.get_trials(deepcopy=False) if feasible(t)]
    beaten = dominated([_signed(study, t) for t in trials]) if trials else []
    keep = [trial for trial, out in zip(trials, beaten, strict=True) if not out]
    return sorted(keep, key=lambda t: (result_of(t).energy_j, t.number))


def front_rows(study: optuna.Study) -> list[dict]:
    """One dict per front trial: the metrics and the key design parameters, every per-layer
    one with a value per weight layer, the head last (widths: the kept output units of each
    layer; a study written before codesign stored them shows the searched hidden or group
    widths instead)."""
    rows = []
    for t in front(study):
        result = result_of(t)
        cand = result.candidate.to_dict() if result.candidate else {}
        if result.layer_widths:
            cand["widths"] = list(result.layer_widths)
        rows.append(
            {
                "trial": t.number,
                "energy_j": result.energy_j,
                "accuracy": result.accuracy,
                "test_accuracy": result.test_accuracy,
                "tiles": result.tiles,
                "latency_s": result.latency_s,
                **{key: cand.get(key) for key in TABLE_COLUMNS[6:]},
            }
        )
    return rows


def report(study: optuna.Study, fmt: str = "table") -> tuple[str, Baseline | None]:
    """The front as text (with its hypervolume against the study's baseline) and the baseline."""
    rows = front_rows(study)
    baseline = baseline_of(study)
    hv = None
    if baseline:
        hv = hypervolume([(r["energy_j"], r["accuracy"]) for r in rows], baseline.energy_j)
    return format_front(rows, fmt, hv), baseline


def progress_line(study: optuna.Study, min_accuracy: float = 0.0) -> str:
    """'front N, best E J at acc>=A': the front's size and its cheapest design within budget."""
    best = front(study)
    ok = [result_of(t).energy_j for t in best if result_of(t).accuracy >= min_accuracy]
    return f"front {len(best)}" + (f", best {min(ok):.3g} J at acc>={min_accuracy:g}" if ok else "")


def _cell(value, key: str = "") -> str:
    """A plain table or CSV cell: per-layer lists as every weight layer's value joined by "/",
    the tile as ROWSxCOLS, floats to 3 significant digits."""
    if isinstance(value, list | tuple):
        return ("x" if key == "tile" else "/").join(_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def format_front(rows: list[dict], fmt: str = "table", hv: float | None = None) -> str:
    """The front as an aligned table, JSON or CSV."""
    if fmt == "json":
        return json.dumps({"front": rows, "hypervolume": hv}, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: _cell(v, k) if isinstance(v, list | tuple) else v for k, v in row.items()}
            )
        return buffer.getvalue().rstrip("\n")
    if not rows:
        return "no feasible trial yet: the front is empty"
    header = [c.replace("_", " ") for c in TABLE_COLUMNS]
    body = [[_cell(row[c], c) for c in TABLE_COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *body]]
    if hv is not None:
        lines.append(f"hypervolume (log10 J x accuracy, vs dense all-digital baseline): {hv:.4g}")
    return "\n".join(lines)


def plot_front(
    study: optuna.Study, path: str | pathlib.Path, baseline: Baseline | None = None
) -> pathlib.Path:
    """Energy vs accuracy: every trial, the feasible front, and the baseline if given.

    A `.png` path writes a matplotlib figure; `.html` an interactive plotly page whose points
    show each trial's design on hover.
    """
    path = pathlib.Path(path)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    trained = [t for t in trials if (r := result_of(t)) is not None and r.ok]
    best = front(study)
    energy = lambda ts: [result_of(t).energy_j for t in ts]  # noqa: E731
    acc = lambda ts: [result_of(t).accuracy for t in ts]  # noqa: E731
    title = f"{study.study_name}: {len(trials)} trials, front of {len(best)}"
    if path.suffix == ".html":
        import plotly.graph_objects as go

        def hover(ts):  # the trial number first: `codesign export --trial N` picks it
            return [
                f"trial {t.number}: {json.dumps(result_of(t).to_attrs().get('candidate', {}))}"
                for t in ts
            ]

        fig = go.Figure()
        for ts, style in (
            (trained, {"mode": "markers", "name": "trials", "marker": {"color": "lightgray"}}),
            (best, {"mode": "lines+markers", "name": "Pareto front", "line": {"shape": "hv"}}),
        ):
            fig.add_scatter(x=energy(ts), y=acc(ts), text=hover(ts), **style)
        if baseline:
            fig.add_scatter(
                x=[baseline.energy_j],
                y=[baseline.accuracy],
                mode="markers",
                name=baseline.label,
                marker={"symbol": "x", "size": 12},
            )
        fig.update_layout(
            title=title,
            xaxis={"type": "log", "title": "energy per inference (J)"},
            yaxis={"title": "accuracy (target validation)"},
        )
        return atomic_write(path, lambda tmp: fig.write_html(tmp, include_plotlyjs=True))
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter(energy(trained), acc(trained), s=14, color="0.75", label="trials")
    ax.step(energy(best), acc(best), where="post", color="C0", lw=1.5)
    ax.scatter(energy(best), acc(best), s=26, color="C0", label="Pareto front", zorder=3)
    if baseline:
        ax.scatter(
            [baseline.energy_j],
            [baseline.accuracy],
            marker="x",
            s=70,
            color="C3",
            label=baseline.label,
            zorder=4,
        )
    if trained or baseline:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    else:
        ax.text(0.5, 0.5, "no trained trial yet", ha="center", transform=ax.transAxes)
    ax.set_xlabel("energy per inference (J)")
    ax.set_ylabel("accuracy (target validation)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
