"""Run by tests/test_devices.py in a process with two forced host devices
(XLA_FLAGS=--xla_force_host_platform_device_count=2): a population over one and over two
devices, with and without early stopping, and pretraining with each batch split over both.
Prints one JSON line of what it found."""

import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from codesign.data import datasets as data
from codesign.engine import finetune as transfer
from codesign.nn import networks
from codesign.search import early_stop
from codesign.search.problem import EarlyStop
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


def same(a, b) -> list[str]:
    """The fields (of two `Scores`, or keys of two dicts) in which a and b differ in any bit
    (NaN, a stopped candidate's accuracy, equals NaN)."""
    a, b = (x if isinstance(x, dict) else dataclasses.asdict(x) for x in (a, b))
    return sorted(
        k
        for k in a
        if not all(
            np.array_equal(x, y, equal_nan=np.issubdtype(np.asarray(x).dtype, np.inexact))
            for x, y in zip(jax.tree.leaves(a[k]), jax.tree.leaves(b[k]), strict=True)
        )
    )


def pretraining() -> dict:
    """Pretraining on one device and data-parallel over two: an MLP on digits and a 2-D ResNet
    on random images, batches of 48 (no other dimension is 48 or 24: a program that computes
    on whole batches has [48, ...] arrays, one that splits them [24, ...])."""
    task = data.transfer_split("digits").source
    rng = np.random.default_rng(0)
    cases = {
        "mlp": (networks.NetworkSpec("mlp", task.input_shape, task.num_classes, (40, 20)),
                task.x_train, task.y_train, 48),
        "resnet": (networks.NetworkSpec("resnet", (8, 8, 3), 5, (3, 4, 5), depth=8),
                   rng.normal(size=(300, 8, 8, 3)).astype(np.float32),
                   rng.integers(0, 5, 300).astype(np.int32), 48),
    }  # fmt: skip
    found = {}
    for name, (spec, x, y, batch) in cases.items():
        config = transfer.PretrainConfig(steps=30, batch_size=batch)
        params = networks.init_params(spec, jax.random.PRNGKey(0))
        x, y = jnp.asarray(x), jnp.asarray(y)
        one = transfer.pretrain_program(spec, config, jax.local_devices()[:1])
        two = transfer.pretrain_program(spec, config).lower(params, x, y).compile()  # once
        program = two.as_text()
        (a, loss_a), (b, loss_b), (c, _) = (f(params, x, y) for f in (one, two, two))
        found[name] = {
            "sums_gradients_across_devices": "all-reduce" in program,
            "each_device_a_half_batch": f"f32[{batch // 2}," in program
            and f"f32[{batch}," not in program,
            "loss_max_abs_difference": float(np.max(np.abs(np.asarray(loss_a - loss_b)))),
            "weights_max_relative_difference": max(
                float(jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(u)))
                for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
            ),
            "repeatable": not same({"p": b}, {"p": c}),
            "losses_fall": float(loss_b[-5:].mean()) < float(loss_b[:5].mean()),
        }
    return found


def main(cache: str) -> dict:
    found = {"devices": len(jax.local_devices()), "pretraining": pretraining()}
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
            found[how]["early_stopped"] = int(np.sum(runs[1].steps_run < 12))
    return found


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
