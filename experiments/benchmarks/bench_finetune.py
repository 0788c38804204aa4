"""The fine-tune engine against plain Flax/optax loops doing the same work, in one process.

Every baseline is written here, with Flax (linen) and optax alone, the way a competent JAX user
writes it in an afternoon; none calls codesign. Each is timed in this process next to the
engine on the same shapes, steps and batch sizes, compiled programs timed on a second call:

1. Digits MLP (`search_spaces/digits_mlp.yaml`: 64-128-128-10 at most, batch 64), a population
   of candidates fine-tuned from one base. Baseline: masked params and updates, `lax.scan` over
   steps, `vmap` over candidates, one `jit`, no analog, then one accuracy pass over validation
   and test. Engine: `transfer.Engine` on the same random candidates, analog noise on (its
   program also scores each candidate on 3 noisy draws and a digital pass), and again with
   every candidate all-digital (analog fraction 0).
2. ResNet-20 on CIFAR-shaped data (a synthetic CIFAR-10 written here in the official python
   format, batch 128). Baseline: a `nn.Conv` ResNet-20 with the same widths and shortcuts (3x3
   stem, 3 stages of 3 basic blocks, strided 1x1 projections, no normalisation, second conv of a
   block zero-initialised), its jitted Adam step called in a Python loop as the Flax examples
   do. Engine: the digital pretraining loop (`transfer.pretrain_program`) and the analog
   fine-tune of a population of full-width candidates, per step and candidate (the engine's
   training program timed alone, from the inherited state: scoring and inheritance drop out).
3. MNIST-1D CNN (`search_spaces/mnist1d_cnn.yaml`'s network), a population of full-width,
   unpruned candidates (computed and useful FLOPs are equal), analog on. Baseline: the plain
   Flax CNN trained per candidate (jitted step, Python loop) and vmapped over candidates; the
   faster of the two is the baseline. Engine: its training program alone, as for ResNet-20
   (the whole evaluation, with inheritance and scoring, is reported too).

FLOP/s are training FLOPs (6 per MAC and example) over seconds. The programs compared are timed
taking turns, REPEATS rounds, each keeping its best: the peak (five n x n x n float32 `jnp.dot`s)
with the ResNet-20 programs, the Flax CNNs with the engine's. The CIFAR-10 ResNet-20 search
(`search_spaces/cifar10_resnet20.yaml`: its pretraining steps, 40 trials of its fine-tune steps
and scoring) is projected from these timings. Peak memory (resident set, GB) is measured in
child processes: a ResNet-20 population of 8 on CIFAR shapes, and a real `codesign search` of
`search_spaces/mnist1d_resnet.yaml` (one batch of its trials).

Last line: JSON with the ratios (engine over baseline, in time) and fractions of peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import pickle
import re
import subprocess
import sys
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from codesign.data import datasets as data
from codesign.engine import finetune as transfer
from codesign.nn import networks

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import _results  # noqa: E402

NAME = "bench_finetune"
ROOT = pathlib.Path(__file__).resolve().parents[2]
SPACES = ROOT / "search_spaces"


REPEATS = [3]  # compiled programs: the best of this many calls (1 in quick runs)
MLP_REPEATS = [5]  # the MLP's runs, taking turns (1 in quick runs)


def timed(fn, *args):
    """(result, seconds) of fn(*args), waiting for every array."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def best_of(fn, *args):
    """(result, seconds): the fastest of REPEATS calls of a compiled fn (a shared machine's
    load only ever adds time)."""
    runs = [timed(fn, *args) for _ in range(REPEATS[0])]
    return runs[0][0], min(t for _, t in runs)


def taking_turns(calls: dict) -> dict[str, list[float]]:
    """Every call's time in each of REPEATS rounds, the compiled programs ``calls`` ({name:
    (fn, *args)}) taking turns in every round. A ratio of two programs' best times is then
    measured over the same stretch of a shared machine's load (timed one after the other, a
    change of load between them moved a ratio by 1.5x)."""
    runs = {name: [] for name in calls}
    for _ in range(REPEATS[0]):
        for name, (fn, *args) in calls.items():
            runs[name].append(timed(fn, *args)[1])
    return runs


def peak_dot(n: int, calls: int = 1) -> tuple:
    """(fn, *args) of ``calls`` n x n x n float32 `jnp.dot`s one after another, compiled, and
    their FLOPs."""
    a = jnp.ones((n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()

    def dots(a, b):
        return [dot(a, b) for _ in range(calls)]

    return (dots, a, a), 2.0 * n**3 * calls


def peak_matmul_flops(n: int, repeats: int = 5) -> float:
    """This machine's float32 matmul FLOP/s now: the best of `repeats` n x n x n `jnp.dot`s."""
    (dots, a, b), flops = peak_dot(n)
    return flops / min(timed(dots, a, b)[1] for _ in range(repeats))


def _cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# --- the baselines: plain Flax/optax ---


class FlaxMLP(nn.Module):
    widths: tuple[int, ...]
    num_classes: int

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for w in self.widths:
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(self.num_classes)(x)


class FlaxCNN(nn.Module):
    """MNIST-1D ConvBase: 1-D convs (kernel, stride, padding per layer), a dense head over the
    flattened last map."""

    widths: tuple[int, ...]
    kernels: tuple[int, ...]
    strides: tuple[int, ...]
    paddings: tuple[int, ...]
    num_classes: int

    @nn.compact
    def __call__(self, x):
        for w, k, s, p in zip(self.widths, self.kernels, self.strides, self.paddings, strict=True):
            x = nn.relu(nn.Conv(w, (k,), strides=(s,), padding=((p, p),))(x))
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class FlaxBlock(nn.Module):
    features: int
    stride: int

    @nn.compact
    def __call__(self, x):
        s = (self.stride, self.stride)
        r = nn.relu(nn.Conv(self.features, (3, 3), strides=s, padding=((1, 1), (1, 1)))(x))
        r = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=nn.zeros)(r)
        if self.stride > 1 or x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), strides=s, padding="VALID")(x)
        return nn.relu(r + x)


class FlaxResNet(nn.Module):
    """A CIFAR ResNet (He et al. 2016, sec. 4.2) without normalisation: `blocks` per stage."""

    widths: tuple[int, ...]
    blocks: int
    num_classes: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.widths[0], (3, 3), padding=((1, 1), (1, 1)))(x))
        for stage, w in enumerate(self.widths):
            for b in range(self.blocks):
                x = FlaxBlock(w, 2 if stage > 0 and b == 0 else 1)(x)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


def flax_train_step(model: nn.Module, optimizer):
    """The jitted train step of the Flax examples: (params, opt_state, x, y) -> updated, loss."""

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: _cross_entropy(model.apply(p, x), y))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def flax_loop(step, params, opt_state, batches):
    """Run `step` over (x, y) batches in a Python loop; returns params and the last loss."""
    loss = None
    for x, y in batches:
        params, opt_state, loss = step(params, opt_state, x, y)
    return jax.block_until_ready((params, loss))


def flax_masked_population(model: nn.Module, optimizer, steps: int, batch: int):
    """The competent population loop: masked params and updates, `lax.scan` over steps, `vmap`
    over candidates, one `jit`; then validation+test accuracy."""

    def one(params, masks, seed, x, y, x_eval, y_eval):
        idx = jax.random.randint(jax.random.PRNGKey(seed), (steps, batch), 0, x.shape[0])
        params = jax.tree.map(jnp.multiply, params, masks)

        def step(carry, i):
            p, s = carry
            loss, g = jax.value_and_grad(lambda q: _cross_entropy(model.apply(q, x[i]), y[i]))(p)
            u, s = optimizer.update(g, s, p)
            return (optax.apply_updates(p, jax.tree.map(jnp.multiply, u, masks)), s), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), idx)
        hits = jnp.argmax(model.apply(params, x_eval), -1) == y_eval
        return jnp.mean(hits), losses[-1]

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None, None, None, None)))


# --- 1. the digits MLP ---


def random_population(rng, spec, layers: int, n: int, tiles, analog: float | None) -> dict:
    """n random candidates as `transfer.Population` rows (analog None: random fractions)."""
    rows = []
    for i in range(n):
        widths = [int(rng.integers(1, w // 8 + 1)) * 8 for w in spec.widths]
        fraction = [float(rng.choice([0, 0.25, 0.5, 0.75, 1.0])) for _ in range(layers)]
        rows.append(
            {
                "widths": widths,
                "sparsity": [float(rng.choice(np.arange(0, 0.85, 0.1)))] * layers,
                "granularity": [int(rng.integers(0, 4))] * layers,
                "analog_fraction": fraction if analog is None else [analog] * layers,
                "tile_rows": int(rng.choice(tiles)),
                "tile_cols": 128,
                "adc_bits": int(rng.integers(3, 9)),
                "dac_bits": 8,
                "seed": i,
            }
        )
    return rows


def bench_mlp(args, log) -> dict:
    task = data.transfer_split("digits")
    spec = networks.NetworkSpec("mlp", task.source.x_train.shape[1:], 5, (128, 128))
    target = dataclasses.replace(spec, num_classes=task.target.num_classes)
    shapes = networks.layer_shapes(target)
    tiles = (32, 64, 128, 256)  # digits_mlp.yaml's tile rows
    base = networks.sort_units(spec, networks.init_params(spec, jax.random.PRNGKey(0)))
    config = transfer.FinetuneConfig(
        steps=args.mlp_steps,
        batch_size=64,
        eval_draws=3,
        max_row_tiles=transfer.row_tile_bound(shapes, min(tiles)),
        row_block=math.gcd(*tiles),
    )
    engine = transfer.Engine(spec, task, config, base_params=base)
    rng = np.random.default_rng(args.seed)
    rows = random_population(rng, target, len(shapes), args.mlp_candidates, tiles, None)
    population = transfer.Population.stack(rows)
    digital = transfer.Population.stack(
        [{**r, "analog_fraction": [0.0] * len(shapes)} for r in rows]
    )

    # The pcm device model (`codesign.hardware.analog`), read a year after programming, on the same
    # work.
    pcm = dataclasses.replace(config, device="pcm", inference_time=365.0 * 86400.0)
    pcm_engine = transfer.Engine(spec, task, pcm, base_params=base)

    runs = {
        "engine": (engine.evaluate_population, population),
        "engine_all_digital": (engine.evaluate_population, digital),
        "engine_pcm": (pcm_engine.evaluate_population, population),
    }

    # The baseline on the same candidates: width masks x unstructured masks at their sparsity.
    model = FlaxMLP((128, 128), task.target.num_classes)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, *spec.input_shape)))
    names = sorted(params["params"])  # Dense_0, Dense_1, Dense_2
    for name, layer in zip(names[:-1], base[:-1], strict=True):
        params["params"][name] = {"kernel": layer["w"], "bias": layer["b"]}
    n = len(rows)
    stacked = jax.tree.map(lambda p: jnp.broadcast_to(p, (n, *p.shape)), params)
    masks = jax.tree.map(np.ones_like, jax.tree.map(np.asarray, stacked))
    for c, row in enumerate(rows):
        ins, outs = networks.layer_widths(target, np.asarray(row["widths"]))
        for l, name in enumerate(names):
            keep = rng.random(masks["params"][name]["kernel"][c].shape) >= row["sparsity"][l]
            keep[ins[l] :, :] = False
            keep[:, outs[l] :] = False
            masks["params"][name]["kernel"][c] = keep
            masks["params"][name]["bias"][c, outs[l] :] = 0
    masks = jax.tree.map(jnp.asarray, masks)
    run_flax = flax_masked_population(model, optax.adam(3e-3), args.mlp_steps, 64)
    t = task.target
    x_eval, y_eval = np.concatenate([t.x_val, t.x_test]), np.concatenate([t.y_val, t.y_test])
    runs["flax"] = (run_flax, stacked, masks, jnp.arange(n), t.x_train, t.y_train, x_eval, y_eval)
    # Compiled first; then the runs take turns, so a slow spell of the shared machine slows all
    # of them alike instead of one; each keeps its best of MLP_REPEATS.
    out = {name: {"cold_s": timed(*call)[1], "run_s": math.inf} for name, call in runs.items()}
    for _ in range(MLP_REPEATS[0]):
        for name, call in runs.items():
            result, seconds = timed(*call)
            out[name]["run_s"] = min(out[name]["run_s"], seconds)
            accuracy = result[0] if name == "flax" else result.val_accuracy
            out[name]["val_accuracy"] = np.asarray(accuracy).tolist()
    log(
        f"digits MLP, {n} candidates x {args.mlp_steps} steps (compiled): Flax "
        f"{out['flax']['run_s']:.2f} s, engine {out['engine']['run_s']:.2f} s (all digital "
        f"{out['engine_all_digital']['run_s']:.2f} s; pcm device "
        f"{out['engine_pcm']['run_s']:.2f} s)"
    )
    return out


# --- 2. ResNet-20 on CIFAR shapes ---


def synthetic_cifar10(folder: pathlib.Path, per_class_train: int, per_class_test: int, seed=0):
    """A CIFAR-10 python archive's folder (data_batch_1..5, test_batch): random images, each
    class brighter in one colour plane so that there is something to learn."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def batch(per_class):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 200, size=(len(labels), 3, 32, 32), dtype=np.uint8)
        images[np.arange(len(labels)), labels % 3] += (labels * 5).astype(np.uint8)[:, None, None]
        return {b"data": images.reshape(len(labels), 3072), b"labels": labels.tolist()}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_class_train // 5)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(per_class_test)))
    return folder


def full_width_population(widths, n: int, layers: int, tiles) -> transfer.Population:
    """n full-width, unpruned, all-analog candidates cycling through the tile sizes."""
    return transfer.Population.stack(
        [
            {
                "widths": list(widths),
                "sparsity": [0.0] * layers,
                "granularity": [0] * layers,
                "analog_fraction": [1.0] * layers,
                "tile_rows": tiles[i % len(tiles)],
                "tile_cols": 128,
                "adc_bits": 6,
                "dac_bits": 8,
                "seed": i,
            }
            for i in range(n)
        ]
    )


def resnet_spec(depth: int) -> networks.NetworkSpec:
    return networks.NetworkSpec("resnet", (32, 32, 3), 5, (16, 32, 64), depth=depth)


def resnet_engine(task, steps: int, batch: int, base, depth: int):
    spec = resnet_spec(depth)
    target = dataclasses.replace(spec, num_classes=task.target.num_classes)
    tiles = (64, 128, 256)  # cifar10_resnet20.yaml's tile rows
    config = transfer.FinetuneConfig(
        steps=steps,
        batch_size=batch,
        eval_draws=2,
        max_row_tiles=transfer.row_tile_bound(networks.layer_shapes(target), min(tiles)),
        row_block=math.gcd(*tiles),
    )
    return transfer.Engine(spec, task, config, base_params=base), tiles


def bench_resnet(args, folder: pathlib.Path, log) -> dict:
    task = data.transfer_split(str(folder))
    spec = resnet_spec(args.resnet_depth)
    shapes = networks.layer_shapes(spec)
    batch, steps = args.resnet_batch, args.resnet_steps
    rng = np.random.default_rng(args.seed)
    x, y = jnp.asarray(task.source.x_train), jnp.asarray(task.source.y_train)
    batches = [
        (x[i], y[i]) for i in (rng.integers(0, len(y), batch) for _ in range(steps))
    ]  # fmt: skip

    model = FlaxResNet((16, 32, 64), (args.resnet_depth - 2) // 6, 5)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])  # one program, not one per draw
    optimizer = optax.adam(2e-3)
    step = flax_train_step(model, optimizer)
    _, compile_s = timed(flax_loop, step, params, optimizer.init(params), batches[:1])

    config = transfer.PretrainConfig(steps=steps, batch_size=batch, learning_rate=2e-3)
    run = transfer.pretrain_program(spec, config)
    init = networks.init_params(spec, jax.random.PRNGKey(0))
    _, pre_cold = timed(run, init, x, y)

    # The analog fine-tune, per step and candidate: the training program (`Engine._train`, what
    # `evaluate_population` runs between inheriting and scoring) timed alone; the rest of a whole
    # evaluation is the per-candidate overhead. (The difference of two step counts, used before,
    # went negative under load in quick mode.) The same candidates all-digital (analog fraction
    # 0: `hybrid` skips the simulation) give the step without it.
    base = networks.sort_units(spec, init)
    n, s = args.resnet_candidates, args.resnet_ft_steps
    engine, tiles = resnet_engine(task, s, batch, base, args.resnet_depth)
    population = full_width_population((16, 32, 64), n, len(engine.shapes), tiles)
    digital = dataclasses.replace(population, analog_fraction=population.analog_fraction * 0)
    _, cold = timed(engine.evaluate_population, population)
    _, whole = timed(engine.evaluate_population, population)  # minutes: timed once
    state, digital_state = engine._init(population, engine.base), engine._init(digital, engine.base)
    timed(engine._train, digital, digital_state, engine.data, 0, s, False)  # compiled
    # Five matmuls a round (about 0.7 s, against 0.13-0.23 s for the one of 2026-12-07's first
    # run of this scheme, whose best of three rounds moved by a fifth between runs).
    peak_call, peak_flops = peak_dot(512 if args.quick else 2048, calls=5)
    # Every program here, and the peak that the fine-tune's FLOP/s is a fraction of, taking
    # turns: one call of the fine-tune measured 1.03 s and 2.21 s per step in two runs of the
    # same code on this shared machine, and the peak 118-148 GFLOP/s within an hour.
    runs = taking_turns(
        {
            "flax": (flax_loop, step, params, optimizer.init(params), batches),
            "pretrain": (run, init, x, y),
            "analog": (engine._train, population, state, engine.data, 0, s, False),
            "digital": (engine._train, digital, digital_state, engine.data, 0, s, False),
            "peak": peak_call,
        }
    )
    flax_step, pretrain_step = min(runs["flax"]) / steps, min(runs["pretrain"]) / steps
    name = f"ResNet-{args.resnet_depth}"
    log(f"{name} step, batch {batch}: Flax {flax_step:.3f} s, engine {pretrain_step:.3f} s")
    train_s = min(runs["analog"])
    log(f"  engine, {n} candidates x {s} fine-tune steps: {whole:.1f} s ({cold:.1f} s cold)")
    finetune_step = train_s / s / n
    overhead = max(whole - train_s, 0.0) / n  # inheritance, scoring etc., per candidate
    floor = patch_floor(engine, min(runs["digital"]) / s / n, batch)
    log(
        f"  all-digital {floor['all_digital_step_s']:.3f} s/step; input patches "
        f"{floor['patch_bytes'] / 1e6:.0f} MB, at least {floor['patch_floor_s']:.3f} s"
    )
    t = task.target
    macs = sum(s.macs for s in networks.layer_shapes(engine.spec))
    return {
        "flax_step_s": flax_step,
        "flax_compile_s": compile_s,
        "engine_pretrain_step_s": pretrain_step,
        "engine_pretrain_compile_s": pre_cold - pretrain_step * steps,
        "engine_finetune_step_s": finetune_step,
        "peak_matmul_flops_per_s": peak_flops / min(runs["peak"]),
        "runs_s": runs,
        "engine_overhead_per_candidate_s": overhead,
        "eval_examples": int(len(t.y_val) + len(t.y_test)),
        "finetune_flops_per_step": 6.0 * macs * batch,
        "pretrain_macs": sum(s.macs for s in shapes),
        "candidates": n,
        "batch": batch,
        "depth": args.resnet_depth,
        **floor,
    }


def patch_floor(engine, all_digital_step_s: float, batch: int) -> dict:
    """What an analog fine-tune step of one candidate cannot go below on this machine.

    The all-digital step (``all_digital_step_s``, measured by the caller) is the step without
    the simulation. The simulation multiplies each analog conv layer's input patches
    ([batch x positions, K] float32, written from the feature map and read by the crossbar
    product: the DAC scales every patch by its own abs-max, as aihwkit does, so no direct
    convolution can stand in). Writing and reading them once takes their bytes over the rate of
    one elementwise pass (read and written) over the largest of them: the floor. Its noise,
    converters and partial sums would cost more on top.
    """
    sizes = [
        batch * shape.positions * shape.rows
        for shape in networks.layer_shapes(engine.spec)
        if shape.kernel_area > 1
    ]
    largest = jnp.ones((max(sizes, default=1),), jnp.float32)
    stream = jax.jit(lambda v: v * 1.5 + 0.5)
    _, stream_s = best_of(stream, largest)
    bandwidth = 2 * largest.nbytes / stream_s  # bytes read and written per second
    patch_bytes = 4 * sum(sizes)
    return {
        "all_digital_step_s": all_digital_step_s,
        "stream_bytes_per_s": bandwidth,
        "patch_bytes": patch_bytes,
        "patch_floor_s": 2 * patch_bytes / bandwidth,
    }


# --- 3. the MNIST-1D CNN ---


def bench_cnn(args, log) -> dict:
    task = data.transfer_split("mnist1d")
    spec = networks.default_spec("cnn", task.source.x_train.shape[1:], 5)
    target = dataclasses.replace(spec, num_classes=task.target.num_classes)
    shapes = networks.layer_shapes(target)
    tiles = (32, 64, 128)  # mnist1d_cnn.yaml's tile rows
    steps, batch, n = args.cnn_steps, 100, args.cnn_candidates
    config = transfer.FinetuneConfig(
        steps=steps,
        batch_size=batch,
        eval_draws=3,
        max_row_tiles=transfer.row_tile_bound(shapes, min(tiles)),
        row_block=math.gcd(*tiles),
    )
    base = networks.init_params(spec, jax.random.PRNGKey(0))
    engine = transfer.Engine(spec, task, config, base_params=base)
    population = full_width_population(spec.widths, n, len(shapes), tiles)
    out, cold = timed(engine.evaluate_population, population)  # its FLOPs: the candidates'
    flops = float(np.sum(out.finetune_flops))
    # The engine's training program alone (as for ResNet-20 below: inheritance and scoring, whose
    # FLOPs are not counted, drop out), from the inherited state; the whole evaluation is timed too.
    state = engine.init_population(population)
    train = (engine.train_population, population, state, 0, steps, False)

    model = FlaxCNN(spec.widths, spec.kernel_sizes, spec.strides, spec.paddings, 5)
    x, y = jnp.asarray(task.target.x_train), jnp.asarray(task.target.y_train)
    rng = np.random.default_rng(args.seed)
    idx = [rng.integers(0, len(y), batch) for _ in range(steps)]
    optimizer = optax.adam(3e-3)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])  # one program, not one per draw
    step = flax_train_step(model, optimizer)
    flax_loop(step, params, optimizer.init(params), [(x[idx[0]], y[idx[0]])])

    def one_by_one_loop():
        for _ in range(n):
            flax_loop(step, params, optimizer.init(params), [(x[i], y[i]) for i in idx])

    stacked = jax.tree.map(lambda p: jnp.stack([p] * n), params)
    vstep = jax.jit(jax.vmap(step, in_axes=(0, 0, None, None)))
    vstate = jax.vmap(optimizer.init)(stacked)
    flax_loop(vstep, stacked, vstate, [(x[idx[0]], y[idx[0]])])
    runs = taking_turns(
        {
            "engine_train": train,
            "engine_whole": (engine.evaluate_population, population),
            "flax_one_by_one": (one_by_one_loop,),
            "flax_vmapped": (flax_loop, vstep, stacked, vstate, [(x[i], y[i]) for i in idx]),
        }
    )
    best = {name: min(times) for name, times in runs.items()}
    flax_s = min(best["flax_one_by_one"], best["flax_vmapped"])
    log(
        f"MNIST-1D CNN, {n} candidates x {steps} steps: Flax {best['flax_one_by_one']:.2f} s one "
        f"by one, {best['flax_vmapped']:.2f} s vmapped; engine {best['engine_train']:.2f} s "
        f"training, {best['engine_whole']:.2f} s with inheritance and scoring ({cold:.1f} s cold)"
    )
    return {
        "engine_train_s": best["engine_train"],
        "engine_run_s": best["engine_whole"],
        "engine_cold_s": cold,
        "flax_one_by_one_s": best["flax_one_by_one"],
        "flax_vmapped_s": best["flax_vmapped"],
        "runs_s": runs,
        "training_flops": flops,
        "engine_flops_per_s": flops / best["engine_train"],
        "engine_whole_flops_per_s": flops / best["engine_whole"],
        "flax_flops_per_s": flops / flax_s,
    }


# --- peak memory, in child processes ---


# Run first in a memory child: at exit it prints its own peak resident set (VmHWM of its own
# address space). The rusage of `os.wait4` is not used: Linux carries the parent's peak into a
# child's ru_maxrss at exec, so after the ResNet benchmarks (a 3.5 GB parent) every child
# reported 3.55 GB, whatever it used.
_REPORT_PEAK = (
    "import atexit, re; atexit.register(lambda: print('peak_kb', re.search(r'VmHWM:\\s+(\\d+)', "
    "open('/proc/self/status').read()).group(1), flush=True)); "
)


def _child_peak_gb(code: str, args: list[str], env=None) -> float | None:
    """Peak resident memory (GB) of one child process running `python -c code args`, as it
    reports it at exit (Linux), None if it failed."""
    command = [sys.executable, "-c", _REPORT_PEAK + code, *args]
    child = subprocess.run(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peaks = re.findall(r"^peak_kb (\d+)$", child.stdout, re.MULTILINE)
    if child.returncode != 0 or not peaks:
        print(child.stdout[-3000:], file=sys.stderr)
        return None
    return int(peaks[-1]) * 1024 / 1e9


def memory_probe(folder: str, n: int, steps: int) -> None:
    """A ResNet-20 population of n on CIFAR shapes, fine-tuned `steps` steps (child process)."""
    task = data.transfer_split(folder)
    base = networks.init_params(resnet_spec(20), jax.random.PRNGKey(0))
    engine, tiles = resnet_engine(task, steps, 128, base, 20)
    engine.evaluate_population(full_width_population((16, 32, 64), n, len(engine.shapes), tiles))


def measure_memory(folder: pathlib.Path, args, workdir: pathlib.Path) -> dict:
    probe = ["--memory-probe", str(folder), "--resnet-ft-steps", "2"]
    run_me = f"import runpy, sys; sys.argv[0] = {__file__!r}; runpy.run_path(sys.argv[0], "
    run_me += "run_name='__main__')"
    resnet_gb = _child_peak_gb(run_me, probe)
    search = [
        "search", str(SPACES / "mnist1d_resnet.yaml"), "--out",
        str(workdir / "mnist1d_resnet_run"), "--trials", str(args.search_trials),
    ]  # fmt: skip
    env = {**os.environ, "CODESIGN_CACHE": str(workdir / "cache")}  # pretrains its own base
    search_gb = _child_peak_gb("from codesign.cli import entry; entry()", search, env)
    return {"resnet20_population_8_peak_gb": resnet_gb, "mnist1d_resnet_search_peak_gb": search_gb}


def memory_summary(memory: dict) -> dict:
    return {
        "resnet_search_peak_gb": memory.get("mnist1d_resnet_search_peak_gb"),
        "resnet20_population_8_peak_gb": memory.get("resnet20_population_8_peak_gb"),
    }


def memory_goal(memory: dict) -> bool | None:
    peaks = memory_summary(memory).values()
    return None if not memory else all(v is not None and v <= 3 for v in peaks)


def remeasure_memory(args, path: pathlib.Path, per_class, stamp: dict) -> dict:
    """The peak-memory probes alone, written into an existing results JSON with their own
    stamp (`memory.stamp`): the rest of the JSON keeps the run it came from."""
    result = json.loads(path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        folder = synthetic_cifar10(pathlib.Path(tmp) / "cifar-10-batches-py", *per_class)
        memory = measure_memory(folder, args, pathlib.Path(tmp))
    result.update(memory_summary(memory))
    result["goals"]["memory_3gb"] = memory_goal(memory)
    result["memory"] = {**memory, "stamp": _results.finish(stamp)}
    _results.write(result, path.parent, path.stem)
    print(json.dumps(memory_summary(memory)))
    return result


# --- the run ---


def project_cifar_search_h(resnet: dict, trials: int = 40) -> float:
    """Hours for cifar10_resnet20.yaml on this machine: its pretraining, then `trials`
    fine-tunes and their scoring (scaled to the real target's validation+test examples)."""
    import yaml

    space = yaml.safe_load((SPACES / "cifar10_resnet20.yaml").read_text())
    pre, ft = space["pretrain"], space["finetune"]
    # CIFAR-10 classes 5-9: 25,000 training and 5,000 test images; the validation split is cut
    # from training as `data.transfer_split` cuts it here (same fractions).
    real_eval = resnet["eval_examples"] * (5000 / resnet["synthetic_test_per_target_class"] / 5)
    per_example = resnet["batch"]  # step times scale with the batch (both are 128 in full runs)
    pretrain_s = pre["steps"] * resnet["engine_pretrain_step_s"] * pre["batch_size"] / per_example
    per_trial = ft["steps"] * resnet["engine_finetune_step_s"] * ft["batch_size"] / per_example
    per_trial += resnet["engine_overhead_per_candidate_s"] * real_eval / resnet["eval_examples"]
    return (pretrain_s + trials * per_trial) / 3600


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the logic only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mlp-candidates", type=int, default=8)
    parser.add_argument("--mlp-steps", type=int, default=150)
    parser.add_argument("--resnet-steps", type=int, default=6, help="steps timed per ResNet loop")
    parser.add_argument("--resnet-ft-steps", type=int, default=3)
    parser.add_argument("--resnet-candidates", type=int, default=2)
    parser.add_argument("--resnet-depth", type=int, default=20)
    parser.add_argument("--resnet-batch", type=int, default=128)
    parser.add_argument("--cnn-candidates", type=int, default=4)
    parser.add_argument("--cnn-steps", type=int, default=100)
    parser.add_argument("--search-trials", type=int, default=12, help="memory: one batch")
    parser.add_argument("--no-memory", action="store_true", help="skip the child processes")
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="measure peak memory again into the existing JSON (stamped on its own)",
    )
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="output directory (default: results/, quick: temporary)")
    parser.add_argument(
        "--tag", help="appended to the output name (another machine: bench_finetune_TAG.json)"
    )
    args = parser.parse_args(argv)
    name = f"{NAME}_{args.tag}" if args.tag else NAME
    if args.memory_probe:
        memory_probe(args.memory_probe, 8, args.resnet_ft_steps)
        return {}
    stamp = _results.stamp("quick" if args.quick else "full")
    if args.quick:
        args.mlp_candidates, args.mlp_steps, args.resnet_steps, args.resnet_ft_steps = 2, 10, 2, 1
        args.resnet_candidates, args.cnn_candidates, args.cnn_steps = 1, 2, 5
        args.resnet_depth, args.resnet_batch = 8, 8
        REPEATS[0] = MLP_REPEATS[0] = 1
        args.no_memory = True
    per_class = (40, 10) if args.quick else (250, 20)  # a small test set: scoring is scaled
    log = lambda text: print(text, flush=True)  # noqa: E731
    out_dir = _results.out_dir(args.out, args.quick, NAME)
    if args.memory_only:
        return remeasure_memory(args, out_dir / f"{name}.json", per_class, stamp)

    mlp = bench_mlp(args, log)
    cnn = bench_cnn(args, log)
    with tempfile.TemporaryDirectory() as tmp:
        folder = synthetic_cifar10(pathlib.Path(tmp) / "cifar-10-batches-py", *per_class)
        resnet = bench_resnet(args, folder, log)
        resnet["synthetic_test_per_target_class"] = per_class[1]
        memory = {} if args.no_memory else measure_memory(folder, args, pathlib.Path(tmp))
    peak = resnet["peak_matmul_flops_per_s"]  # measured taking turns with the ResNet programs
    log(f"peak matmul: {peak / 1e9:.1f} GFLOP/s")

    summary = {
        "mlp_engine_over_flax": round(mlp["engine"]["run_s"] / mlp["flax"]["run_s"], 2),
        "mlp_all_digital_over_flax": round(
            mlp["engine_all_digital"]["run_s"] / mlp["flax"]["run_s"], 2
        ),
        "mlp_pcm_over_flax": round(mlp["engine_pcm"]["run_s"] / mlp["flax"]["run_s"], 2),
        "mlp_pcm_over_sram": round(mlp["engine_pcm"]["run_s"] / mlp["engine"]["run_s"], 2),
        "resnet_pretrain_step_over_flax": round(
            resnet["engine_pretrain_step_s"] / resnet["flax_step_s"], 2
        ),
        "resnet_finetune_step_over_flax": round(
            resnet["engine_finetune_step_s"] / resnet["flax_step_s"], 2
        ),
        "cnn_flops_over_flax": round(cnn["engine_flops_per_s"] / cnn["flax_flops_per_s"], 3),
        # The same over the whole evaluation (inheritance, training and scoring on 3 noisy draws
        # and a digital pass), the training FLOPs alone counted.
        "cnn_whole_evaluation_flops_over_flax": round(
            cnn["engine_whole_flops_per_s"] / cnn["flax_flops_per_s"], 3
        ),
        "resnet_flops_fraction_of_peak": round(
            resnet["finetune_flops_per_step"] / resnet["engine_finetune_step_s"] / peak, 4
        ),
        # The best the analog fine-tune could reach here: the all-digital step plus the floor of
        # writing and reading its input patches once (`patch_floor`).
        "resnet_flops_fraction_ceiling": round(
            resnet["finetune_flops_per_step"]
            / (resnet["all_digital_step_s"] + resnet["patch_floor_s"])
            / peak,
            4,
        ),
        "resnet_all_digital_flops_fraction_of_peak": round(
            resnet["finetune_flops_per_step"] / resnet["all_digital_step_s"] / peak, 4
        ),
        # The plain Flax training step's share of the same peak (same FLOPs, digital): how much
        # of the peak a competent loop reaches on this machine, for context of the goal above.
        "flax_resnet_flops_fraction_of_peak": round(
            resnet["finetune_flops_per_step"] / resnet["flax_step_s"] / peak, 4
        ),
        **memory_summary(memory),
        "cifar10_resnet20_search_projected_h": round(project_cifar_search_h(resnet), 1),
    }
    goals = {
        "mlp_3x": summary["mlp_engine_over_flax"] <= 3,
        "mlp_all_digital_1.5x": summary["mlp_all_digital_over_flax"] <= 1.5,
        "resnet_pretrain_1.5x": summary["resnet_pretrain_step_over_flax"] <= 1.5,
        "resnet_finetune_3x": summary["resnet_finetune_step_over_flax"] <= 3,
        "cnn_flops_50pct_of_flax": summary["cnn_flops_over_flax"] >= 0.5,
        "resnet_20pct_of_peak": summary["resnet_flops_fraction_of_peak"] >= 0.2,
        "memory_3gb": memory_goal(memory),
    }
    result = {
        **_results.finish(stamp),
        **summary,
        "goals": goals,
        "peak_matmul_flops_per_s": peak,
        "mlp": mlp,
        "cnn": cnn,
        "resnet": resnet,
        "memory": memory,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "memory_probe")},
    }
    path = _results.write(result, out_dir, name)
    log(f"wrote {path}")
    print(json.dumps(summary))
    return result


if __name__ == "__main__":
    main()
