"""Network families as objects: one `Family` per kind of network, looked up by the name a
`NetworkSpec` or a search space's `model.family` gives (`family(name)`).

`codesign.nn.networks` asks a spec's family for its layers, width groups, first weights and
forward pass, and never branches on the name. The MLP, the plain CNN and your own NNX module
(`ModuleFamily`, over `codesign.nn.nnx_model`) live here; the ResNet in `codesign.nn.resnet`.
A family is stateless: every method takes the spec (a `codesign.nn.networks.NetworkSpec`) or
the searched model (a `codesign.nn.model.Model`) it is about. Adding a family is one class and
one line in `FAMILY`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import jax
import jax.numpy as jnp

from codesign.nn.conv import Conv
from codesign.nn.layers import (
    CONV_DIMENSIONS,
    LayerShape,
    chain,
    check_plain,
    conv_maps,
    per_unit,
)
from codesign.nn.resnet import ResNet

__all__ = ["CNN", "FAMILIES", "FAMILY", "MLP", "Family", "ModuleFamily", "chain_groups", "family"]


class Family(Protocol):
    """What `codesign.nn.networks` needs of a network family."""

    name: str
    default_widths: tuple[int, ...]  # a search space's widths when it gives none
    width_count: int | None  # how many widths (width groups) it takes; None: any number
    widths_rule: str  # that count, said to a user ("3 stages: give 3 widths")
    takes_depth: bool  # whether `model.depth` means anything to it
    user_module: bool  # whether it is built from your own module (`model.module`)

    def check(self, spec) -> None:
        """Raise ValueError unless the spec is a valid network of this family."""

    def default(self, input_shape: tuple[int, ...]) -> dict | None:
        """The `NetworkSpec` fields (beyond family, input shape and classes) of the family's
        default network for this input, or None where it has none."""

    def spec_fields(self, model, input_shape: tuple[int, ...]) -> dict:
        """The `NetworkSpec` fields of a searched `Model` for inputs of this shape."""

    def num_layers(self, model) -> int:
        """Weight layers of a searched `Model`, the head included."""

    def groups(self, spec) -> tuple[tuple[int, int], ...]:
        """(in_group, out_group) of every weight layer, the head last; -1 a fixed width."""

    def shapes(self, spec) -> tuple[LayerShape, ...]:
        """Every weight layer as a K x N matrix at P positions, the head last."""

    def init(self, spec, key: jax.Array, draw: Callable) -> list[dict]:
        """First weights; ``draw(shapes, key)`` gives fresh U(-1/sqrt(K), 1/sqrt(K)) ones."""

    def geometry(self, spec, layer_index: int) -> Conv | None:
        """The convolution a layer applies, or None for a dense layer."""

    def dense_input(self, spec, layer_index: int, h: jax.Array) -> jax.Array:
        """The [B, K] matrix a dense layer multiplies, from its input h."""

    def apply(
        self, spec, params, x: jax.Array, unit_masks, layer: Callable, op: Callable
    ) -> jax.Array:
        """Logits: ``layer(i, h)`` is layer i's biased output by the hook ``op``."""


def chain_groups(spec) -> tuple[tuple[int, int], ...]:
    """Width groups of a chain: hidden layer l writes group l and reads group l - 1."""
    n = spec.num_hidden
    return tuple((l - 1, l if l < n else -1) for l in range(n + 1))


def _chain_apply(spec, h, unit_masks, layer, head_input) -> jax.Array:
    for i in range(spec.num_hidden):
        h = jax.nn.relu(layer(i, h))
        if unit_masks is not None:
            h = per_unit(h, unit_masks[i], 1)
    return layer(spec.num_hidden, head_input(h))


class _Chain:
    """What the MLP and the CNN share: widths of their hidden layers, a chain of layers."""

    width_count = None
    widths_rule = "any number of hidden layers"
    takes_depth = False
    user_module = False

    def spec_fields(self, model, input_shape):
        fields = self.default(input_shape)
        if fields is None:
            raise ValueError(f"no default {self.name!r} network for input shape {input_shape}")
        return {**fields, "widths": tuple(model.widths)}

    def num_layers(self, model) -> int:
        return len(model.widths) + 1

    def groups(self, spec):
        return chain_groups(spec)

    def init(self, spec, key, draw):
        return draw(self.shapes(spec), key)


class MLP(_Chain):
    """Dense hidden layers over the flattened input, then a dense head."""

    name = "mlp"
    default_widths = (128, 128)

    def check(self, spec):
        check_plain(spec)
        if spec.kernel_sizes or spec.strides or spec.paddings:
            raise ValueError("an mlp takes no kernel_sizes, strides or paddings")

    def default(self, input_shape):
        return {"widths": self.default_widths}

    def shapes(self, spec):
        sizes = (math.prod(spec.input_shape), *spec.widths, spec.num_classes)
        names = (*(f"dense{i}" for i in range(spec.num_hidden)), "head")
        return chain(sizes, names)

    def geometry(self, spec, layer_index):
        return None

    def dense_input(self, spec, layer_index, h):
        return h.reshape(h.shape[0], -1)

    def apply(self, spec, params, x, unit_masks, layer, op):
        flat = x.reshape(x.shape[0], -1)
        return _chain_apply(spec, flat, unit_masks, layer, lambda h: h)


class CNN(_Chain):
    """Conv layers (1-D or 2-D, one kernel, stride and padding each), then a dense head over
    the flattened last feature map, channel-major (like torch's view(B, -1))."""

    name = "cnn"
    default_widths = (32, 32, 32)
    width_count = 3
    widths_rule = "3 conv layers: give 3 channel counts"

    def check(self, spec):
        """Raise unless every conv layer has a kernel, stride and padding and keeps positions."""
        check_plain(spec)
        if len(spec.input_shape) - 1 not in CONV_DIMENSIONS:
            raise ValueError(
                "a cnn needs input_shape (length, channels) or (height, width, channels), "
                f"got {spec.input_shape}"
            )
        per_layer = (spec.kernel_sizes, spec.strides, spec.paddings)
        if any(len(v) != len(spec.widths) for v in per_layer):
            raise ValueError(
                f"a cnn needs one kernel size, stride and padding per conv layer: widths="
                f"{spec.widths}, kernel_sizes={spec.kernel_sizes}, strides={spec.strides}, "
                f"paddings={spec.paddings}"
            )
        if min(spec.kernel_sizes) < 1 or min(spec.strides) < 1 or min(spec.paddings) < 0:
            raise ValueError("cnn kernel sizes and strides must be >= 1, paddings >= 0")
        for i, spatial in enumerate(self.maps(spec)[1:]):
            if min(spatial) < 1:
                raise ValueError(f"conv{i} of {spec} has no output positions left")

    def default(self, input_shape):
        """On (length, channels): the MNIST-1D paper's ConvBase layout (kernels 5, 3, 3, stride
        2, padding 1; Greydanus 2020, github.com/greydanus/mnist1d notebooks/models.py) at 32
        channels. On (height, width, channels): three 3x3 convs of 32 channels, strides 1, 2, 2,
        padding 1 (8x8 digits -> 8x8 -> 4x4 -> 2x2)."""
        by_rank = {2: ((5, 3, 3), (2, 2, 2)), 3: ((3, 3, 3), (1, 2, 2))}
        if len(input_shape) not in by_rank:
            return None
        kernels, strides = by_rank[len(input_shape)]
        return {
            "widths": self.default_widths,
            "kernel_sizes": kernels,
            "strides": strides,
            "paddings": (1, 1, 1),
        }

    def maps(self, spec):
        """Spatial shape of the input and of each conv layer's output."""
        return conv_maps(spec.input_shape[:-1], spec.kernel_sizes, spec.strides, spec.paddings)

    def shapes(self, spec):
        """A CNN's head reads the flattened last feature map (C channels at S positions), so it
        is a layer with ``in_units == C`` and ``kernel_area == S`` at one position: its K = C * S
        rows are channel-major, and dropping a channel drops S rows, as for any conv."""
        maps = self.maps(spec)
        channels = (spec.input_shape[-1], *spec.widths)
        convs = tuple(
            LayerShape(
                in_units=channels[i],
                out_units=channels[i + 1],
                kernel_area=spec.kernel_sizes[i] ** len(maps[i]),
                positions=math.prod(maps[i + 1]),
                name=f"conv{i}",
            )
            for i in range(spec.num_hidden)
        )
        area = math.prod(maps[-1])
        head = LayerShape(channels[-1], spec.num_classes, kernel_area=area, name="head")
        return (*convs, head)

    def geometry(self, spec, layer_index):
        if layer_index >= spec.num_hidden:
            return None
        return Conv(*(v[layer_index] for v in (spec.kernel_sizes, spec.strides, spec.paddings)))

    def dense_input(self, spec, layer_index, h):
        return jnp.moveaxis(h, -1, 1).reshape(h.shape[0], -1)

    def apply(self, spec, params, x, unit_masks, layer, op):
        return _chain_apply(spec, x, unit_masks, layer, lambda h: self.dense_input(spec, -1, h))


class ModuleFamily:
    """Your own NNX module as a network family (`codesign.nn.nnx_model`): a spec holds the
    traced module (`NetworkSpec.network`, a `ModuleNetwork`), which knows its layers, width
    groups, first weights and forward pass."""

    name = "module"
    default_widths = (32, 32, 32)  # unused: a module's widths are its own
    width_count = None
    widths_rule = "the widths of its own layers"
    takes_depth = False
    user_module = True

    def check(self, spec):
        if spec.network is None or tuple(spec.network.widths) != spec.widths:
            raise ValueError("a module network needs its traced network and its widths")
        if spec.depth:
            raise ValueError("only a resnet takes a depth")

    def default(self, input_shape):
        return None

    def spec_fields(self, model, input_shape):
        from codesign.nn.nnx_model import traced  # Flax NNX: imported when a module is used

        net = traced(model.module, model.kwargs, model.groups, tuple(input_shape))
        return {"widths": net.widths, "network": net}

    def num_layers(self, model) -> int:
        return model.layers

    def groups(self, spec):
        return spec.network.groups

    def shapes(self, spec):
        net = spec.network
        return tuple(
            LayerShape(
                in_units=layer.in_units,
                out_units=spec.num_classes if out_group < 0 else layer.out_units,
                kernel_area=layer.kernel_area,
                positions=layer.positions,
                name=layer.name,
                source=source,
            )
            for layer, (_, out_group), source in zip(
                net.layers, net.groups, net.sources(), strict=True
            )
        )

    def init(self, spec, key, draw):
        """The module's own initial weights, and a fresh head."""
        net = spec.network
        params = [
            {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
            for w, b in zip(net.kernels[:-1], net.biases[:-1], strict=True)
        ]
        head = draw(self.shapes(spec)[-1:], jax.random.fold_in(key, len(params)))
        return params + head

    def geometry(self, spec, layer_index):
        return None  # a module's convs reach the hooks as their patches

    def dense_input(self, spec, layer_index, h):
        return h.reshape(h.shape[0], -1)

    def apply(self, spec, params, x, unit_masks, layer, op):
        return spec.network.apply(params, x, unit_masks, op)


# module: your own NNX model (`codesign.nn.nnx_model`)
FAMILY: dict[str, Family] = {
    "mlp": MLP(),
    "cnn": CNN(),
    "resnet": ResNet(),
    "module": ModuleFamily(),
}
FAMILIES = tuple(FAMILY)


def family(name: str) -> Family:
    """The family of this name (one of `FAMILIES`)."""
    if name not in FAMILY:
        raise ValueError(f"a network family is one of {FAMILIES}, got {name!r}")
    return FAMILY[name]
