"""Search throughput with 1 and 2 worker processes, on a journal file and on PostgreSQL.

Each configuration runs a fresh study of `--trials` trials of the search space: the first process
is `codesign search`, the others `codesign worker` on the same storage; the wall time runs from
the first start to the last exit, so every process's start-up and compilation is included. The
pretrained base is made once beforehand (it is cached on disk and shared by all runs). PostgreSQL
is measured when `--postgres URL` is given or CODESIGN_TEST_POSTGRES is set (`.ci/postgres.sh`
starts a local server). Last line: JSON with trials per minute for each configuration; also
written to `results/bench_workers.json` (`--quick`: 8 trials, a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import optuna

from codesign.search import study as studies
from codesign.search.space import load_space

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import _results  # noqa: E402

NAME = "bench_workers"
ROOT = pathlib.Path(__file__).resolve().parents[2]


def run(space_path: str, trials: int, workers: int, storage_flags: list, name: str, env) -> float:
    """Wall seconds for `workers` processes to complete a fresh study of `trials` trials."""
    cli = [sys.executable, "-m", "codesign.cli"]
    flags = [*storage_flags, "--study", name]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*cli, "search", space_path, "--trials", str(trials), *flags],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    ]
    if workers > 1:
        storage = studies.storage_for(
            storage_flags[1] if storage_flags[0] == "--storage" else None, storage_flags[-1]
        )
        while name not in [s.study_name for s in optuna.get_all_study_summaries(storage)]:
            time.sleep(0.1)
        for _ in range(workers - 1):
            procs.append(
                subprocess.Popen(
                    [*cli, "worker", *flags],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(p.stderr.read())
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "digits_mlp.yaml"))
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--postgres", default=os.environ.get("CODESIGN_TEST_POSTGRES"))
    parser.add_argument("--quick", action="store_true", help="8 trials, 1 and 2 workers")
    parser.add_argument("--out", help="output directory (default: results/, quick: temporary)")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials = 8
    started = _results.stamp("quick" if args.quick else "full")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    _ = load_space(args.space).evaluator().engine  # pretrain (or load) the base once
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = {
        "bench": "workers",
        "space": pathlib.Path(args.space).name,
        "trials": args.trials,
        "cpus": os.cpu_count(),
    }
    stamp = f"{os.getpid()}-{time.time_ns()}"
    with tempfile.TemporaryDirectory() as tmp:
        backends = {"journal": ["--out", tmp]}
        if args.postgres:
            backends["postgres"] = ["--storage", args.postgres, "--out", tmp]
        for backend, flags in backends.items():
            for n in args.workers:
                seconds = run(
                    args.space, args.trials, n, flags, f"bench-{backend}-{n}-{stamp}", env
                )
                per_min = 60 * args.trials / seconds
                result[f"{backend}_{n}w_trials_per_min"] = round(per_min, 1)
                print(
                    f"{backend:>8}, {n} worker(s): {args.trials} trials in {seconds:6.1f} s "
                    f"= {per_min:6.1f} trials/min"
                )
    result.update(_results.finish(started))
    _results.write(result, _results.out_dir(args.out, args.quick, NAME), NAME)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
