"""Claim: transfer learning cuts the cost of training a model for a new, adjacent task.

The seed article: "with a technique called transfer learning, we can transfer an existing AI
model trained in one domain to an adjacent one" (to reduce the energy of the training phase).
We test it on a search space's network (default: the digits MLP of `search_spaces/digits_mlp.yaml`,
64-128-128-5): the same network, the same optimiser (Adam, the space's fine-tune learning rate and
batch), trained on the target task (digits 5-9) either

  (a) transfer: from the base pretrained on the source task (digits 0-4; codesign's cached base,
      `transfer.load_or_pretrain`), hidden layers inherited, a fresh head, every layer trained; or
  (b) scratch: from a fresh initialisation (`networks.init_params`).

Both are exact digital, dense, and scored on the target validation split every `k` steps; the
curves are means over seeds (head init and batch order). Target accuracy = 95 % (and 99 %) of the
best seed-mean accuracy either run reaches. For each we report the steps to reach it, the
training FLOPs (6 x MACs x batch x steps), and the training energy (x hardware.TRAINING_J_PER_FLOP,
a datacentre GPU at 40 % utilisation). The base's pretraining cost is a separate line: a base is
paid for once and reused for every target task.

Few-shot (`--examples-per-class N`): the target's training split keeps N examples per class, a
different draw per seed (`data.few_shot`), while its validation and test splits stay whole; this
is where transfer is expected to pay (little target data, a harder task). Written as
`claim_transfer_few_shot.json`.

    python experiments/claim_transfer.py           # full: 1500 steps, 5 seeds (7 s on 2 cores)
    python experiments/claim_transfer.py --quick   # 200 steps, 2 seeds (< 30 s)
    python experiments/claim_transfer.py --space search_spaces/mnist1d_cnn.yaml \
        --examples-per-class 10                    # few-shot MNIST-1D CNN, 5 seeds
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from codesign.data import datasets as data
from codesign.engine import finetune as transfer
from codesign.hardware.accelerator import TRAINING_J_PER_FLOP
from codesign.nn import networks
from codesign.search.space import load_space

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _results  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "digits_mlp.yaml"
NAME = "claim_transfer"
CLAIM = "transfer learning from an adjacent task makes training cheaper than training from scratch"
TARGETS = (0.95, 0.99)  # shares of the best accuracy; the first one decides the verdict


def train_curves(spec, init_params, task, *, steps, every, learning_rate, batch_size, seeds):
    """Adam on the target task from each initial params (leading axis = run); returns the
    validation accuracy [runs, steps // every] after every `every` steps, and the final test
    accuracy [runs]. `task`: one Dataset for every run, or one per run (training splits of one
    size, e.g. few-shot draws; validation and test from the first)."""
    tasks = task if isinstance(task, list | tuple) else [task] * len(seeds)
    task = tasks[0]
    x = jnp.stack([jnp.asarray(t.x_train) for t in tasks])
    y = jnp.stack([jnp.asarray(t.y_train) for t in tasks])
    xv, yv = jnp.asarray(task.x_val), jnp.asarray(task.y_val)
    xt, yt = jnp.asarray(task.x_test), jnp.asarray(task.y_test)
    optimizer = optax.adam(learning_rate)

    def accuracy(p, xs, ys):
        return jnp.mean(jnp.argmax(networks.apply(spec, p, xs), -1) == ys)

    def loss_fn(p, xb, yb):
        logits = networks.apply(spec, p, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def run(params, key, x, y):
        def step(carry, idx):
            p, state = carry
            grads = jax.grad(loss_fn)(p, x[idx], y[idx])
            updates, state = optimizer.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), None

        def block(carry, idx_block):
            carry, _ = jax.lax.scan(step, carry, idx_block)
            return carry, accuracy(carry[0], xv, yv)

        idx = jax.random.randint(key, (steps // every, every, batch_size), 0, x.shape[0])
        (params, _), accs = jax.lax.scan(block, (params, optimizer.init(params)), idx)
        return accs, accuracy(params, xt, yt)

    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
    accs, test = jax.jit(jax.vmap(run))(init_params, keys, x, y)
    return np.asarray(accs), np.asarray(test)


def steps_to(curve: np.ndarray, target: float, every: int) -> int | None:
    """First step count at which the curve reaches the target, None if never."""
    hits = np.nonzero(curve >= target - 1e-9)[0]
    return int((hits[0] + 1) * every) if hits.size else None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run (< 30 s)")
    parser.add_argument("--space", default=str(SPACE), help="search space (network, task)")
    parser.add_argument(
        "--examples-per-class", type=int, help="few-shot target: N training examples per class"
    )
    parser.add_argument("--steps", type=int, help="training steps (default 1500, quick 200)")
    parser.add_argument("--out", help="output directory (default: results/, quick: temporary)")
    args = parser.parse_args(argv)
    stamp = _results.stamp("quick" if args.quick else "full")
    started = time.perf_counter()
    steps, every = (200, 10) if args.quick else (1500, 5)
    steps = args.steps or steps
    seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    shots = args.examples_per_class
    out_name = f"{NAME}_few_shot" if shots else NAME

    space_file = pathlib.Path(args.space).resolve()
    space = load_space(space_file)
    evaluator = space.evaluator()  # the space's task split, network and configs
    task = evaluator.task
    # one training split per seed in the few-shot regime; validation and test stay whole
    targets = [data.few_shot(task.target, shots, s) for s in seeds] if shots else [task.target]
    targets = targets * (len(seeds) // len(targets))
    base, cached = transfer.load_or_pretrain(evaluator.spec, task.source, evaluator.pretrain)
    spec = dataclasses.replace(evaluator.spec, num_classes=task.target.num_classes)
    macs = sum(s.macs for s in networks.layer_shapes(spec))
    source_macs = sum(s.macs for s in networks.layer_shapes(evaluator.spec))
    ft = evaluator.finetune

    fresh = [networks.init_params(spec, jax.random.PRNGKey(100 + s)) for s in seeds]
    starts = {
        "transfer": [(*base[:-1], f[-1]) for f in fresh],  # inherited hidden layers, new head
        "scratch": fresh,
    }
    runs = [p for name in starts for p in starts[name]]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *runs)
    accs, test = train_curves(
        spec, stacked, targets * 2, steps=steps, every=every, learning_rate=ft.learning_rate,
        batch_size=ft.batch_size, seeds=seeds * 2,
    )  # fmt: skip
    n = len(seeds)
    curves = {"transfer": accs[:n].mean(0), "scratch": accs[n:].mean(0)}
    tests = {"transfer": test[:n], "scratch": test[n:]}
    best = max(float(c.max()) for c in curves.values())
    flops_per_step = 6.0 * macs * ft.batch_size
    j = TRAINING_J_PER_FLOP

    methods = {}
    for method, curve in curves.items():
        reach = {}
        for share in TARGETS:
            s = steps_to(curve, share * best, every)
            rows = accs[:n] if method == "transfer" else accs[n:]
            per_seed = [steps_to(c, share * best, every) for c in rows]
            reach[f"{share:g}"] = {
                "target_accuracy": share * best,
                "steps": s,
                "flops": None if s is None else s * flops_per_step,
                "energy_j": None if s is None else s * flops_per_step * j,
                "steps_per_seed": per_seed,
            }
        methods[method] = {
            "best_val_accuracy": float(curve.max()),
            "final_val_accuracy": float(curve[-1]),
            "final_test_accuracy": float(tests[method].mean()),
            "final_test_accuracy_sd": float(tests[method].std(ddof=1)) if n > 1 else 0.0,
            "final_test_accuracy_per_seed": [float(v) for v in tests[method]],
            "reach": reach,
        }
    pre = evaluator.pretrain
    pretrain_flops = 6.0 * source_macs * pre.batch_size * pre.steps
    pretraining = {
        "steps": pre.steps,
        "flops": pretrain_flops,
        "energy_j": pretrain_flops * j,
        "note": "paid once per base, shared by every target task fine-tuned from it",
    }

    main_key = f"{TARGETS[0]:g}"
    t = methods["transfer"]["reach"][main_key]
    s = methods["scratch"]["reach"][main_key]
    target_txt = f"{main_key} x best = {t['target_accuracy']:.3f} val accuracy"
    if t["steps"] is None:
        verdict, reason = "does not hold", f"transfer never reaches {target_txt}"
        ratio = amortise = None
    else:
        scratch_flops = s["flops"] if s["steps"] is not None else steps * flops_per_step
        never = s["steps"] is None  # then scratch's cost is a lower bound: "at least", "at most"
        best_scratch = methods["scratch"]["best_val_accuracy"]
        scratch_txt = (
            f"never within {steps} steps (its best: {best_scratch:.3f})"
            if never
            else f"{s['steps']} steps"
        )
        ratio = scratch_flops / t["flops"]
        fewer = f"{'at least ' if never else ''}{ratio:.1f}x fewer FLOPs"
        saved = scratch_flops - t["flops"]
        amortise = math.ceil(pretrain_flops / saved) if saved > 0 else None
        head = f"to {target_txt}: transfer {t['steps']} steps vs scratch {scratch_txt}"
        if saved <= 0:
            verdict = "does not hold"
            reason = f"{head}; transfer is not cheaper even without pretraining"
        elif t["flops"] + pretrain_flops < scratch_flops:
            verdict = "holds"
            reason = f"{head} ({fewer}), cheaper even with pretraining included"
        else:
            verdict = "partly"
            reason = (
                f"{head} ({fewer}), but the base's pretraining ({pre.steps} steps) costs more "
                f"than one target saves: it pays off from {'at most ' if never else ''}"
                f"{amortise} target tasks on"
            )
    other = [
        f"{k}: transfer {methods['transfer']['reach'][k]['steps']} vs scratch "
        f"{methods['scratch']['reach'][k]['steps']} steps"
        for k in (f"{x:g}" for x in TARGETS[1:])
    ]
    reason += "".join(f" ({o})" for o in other)
    inf = float("inf")
    per_seed = zip(t["steps_per_seed"], s["steps_per_seed"], strict=True)
    faster = sum((a if a is not None else inf) < (b if b is not None else inf) for a, b in per_seed)
    reason += f"; transfer first in {faster} of {n} seeds"
    report = {
        "claim": out_name,
        "seed_claim": CLAIM,
        "mode": "quick" if args.quick else "full",
        "space": str(space_file.relative_to(ROOT))
        if space_file.is_relative_to(ROOT)
        else str(space_file),
        "examples_per_class": shots,
        "train_examples": len(targets[0].y_train),
        "steps": steps,
        "eval_every": every,
        "seeds": seeds,
        "learning_rate": ft.learning_rate,
        "batch_size": ft.batch_size,
        "macs_per_inference": macs,
        "flops_per_step": flops_per_step,
        "training_j_per_flop": j,
        "base_from_cache": bool(cached),
        "val_examples": len(task.target.y_val),
        "curves": {
            "steps": [every * (i + 1) for i in range(len(curves["transfer"]))],
            **{k: [float(v) for v in c] for k, c in curves.items()},
        },
        "methods": methods,
        "pretraining": pretraining,
        "flops_ratio_scratch_over_transfer": ratio,
        "transfer_first_in_seeds": faster,
        "targets_to_amortise_pretraining": amortise,
        "verdict": verdict,
        "reason": reason,
    }
    report["runtime_s"] = time.perf_counter() - started
    report.update(_results.finish(stamp))
    _write(report, _results.out_dir(args.out, args.quick, out_name))
    _print(report)
    return report


def _print(report: dict) -> None:
    print(f"{report['claim']} ({report['mode']}): {report['seed_claim']}")
    print(f"{'run':<22}{'target':>8}{'acc':>7}{'steps':>8}{'FLOPs':>11}{'energy J':>11}")
    for name, m in report["methods"].items():
        for share, r in m["reach"].items():
            steps = "never" if r["steps"] is None else str(r["steps"])
            flops = "-" if r["flops"] is None else f"{r['flops']:.3g}"
            energy = "-" if r["energy_j"] is None else f"{r['energy_j']:.3g}"
            print(
                f"{name:<22}{share:>8}{r['target_accuracy']:>7.3f}{steps:>8}{flops:>11}{energy:>11}"
            )
    p = report["pretraining"]
    print(f"{'pretraining (once)':<22}{'':>8}{'':>7}{p['steps']:>8}{p['flops']:>11.3g}"
          f"{p['energy_j']:>11.3g}")  # fmt: skip
    for name, m in report["methods"].items():
        print(
            f"  {name}: best val {m['best_val_accuracy']:.3f}, final val "
            f"{m['final_val_accuracy']:.3f}, final test {m['final_test_accuracy']:.3f}"
        )
    print(f"verdict: {report['verdict']}: {report['reason']}")
    print(f"runtime: {report['runtime_s']:.0f} s")


def _write(report: dict, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    _results.write(report, out, report["claim"])
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    c = report["curves"]
    flops = np.asarray(c["steps"]) * report["flops_per_step"]
    for k, name in enumerate(("transfer", "scratch")):
        ax.plot(flops, c[name], color=f"C{k}", label=f"{name} (seed mean)")
        r = report["methods"][name]["reach"][f"{TARGETS[0]:g}"]
        if r["flops"] is not None:
            ax.axvline(r["flops"], color=f"C{k}", ls=":", lw=1)
    target = report["methods"]["transfer"]["reach"][f"{TARGETS[0]:g}"]["target_accuracy"]
    ax.axhline(target, color="0.5", lw=0.8, ls="--", label=f"target ({TARGETS[0]:g} x best)")
    pre = report["pretraining"]["flops"]
    ax.axvline(pre, color="C3", lw=0.8, ls="-.", label="base pretraining FLOPs (once)")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs on the target task (6 x MACs x batch x steps)")
    ax.set_ylabel("target validation accuracy")
    shots = report["examples_per_class"]
    regime = f", {shots} target examples per class" if shots else ""
    ax.set_title(f"{pathlib.Path(report['space']).stem}{regime}: from the base vs from scratch")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / f"{report['claim']}.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
