"""Run by tests/test_devices.py in a process with two forced host devices
(XLA_FLAGS=--xla_force_host_platform_device_count=2): a population over one and over two
devices, with and without early stopping. Prints one JSON line of what it found."""

import json
import os
import sys

import jax
import numpy as np

from codesign import data, early_stop, networks, transfer
from codesign.problem import EarlyStop
from tests.test_transfer import SIX

PRE = transfer.PretrainConfig(steps=50, batch_size=64)


def engine(devices: int, how: str, cache, base=None):
    os.environ["CODESIGN_DEVICES"] = str(devices)
    task = data.transfer_split("digits")
    spec = networks.NetworkSpec("mlp", task.source.input_shape, task.source.num_classes, (32, 32))
    config = transfer.FinetuneConfig(
        steps=12, batch_size=32, eval_draws=2, max_row_tiles=4, population_map=how
    )
    return transfer.Engine(spec, task, config, PRE, cache_dir=cache, base_params=base)


def same(a: dict, b: dict) -> list[str]:
    """The outputs in which a and b differ in any bit (NaN, a stopped candidate's accuracy,
    equals NaN)."""
    return sorted(
        k
        for k in a
        if not all(
            np.array_equal(x, y, equal_nan=np.issubdtype(np.asarray(x).dtype, np.inexact))
            for x, y in zip(jax.tree.leaves(a[k]), jax.tree.leaves(b[k]), strict=True)
        )
    )


def main(cache: str) -> dict:
    found = {"devices": len(jax.local_devices())}
    population = transfer.Population.stack(SIX)
    for how in ("sequential", "vmap"):
        one = engine(1, how, cache)
        two = engine(2, how, cache, base=(*one.base, None))
        seen = []  # (device, candidates) of every call of the training program
        program = two._train

        def recorded(population, *args, program=program, seen=seen):
            leaf = jax.tree.leaves(population)[0]
            seen.append((str(next(iter(leaf.devices()))), leaf.shape[0]))
            return program(population, *args)

        two._train = recorded
        split = two.evaluate_population(population, keep_params=True)
        found[how] = {"calls": list(seen), "traces": two.traces}
        if how == "sequential":  # one device, the whole population
            whole = one.evaluate_population(population, keep_params=True)
            found[how]["differs_from_one_device"] = same(whole, split)
        else:  # one device, each device's three candidates
            halves = [population.take(np.arange(i, i + 3)) for i in (0, 3)]
            halves = [one.evaluate_population(half, keep_params=True) for half in halves]
            halves = jax.tree.map(lambda *xs: np.concatenate(xs), *halves)
            found[how]["differs_from_one_device_per_slice"] = same(halves, split)
        if how == "sequential":  # early stopping: rungs, a stop, survivors repacked
            energy = lambda rows, masks: np.asarray(rows, np.float64)  # noqa: E731
            stop = EarlyStop(rungs=(0.5,), margin=0.0)  # cheaper and no less accurate: stop
            runs = [early_stop.Rungs(e).evaluate_population(population, energy, stop)
                    for e in (one, two)]  # fmt: skip
            found[how]["early_stop_differs"] = same(*runs)
            found[how]["early_stopped"] = int(np.sum(runs[1]["steps_run"] < 12))
    return found


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
