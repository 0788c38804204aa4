"""Fine-tune throughput: candidates/s of a plain Optuna + Flax loop against the codesign engine.

The same random candidates of a digits MLP (widths, sparsity, pruning granularity, tile size,
analog split, ADC bits) are evaluated twice in one run, both from the same pretrained base:

(a) naive: what a user writes without codesign. Per Optuna trial, a `flax.nnx` MLP is built at
    the candidate's real widths and inherits the base's first units, gets a fresh head and
    pruning masks (`codesign.pruning`), then a jitted train step runs in a Python loop with the
    analog non-idealities of `codesign.analog.hybrid_matmul` in its forward pass, the masks
    re-applied after every step; then it is scored on the target splits and told to the study.
    Every new shape compiles new programs: that is part of its cost.
(b) engine: `transfer.Engine.evaluate_population` on the whole population in one compiled
    jit(vmap(scan)) program.

Both are timed end to end, compilation included; pretraining the base is not part of either.
The headline engine figure is cold: its first call in a process with an empty persistent
compilation cache. Also reported: the compile/run split (the same engine called again) and warm
(a new `Engine` reading the compiled program from `transfer.enable_compilation_cache`). The
engine compiles at -O1 on CPU (`transfer._compiler_options`); the naive loop keeps JAX's
defaults, as a user would. Noise draws differ between the paths, so accuracies agree only on
average (reported as the mean absolute gap in validation accuracy).

Last line: JSON, {"bench": "finetune", "naive_per_s": ..., "engine_per_s": ..., "speedup": ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import pathlib
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optuna
from flax import nnx
from jax.experimental.compilation_cache import compilation_cache

from codesign import analog, data, networks, pruning, transfer
from codesign.energy import GRANULARITIES

MAX_WIDTHS = (128, 128)
TILES = (32, 64, 128, 256)  # square analog tiles, rows = cols, in cells
PRETRAIN = transfer.PretrainConfig(steps=600)


# --- the candidates: one seeded Optuna study, asked the same way by both paths ---


def suggest(trial: optuna.Trial, num_layers: int) -> dict:
    """One candidate as a `transfer.Population` row, from Optuna suggestions."""
    tile = trial.suggest_categorical("tile", TILES)
    sparsity = trial.suggest_float("sparsity", 0.0, 0.8, step=0.1)
    granularity = trial.suggest_categorical("granularity", GRANULARITIES)
    return {
        "widths": [trial.suggest_int(f"width_{i}", 8, w, step=8) for i, w in enumerate(MAX_WIDTHS)],
        "sparsity": [sparsity] * num_layers,
        "granularity": [granularity] * num_layers,
        "analog_fraction": [
            trial.suggest_float(f"analog_{i}", 0.0, 1.0, step=0.25) for i in range(num_layers)
        ],
        "tile_rows": tile,
        "tile_cols": tile,
        "adc_bits": trial.suggest_int("adc_bits", 3, 8),
        "dac_bits": 8,
        "seed": trial.number,
    }


def new_study(seed: int) -> optuna.Study:
    return optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed))


# --- (a) the naive loop: plain Flax NNX at each candidate's real widths ---


class MLP(nnx.Module):
    """A plain MLP of `nnx.Linear` layers whose products run through the analog simulator."""

    def __init__(self, sizes, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [nnx.Linear(k, n, rngs=rngs) for k, n in zip(sizes[:-1], sizes[1:], strict=True)]
        )

    def __call__(self, x, hws=None, n_analog=None, key=None):
        """Logits; `hws=None` is the exact digital network, `key=None` turns noise off."""
        h = x.reshape(x.shape[0], -1)
        keys = jax.random.split(key, len(self.layers)) if key is not None else None
        for i, layer in enumerate(self.layers):
            if hws is None:
                h = layer(h)
            else:
                w = layer.kernel[...]
                k = None if keys is None else keys[i]
                h = analog.hybrid_matmul(h, w, n_analog[i], hws[i], k) + layer.bias[...][None, :]
            if i < len(self.layers) - 1:
                h = jax.nn.relu(h)
        return h


def _cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@functools.partial(jax.jit, static_argnums=0)
def _train_step(graphdef, state, x, y, key, masks, n_analog, hws):
    """One Adam step with analog noise on, then the pruning masks re-applied."""
    model, optimizer = nnx.merge(graphdef, state)
    loss, grads = nnx.value_and_grad(lambda m: _cross_entropy(m(x, hws, n_analog, key), y))(model)
    optimizer.update(model, grads)
    for layer, mask in zip(model.layers, masks, strict=True):
        layer.kernel[...] = layer.kernel[...] * mask
    return nnx.state((model, optimizer)), loss


@functools.partial(jax.jit, static_argnums=(0, 5))
def _scores(graphdef, state, x_eval, y_eval, key, draws, n_analog, hws):
    """Per-example hits under analog noise averaged over draws, and exact digital hits."""
    model, _ = nnx.merge(graphdef, state)

    def hits(k):
        return jnp.argmax(model(x_eval, hws, n_analog, k), -1) == y_eval

    noisy = jnp.mean(jax.vmap(hits)(jax.random.split(key, draws)), axis=0)
    return noisy, jnp.argmax(model(x_eval), -1) == y_eval


@functools.partial(jax.jit, static_argnums=(0, 3))
def _mask(granularity: str, w, sparsity, tile: int):
    """The candidate's pruning mask for a whole (real-width) weight matrix."""
    rows, cols = w.shape
    if granularity == "block":
        return pruning.block_mask(w, sparsity, rows, cols, tile, tile)
    return getattr(pruning, f"{granularity}_mask")(w, sparsity, rows, cols)


def naive_trial(cand: dict, base, target: data.Dataset, cfg: transfer.FinetuneConfig) -> dict:
    """Build, inherit, prune, fine-tune and score one candidate the plain Flax way."""
    sizes = (math.prod(target.input_shape), *cand["widths"], target.num_classes)
    model = MLP(sizes, nnx.Rngs(cand["seed"]))
    for i, layer in enumerate(model.layers[:-1]):  # inherit the base's first (best) units
        layer.kernel[...] = base[i]["w"][: sizes[i], : sizes[i + 1]]
        layer.bias[...] = base[i]["b"][: sizes[i + 1]]
    tile = cand["tile_rows"]
    masks = []
    for layer, granularity, sparsity in zip(
        model.layers, cand["granularity"], cand["sparsity"], strict=True
    ):
        masks.append(_mask(granularity, layer.kernel[...], sparsity, tile))
        layer.kernel[...] = layer.kernel[...] * masks[-1]
    n_analog = [round(f * n) for f, n in zip(cand["analog_fraction"], sizes[1:], strict=True)]
    hw = analog.AnalogConfig(
        dac_bits=jnp.int32(cand["dac_bits"]),
        adc_bits=jnp.int32(cand["adc_bits"]),
        tile_rows=jnp.int32(tile),
        prog_noise=cfg.prog_noise,
        out_noise=cfg.out_noise,
        out_bound=cfg.out_bound,
    )
    hws = [dataclasses.replace(hw, max_row_tiles=-(-k // tile)) for k in sizes[:-1]]
    optimizer = nnx.Optimizer(model, optax.adam(cfg.learning_rate), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))

    rng = np.random.default_rng(cand["seed"])
    noise_key, eval_key = jax.random.split(jax.random.PRNGKey(cand["seed"]))
    step_keys = jax.random.split(noise_key, cfg.steps)
    for step in range(cfg.steps):
        idx = rng.integers(0, len(target.x_train), cfg.batch_size)
        state, loss = _train_step(
            graphdef, state, target.x_train[idx], target.y_train[idx], step_keys[step], masks,
            n_analog, hws,
        )  # fmt: skip
    x_eval = np.concatenate([target.x_val, target.x_test])
    y_eval = np.concatenate([target.y_val, target.y_test])
    noisy, digital = _scores(
        graphdef, state, x_eval, y_eval, eval_key, cfg.eval_draws, n_analog, hws
    )
    n_val = len(target.y_val)
    return {
        "val_accuracy": float(noisy[:n_val].mean()),
        "test_accuracy": float(noisy[n_val:].mean()),
        "digital_test_accuracy": float(digital[n_val:].mean()),
        "final_loss": float(loss),
    }


def run_naive(n: int, seed: int, base, target, cfg) -> tuple[list[dict], list[dict]]:
    """Ask, evaluate one by one, tell: the plain Optuna loop."""
    study = new_study(seed)
    cands, results = [], []
    for _ in range(n):
        trial = study.ask()
        cand = suggest(trial, len(base) + 1)
        result = naive_trial(cand, base, target, cfg)
        study.tell(trial, result["val_accuracy"])
        cands.append(cand)
        results.append(result)
    return cands, results


# --- (b) the engine: the whole population in one program ---


def run_engine(n: int, seed: int, engine: transfer.Engine) -> tuple[list[dict], dict, float]:
    """Ask a batch, evaluate it as arrays in one call, tell; also returns the seconds taken."""
    start = time.perf_counter()
    study = new_study(seed)
    trials = [study.ask() for _ in range(n)]
    cands = [suggest(t, len(engine.shapes)) for t in trials]
    out = engine.evaluate_population(transfer.Population.stack(cands))
    for trial, acc in zip(trials, out["val_accuracy"], strict=True):
        study.tell(trial, float(acc))
    return cands, out, time.perf_counter() - start


@contextlib.contextmanager
def _compilation_cache(path: pathlib.Path):
    """`transfer.enable_compilation_cache(path)` for a while, then JAX's settings as they were."""
    saved = {
        name: getattr(jax.config, name)
        for name in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    }
    transfer.enable_compilation_cache(path)
    try:
        yield
    finally:
        compilation_cache.reset_cache()
        for name, value in saved.items():
            jax.config.update(name, value)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="3 candidates, 10 steps, short pretraining (CI smoke)"
    )
    parser.add_argument("--cache-dir", help="pretrained bases (default: a temporary directory)")
    args = parser.parse_args(argv)
    pretrain = transfer.PretrainConfig(steps=100) if args.quick else PRETRAIN
    if args.quick:
        args.candidates, args.steps = 3, 10
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    task = data.transfer_split("digits")
    spec = networks.NetworkSpec("mlp", task.source.input_shape, task.source.num_classes, MAX_WIDTHS)
    cfg = transfer.FinetuneConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        max_row_tiles=transfer.row_tile_bound(networks.layer_shapes(spec), min(TILES)),
    )
    n = args.candidates
    with tempfile.TemporaryDirectory() as tmp:
        base, _ = transfer.load_or_pretrain(spec, task.source, pretrain, args.cache_dir or tmp)
        base = jax.tree.map(np.asarray, tuple(base))  # both paths start from these arrays

        start = time.perf_counter()
        naive_cands, naive = run_naive(n, args.seed, base[:-1], task.target, cfg)
        naive_s = time.perf_counter() - start

        # Cold: an empty persistent compilation cache, as on a first run. Then the same engine
        # again (compiled: the run alone), then a new engine, as in a new process on a warm cache.
        with _compilation_cache(pathlib.Path(tmp) / "xla"):
            engine = transfer.Engine(spec, task, cfg, pretrain, base_params=base)
            engine_cands, out, cold_s = run_engine(n, args.seed, engine)
            _, _, run_s = run_engine(n, args.seed, engine)
            fresh = transfer.Engine(spec, task, cfg, pretrain, base_params=base)
            _, _, warm_s = run_engine(n, args.seed, fresh)
    if naive_cands != engine_cands:
        raise RuntimeError("the two paths evaluated different candidates")

    naive_val = np.array([r["val_accuracy"] for r in naive])
    gap = float(np.mean(np.abs(naive_val - out["val_accuracy"])))
    naive_per_s, engine_per_s, warm_per_s = n / naive_s, n / cold_s, n / warm_s
    result = {
        "bench": "finetune",
        "naive_per_s": round(naive_per_s, 3),
        "engine_per_s": round(engine_per_s, 3),  # cold: first run, compilation included
        "speedup": round(engine_per_s / naive_per_s, 2),
        "candidates": n,
        "steps": args.steps,
        "naive_s": round(naive_s, 2),
        "engine_cold_s": round(cold_s, 2),
        "engine_compile_s": round(cold_s - run_s, 2),
        "engine_run_s": round(run_s, 2),
        "engine_warm_s": round(warm_s, 2),
        "engine_warm_per_s": round(warm_per_s, 3),
        "speedup_warm": round(warm_per_s / naive_per_s, 2),
        "naive_mean_val_accuracy": round(float(naive_val.mean()), 4),
        "engine_mean_val_accuracy": round(float(out["val_accuracy"].mean()), 4),
        "mean_abs_val_accuracy_gap": round(gap, 4),
        "device": str(jax.devices()[0]),
    }
    print(
        f"naive (Optuna + Flax NNX, one trial at a time): {n} candidates in {naive_s:.1f} s, "
        f"{naive_per_s:.3f}/s"
    )
    print(
        f"engine, cold cache: {cold_s:.1f} s = {cold_s - run_s:.1f} s trace + compile + "
        f"{run_s:.1f} s run, {engine_per_s:.3f}/s, {result['speedup']}x"
    )
    print(
        f"engine, warm persistent cache (new Engine): {warm_s:.1f} s, {warm_per_s:.3f}/s, "
        f"{result['speedup_warm']}x"
    )
    print(
        f"mean |val accuracy naive - engine| = {gap:.3f} "
        f"(means {naive_val.mean():.3f} and {out['val_accuracy'].mean():.3f})"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
