"""codesign's analog simulation against IBM aihwkit 1.2.0, on stored weights and a stored reference.

The comparison needs no aihwkit: aihwkit's accuracies were computed once by
experiments/aihwkit_reference.py (its docstring says how to install aihwkit and run it) and stored
in experiments/results/aihwkit_reference.json. This script

  --export  trains the network both simulators read (scikit-learn's digits, an MLP 64-128-128-10
            with half of every layer's weights pruned by magnitude, then fine-tuned with the
            pruned weights held at zero) and writes it with the test set to
            experiments/results/analog_reference_weights.npz;
  (default) runs codesign's crossbar (`codesign.hardware.analog.hybrid_matmul`, per-tile scaling as
            aihwkit maps a layer) on every setting of the stored reference, with as many noise
            seeds, and compares mean accuracies. A setting agrees when the two means differ by
            at most 1 point or by at most the two simulators' combined seed spread
            (sqrt(std_codesign**2 + std_aihwkit**2)), whichever is larger.

Writes experiments/results/validate_analog_model.json (stamped); its last line is JSON with
`settings`, `agree`, `max_diff_points` and the largest accuracy drop under any setting.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _results  # noqa: E402

from codesign.data import datasets as data  # noqa: E402
from codesign.hardware.analog import AnalogConfig, hybrid_matmul  # noqa: E402

WEIGHTS = _results.RESULTS / "analog_reference_weights.npz"
REFERENCE = _results.RESULTS / "aihwkit_reference.json"
WIDTHS = (64, 128, 128, 10)
PRUNED = 0.5  # fraction of every layer's weights set to zero (smallest magnitudes)


def _mlp(params, x):
    for i, (w, b) in enumerate(params):
        x = x @ w + b[None, :]
        if i < len(params) - 1:
            x = jax.nn.relu(x)
    return x


def export(path: pathlib.Path = WEIGHTS, seed: int = 0) -> dict:
    """Train, prune and fine-tune the MLP on digits (plain optax); write weights and test set."""
    raw = data.load_dataset("digits")
    x = jnp.asarray(np.concatenate([raw.x_train, raw.x_val]).reshape(-1, 64), jnp.float32)
    y = jnp.asarray(np.concatenate([raw.y_train, raw.y_val]), jnp.int32)
    x_test, y_test = raw.x_test.reshape(-1, 64).astype(np.float32), raw.y_test.astype(np.int32)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(WIDTHS))
    params = [
        (
            jax.random.normal(k, (i, o)) * math.sqrt(2.0 / i),
            jnp.zeros(o),
        )
        for k, i, o in zip(keys, WIDTHS[:-1], WIDTHS[1:], strict=False)
    ]
    opt = optax.adam(3e-3)

    def run(params, masks, steps, key):
        state = opt.init(params)

        def step(carry, idx):
            params, state = carry
            loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(  # noqa: E731
                _mlp(p, x[idx]), y[idx]
            ).mean()
            grads = jax.grad(loss)(params)
            updates, state = opt.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            params = [(w * m, b) for (w, b), m in zip(params, masks, strict=True)]
            return (params, state), None

        idx = jax.random.randint(key, (steps, 64), 0, len(y))
        return jax.lax.scan(step, (params, state), idx)[0][0]

    ones = [jnp.ones_like(w) for w, _ in params]
    params = jax.jit(run, static_argnums=2)(params, ones, 2000, keys[0])
    masks = [(jnp.abs(w) > jnp.quantile(jnp.abs(w), PRUNED)).astype(jnp.float32) for w, _ in params]
    params = [(w * m, b) for (w, b), m in zip(params, masks, strict=True)]
    params = jax.jit(run, static_argnums=2)(params, masks, 500, keys[1])
    accuracy = float(jnp.mean(jnp.argmax(_mlp(params, x_test), -1) == y_test))
    arrays = {f"w{i}": np.asarray(w) for i, (w, _) in enumerate(params)}
    arrays |= {f"b{i}": np.asarray(b) for i, (_, b) in enumerate(params)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_test=x_test, y_test=y_test, **arrays)
    print(f"wrote {path}: MLP {WIDTHS}, {PRUNED:.0%} pruned, digital test accuracy {accuracy:.4f}")
    return {"digital_accuracy": accuracy}


def load_weights(path: pathlib.Path = WEIGHTS):
    stored = np.load(path)
    n = len([k for k in stored.files if k.startswith("w")])
    params = [(jnp.asarray(stored[f"w{i}"]), jnp.asarray(stored[f"b{i}"])) for i in range(n)]
    return params, jnp.asarray(stored["x_test"]), jnp.asarray(stored["y_test"])


_KNOBS = ("dac_bits", "adc_bits", "tile_rows", "prog_noise", "out_noise", "out_bound")


def analog_config(device: str, knobs: dict) -> AnalogConfig:
    """A setting as codesign's crossbar, per-tile scaling as aihwkit maps a layer; `knobs`: its
    numbers as (traced) arrays, so that settings of one device share a compiled program."""
    return AnalogConfig(
        **{k: knobs[k] for k in _KNOBS},
        read_noise=knobs["read_noise"],
        inference_time=knobs["time_s"],
        device=device,
        tile_scaling="tile",
        max_row_tiles=128 // 32,  # the layers' largest K over the smallest tile
        row_block=32,  # divides every tile size compared
    )


@functools.partial(jax.jit, static_argnames=("device",))
def _accuracies(params, x, y, knobs, keys, device):
    def one(key):
        cfg = analog_config(device, knobs)
        h = x
        for i, (w, b) in enumerate(params):
            h = hybrid_matmul(h, w, w.shape[1], cfg, jax.random.fold_in(key, i)) + b[None, :]
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        return jnp.mean(jnp.argmax(h, -1) == y)

    return jax.lax.map(one, keys)


def accuracies(params, x, y, s: dict, seeds: int) -> np.ndarray:
    """codesign's test accuracy of the stored MLP under setting `s`, one per noise seed."""
    ints = ("dac_bits", "adc_bits", "tile_rows")
    knobs = {
        k: jnp.asarray(s[k], jnp.int32 if k in ints else jnp.float32)
        for k in (*_KNOBS, "read_noise", "time_s")
    }
    keys = jnp.stack([jax.random.PRNGKey(1000 + seed) for seed in range(seeds)])
    device = "pcm" if s["device"] == "pcm" else "sram"
    return np.asarray(_accuracies(params, x, y, knobs, keys, device))


def compare(reference: dict, params, x, y, seeds: int | None = None) -> dict:
    seeds = seeds or reference["seeds"]
    digital = float(jnp.mean(jnp.argmax(_mlp(params, x), -1) == y))
    rows = []
    for s in reference["settings"]:
        ours = accuracies(params, x, y, s, seeds)
        theirs = np.asarray(s["accuracies"])
        diff = 100 * abs(ours.mean() - theirs.mean())
        spread = 100 * math.hypot(ours.std(), theirs.std())
        rows.append(
            {
                "name": s["name"],
                "codesign_mean": round(float(ours.mean()), 5),
                "codesign_std": round(float(ours.std()), 5),
                "aihwkit_mean": round(float(theirs.mean()), 5),
                "aihwkit_std": round(float(theirs.std()), 5),
                "diff_points": round(diff, 3),
                "bound_points": round(max(1.0, spread), 3),
                "agree": bool(diff <= max(1.0, spread)),
            }
        )
        print(
            f"{s['name']:<38} codesign {100 * ours.mean():6.2f} +- {100 * ours.std():4.2f}  "
            f"aihwkit {100 * theirs.mean():6.2f} +- {100 * theirs.std():4.2f}  "
            f"diff {diff:5.2f}{'' if rows[-1]['agree'] else '  DISAGREE'}",
            flush=True,
        )
    drops = [100 * (digital - min(r["codesign_mean"], r["aihwkit_mean"])) for r in rows]
    return {
        "settings": len(rows),
        "agree": sum(r["agree"] for r in rows),
        "max_diff_points": max(r["diff_points"] for r in rows),
        "digital_accuracy": digital,
        "largest_drop_points": round(max(drops), 3),
        "seeds": seeds,
        "aihwkit_version": reference["versions"].get("aihwkit"),
        "aihwkit_reference_sha": reference["git_sha"],
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", action="store_true", help="train and write the weights")
    parser.add_argument("--quick", action="store_true", help="fewer seeds (a smoke test)")
    parser.add_argument("--out", default=None, help="results folder (default: results/)")
    args = parser.parse_args(argv)
    if args.export:
        return export()
    stamped = _results.stamp("quick" if args.quick else "full")
    reference = json.loads(REFERENCE.read_text())
    params, x, y = load_weights()
    summary = compare(reference, params, x, y, seeds=5 if args.quick else None)
    result = {**_results.finish(stamped), **summary}
    _results.write(
        result,
        _results.out_dir(args.out, args.quick, "validate_analog_model"),
        "validate_analog_model",
    )
    keys = ("settings", "agree", "max_diff_points", "largest_drop_points")
    print(json.dumps({k: summary[k] for k in keys}))
    return result


if __name__ == "__main__":
    main()
