"""Fine-tune throughput of any search space's engine: candidates/s and training FLOP/s.

Samples random candidates of the space (uniform over its dimensions), evaluates them as one
population twice with the same `Evaluator`: cold (compile included) and warm (the compiled
program reused; the engine's `traces` counter must stay at 1). Pretraining is not timed.
FLOPs are the engine's own count (6 per kept MAC per example per step, `finetune_flops`).

    python experiments/benchmarks/bench_space.py search_spaces/mnist1d_resnet.yaml --candidates 8

Last line: JSON, {"bench": "space", "space": ..., "cold_per_s": ..., "warm_per_s": ...,
"warm_gflop_per_s": ..., "traces": 1, "device": ...}.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from codesign.search.space import load_space


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--steps", type=int, help="fine-tune steps (default: the space's)")
    parser.add_argument("--pretrain-steps", type=int, help="default: the space's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", help="pretrained bases (default: codesign's cache)")
    args = parser.parse_args(argv)

    space = load_space(args.space)
    if args.steps:
        space = space.with_finetune(steps=args.steps)
    if args.pretrain_steps:
        import dataclasses

        pre = dataclasses.replace(space.problem.pretrain, steps=args.pretrain_steps)
        space = dataclasses.replace(space, problem=dataclasses.replace(space.problem, pretrain=pre))
    evaluator = space.evaluator(cache_dir=args.cache_dir)
    _ = evaluator.engine  # pretrain (or load) outside the timings
    rng = np.random.default_rng(args.seed)
    cands = [space.candidate(p) for p in space.sample_params(rng, args.candidates)]
    seeds = list(range(args.candidates))

    timings, results = [], None
    for _ in range(2):
        start = time.perf_counter()
        results = evaluator.evaluate(cands, seeds)
        timings.append(time.perf_counter() - start)
    flops = sum(r.finetune_flops for r in results)
    out = {
        "bench": "space",
        "space": space.name,
        "candidates": args.candidates,
        "steps": space.problem.finetune.steps,
        "cold_s": round(timings[0], 3),
        "warm_s": round(timings[1], 3),
        "cold_per_s": round(args.candidates / timings[0], 3),
        "warm_per_s": round(args.candidates / timings[1], 3),
        "warm_gflop_per_s": round(flops / timings[1] / 1e9, 3),
        "mean_accuracy": round(float(np.mean([r.accuracy for r in results])), 4),
        "traces": evaluator.engine.traces,
        "device": jax.devices()[0].device_kind,
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
