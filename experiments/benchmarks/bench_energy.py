"""Throughput of the energy model: random candidate designs of a 4-layer network per second.

Each candidate has its own widths, analog fractions, sparsities, pruning granularities, tile
size and ADC bits; all are evaluated by one jit-compiled, vmapped call of the model. The baseline
in the same run is the same model called one candidate at a time (jitted, no vmap) on a sample.
Last line: JSON, {"bench": "energy", "candidates_per_s": ..., ...}; also written to
`results/bench_energy.json` (`--quick`: a temporary directory unless `--out` is given).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from codesign.hardware.energy import GRANULARITIES, Design, estimate_energy, estimate_energy_batch
from codesign.hardware.presets import get_preset
from codesign.nn.networks import chain

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import _results  # noqa: E402

NAME = "bench_energy"
NETWORK = chain([784, 512, 512, 256, 10])


def random_population(size: int, seed: int = 0):
    """Random designs and matching accelerators (tile size and ADC bits per candidate)."""
    rng = np.random.default_rng(seed)
    n = len(NETWORK)
    max_widths = np.array([layer.out_units for layer in NETWORK])
    widths = rng.integers(1, max_widths + 1, (size, n))
    widths[:, -1] = max_widths[-1]
    designs = Design(
        widths=jnp.asarray(widths, jnp.float32),
        analog_fraction=jnp.asarray(rng.random((size, n)), jnp.float32),
        sparsity=jnp.asarray(rng.random((size, n)) * 0.9, jnp.float32),
        granularity=jnp.asarray(rng.integers(0, len(GRANULARITIES), (size, n)), jnp.int32),
    )
    tile = rng.choice([32.0, 64.0, 128.0, 256.0, 512.0], size)
    accs = dataclasses.replace(
        get_preset("hybrid-22nm"),
        tile_rows=jnp.asarray(tile, jnp.float32),
        tile_cols=jnp.asarray(tile, jnp.float32),
        adc_bits=jnp.asarray(rng.integers(3, 11, size), jnp.float32),
    )
    return designs, accs


def api_over_core(size: int, repeats: int, seed: int = 0) -> tuple[float, float]:
    """Seconds of `Evaluator.estimate` (candidates in, results out) on `size` random candidates
    of `search_spaces/digits_mlp.yaml`, and of the jitted model inside it on the same arrays,
    each the best of `repeats` compiled calls."""
    from codesign.hardware.energy import estimate_energy_batch as core
    from codesign.search.problem import Candidate
    from codesign.search.space import load_space

    space = load_space(
        pathlib.Path(__file__).resolve().parents[2] / "search_spaces" / "digits_mlp.yaml"
    )
    evaluator = space.evaluator()
    rng = np.random.default_rng(seed)
    n = space.problem.model.num_layers
    cands = [
        Candidate(
            widths=tuple(int(w) for w in rng.integers(1, 17, 2) * 8),
            sparsity=(float(rng.choice(np.arange(0, 0.85, 0.1))),) * n,
            granularity=(str(rng.choice(GRANULARITIES)),) * n,
            analog_fraction=tuple(float(a) for a in rng.choice([0, 0.25, 0.5, 0.75, 1], n)),
            tile=(int(t),) * 2,
            adc_bits=int(rng.integers(3, 9)),
        )
        for t in rng.choice([32, 64, 128, 256], size)
    ]
    design, accs, _ = evaluator.arrays(cands)

    def best(fn):
        fn()
        return min(_seconds(fn) for _ in range(repeats))

    api_s = best(lambda: evaluator.estimate(cands))
    core_s = best(lambda: jax.block_until_ready(core(evaluator.shapes, design, accs).energy_j))
    return api_s, core_s


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-sample", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="2,000 candidates, CI smoke")
    parser.add_argument("--out", help="output directory (default: results/, quick: temporary)")
    args = parser.parse_args(argv)
    if args.quick:
        args.candidates, args.repeats, args.baseline_sample = 2000, 1, 5
    stamp = _results.stamp("quick" if args.quick else "full")

    designs, accs = random_population(args.candidates)
    start = time.perf_counter()
    jax.block_until_ready(estimate_energy_batch(NETWORK, designs, accs).energy_j)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready(estimate_energy_batch(NETWORK, designs, accs).energy_j)
        times.append(time.perf_counter() - start)
    per_s = args.candidates / min(times)

    # Baseline: one candidate per call, jitted once, as a loop in user code would do it.
    one = jax.jit(lambda d, a: estimate_energy(NETWORK, d, a).energy_j)
    k = args.baseline_sample
    sample = [
        (
            jax.tree.map(lambda x, i=i: x[i], designs),
            jax.tree.map(lambda x, i=i: jnp.broadcast_to(x, (args.candidates,))[i], accs),
        )
        for i in range(k)
    ]
    jax.block_until_ready(one(*sample[0]))
    start = time.perf_counter()
    for d, a in sample:
        jax.block_until_ready(one(d, a))
    loop_per_s = k / (time.perf_counter() - start)

    api_s, core_s = api_over_core(args.candidates, args.repeats)
    result = {
        "bench": "energy",
        "candidates": args.candidates,
        "candidates_per_s": round(per_s),
        "loop_candidates_per_s": round(loop_per_s),
        "speedup_vs_loop": round(per_s / loop_per_s, 1),
        "estimate_api_s": float(f"{api_s:.4g}"),  # significant figures: a fast core (a few ms)
        "estimate_core_s": float(f"{core_s:.4g}"),  # keeps its ratio to the API exact
        "estimate_api_over_core": round(api_s / core_s, 1),
        "compile_s": round(compile_s, 3),
        "device": str(jax.devices()[0]),
        **_results.finish(stamp),
    }
    _results.write(result, _results.out_dir(args.out, args.quick, NAME), NAME)
    print(
        f"vmapped + jitted: {per_s:,.0f} candidates/s ({args.candidates:,} per call, best of "
        f"{args.repeats}; first call incl. compile {compile_s:.2f} s)"
    )
    print(f"one-by-one jitted loop (baseline): {loop_per_s:,.0f} candidates/s")
    print(
        f"Evaluator.estimate on {args.candidates:,} candidates: {api_s:.3f} s, "
        f"{result['estimate_api_over_core']}x the jitted model inside it ({core_s:.3f} s)"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
