"""Load a trained codesign design into your own Flax NNX model and run it.

    python experiments/flax_from_design.py trained/weights.npz

`codesign train` writes `weights.npz` with the pruned units physically removed: plain [K, N]
kernels and [N] biases, one per layer, ready for any framework. This builds an `nnx.Linear` stack
for an MLP design from them and checks it on the design's own target test split.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax.numpy as jnp
import numpy as np
from flax import nnx

from codesign.design import load_compact_weights, load_design


class MLP(nnx.Module):
    """A plain Flax MLP whose layer sizes come from the compact weights."""

    def __init__(self, layers: list[dict], rngs: nnx.Rngs):
        self.linears = nnx.List(
            [nnx.Linear(l["w"].shape[0], l["w"].shape[1], rngs=rngs) for l in layers]
        )
        for linear, layer in zip(self.linears, layers, strict=True):
            linear.kernel[...] = jnp.asarray(layer["w"])
            linear.bias[...] = jnp.asarray(layer["b"])

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for linear in self.linears[:-1]:
            x = nnx.relu(linear(x))
        return self.linears[-1](x)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="weights.npz written by codesign train")
    parser.add_argument(
        "--design",
        help="design.json the weights were trained from (default: the design.json that codesign "
        "train wrote beside weights.npz); without one, only the layer shapes are printed",
    )
    args = parser.parse_args(argv)
    beside = pathlib.Path(args.weights).with_name("design.json")
    args.design = args.design or (str(beside) if beside.is_file() else None)

    layers = load_compact_weights(args.weights)
    model = MLP(layers, nnx.Rngs(0))
    result = {"layers": [list(l["w"].shape) for l in layers]}
    report = pathlib.Path(args.weights).with_name("report.json")
    if args.design:
        # The design's own task split (few-shot and shared-class settings included).
        task = load_design(args.design).search_space().evaluator().task
        logits = model(jnp.asarray(task.target.x_test))
        hits = np.argmax(logits, -1) == task.target.y_test
        result["digital_test_accuracy"] = float(np.mean(hits))
        if report.is_file():
            result["codesign_digital_test_accuracy"] = json.loads(report.read_text())[
                "test_accuracy_digital"
            ]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
