"""Fine-tune throughput: a plain Optuna + Flax loop, a one-compile loop and the codesign engine.

The same random candidates of a digits MLP (widths, sparsity, pruning granularity, tile size,
analog split, ADC bits) are evaluated three ways in one run, from the same pretrained base, with
the same data, steps and compiler flags (XLA CPU at -O1, `transfer._compiler_options`):

(a) naive: what a competent user writes with Optuna and Flax NNX. Per trial, an `nnx` MLP at the
    candidate's real widths inherits the base's first units, gets a fresh head and pruning masks
    (`codesign.pruning`), then a jitted train step runs in a Python loop with the analog
    non-idealities of `codesign.analog.hybrid_matmul` in its forward pass, the masks re-applied
    after every step; then it is scored and told to the study. The optimizer
    (`optax.adam`) is built once, so the jit cache hits whenever a shape repeats: it recompiles
    only where shapes really change (widths; the tile size sets the row-tile count).
(b) competent: the one-compile loop. The maximum-width model with width and pruning masks, every
    knob a traced array, one jitted fine-tune (`lax.scan` over steps) compiled once, candidates
    one by one. This is the engine's own per-candidate program at population size 1
    (`evaluate_population(..., chunk=1)`), so (b) vs (c) isolates what evaluating a population
    in one vmapped call buys.
(c) engine: `transfer.Engine.evaluate_population` on the whole population in one call.

Every path is timed three times: cold (an empty in-memory and persistent compilation cache, as
in a new process on a new machine), run (called again: the compiled programs are hot, so this
is the run time alone; compile = cold - run) and warm (in-memory caches cleared and new engines
built, as in a new process reading the persistent cache). The headline rates are cold.

The engine's achieved FLOP/s is compared with this machine's peak matmul FLOP/s, measured in the
same run (a large float32 `jnp.dot`): "executed" counts the training matmuls the program does
(maximum widths: masks zero the pruned weights, they do not skip them), "useful" the kept
weights' training FLOPs (`finetune_flops`). Measured on this digits MLP, on the MNIST-1D CNN
space (`search_spaces/mnist1d_cnn.yaml`) and on the MNIST-1D ResNet-8 space
(`search_spaces/mnist1d_resnet.yaml`), the latter two engine only, with candidates/s cold
(compile included) and compiled, after a short pretraining (accuracy does not change FLOP/s).
Noise draws differ between the naive and the other paths, so their accuracies agree only on
average (reported as the mean absolute gap in validation accuracy).

Last line: JSON with naive_per_s, competent_per_s, engine_per_s, speedup_vs_naive,
speedup_vs_competent and engine_flops_fraction_of_peak (the MNIST-1D CNN, executed FLOPs),
resnet_engine_per_s (cold) and resnet_flops_fraction_of_peak (executed).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import pathlib
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optuna
from flax import nnx

from codesign import analog, data, networks, pruning, transfer
from codesign.energy import GRANULARITIES

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import _results  # noqa: E402

NAME = "bench_finetune"
MAX_WIDTHS = (128, 128)
TILES = (32, 64, 128, 256)  # square analog tiles, rows = cols, in cells
PRETRAIN = transfer.PretrainConfig(steps=600)
SPACES = pathlib.Path(__file__).resolve().parents[2] / "search_spaces"
CNN_SPACE, RESNET_SPACE = SPACES / "mnist1d_cnn.yaml", SPACES / "mnist1d_resnet.yaml"
# Every path compiles with the engine's flags (on CPU: LLVM -O1).
JIT = functools.partial(jax.jit, compiler_options=transfer._compiler_options())


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


@functools.partial(JIT, static_argnums=0)
def _train_step(graphdef, state, x, y, key, masks, n_analog, hws):
    """One Adam step with analog noise on, then the pruning masks re-applied."""
    model, optimizer = nnx.merge(graphdef, state)
    loss, grads = nnx.value_and_grad(lambda m: _cross_entropy(m(x, hws, n_analog, key), y))(model)
    optimizer.update(model, grads)
    for layer, mask in zip(model.layers, masks, strict=True):
        layer.kernel[...] = layer.kernel[...] * mask
    return nnx.state((model, optimizer)), loss


@functools.partial(JIT, static_argnums=(0, 5))
def _scores(graphdef, state, x_eval, y_eval, key, draws, n_analog, hws):
    """Per-example hits under analog noise averaged over draws, and exact digital hits."""
    model, _ = nnx.merge(graphdef, state)

    def hits(k):
        return jnp.argmax(model(x_eval, hws, n_analog, k), -1) == y_eval

    noisy = jnp.mean(jax.vmap(hits)(jax.random.split(key, draws)), axis=0)
    return noisy, jnp.argmax(model(x_eval), -1) == y_eval


@functools.partial(JIT, static_argnums=(0, 3))
def _mask(granularity: str, w, sparsity, tile: int):
    """The candidate's pruning mask for a whole (real-width) weight matrix."""
    rows, cols = w.shape
    if granularity == "block":
        return pruning.block_mask(w, sparsity, rows, cols, tile, tile)
    return getattr(pruning, f"{granularity}_mask")(w, sparsity, rows, cols)


def naive_trial(cand: dict, base, target: data.Dataset, cfg: transfer.FinetuneConfig, tx) -> dict:
    """Build, inherit, prune, fine-tune and score one candidate the plain Flax way.

    `tx` is built once per loop: `nnx.Optimizer` keeps it as static metadata, so a new
    `optax.adam` per trial would miss the jit cache even for a shape seen before."""
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
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
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
    tx = optax.adam(cfg.learning_rate)  # once: see `naive_trial`
    cands, results = [], []
    for _ in range(n):
        trial = study.ask()
        cand = suggest(trial, len(base) + 1)
        result = naive_trial(cand, base, target, cfg, tx)
        study.tell(trial, result["val_accuracy"])
        cands.append(cand)
        results.append(result)
    return cands, results


# --- (b) one compile, candidates one by one, and (c) the engine: the population in one call ---


def run_engine(n: int, seed: int, engine: transfer.Engine, chunk: int | None = None):
    """Ask a batch, evaluate it as arrays (`chunk` candidates per call: 1 is the one-compile
    loop, None the whole population at once), tell; returns candidates, outputs, seconds."""
    start = time.perf_counter()
    study = new_study(seed)
    trials = [study.ask() for _ in range(n)]
    cands = [suggest(t, len(engine.shapes)) for t in trials]
    out = engine.evaluate_population(transfer.Population.stack(cands), chunk=chunk)
    for trial, acc in zip(trials, out["val_accuracy"], strict=True):
        study.tell(trial, float(acc))
    return cands, out, time.perf_counter() - start


# --- the hardware limit: peak matmul FLOP/s, and the FLOPs a population program executes ---


def peak_matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matmul FLOP/s now: the best of `repeats` n x n x n `jnp.dot`s."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def executed_flops(engine: transfer.Engine, candidates: int) -> float:
    """Matmul FLOPs the population program executes at the maximum widths (masked weights are
    multiplied, not skipped): training 6 per MAC (forward 2, backward 4) per example, then
    evaluation 2 per MAC per example for each noise draw and the exact digital pass."""
    cfg = engine.config
    macs = sum(s.rows * s.out_units * s.positions for s in engine.shapes)
    evaluated = engine.data["eval"][0].shape[0] * (cfg.eval_draws + 1)
    return (6.0 * cfg.batch_size * cfg.steps + 2.0 * evaluated) * macs * candidates


def engine_flops(engine: transfer.Engine, population, peak: float) -> dict:
    """The engine's candidates/s and FLOP/s on a population (compiled first, then timed again)
    against the peak."""
    n = population.size
    start = time.perf_counter()
    engine.evaluate_population(population)  # compile and run
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    out = engine.evaluate_population(population)
    run_s = time.perf_counter() - start
    executed = executed_flops(engine, n) / run_s
    useful = float(np.sum(out["finetune_flops"])) / run_s
    return {
        "candidates": n,
        "steps": engine.config.steps,
        "batch_size": engine.config.batch_size,
        "cold_s": round(cold_s, 3),
        "run_s": round(run_s, 3),
        "cold_per_s": round(n / cold_s, 4),
        "run_per_s": round(n / run_s, 4),
        "executed_flops_per_s": executed,
        "useful_flops_per_s": useful,
        "executed_fraction_of_peak": round(executed / peak, 4),
        "useful_fraction_of_peak": round(useful / peak, 4),
    }


def space_engine_flops(space_file, candidates: int, steps, pretrain_steps: int, peak, cache_dir):
    """`engine_flops` on random candidates of a search space (MNIST-1D CNN or ResNet)."""
    from codesign.evaluate import Evaluator
    from codesign.space import load_space

    space = load_space(space_file)
    problem = space.problem
    problem = dataclasses.replace(
        problem, pretrain=dataclasses.replace(problem.pretrain, steps=pretrain_steps)
    )
    if steps is not None:
        problem = dataclasses.replace(
            problem, finetune=dataclasses.replace(problem.finetune, steps=steps)
        )
    min_rows = min(rows for rows, _ in space.tiles)
    evaluator = Evaluator(problem, min_tile_rows=min_rows, cache_dir=cache_dir)
    params = space.sample_params(np.random.default_rng(0), candidates)
    population = evaluator.population([space.candidate(p) for p in params], list(range(candidates)))
    return {"space": space_file.name, **engine_flops(evaluator.engine, population, peak)}


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cnn-candidates", type=int, default=12, help="MNIST-1D CNN FLOP/s run")
    parser.add_argument(
        "--resnet-candidates", type=int, default=8, help="MNIST-1D ResNet-8 candidates/s run"
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 candidates, 10 steps, short pretraining (CI smoke)"
    )
    parser.add_argument("--cache-dir", help="pretrained bases (default: a temporary directory)")
    parser.add_argument("--out", help="output directory (default: results/, quick: temporary)")
    args = parser.parse_args(argv)
    stamp = _results.stamp("quick" if args.quick else "full")
    pretrain = transfer.PretrainConfig(steps=100) if args.quick else PRETRAIN
    cnn_steps, cnn_pretrain = 50, 300  # FLOP/s only: a short fine-tune, a rough base
    if args.quick:
        args.candidates, args.steps, args.cnn_candidates, args.resnet_candidates = 3, 10, 0, 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    task = data.transfer_split("digits")
    spec = networks.NetworkSpec("mlp", task.source.input_shape, task.source.num_classes, MAX_WIDTHS)
    cfg = transfer.FinetuneConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        max_row_tiles=transfer.row_tile_bound(networks.layer_shapes(spec), min(TILES)),
    )
    n = args.candidates
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        base, _ = transfer.load_or_pretrain(spec, task.source, pretrain, args.cache_dir or tmp)
        base = jax.tree.map(np.asarray, tuple(base))  # every path starts from these arrays

        def engine():
            return transfer.Engine(spec, task, cfg, pretrain, base_params=base)

        def paths(one_by_one, population):
            return {
                "naive": lambda: run_naive(n, args.seed, base[:-1], task.target, cfg),
                "competent": lambda: run_engine(n, args.seed, one_by_one, chunk=1),
                "engine": lambda: run_engine(n, args.seed, population),
            }

        with _results.compilation_cache(pathlib.Path(tmp) / "xla", min_compile_s=0.0):
            jax.clear_caches()
            outs = {}
            # cold: nothing compiled, in memory or on disk; run: the same again, all compiled
            cold_paths = paths(engine(), engine())
            for phase in ("cold", "run"):
                for name, fn in cold_paths.items():
                    outs[name], seconds[(name, phase)] = _timed(fn)
            # warm: a new process's view, programs only in the persistent cache
            jax.clear_caches()
            for name, fn in paths(engine(), engine()).items():
                _, seconds[(name, "warm")] = _timed(fn)
        peak = peak_matmul_flops(512 if args.quick else 2048)
        population = transfer.Population.stack(outs["engine"][0])
        mlp_flops = engine_flops(engine(), population, peak)
        cnn_flops = resnet_flops = None
        if args.cnn_candidates:
            cnn_flops = space_engine_flops(
                CNN_SPACE, args.cnn_candidates, cnn_steps, cnn_pretrain, peak, tmp
            )
        if args.resnet_candidates:
            resnet_flops = space_engine_flops(
                RESNET_SPACE, args.resnet_candidates, cnn_steps, cnn_pretrain, peak, tmp
            )

    naive_cands, naive = outs["naive"]
    if not (naive_cands == outs["competent"][0] == outs["engine"][0]):
        raise RuntimeError("the paths evaluated different candidates")
    naive_val = np.array([r["val_accuracy"] for r in naive])
    engine_val = outs["engine"][1]["val_accuracy"]
    gap = float(np.mean(np.abs(naive_val - engine_val)))
    timing = {
        name: {
            "cold_s": round(seconds[(name, "cold")], 2),
            "run_s": round(seconds[(name, "run")], 2),
            "compile_s": round(seconds[(name, "cold")] - seconds[(name, "run")], 2),
            "warm_s": round(seconds[(name, "warm")], 2),
            "cold_per_s": round(n / seconds[(name, "cold")], 3),
            "run_per_s": round(n / seconds[(name, "run")], 3),
            "warm_per_s": round(n / seconds[(name, "warm")], 3),
        }
        for name in ("naive", "competent", "engine")
    }
    rate = {name: t["cold_per_s"] for name, t in timing.items()}
    speedup_vs_competent = rate["engine"] / rate["competent"]
    flops_on = cnn_flops or mlp_flops  # the goal is set on the CNN; --quick skips it
    flops_fraction = flops_on["executed_fraction_of_peak"]
    result = {
        "bench": "finetune",
        "naive_per_s": rate["naive"],
        "competent_per_s": rate["competent"],
        "engine_per_s": rate["engine"],
        "speedup_vs_naive": round(rate["engine"] / rate["naive"], 2),
        "speedup_vs_competent": round(speedup_vs_competent, 2),
        "engine_flops_fraction_of_peak": flops_fraction,
        "engine_flops_space": "mnist1d_cnn" if cnn_flops else "digits_mlp",
        "speedup_vs_competent_run_only": round(
            timing["engine"]["run_per_s"] / timing["competent"]["run_per_s"], 2
        ),
        "speedup_vs_competent_warm": round(
            timing["engine"]["warm_per_s"] / timing["competent"]["warm_per_s"], 2
        ),
        "goals": {
            "engine_2x_competent": speedup_vs_competent >= 2.0,
            "engine_20pct_of_peak": flops_fraction >= 0.20,
        },
        "candidates": n,
        "steps": args.steps,
        "timing": timing,
        "peak_matmul_flops_per_s": peak,
        "engine_flops_digits_mlp": mlp_flops,
        "engine_flops_mnist1d_cnn": cnn_flops,
        "engine_flops_mnist1d_resnet": resnet_flops,
        "resnet_engine_per_s": resnet_flops["cold_per_s"] if resnet_flops else None,
        "resnet_flops_fraction_of_peak": (
            resnet_flops["executed_fraction_of_peak"] if resnet_flops else None
        ),
        "naive_mean_val_accuracy": round(float(naive_val.mean()), 4),
        "engine_mean_val_accuracy": round(float(engine_val.mean()), 4),
        "mean_abs_val_accuracy_gap": round(gap, 4),
        "compiler_options": transfer._compiler_options(),
        "device": str(jax.devices()[0]),
        **_results.finish(stamp),
    }
    out = _results.write(result, _results.out_dir(args.out, args.quick, NAME), NAME)
    print(f"{n} candidates x {args.steps} steps (digits MLP); seconds and candidates/s")
    print(f"{'path':<10}{'cold s':>9}{'compile s':>11}{'run s':>8}{'warm s':>8}{'cold /s':>9}")
    for name, t in timing.items():
        print(
            f"{name:<10}{t['cold_s']:>9.1f}{t['compile_s']:>11.1f}{t['run_s']:>8.2f}"
            f"{t['warm_s']:>8.1f}{t['cold_per_s']:>9.3f}"
        )
    print(
        f"engine vs naive {result['speedup_vs_naive']}x, vs competent "
        f"{result['speedup_vs_competent']}x cold, {result['speedup_vs_competent_run_only']}x "
        f"run only, {result['speedup_vs_competent_warm']}x warm"
    )
    print(f"peak matmul: {peak / 1e9:.1f} GFLOP/s")
    flops = (("digits MLP", mlp_flops), ("MNIST-1D CNN", cnn_flops), ("ResNet-8", resnet_flops))
    for label, f in flops:
        if not f:
            continue
        print(
            f"engine on {label}: {f['cold_per_s']:.3f} candidates/s cold, {f['run_per_s']:.3f} "
            f"compiled; {f['executed_flops_per_s'] / 1e9:.2f} GFLOP/s executed "
            f"({f['executed_fraction_of_peak']:.1%} of peak), "
            f"{f['useful_flops_per_s'] / 1e9:.2f} useful ({f['useful_fraction_of_peak']:.1%})"
        )
    print(
        f"mean |val accuracy naive - engine| = {gap:.3f} "
        f"(means {naive_val.mean():.3f} and {engine_val.mean():.3f})"
    )
    print(f"written to {out}")
    print(json.dumps({k: v for k, v in result.items() if k not in ("timing",)}))
    return result


if __name__ == "__main__":
    main()
