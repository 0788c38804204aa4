"""A population over 1, 2, 4... local devices: candidates per second, FLOP/s against the
device's measured peak matmul, and compile time, at population sizes 8 to 256.

The workload is `search_spaces/digits_mlp.yaml`'s fine-tune (64-128-128-10 at most, batch 64,
its steps, analog noise on) on random candidates of its space, from one random base (the
numbers do not depend on the base's training). For each device count d the engine is built with
CODESIGN_DEVICES=d (`codesign.engine.core.Placement`: each device runs the one-device program on
its slice of the population); each population size is run once cold (compile plus run) and then
timed on its best of REPEATS calls. FLOPs are the engine's own count of training FLOPs (6 per
kept MAC and example); the peak is the best of five float32 n x n x n `jnp.dot`s on one device.

Pretraining, data-parallel over the same device counts (`transfer.pretrain_program`: each device
a slice of every batch, gradients summed across them): a CIFAR-shaped ResNet-20 (batch 64) on
random images, examples per second on the best of REPEATS calls after a cold one.

On a CPU, JAX shows one device; this script then runs itself again with
XLA_FLAGS=--xla_force_host_platform_device_count=2, two devices sharing the same cores (what a
ratio near 1 shows there: splitting costs nothing, and buys nothing without more cores). On a
GPU node it uses the node's GPUs. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np

from codesign.data import datasets as data
from codesign.engine import finetune as transfer
from codesign.engine.core import DEVICES_ENV
from codesign.nn import networks

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _results  # noqa: E402
from bench_finetune import peak_matmul_flops, random_population  # noqa: E402

NAME = "bench_devices"
FORCED = "--xla_force_host_platform_device_count=2"


def _engine(devices: int, steps: int, base):
    os.environ[DEVICES_ENV] = str(devices)
    task = data.transfer_split("digits")
    spec = networks.NetworkSpec("mlp", task.source.x_train.shape[1:], 5, (128, 128))
    target = networks.layer_shapes(
        networks.NetworkSpec("mlp", spec.input_shape, task.target.num_classes, (128, 128))
    )
    tiles = (32, 64, 128, 256)  # digits_mlp.yaml's tile rows
    config = transfer.FinetuneConfig(
        steps=steps,
        batch_size=64,
        eval_draws=3,
        max_row_tiles=transfer.row_tile_bound(target, min(tiles)),
        row_block=math.gcd(*tiles),
    )
    if base is None:
        base = networks.sort_units(spec, networks.init_params(spec, jax.random.PRNGKey(0)))
    return transfer.Engine(spec, task, config, base_params=base), tiles


def measure(devices: int, sizes, steps: int, repeats: int, peak: float, seed: int, log) -> list:
    engine, tiles = _engine(devices, steps, None)
    rows_all = random_population(
        np.random.default_rng(seed), engine.spec, len(engine.shapes), max(sizes), tiles, None
    )
    out = []
    for size in sizes:
        population = transfer.Population.stack(rows_all[:size])
        start = time.perf_counter()
        result = engine.evaluate_population(population)
        cold = time.perf_counter() - start
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            engine.evaluate_population(population)
            runs.append(time.perf_counter() - start)
        run = min(runs)
        flops = float(np.sum(result.finetune_flops))
        row = {
            "devices": devices,
            "population": size,
            "run_s": round(run, 4),
            "compile_s": round(max(cold - run, 0.0), 2),
            "candidates_per_s": round(size / run, 3),
            "train_flops_per_s": flops / run,
            "fraction_of_one_device_peak": round(flops / run / peak, 5),
        }
        log(json.dumps(row))
        out.append(row)
    return out


def pretraining(counts, quick: bool, repeats: int, seed: int, log) -> list:
    """Examples/s of data-parallel pretraining on the first d devices, for d in counts."""
    if quick:
        spec, batch, steps = (
            networks.NetworkSpec("resnet", (8, 8, 3), 10, (4, 8, 16), depth=8),
            16,
            3,
        )
    else:
        spec, batch, steps = (
            networks.NetworkSpec("resnet", (32, 32, 3), 10, (16, 32, 64), depth=20),
            64,
            5,
        )
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4 * batch, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, len(x)).astype(np.int32)
    params = networks.init_params(spec, jax.random.PRNGKey(seed))
    config = transfer.PretrainConfig(steps=steps, batch_size=batch, seed=seed)
    out = []
    for d in counts:
        program = transfer.pretrain_program(spec, config, jax.local_devices()[:d])
        start = time.perf_counter()
        jax.block_until_ready(program(params, x, y))
        cold = time.perf_counter() - start
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(program(params, x, y))
            runs.append(time.perf_counter() - start)
        run = min(runs)
        row = {
            "devices": d,
            "network": f"resnet-{spec.depth} {list(spec.input_shape)}",
            "batch": batch,
            "steps": steps,
            "examples_per_s": round(batch * steps / run, 2),
            "compile_s": round(max(cold - run, 0.0), 2),
        }
        log(json.dumps(row))
        out.append(row)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small populations, 20 steps")
    parser.add_argument("--out", help="results directory (default: experiments/results)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if jax.default_backend() == "cpu" and len(jax.local_devices()) < 2:
        if FORCED in os.environ.get("XLA_FLAGS", ""):
            raise SystemExit("bench_devices: two forced host devices were asked for, not given")
        env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FORCED}".strip()}
        command = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])]
        done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        sys.stderr.write(done.stderr)
        print(done.stdout, end="")
        return json.loads(done.stdout.strip().splitlines()[-1])

    stamp = _results.stamp("quick" if args.quick else "full")
    log = lambda message: print(f"bench_devices: {message}", file=sys.stderr, flush=True)  # noqa: E731
    sizes = (4, 8) if args.quick else (8, 32, 128, 256)
    steps = 20 if args.quick else 150  # digits_mlp.yaml's fine-tune steps
    repeats = 1 if args.quick else 2
    n = len(jax.local_devices())
    counts = [d for d in (1, 2, 4, 8, 16) if d <= n]
    peak = peak_matmul_flops(512 if args.quick else 2048)
    log(f"{n} {jax.default_backend()} device(s); peak matmul {peak / 1e9:.1f} GFLOP/s on one")
    rows = [r for d in counts for r in measure(d, sizes, steps, repeats, peak, args.seed, log)]
    pretrain = pretraining(counts, args.quick, repeats, args.seed, log)
    by = {(r["devices"], r["population"]): r for r in rows}
    speedup = {
        f"{d}_over_1_at_{s}": round(by[d, s]["candidates_per_s"] / by[1, s]["candidates_per_s"], 3)
        for d in counts[1:]
        for s in sizes
    }
    result = {
        **_results.finish(stamp),
        "backend": jax.default_backend(),
        "device_kind": jax.local_devices()[0].device_kind,
        "forced_host_devices": FORCED in os.environ.get("XLA_FLAGS", ""),
        "steps": steps,
        "peak_matmul_flops_per_s_one_device": peak,
        "rows": rows,
        "candidates_per_s_speedup": speedup,
        "pretraining": pretrain,
        "pretraining_speedup": {
            f"{r['devices']}_over_1": round(r["examples_per_s"] / pretrain[0]["examples_per_s"], 3)
            for r in pretrain[1:]
        },
    }
    path = _results.write(result, _results.out_dir(args.out, args.quick, NAME), NAME)
    log(f"wrote {path}")
    print(json.dumps({"speedup": speedup, "rows": len(rows), "path": str(path)}))
    return result


if __name__ == "__main__":
    main()
