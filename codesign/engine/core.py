"""The training engine: every training loop in codesign is one call of `train`.

Pretraining (`codesign.engine.pretraining`), a population's fine-tunes and early-stopping rungs
(`codesign.engine.finetune`, `codesign.search.early_stop`) and the differentiable co-design program
(`codesign.search.gradient`) differ only in their loss, optimizer and state; the loop is here, once:

    TrainState  params, optimizer state, update mask (pruned weights get no update) and the loss
                of every step of the run: a typed pytree, vmapped and sliced like any array
    train       steps [start, start + steps) of a run: batches and noise keys drawn for the whole
                run and sliced, value-and-grad of the loss, the optimizer's update, the masked
                update applied; one `lax.scan`
    compiled    `jax.jit` with the population programs' compiler options
    Placement   the local devices a population is split over: each runs the one-device program
                on its slice of the candidates, with its own copy of base weights and data
    data_parallel  the devices one training run's batches are split over (pretraining)

Key streams, the one rule: a run's integer seed gives its streams as
``jax.random.split(jax.random.PRNGKey(seed), n)`` in this order (`streams`):

    init        fresh parameters (pretraining: the whole network; a candidate: its new head)
    batches     the run's [steps, batch] example indices (`batches`), drawn once for all steps
    noise       one key per step, ``split(noise, steps)``: the analog noise of training
    evaluation  scoring: ``split(evaluation, draws)`` noise draws; a rung's probe at step t:
                ``fold_in(evaluation, t)``

where n is the number of streams the run uses, the first n of the list: pretraining uses 2,
the co-design program 3 (its designs are scored by a fine-tune afterwards), a candidate's
fine-tune 4. A run in windows (early-stopping rungs) slices the whole run's batches and noise
keys, so its steps are those of one run straight through.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from codesign.errors import CodesignError
from codesign.nn import pruning

__all__ = [
    "Scores",
    "Streams",
    "TrainState",
    "batches",
    "compiled",
    "cross_entropy",
    "data_parallel",
    "streams",
    "train",
]


class Streams(NamedTuple):
    """A run's random streams (see the module docstring); absent ones are None."""

    init: jax.Array
    batches: jax.Array
    noise: jax.Array | None = None
    evaluation: jax.Array | None = None


def streams(seed, count: int = 4) -> Streams:
    """The first `count` streams of a run seeded `seed` (an int or a traced int32)."""
    return Streams(*jax.random.split(jax.random.PRNGKey(seed), count))


def batches(key, n_examples: int, steps: int, batch_size: int):
    """[steps, batch] example indices, reshuffled with `key` (sampling with replacement)."""
    return jax.random.randint(key, (steps, batch_size), 0, n_examples)


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """A run's state between windows of steps.

    params      the trained pytree
    opt_state   the optimizer's state for it
    mask        a params-shaped tree of 0/1 (0: the weight is pruned and never updated, so it
                stays exactly 0.0 whatever the optimizer's moments hold), or None: all trained
    losses      [run steps] each step's logged loss, written as the steps run (0 before)
    """

    params: Any
    opt_state: Any
    mask: Any
    losses: jax.Array

    @classmethod
    def create(cls, params, optimizer, run_steps: int, mask=None) -> TrainState:
        """Before the first step; `params` are masked here, so pruned weights start at 0."""
        if mask is not None:
            params = jax.tree.map(lambda p, m: p * m, params, mask)
        return cls(params, optimizer.init(params), mask, jnp.zeros(run_steps))

    @property
    def layer_masks(self) -> tuple:
        """The weight masks of a network's layers (a mask of `{"w", "b"}` dicts per layer)."""
        return tuple(layer["w"] for layer in self.mask)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Scores:
    """What fine-tuning a population gives back: one row per candidate in every field.

    val_accuracy, test_accuracy  the mean over analog noise draws (NaN: stopped early)
    digital_test_accuracy        the same weights on an exact digital chip (NaN: stopped early)
    final_loss, diverged         the mean of the last tenth of the logged losses; not finite
    finetune_flops               training FLOPs spent (kept weights only)
    kept_weights                 [B, layers] weights kept per layer
    params, masks                the trained weights and each layer's mask, or None (not kept)
    steps_run                    [B] steps each ran, or None: all (early stopping sets it)
    rung_val_accuracies          [B, rungs] validation accuracy at each rung reached (NaN after
                                 a stop), or None: no rungs
    """

    val_accuracy: Any
    test_accuracy: Any
    digital_test_accuracy: Any
    final_loss: Any
    diverged: Any
    finetune_flops: Any
    kept_weights: Any
    params: Any = None
    masks: Any = None
    steps_run: Any = None
    rung_val_accuracies: Any = None

    def without_weights(self) -> Scores:
        return dataclasses.replace(self, params=None, masks=None)


def adam_per_part(rates: dict[str, float]) -> optax.GradientTransformation:
    """Adam over a dict of parameter parts, each part at its own learning rate (the gradient
    program: the weights at the fine-tune's rate, the design variables at theirs)."""
    return optax.multi_transform(
        {name: optax.adam(rate) for name, rate in rates.items()}, {name: name for name in rates}
    )


def train(
    state: TrainState,
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    data: tuple[jax.Array, jax.Array],
    keys: Streams,
    *,
    batch_size: int,
    start=0,
    steps: int | None = None,
    has_aux: bool = False,
) -> TrainState:
    """Steps [start, start + steps) of a run of ``len(state.losses)`` steps (default: all).

    ``loss_fn(params, x_batch, y_batch, noise_key)`` gives the loss (noise_key is None where
    `keys` has no noise stream); with `has_aux`, ``(loss, logged)`` and `logged` is what
    `state.losses` records. Fully traceable (`start` may be traced; `steps` is static).
    """
    run_steps = state.losses.shape[0]
    steps = run_steps - start if steps is None else steps
    x, y = data
    window = {"idx": batches(keys.batches, x.shape[0], run_steps, batch_size)}
    if keys.noise is not None:
        window["key"] = jax.random.split(keys.noise, run_steps)
    window = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, steps), window)

    def step(carry, inputs):
        params, opt_state = carry
        idx = inputs["idx"]

        def loss(p):
            return loss_fn(p, x[idx], y[idx], inputs.get("key"))

        (value, grads) = jax.value_and_grad(loss, has_aux=has_aux)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        if state.mask is not None:
            updates = pruning.masked_update(updates, state.mask)
        logged = value[1] if has_aux else value
        return (optax.apply_updates(params, updates), opt_state), logged

    (params, opt_state), losses = jax.lax.scan(step, (state.params, state.opt_state), window)
    losses = jax.lax.dynamic_update_slice_in_dim(state.losses, losses, start, 0)
    return dataclasses.replace(state, params=params, opt_state=opt_state, losses=losses)


def _compiler_options() -> dict | None:
    """XLA options for the population programs: on CPU, LLVM at -O1 instead of the default -O2.

    A fine-tune runs for seconds, so compile time matters as much as run time. On CPU, -O1 halves
    the compile time and leaves the run time unchanged (the hot loops are Eigen matmuls, which
    are precompiled): see experiments/benchmarks/bench_finetune.py.
    """
    return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


def compiled(fn, **jit_kwargs):
    """`jax.jit` with the population programs' compiler options."""
    return jax.jit(fn, compiler_options=_compiler_options(), **jit_kwargs)


DEVICES_ENV = "CODESIGN_DEVICES"  # how many local devices a population is split over


def local_devices() -> list:
    """The local devices populations run on: all of them, or the first `CODESIGN_DEVICES`."""
    devices = jax.local_devices()
    limit = os.environ.get(DEVICES_ENV, "").strip()
    if not limit:
        return devices
    if not limit.isdigit() or not 1 <= int(limit) <= len(devices):
        raise CodesignError(
            f"--devices (or {DEVICES_ENV}) {limit!r}: give a whole number from 1 to "
            f"{len(devices)}, the {devices[0].platform} devices this machine has"
        )
    return devices[: int(limit)]


def devices_line() -> str:
    """What a search says first: the devices its populations run on."""
    devices = local_devices()
    n, platform = len(devices), devices[0].platform
    if n == 1:
        return f"populations run on 1 {platform} device"
    return f"populations run on {n} {platform} devices, each a slice of the candidates"


def data_parallel(batch_size: int, devices=None) -> list:
    """The devices one run's batches are split over (pretraining): the most of `devices`
    (default `local_devices`) that divide `batch_size` into equal slices."""
    devices = list(devices if devices is not None else local_devices())
    return devices[: max(k for k in range(1, len(devices) + 1) if batch_size % k == 0)]


class Replicated(NamedTuple):
    """Arrays every device reads whole (base weights, data): one copy per device."""

    copies: tuple


class Placement:
    """A population split over the local devices: each device runs the very program one device
    runs, on its slice of the candidates (a whole number each: `padded`); base weights and data
    are copied to every device once (`replicate`). The slices are dispatched to all devices
    before any result is read, so the devices work at once, and a candidate's numbers do not
    depend on how many devices there are (a program partitioned by XLA across devices rounds
    differently, and analog quantization turns that into different gradients).

    On one device it places and copies nothing: the programs run as they would without it.
    """

    def __init__(self, devices=None):
        self.devices = list(devices if devices is not None else local_devices())

    @property
    def size(self) -> int:
        return len(self.devices)

    def padded(self, n: int) -> int:
        """n rounded up to a whole number of candidates per device."""
        return -(-n // self.size) * self.size

    def replicate(self, tree):
        """`tree` copied to every device (base weights, data), for `call`."""
        if self.size == 1:
            return tree
        return Replicated(tuple(jax.device_put(tree, d) for d in self.devices))

    def call(self, program, split: tuple[bool, ...], *args):
        """``program(*args)`` over the devices: arguments marked True in `split` are cut into
        one slice of their first axis per device, `Replicated` ones give each device its copy,
        the rest are passed as they are (statics) or copied (arrays); the outputs' slices are
        joined on the host (NumPy)."""
        if self.size == 1:
            return program(*(a.copies[0] if isinstance(a, Replicated) else a for a in args))
        n = jax.tree.leaves([a for a, s in zip(args, split, strict=True) if s])[0].shape[0]
        if n % self.size:
            raise ValueError(f"{n} candidates do not split over {self.size} devices: pad them")
        k = n // self.size
        outs = []
        for d, device in enumerate(self.devices):  # dispatch all first: the devices run at once
            local = []
            for a, s in zip(args, split, strict=True):
                if s:
                    a = jax.device_put(
                        jax.tree.map(lambda x, d=d: x[d * k : (d + 1) * k], a), device
                    )
                elif isinstance(a, Replicated):
                    a = a.copies[d]
                elif isinstance(a, jax.Array | np.ndarray):
                    a = jax.device_put(a, device)
                local.append(a)
            outs.append(program(*local))
        return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *outs)
