"""Hypervolume against fine-tune FLOPs spent: gradient co-design and early stopping.

Five methods search the same space, once per seed, for the same fine-tune FLOPs:
`energy-aware` (the default sampler), `nsga2` (Optuna's), `gradient` (`sampler: {name: gradient}`,
`codesign/search/gradient.py`), `early-stop` (the energy-aware sampler with
`finetune.early_stop: {rungs: [0.25, 0.5], margin: 0.05}`, `codesign/search/early_stop.py`) and
`gradient+early-stop` (both). What each spends is counted in training FLOPs, in trial order:
every trial's `finetune_flops` (only the steps it ran: an early-stopped trial pays its rungs, an
over-budget one nothing) plus, for the gradient sampler, its relaxed co-design run
(`proposal_flops`, spread over the proposals it made). The reference (energy-aware) runs
`--trials` trials; every other method then runs in the same seed until the batch that reaches the
reference's FLOPs is told (at most `--max-trials`), and hypervolume counts only what was finished
within a budget: a cheap method gets more trials, a costly one fewer, none a longer budget.

Hypervolume is in (log10 energy, accuracy) against the dense all-digital baseline's energy and
the space's accuracy budget, as in `bench_search.py`, on validation accuracy (what the search
sees) and on test accuracy (of the designs on the validation front). `hv_at_flops` samples each
method's mean hypervolume at FLOPs budgets that are fractions (`--fractions`) of the energy-aware
sampler's mean total; `flops_to_match` is, per seed, the FLOPs at which a run's validation
hypervolume first reaches the energy-aware sampler's final hypervolume in the same seed (None:
never within the run), also as a share of what the energy-aware sampler spent in that seed. The
goal (issue 14): a method reaches it in every seed with at most half those FLOPs on average.

    python experiments/benchmarks/bench_gradient.py --space search_spaces/mnist1d_mlp.yaml
    python experiments/benchmarks/bench_gradient.py --quick     # CI smoke: tiny, 2 methods

A full run writes `results/bench_gradient_<space name>.json` and `.png`. `--runs FILE` keeps each
finished (method, seed) run as a JSON line, so an interrupted benchmark resumes where it stopped;
runs made with other trials or steps are left out, and a change of `--gradient-steps` alone
re-runs only the gradient methods (`--tag` names such a variant's output). `--finetune-steps`
shortens the space's fine-tune; `--gradient-steps` sets the relaxed run's (default: the space's
`sampler.steps`).

Last line: JSON with per method `hv_at_flops`, `test_hv_at_flops` (means, with `_sd`) and
`flops_to_match` (per seed and mean over the seeds that reach it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import statistics
import sys
import tempfile

import numpy as np
import optuna

from codesign.search import loop as search
from codesign.search import pareto, problem
from codesign.search.space import load_space, parse_space

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import _results  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAME = "bench_gradient"
METHODS = ("energy-aware", "nsga2", "gradient", "early-stop", "gradient+early-stop")
REFERENCE = "energy-aware"
QUICK_SPACE = {
    "name": "quick",
    "task": {"dataset": "digits", "seed": 0},
    "model": {"family": "mlp", "widths": [16, 16]},
    "pretrain": {"steps": 60, "batch_size": 32},
    "finetune": {"steps": 10, "batch_size": 32, "eval_draws": 1},
    "search": {
        "widths": {"low": 4, "high": 16, "step": 4, "per_layer": True},
        "sparsity": {"low": 0.0, "high": 0.6, "step": 0.3},
        "granularity": {"choices": ["unstructured", "block"]},
        "tile": {"choices": [16, 32]},
        "analog_fraction": {"choices": [0.0, 0.5, 1.0]},
        "adc_bits": {"low": 4, "high": 8},
    },
    "budgets": {"min_accuracy": 0.2},
    "sampler": {"name": "energy-aware", "seed": 0},
    "batch": 3,
}  # the tests' tiny space (tests/test_search.py), so a test run compiles its programs once


SAMPLER = {
    "energy-aware": "energy-aware",
    "nsga2": "nsga2",
    "gradient": "gradient",
    "early-stop": "energy-aware",
    "gradient+early-stop": "gradient",
}


def configured(space, method: str, seed: int, gradient_steps: int):
    """The space as `method` searches it."""
    relaxed = dataclasses.replace(space.sampler.gradient, steps=gradient_steps)
    sampler = dataclasses.replace(space.sampler, name=SAMPLER[method], seed=seed, gradient=relaxed)
    p = space.problem
    if method.endswith("early-stop"):
        finetune = dataclasses.replace(p.finetune, early_stop=problem.EarlyStop())
        p = dataclasses.replace(p, finetune=finetune)
    return dataclasses.replace(space, sampler=sampler, problem=p)


def trajectory(study) -> list[list]:
    """Per trial, in order: [FLOPs spent, energy_j, val acc, test acc] (accuracies None when the
    trial is not feasible: over budget, below the accuracy floor, stopped early or failed)."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        a = t.user_attrs
        flops = float(a.get("finetune_flops") or 0.0) + float(a.get("proposal_flops") or 0.0)
        r = pareto.result_of(t)
        ok = pareto.feasible(t) and r is not None and r.test_accuracy is not None
        rows.append([flops, *(([r.energy_j, r.accuracy, r.test_accuracy]) if ok else [None] * 3)])
    return rows


def hv_within(traj, budget: float, ref_e: float, ref_acc: float, test: bool = False) -> float:
    """Hypervolume of the feasible trials finished within `budget` FLOPs (validation, or the
    test accuracies of the validation front's designs)."""
    spent, points = 0.0, []
    for flops, e, val, tst in traj:
        spent += flops
        if spent > budget:
            break
        if e is not None:
            points.append((e, val, tst))
    if test:
        front = [
            p
            for p in points
            if not any(q[0] <= p[0] and q[1] >= p[1] and q[:2] != p[:2] for q in points)
        ]
        return pareto.hypervolume([(e, t) for e, _, t in front], ref_e, ref_acc)
    return pareto.hypervolume([(e, v) for e, v, _ in points], ref_e, ref_acc)


def flops_to(traj, target: float, ref_e: float, ref_acc: float) -> float | None:
    """The FLOPs spent when the validation hypervolume first reaches `target` (None: never)."""
    spent, points = 0.0, []
    for flops, e, val, _ in traj:
        spent += flops
        if e is not None:
            points.append((e, val))
            if pareto.hypervolume(points, ref_e, ref_acc) >= target - 1e-12:
                return spent
    return None


def _same_setting(run: dict, setting: dict) -> bool:
    """A finished run can be reused: same trials and steps (relaxed steps: gradient runs only)."""
    relevant = {k: v for k, v in setting.items() if k != "gradient_steps" or _relaxed(run)}
    return all(run.get(k) == v for k, v in relevant.items())


def _relaxed(run: dict) -> bool:
    return SAMPLER[run["method"]] == "gradient"


class _Spent(Exception):
    """The run has spent its FLOPs budget after `trials` trials."""

    def __init__(self, trials: int):
        self.trials = trials


def run_method(space, name: str, workdir: pathlib.Path, trials: int, budget: float | None):
    """Search until `trials` trials, or (with a `budget`) until the batch that reaches `budget`
    FLOPs spent is told: every method then gets the reference's FLOPs, not its trial count."""
    kwargs = {"out_dir": workdir / name, "study_name": name, "cache_dir": workdir / "bases"}

    def stop_when_spent(study, *_):
        traj = trajectory(study)
        if sum(f for f, *_ in traj) >= budget:
            raise _Spent(len(traj))

    try:
        return search.run_search(
            space, trials=trials, progress=stop_when_spent if budget else None, **kwargs
        )
    except _Spent as spent:  # resumed at the trials it holds: records the baseline, returns it
        return search.run_search(space, trials=spent.trials, **kwargs)


def _sd(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _spent(run: dict) -> float:
    return sum(f for f, *_ in run["trajectory"])


def summarise(runs: list[dict], fractions, ref_acc: float) -> dict:
    ref_e = runs[0]["reference_energy_j"]
    ours = [r for r in runs if r["method"] == REFERENCE] or runs
    total = statistics.fmean(_spent(r) for r in ours)
    budgets = [f * total for f in fractions]
    final = statistics.fmean(hv_within(r["trajectory"], np.inf, ref_e, ref_acc) for r in ours)
    reference = {r["seed"]: r for r in ours}
    methods = {}
    for name in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == name]
        row = {"seeds": [r["seed"] for r in mine]}
        for key, test in (("hv_at_flops", False), ("test_hv_at_flops", True)):
            values = [
                [hv_within(r["trajectory"], b, ref_e, ref_acc, test) for r in mine] for b in budgets
            ]
            row[key] = [round(statistics.fmean(v), 4) for v in values]
            row[f"{key}_sd"] = [round(_sd(v), 4) for v in values]
        # Paired by seed: the FLOPs at which this run reaches the reference's final hypervolume
        # in the same seed, and that as a share of what the reference spent in that seed.
        reach, shares = [], []
        for r in mine:
            ref = reference.get(r["seed"])
            target = hv_within(ref["trajectory"], np.inf, ref_e, ref_acc) if ref else np.inf
            f = flops_to(r["trajectory"], target, ref_e, ref_acc)
            reach.append(f)
            shares.append(None if f is None else round(f / _spent(ref), 3))
        hit = [f for f in reach if f is not None]
        row["flops_to_match"] = {
            "per_seed": reach,
            "share_per_seed": shares,
            "reached": len(hit),
            "mean": statistics.fmean(hit) if hit else None,
            "share_of_reference_total": (
                round(statistics.fmean(x for x in shares if x is not None), 3) if hit else None
            ),
        }
        row["total_flops_mean"] = statistics.fmean(_spent(r) for r in mine)
        methods[name] = row
    return {
        "reference_total_flops": total,
        "flops_budgets": budgets,
        "reference_final_hv": final,
        "methods": methods,
    }


def goal(methods: dict) -> dict:
    """Met when a method other than the reference reaches the reference's final hypervolume in
    every seed on at most half its FLOPs (mean of the per-seed shares). `best`: the method that
    reaches it in the most seeds, then on the smallest share."""
    rows = [
        (row["flops_to_match"]["reached"], row["flops_to_match"]["share_of_reference_total"], name)
        for name, row in methods.items()
        if name != REFERENCE and row["flops_to_match"]["reached"]
    ]
    if not rows:
        return {"met": False, "best": None, "note": "no method reached it in any seed"}
    reached, share, name = min(rows, key=lambda r: (-r[0], r[1]))
    every = reached == len(methods[name]["seeds"])
    return {
        "met": every and share <= 0.5,
        "best": name,
        "best_reached_seeds": reached,
        "share_of_reference_flops": share,
    }


def _plot(result: dict, out: pathlib.Path) -> None:
    """Mean +- sd hypervolume of each method against the FLOPs spent, on 25 budgets from 0 to the
    reference's mean total (validation and test panels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, ref_acc = result["runs"], result["reference_accuracy"]
    ref_e = runs[0]["reference_energy_j"]
    flops = np.linspace(0.0, result["reference_total_flops"], 25)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110, sharey=True)
    for ax, (test, title) in zip(axes, ((False, "validation"), (True, "test")), strict=True):
        for k, name in enumerate(result["methods"]):
            trajs = [r["trajectory"] for r in runs if r["method"] == name]
            hv = np.asarray([[hv_within(t, b, ref_e, ref_acc, test) for t in trajs] for b in flops])
            mean, sd = hv.mean(axis=1), hv.std(axis=1, ddof=1) if hv.shape[1] > 1 else 0 * hv[:, 0]
            ax.plot(flops, mean, color=f"C{k}", label=name)
            ax.fill_between(flops, mean - sd, mean + sd, color=f"C{k}", alpha=0.12)
        ax.set_xlabel("fine-tune FLOPs spent (relaxed runs included)")
        ax.set_title(f"{title} accuracy")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("hypervolume (log10 energy x accuracy)")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{result['space']}: hypervolume against FLOPs, mean +- sd of {len(result['seeds'])} "
        f"seeds (budget: the energy-aware sampler's {result['trials']} trials)"
    )
    fig.tight_layout()
    fig.savefig(out / f"{result['name']}.png")
    plt.close(fig)


def replot(path: str) -> None:
    """Draw a results JSON's plot again, beside it (the JSON is not touched)."""
    file = pathlib.Path(path)
    _plot(json.loads(file.read_text()), file.parent)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "mnist1d_mlp.yaml"))
    parser.add_argument("--trials", type=int, default=48, help="the reference's trials")
    parser.add_argument(
        "--max-trials", type=int, default=192, help="cap for the others (run to the same FLOPs)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--finetune-steps", type=int, help="fine-tune steps (default: the space's)")
    parser.add_argument("--gradient-steps", type=int, help="relaxed steps (default: sampler's)")
    parser.add_argument("--runs", help="JSON-lines file of finished runs (default: temporary)")
    parser.add_argument("--quick", action="store_true", help="a tiny space, 2 methods, 6-12 trials")
    parser.add_argument("--out", help="output directory (default: results/, quick: temporary)")
    parser.add_argument("--tag", help="appended to the output name (a variant of the settings)")
    parser.add_argument("--replot", metavar="JSON", help="only draw this results JSON's plot")
    args = parser.parse_args(argv)
    if args.replot:
        return replot(args.replot)
    stamp = _results.stamp("quick" if args.quick else "full")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        if args.quick:
            space = parse_space(QUICK_SPACE, str(workdir / "quick.yaml"))
            args.trials, args.seeds, args.methods = 6, [0], ["energy-aware", "gradient"]
            args.max_trials = 12
            args.gradient_steps = 30
        else:
            space = load_space(args.space)
        if args.finetune_steps:
            finetune = dataclasses.replace(space.problem.finetune, steps=args.finetune_steps)
            space = dataclasses.replace(
                space, problem=dataclasses.replace(space.problem, finetune=finetune)
            )
        args.finetune_steps = space.problem.finetune.steps
        args.gradient_steps = args.gradient_steps or space.sampler.gradient.steps
        runs_path = pathlib.Path(args.runs) if args.runs else workdir / "runs.jsonl"
        runs = (
            [json.loads(line) for line in runs_path.read_text().splitlines()]
            if runs_path.exists()
            else []
        )
        setting = {
            "trials": args.trials,
            "max_trials": args.max_trials,
            "finetune_steps": args.finetune_steps,
            "gradient_steps": args.gradient_steps,
        }
        runs = [r for r in runs if _same_setting(r, setting)]
        done = {(r["method"], r["seed"]): r for r in runs}
        with _results.compilation_cache(workdir / "xla"):
            for seed in args.seeds:
                for method in args.methods:
                    if (method, seed) in done:
                        continue
                    ref = done.get((REFERENCE, seed))
                    budget = sum(f for f, *_ in ref["trajectory"]) if ref else None
                    study = run_method(
                        configured(space, method, seed, args.gradient_steps),
                        f"{method}-{seed}",
                        workdir,
                        args.trials if budget is None else args.max_trials,
                        budget,
                    )
                    run = {
                        "method": method,
                        "seed": seed,
                        "git_sha": stamp["git_sha"],
                        **setting,
                        "budget_flops": budget,
                        "reference_energy_j": study.user_attrs["baseline"]["energy_j"],
                        "trajectory": trajectory(study),
                    }
                    runs.append(run)
                    done[(method, seed)] = run
                    with runs_path.open("a") as f:
                        f.write(json.dumps(run) + "\n")
                    spent = sum(f for f, *_ in run["trajectory"])
                    print(
                        f"{method:>20} seed {seed}: {len(run['trajectory'])} trials, "
                        f"{spent:.3g} FLOPs",
                        flush=True,
                    )
    runs = [r for r in runs if r["method"] in args.methods and r["seed"] in args.seeds]
    ref_acc = space.problem.budgets.accuracy_floor
    summary = summarise(runs, args.fractions, ref_acc)
    name = NAME if args.quick else f"{NAME}_{space.name}" + (f"_{args.tag}" if args.tag else "")
    result = {
        "bench": "gradient",
        "name": name,
        "space": space.name,
        "trials": args.trials,
        "finetune_steps": args.finetune_steps,
        "gradient_steps": args.gradient_steps,
        "seeds": args.seeds,
        "fractions": args.fractions,
        "reference_accuracy": ref_acc,
        **summary,
        "goal_half_the_flops": goal(summary["methods"]),
        "runs_made_at": sorted({r.get("git_sha", "unknown") for r in runs}),
        **_results.finish(stamp),
        "runs": runs,
    }
    out = _results.out_dir(args.out, args.quick, name)
    _results.write(result, out, name)
    _plot(result, out)
    print(
        f"{'method':>20}"
        + "".join(f"{f'hv@{f:g}':>10}" for f in args.fractions)
        + "  FLOPs to match"
    )
    for method, row in summary["methods"].items():
        share = row["flops_to_match"]["share_of_reference_total"]
        print(
            f"{method:>20}" + "".join(f"{v:>10.3f}" for v in row["hv_at_flops"])
            + f"  {share if share is not None else 'never'} ({row['flops_to_match']['reached']}/"
            f"{len(row['seeds'])} seeds)"
        )  # fmt: skip
    print(f"goal (the reference's hypervolume on half its FLOPs): {result['goal_half_the_flops']}")
    print(f"written to {out}")
    brief = {k: v for k, v in result.items() if k != "runs"}
    print(json.dumps(brief))
    return result


if __name__ == "__main__":
    main()
