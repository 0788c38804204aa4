"""Train the MLP and CNN families on 10-class MNIST-1D and compare with the MNIST-1D paper.

The paper (Greydanus, "Scaling down deep learning", 2020; github.com/greydanus/mnist1d) reports
test accuracies of about 68% for its MLP and 94% for its CNN. Its reference code trains with Adam,
learning rate 1e-2, no weight decay, batch 100, for 6000 steps (notebooks/train.py; later
versions use 8000), on the 4000 training signals, and tests on the 1000 test signals. This script
does the same: it trains on our train + validation splits, which together are those 4000 signals.

Models, at the paper's sizes: an MLP with two hidden layers of 100 (the paper's MLP also adds a
residual connection around its second layer, which ours lacks) and a CNN of three 1-D conv layers
of 25 channels (kernels 5, 3, 3, stride 2, padding 1) under a dense head.

    PYTHONPATH=. python experiments/mnist1d_baselines.py          # full: 6000 steps per model
    PYTHONPATH=. python experiments/mnist1d_baselines.py --quick  # a few hundred steps, for CI
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from codesign.data.datasets import load_dataset
from codesign.nn.networks import NetworkSpec, apply, init_params

PAPER_TEST_ACC = {"mlp": 0.68, "cnn": 0.94}  # Greydanus 2020, MNIST-1D README / Figure 3
LEARNING_RATE = 1e-2  # the paper's notebooks/train.py get_model_args
BATCH_SIZE = 100
FULL_STEPS = 6000
QUICK_STEPS = 400
FULL_SEEDS = 5  # training seeds (init and batch order); the data is the paper's, fixed


def paper_specs(input_shape: tuple[int, ...], num_classes: int) -> dict[str, NetworkSpec]:
    """The MNIST-1D paper's MLP and CNN (notebooks/models.py) as our network specs."""
    return {
        "mlp": NetworkSpec("mlp", input_shape, num_classes, widths=(100, 100)),
        "cnn": NetworkSpec(
            "cnn",
            input_shape,
            num_classes,
            widths=(25, 25, 25),
            kernel_sizes=(5, 3, 3),
            strides=(2, 2, 2),
            paddings=(1, 1, 1),
        ),
    }


def batch_indices(num_examples: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """[steps, batch_size] example indices, a fresh shuffle of the data every epoch."""
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // num_examples)
    order = np.concatenate([rng.permutation(num_examples) for _ in range(epochs)])
    return order[: steps * batch_size].reshape(steps, batch_size)


@functools.partial(jax.jit, static_argnums=0)
def _run(spec: NetworkSpec, params, x_all, y_all, indices):
    """Adam over every row of `indices` in one scan: compiled once per network, not per seed."""
    optimizer = optax.adam(LEARNING_RATE)

    def loss_fn(params, xb, yb):
        logits = apply(spec, params, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(carry, index):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, x_all[index], y_all[index])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), indices)
    return params, losses


def train(spec: NetworkSpec, x: np.ndarray, y: np.ndarray, *, steps: int, seed: int):
    """Adam on softmax cross-entropy for `steps` minibatches; all steps run in one jitted scan."""
    params = init_params(spec, jax.random.key(seed))
    indices = batch_indices(len(x), steps, BATCH_SIZE, seed)
    params, losses = _run(spec, params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(indices))
    return params, np.asarray(losses)


def accuracies(spec: NetworkSpec, params, *splits: tuple[np.ndarray, np.ndarray]) -> list[float]:
    """Per (x, y) split, the fraction of examples whose largest logit is the true class."""
    x_all = jnp.asarray(np.concatenate([x for x, _ in splits]))  # one compiled call for all
    predicted = np.asarray(jax.jit(apply, static_argnums=0)(spec, params, x_all).argmax(-1))
    ends = np.cumsum([len(y) for _, y in splits])
    return [
        float(np.mean(predicted[end - len(y) : end] == y))
        for end, (_, y) in zip(ends, splits, strict=True)
    ]


def main(argv: list[str] | None = None) -> dict:
    """Train both baselines over seeds, print a table and a JSON summary line, return the summary
    (per model: each seed's test accuracy, their mean and standard deviation)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps, for CI")
    parser.add_argument("--steps", type=int, help="override the number of training steps")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument(
        "--seeds", type=int, help=f"how many seeds (default {FULL_SEEDS}; --quick: 1)"
    )
    args = parser.parse_args(argv)
    steps = args.steps or (QUICK_STEPS if args.quick else FULL_STEPS)
    seeds = list(range(args.seed, args.seed + (args.seeds or (1 if args.quick else FULL_SEEDS))))

    data = load_dataset("mnist1d")  # the paper's fixed 4000 / 1000 signals; seeds vary training
    x_train = np.concatenate([data.x_train, data.x_val])
    y_train = np.concatenate([data.y_train, data.y_val])
    summary = {"bench": "mnist1d_baselines", "seeds": seeds}
    rows = []
    for family, spec in paper_specs(data.input_shape, data.num_classes).items():
        start = time.perf_counter()
        runs = []  # (final loss, train accuracy, test accuracy) per seed
        for seed in seeds:
            params, losses = train(spec, x_train, y_train, steps=steps, seed=seed)
            train_acc, test_acc = accuracies(
                spec, params, (x_train, y_train), (data.x_test, data.y_test)
            )
            runs.append((float(losses[-100:].mean()), train_acc, test_acc))
        seconds = time.perf_counter() - start
        loss, train_acc, test_acc = np.mean(runs, axis=0)
        test_sd = float(np.std([r[2] for r in runs], ddof=1)) if len(runs) > 1 else 0.0
        summary[f"{family}_test_acc"] = round(float(test_acc), 4)
        summary[f"{family}_test_acc_sd"] = round(test_sd, 4)
        summary[f"{family}_test_accs"] = [round(r[2], 4) for r in runs]
        summary[f"{family}_seconds"] = round(seconds, 2)
        rows.append((family, spec.widths, loss, train_acc, test_acc, test_sd, seconds))

    print(
        f"MNIST-1D, {len(x_train)} train / {len(data.x_test)} test, {steps} steps of Adam, "
        f"seeds {seeds[0]}-{seeds[-1]} (mean; sd over seeds)"
    )
    print(
        f"{'model':<6} {'widths':<13} {'loss':>6} {'train':>7} {'test':>7} {'sd':>6} "
        f"{'paper':>7} {'s':>6}"
    )
    for family, widths, loss, train_acc, test_acc, test_sd, seconds in rows:
        paper = PAPER_TEST_ACC[family]
        print(
            f"{family:<6} {str(widths):<13} {loss:>6.3f} {train_acc:>7.1%} {test_acc:>7.1%} "
            f"{test_sd:>6.1%} {paper:>7.0%} {seconds:>6.1f}"
        )
    summary.update(
        paper_mlp=PAPER_TEST_ACC["mlp"],
        paper_cnn=PAPER_TEST_ACC["cnn"],
        steps=steps,
        mode="quick" if args.quick else ("full" if steps == FULL_STEPS else "custom"),
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
