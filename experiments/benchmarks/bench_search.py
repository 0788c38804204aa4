"""Search quality at equal trial counts: the energy-aware sampler against Optuna's samplers.

Every sampler runs the same space for the same number of trials, once per seed: `energy-aware`
(the default: exact energies + a Gaussian process of accuracy + expected hypervolume
improvement, `codesign/search/screening.py`), `random-filtered` (the energy-aware sampler's start-up
rule used throughout: random draws priced by the energy model, each batch a stratified sample of
their log-energy range; no accuracy model), and Optuna's `tpe` (multivariate, constant liar),
`nsga2`, `gp` (GPSampler; needs torch) and `random`. Same space, batch size, fine-tune and seeds.

Hypervolume is in (log10 energy, accuracy) against the dense all-digital baseline's energy and
the space's accuracy budget (`budgets.min_accuracy`, 0.5 for digits_mlp: designs below it are
infeasible, so a 40%-accurate design adds nothing). It is reported on validation accuracy (what
the search sees) and on test accuracy (the test accuracies of the designs on the validation front:
selection on validation, report on test; the search never reads test accuracy). The reference
hypervolume is that of the best front of all runs pooled (validation); `trials_to_95pct` is the
first trial count at which a run's front reaches 95% of it (None if it never does within the run,
counted as `trials + 1` in the mean, so that mean is a lower bound; `reached` says how many did).

Also measured: the framework's overhead per trial (wall time of `run_search` minus the time in
`Evaluator.evaluate`: storage, sampling, energy estimates and the sampler's own proposals). The
once-per-process costs are measured before the runs and reported apart, not charged to trials:
compiling the energy model and loading the energy-aware sampler's libraries.

Each run's trajectory is appended to `--runs` (JSON lines) as it finishes; `--resume` reuses the
runs already there, so a long benchmark can be stopped and continued. Last line: JSON, with per
sampler `hv_mean`, `hv_sd`, `test_hv_mean`, `test_hv_sd` (per checkpoint) and `trials_to_95pct`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
import optuna

from codesign.search import loop as search
from codesign.search import pareto, screening
from codesign.search.evaluate import Evaluator
from codesign.search.fronts import dominated
from codesign.search.space import load_space

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import _results  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAME = "bench_search"
DEFAULT = "energy-aware"
SAMPLERS = (DEFAULT, "random-filtered", "tpe", "nsga2", "random", "gp")
OPTUNA_SAMPLERS = ("tpe", "nsga2", "gp", "random")
TARGET = 0.95
GOAL = "goal_3x_fewer_trials"


def _hypervolume_after(study, n: int, reference_energy_j: float, reference_accuracy=0.0) -> float:
    """Hypervolume of the feasible front among the first n trials of a study."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.number < n and pareto.feasible(t)]
    points = [(r.energy_j, r.accuracy) for r in map(pareto.result_of, trials)]
    return pareto.hypervolume(points, reference_energy_j, reference_accuracy)


# --- a run's trajectory: per trial (energy, validation accuracy, test accuracy), feasible only ---


def trajectory(study) -> list[list[float] | None]:
    """Per trial number: [energy_j, val accuracy, test accuracy] if feasible, else None."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        r = pareto.result_of(t)
        feasible = pareto.feasible(t) and r.test_accuracy is not None
        rows.append([r.energy_j, r.accuracy, r.test_accuracy] if feasible else None)
    return rows


def _validation_front(points):
    """The (energy, val, test) points not dominated in (energy, val), ties kept."""
    beaten = dominated([(e, -val) for e, val, _ in points]) if points else []
    return [p for p, out in zip(points, beaten, strict=True) if not out]


def hv_val(traj, n: int, ref_e: float, ref_acc: float) -> float:
    points = [p for p in traj[:n] if p is not None]
    return pareto.hypervolume([(e, a) for e, a, _ in points], ref_e, ref_acc)


def hv_test(traj, n: int, ref_e: float, ref_acc: float) -> float:
    """Hypervolume of the test accuracies of the designs on the validation front."""
    front = _validation_front([p for p in traj[:n] if p is not None])
    return pareto.hypervolume([(e, t) for e, _, t in front], ref_e, ref_acc)


def trials_to(traj, target_hv: float, ref_e: float, ref_acc: float) -> int | None:
    """The first trial count whose validation hypervolume reaches target_hv, or None."""
    for n in range(1, len(traj) + 1):
        if traj[n - 1] is not None and hv_val(traj, n, ref_e, ref_acc) >= target_hv:
            return n
    return None


# --- running one sampler ---


@contextlib.contextmanager
def _sampler(name: str):
    """'random-filtered' is the energy-aware loop with its start-up rule (no GP) throughout."""
    if name != "random-filtered":
        yield DEFAULT if name == DEFAULT else name
        return
    original = screening.propose
    screening.propose = functools.partial(original, startup=sys.maxsize)
    try:
        yield DEFAULT
    finally:
        screening.propose = original


def _stub_evaluate(self, cands, seeds, chunk=None):
    """`Evaluator.evaluate` without a fine-tune: the energy estimate and a synthetic accuracy
    that rises with width and falls with sparsity, analog share and ADC coarseness (so the
    accuracy model has a trend to learn). For measuring the framework's own overhead."""
    del chunk
    out = []
    for result, cand, seed in zip(self.estimate(cands), cands, seeds, strict=True):
        size = 1 - np.exp(-sum(cand.widths) / 64)
        penalty = 0.3 * np.mean(cand.sparsity) + 0.05 * np.mean(cand.analog_fraction) * (
            8 - cand.adc_bits
        )
        accuracy = float(np.clip(0.5 + 0.45 * size - penalty + 0.01 * (seed % 7 - 3), 0, 1))
        out.append(
            dataclasses.replace(
                result,
                seed=seed,
                accuracy=accuracy,
                test_accuracy=accuracy,
                digital_test_accuracy=accuracy,
                final_loss=1 - accuracy,
            )
        )
    return out


class _Timer:
    """Accumulates the time spent in the evaluation calls (the fine-tune engine)."""

    def __init__(self):
        self.seconds = 0.0

    def wrap(self, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def run(space, sampler: str, seed: int, trials: int, workdir: pathlib.Path, timer: _Timer):
    """One search; returns its trajectory, reference energy and overhead seconds."""
    with _sampler(sampler) as optuna_name:
        s = dataclasses.replace(space.sampler, name=optuna_name, seed=seed)
        space = dataclasses.replace(space, sampler=s)
        start, eval_before = time.perf_counter(), timer.seconds
        study = search.run_search(
            space,
            trials=trials,
            out_dir=workdir / f"{sampler}-{seed}",
            study_name=f"{sampler}-{seed}",
            cache_dir=workdir / "bases",
        )
        wall = time.perf_counter() - start
    return {
        "sampler": sampler,
        "seed": seed,
        "trials": trials,
        "reference_energy_j": study.user_attrs["baseline"]["energy_j"],
        "wall_s": wall,
        "overhead_s": wall - (timer.seconds - eval_before),
        "trajectory": trajectory(study),
    }


# --- summary ---


def _sd(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict], checkpoints, ref_acc: float) -> dict:
    ref_e = runs[0]["reference_energy_j"]
    pooled = [p for r in runs for p in r["trajectory"] if p is not None]
    reference_hv = hv_val(pooled, len(pooled), ref_e, ref_acc)
    trials = max(r["trials"] for r in runs)
    samplers = {}
    for name in dict.fromkeys(r["sampler"] for r in runs):
        mine = [r for r in runs if r["sampler"] == name]
        row = {"seeds": [r["seed"] for r in mine]}
        for key, fn in (("hv", hv_val), ("test_hv", hv_test)):
            values = {
                n: [fn(r["trajectory"], n, ref_e, ref_acc) for r in mine] for n in checkpoints
            }
            row[f"{key}_mean"] = {str(n): round(statistics.fmean(v), 4) for n, v in values.items()}
            row[f"{key}_sd"] = {str(n): round(_sd(v), 4) for n, v in values.items()}
        reach = [trials_to(r["trajectory"], TARGET * reference_hv, ref_e, ref_acc) for r in mine]
        row["trials_to_95pct"] = {
            "per_seed": reach,
            "reached": sum(n is not None for n in reach),
            "mean": round(statistics.fmean(trials + 1 if n is None else n for n in reach), 1),
        }
        row["overhead_ms_per_trial"] = round(
            1000 * sum(r["overhead_s"] for r in mine) / sum(r["trials"] for r in mine), 2
        )
        samplers[name] = row
    return {"reference_hv": reference_hv, "samplers": samplers}


def goal(samplers: dict) -> dict:
    """The default sampler needs >= 3x fewer trials than the best Optuna sampler to reach 95%."""
    if DEFAULT not in samplers or not any(s in samplers for s in OPTUNA_SAMPLERS):
        return {"met": None, "reason": "the default or every Optuna sampler missing"}
    ours = samplers[DEFAULT]["trials_to_95pct"]["mean"]
    best = min(
        (s for s in OPTUNA_SAMPLERS if s in samplers),
        key=lambda s: samplers[s]["trials_to_95pct"]["mean"],
    )
    theirs = samplers[best]["trials_to_95pct"]["mean"]
    return {
        "met": bool(theirs >= 3 * ours),
        "ratio": round(theirs / ours, 2),
        "best_optuna_sampler": best,
        "note": "a sampler that never reaches 95% counts as trials + 1 (a lower bound)",
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "digits_mlp.yaml"))
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument("--runs", help="JSON-lines file of finished runs (default: temporary)")
    parser.add_argument("--resume", action="store_true", help="reuse the runs in --runs")
    parser.add_argument(
        "--summarise-only", action="store_true", help="run nothing: summarise the runs in --runs"
    )
    parser.add_argument("--note", help="stored in the JSON (e.g. where the runs were made)")
    parser.add_argument(
        "--stub-evaluation",
        action="store_true",
        help="overhead only: no fine-tune (a synthetic accuracy), energy-aware and random; "
        "writes bench_search_overhead.json",
    )
    parser.add_argument("--quick", action="store_true", help="2 samplers, 1 seed, 8 trials")
    parser.add_argument("--out", help="output directory (default: results/, quick: temporary)")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.seeds, args.checkpoints = 8, [0], [4, 8]
        args.samplers = [DEFAULT, "random"]
    if args.stub_evaluation:
        args.samplers = [DEFAULT, "random"]
    checkpoints = [n for n in args.checkpoints if n <= args.trials]
    stamp = _results.stamp("quick" if args.quick else "full")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space)
    ref_acc = space.problem.budgets.accuracy_floor

    # The energy model's one-time compilation, measured here, not charged to the trials.
    start = time.perf_counter()
    evaluator = space.evaluator()
    probe = space.candidate(space.sample_params(np.random.default_rng(0), 1)[0])
    evaluator.budget_energies([probe])
    evaluator.estimate([probe] * space.batch)
    energy_compile_s = time.perf_counter() - start
    # Likewise the energy-aware sampler's libraries (scikit-learn, SciPy), loaded on first use.
    start = time.perf_counter()
    screening._blas()
    sampler_import_s = time.perf_counter() - start

    timer = _Timer()
    with contextlib.ExitStack() as stack:
        workdir = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(_results.compilation_cache(workdir / "xla"))  # one engine compile
        evaluate = Evaluator.evaluate
        Evaluator.evaluate = timer.wrap(_stub_evaluate if args.stub_evaluation else evaluate)
        stack.callback(setattr, Evaluator, "evaluate", evaluate)
        runs_path = pathlib.Path(args.runs) if args.runs else workdir / "runs.jsonl"
        runs = []
        if args.resume and runs_path.exists():
            runs = [json.loads(line) for line in runs_path.read_text().splitlines() if line]
        done = {(r["sampler"], r["seed"]) for r in runs if r["trials"] == args.trials}
        for seed in args.seeds:  # seeds outermost: a cut-short run has whole seeds
            for sampler in args.samplers:
                if (sampler, seed) in done or args.summarise_only:
                    continue
                r = run(space, sampler, seed, args.trials, workdir, timer)
                runs.append(r)
                with runs_path.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                hv = hv_val(r["trajectory"], args.trials, r["reference_energy_j"], ref_acc)
                print(f"{sampler:>16} seed {seed}: hv {hv:.4f}, {r['wall_s']:.0f} s", flush=True)
    runs = [r for r in runs if r["sampler"] in args.samplers and r["seed"] in args.seeds]
    summary = summarise(runs, checkpoints, ref_acc)
    result = {
        "bench": "search",
        "space": pathlib.Path(args.space).name,
        "trials": args.trials,
        "seeds": args.seeds,
        "batch": space.batch,
        "checkpoints": checkpoints,
        "reference_accuracy": ref_acc,
        "reference_energy_j": runs[0]["reference_energy_j"],
        **summary,
        GOAL: goal(summary["samplers"]),
        "energy_model_compile_s_once": round(energy_compile_s, 2),
        "sampler_import_s_once": round(sampler_import_s, 2),
        "note": args.note,
        **_results.finish(stamp),
        "runs": runs,
    }
    if args.stub_evaluation:
        result = {
            "bench": "search_overhead",
            "space": result["space"],
            "trials": args.trials,
            "seeds": args.seeds,
            "overhead_ms_per_trial": {
                name: s["overhead_ms_per_trial"] for name, s in summary["samplers"].items()
            },
            "energy_model_compile_s_once": result["energy_model_compile_s_once"],
            "sampler_import_s_once": result["sampler_import_s_once"],
            **_results.finish(stamp),
        }
        name = f"{NAME}_overhead"
        out = _results.write(result, _results.out_dir(args.out, args.quick, name), name)
        print(json.dumps(result))
        return result
    out = _results.write(result, _results.out_dir(args.out, args.quick, NAME), NAME)

    print(f"reference hypervolume (pooled front of all runs): {summary['reference_hv']:.4f}")
    print(f"{'sampler':>16}" + "".join(f"{f'hv@{n}':>16}" for n in checkpoints) + "  to 95%")
    for name, s in summary["samplers"].items():
        cells = [f"{s['hv_mean'][str(n)]:.3f}+-{s['hv_sd'][str(n)]:.3f}" for n in checkpoints]
        reach = s["trials_to_95pct"]
        print(
            f"{name:>16}" + "".join(f"{c:>16}" for c in cells)
            + f"  {reach['mean']} ({reach['reached']}/{len(s['seeds'])} reached)"
        )  # fmt: skip
    print(f"goal (>= 3x fewer trials than the best Optuna sampler): {result[GOAL]}")
    print(f"written to {out}")
    brief = {k: v for k, v in result.items() if k != "runs"}
    brief["samplers"] = {
        name: {
            "hv_mean": s["hv_mean"],
            "hv_sd": s["hv_sd"],
            "test_hv_mean": s["test_hv_mean"],
            "trials_to_95pct": s["trials_to_95pct"]["mean"],
        }
        for name, s in summary["samplers"].items()
    }
    print(json.dumps(brief))
    return result


if __name__ == "__main__":
    main()
