"""The energy-aware sampler's Gaussian process, side by side: hand-written against scikit-learn.

The same search (`bench_search.run`: the space's energy-aware sampler, same seeds) runs once with
the hand-written GP that `codesign.search.screening` used up to issue 9 (copied below, so this stays
re-runnable) and once with the library one now in `screening.GaussianProcess`. Reported per
variant: validation hypervolume (log10 energy x accuracy, reference: the dense all-digital
baseline's energy and accuracy 0, as bench_search) after 10, 25 and 50 trials, mean and sample
sd over seeds; and the GP's own time per model-guided batch (fit, believer updates, predictions).
The first batch (startup: no GP) is the same for both variants, so the runs are paired.
Last line: JSON, stamped (commit, versions, machine); a full run writes `results/compare_gp.json`.
`--quick`: one seed, 10 trials, written to a temporary directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
import optuna

from codesign.search import loop as search
from codesign.search import pareto, screening
from codesign.search.space import load_space

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import _results  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_bench_search():
    path = pathlib.Path(__file__).resolve().parent / "bench_search.py"
    spec = importlib.util.spec_from_file_location("bench_search", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_search = _load_bench_search()


# --- the baseline: screening.GaussianProcess as written by hand (commit 01ce6dc) ---

_LENGTH_SCALES = (0.15, 0.3, 0.6, 1.2, 2.4)
_NOISE_RATIOS = (1e-3, 1e-2, 1e-1)
_JITTER = 1e-8


def _matern52(a: np.ndarray, b: np.ndarray, length_scale: float) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    r = math.sqrt(5.0) * np.sqrt(np.maximum(sq, 0.0)) / length_scale
    return (1.0 + r + r * r / 3.0) * np.exp(-r)


class HandWrittenGP:
    """Zero-mean GP on standardised targets; hyperparameters by marginal likelihood on a grid."""

    def __init__(self, x: np.ndarray, y: np.ndarray, length_scale=None, noise_ratio=None):
        self.x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        self.y_mean, self.y_std = float(y.mean()), float(y.std()) or 1.0
        self.z = (y - self.y_mean) / self.y_std
        if length_scale is None or noise_ratio is None:
            grid = [(ls, nr) for ls in _LENGTH_SCALES for nr in _NOISE_RATIOS]
            length_scale, noise_ratio = max(grid, key=lambda h: self._log_likelihood(*h))
        self.length_scale, self.noise_ratio = length_scale, noise_ratio
        self._factor()

    def _gram(self, length_scale: float, noise_ratio: float) -> np.ndarray:
        k = _matern52(self.x, self.x, length_scale)
        return k + (noise_ratio + _JITTER) * np.eye(len(self.x))

    def _log_likelihood(self, length_scale: float, noise_ratio: float) -> float:
        """Log marginal likelihood with the signal variance at its maximum (profiled out)."""
        chol = np.linalg.cholesky(self._gram(length_scale, noise_ratio))
        alpha = np.linalg.solve(chol, self.z)
        n = len(self.z)
        return -0.5 * n * math.log(max(alpha @ alpha / n, 1e-12)) - np.log(np.diag(chol)).sum()

    def _factor(self):
        chol = np.linalg.cholesky(self._gram(self.length_scale, self.noise_ratio))
        self._chol_inv = np.linalg.inv(chol)  # once, so predictions are matrix products
        self._alpha = self._chol_inv.T @ (self._chol_inv @ self.z)
        self._signal = max(float(self.z @ self._alpha) / len(self.z), 1e-12)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the noise-free target at rows of x."""
        k = _matern52(np.asarray(x, np.float64), self.x, self.length_scale)
        mean = k @ self._alpha
        v = k @ self._chol_inv.T
        var = self._signal * np.maximum(1.0 - (v * v).sum(1), 0.0)
        return self.y_mean + self.y_std * mean, self.y_std * np.sqrt(var)

    def believe(self, x: np.ndarray, y: np.ndarray) -> HandWrittenGP:
        """The same process with (x, y) added as observations, hyperparameters kept."""
        return type(self)(  # the original named its class; type(self) keeps the timing wrapper
            np.vstack([self.x, x]),
            np.concatenate([self.y_mean + self.y_std * self.z, y]),
            self.length_scale,
            self.noise_ratio,
        )


VARIANTS = {"hand-written": HandWrittenGP, "scikit-learn": screening.GaussianProcess}


# --- timing the GP inside propose ---


class _GPClock:
    """Seconds spent in a GP class's constructor and predictions, per propose call that fits one."""

    def __init__(self):
        self.seconds, self.per_batch = 0.0, []

    def timed(self, gp_class):
        clock = self

        class Timed(gp_class):
            def __init__(self, *args, **kwargs):
                start = time.perf_counter()
                super().__init__(*args, **kwargs)
                clock.seconds += time.perf_counter() - start

            def predict(self, x):
                start = time.perf_counter()
                try:
                    return super().predict(x)
                finally:
                    clock.seconds += time.perf_counter() - start

        return Timed

    def around(self, propose):
        def timed_propose(*args, **kwargs):
            before = self.seconds
            out = propose(*args, **kwargs)
            if self.seconds > before:  # a model-guided batch (startup batches use no GP)
                self.per_batch.append(self.seconds - before)
            return out

        return timed_propose


def run_variant(space, gp_class, seed: int, trials: int, workdir: pathlib.Path):
    """One search with `gp_class` as screening.GaussianProcess: (study, GP seconds per batch)."""
    clock = _GPClock()
    original = screening.GaussianProcess, screening.propose
    screening.GaussianProcess = clock.timed(gp_class)
    screening.propose = clock.around(original[1])
    try:
        sampler = dataclasses.replace(space.sampler, name="energy-aware", seed=seed)
        study = search.run_search(
            dataclasses.replace(space, sampler=sampler),
            trials=trials,
            out_dir=workdir / gp_class.__name__ / f"energy-aware-{seed}",
            study_name=f"energy-aware-{seed}",
            cache_dir=workdir / "bases",
        )
    finally:
        screening.GaussianProcess, screening.propose = original
    return study, clock.per_batch


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "digits_mlp.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--quick", action="store_true", help="seed 0, 10 trials")
    parser.add_argument(
        "--out", help="results JSON path or directory (default: results/, quick: temporary)"
    )
    args = parser.parse_args(argv)
    stamp = _results.stamp("quick" if args.quick else "full")
    if args.quick:
        args.seeds, args.checkpoints = [0], [10]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space)
    trials = max(args.checkpoints)

    per_seed, gp_seconds = [], {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            row = {"seed": seed}
            for name, gp_class in VARIANTS.items():
                study, per_batch = run_variant(space, gp_class, seed, trials, pathlib.Path(tmp))
                gp_seconds[name] += per_batch
                reference = study.user_attrs["baseline"]["energy_j"]
                row["reference_energy_j"] = reference  # the same dense baseline for both
                for n in args.checkpoints:
                    row[f"{name}_hv@{n}"] = bench_search._hypervolume_after(study, n, reference)
            per_seed.append(row)
            print(json.dumps(row), flush=True)

    def spread(values):
        return statistics.stdev(values) if len(values) > 1 else 0.0

    variants = {}
    for name in VARIANTS:
        hv = {n: [r[f"{name}_hv@{n}"] for r in per_seed] for n in args.checkpoints}
        variants[name] = {
            "hv_mean": {str(n): round(statistics.fmean(v), 4) for n, v in hv.items()},
            "hv_sd": {str(n): round(spread(v), 4) for n, v in hv.items()},
            "gp_ms_per_batch": round(1000 * statistics.fmean(gp_seconds[name] or [0.0]), 2),
            "gp_batches": len(gp_seconds[name]),
        }
    result = {
        "bench": "compare_gp",
        "space": pathlib.Path(args.space).name,
        "seeds": args.seeds,
        "trials": trials,
        "batch": space.batch,
        "empty_front_hv": pareto.hypervolume([], per_seed[0]["reference_energy_j"]),
        "per_seed": per_seed,
        "variants": variants,
        **_results.finish(stamp),
    }
    if args.out and args.out.endswith(".json"):
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    else:
        out = _results.write(
            result, _results.out_dir(args.out, args.quick, "compare_gp"), "compare_gp"
        )

    print(f"{'trials':>8}" + "".join(f"{name:>22}" for name in VARIANTS))
    for n in args.checkpoints:
        cells = [
            f"{v['hv_mean'][str(n)]:.4f} +- {v['hv_sd'][str(n)]:.4f}" for v in variants.values()
        ]
        print(f"{n:>8}" + "".join(f"{c:>22}" for c in cells))
    print(
        "GP ms per batch: " + ", ".join(f"{k} {v['gp_ms_per_batch']}" for k, v in variants.items())
    )
    print(f"written to {out}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
