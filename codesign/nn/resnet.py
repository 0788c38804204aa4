"""The CIFAR-style residual CNN family (`ResNet`, a `codesign.nn.families.Family`): its layout,
layer shapes and forward pass.

A spec here is a `codesign.nn.networks.NetworkSpec` of family "resnet"; its weights are the
[K, N] matrices `ResNet.shapes` describes, in the order `resnet_layers` lists them.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from codesign.nn.conv import Conv
from codesign.nn.layers import CONV_DIMENSIONS, LayerShape, per_unit

__all__ = [
    "ResNet",
    "ResidualBlock",
    "ResidualLayer",
    "apply_resnet",
    "resnet_layers",
    "resnet_maps",
]


@dataclasses.dataclass(frozen=True)
class ResidualLayer:
    """One conv of a ResNet: its geometry and the width groups (stages) it reads and writes."""

    name: str
    in_group: int  # -1: the network input
    out_group: int
    kernel: int
    stride: int
    padding: int


@dataclasses.dataclass(frozen=True)
class ResidualBlock:
    """Layer indices of one block: out = relu(conv2(relu(conv1(x))) + shortcut(x))."""

    conv1: int
    conv2: int
    shortcut: int | None  # a 1x1 projection, or None for the identity
    group: int


def resnet_layers(spec) -> tuple[tuple[ResidualLayer, ...], tuple[ResidualBlock, ...]]:
    """A CIFAR-style ResNet (He et al. 2016, sec. 4.2): the convs in parameter order, and blocks.

    A 3x3 stem conv, then 3 stages of n = (depth - 2) / 6 basic blocks of two 3x3 convs; the
    first block of stages 2 and 3 halves the positions (stride 2) and projects its shortcut with
    a strided 1x1 conv (He et al.'s option B). Every conv of a stage writes or reads the stage's
    residual stream, so a stage is one width group: its blocks' inner convs are tied to it too.
    No normalisation layer: the second conv of every block starts at zero (Goyal et al. 2017,
    "zero-gamma"; Fixup, Zhang et al. 2019), so the network needs no batch statistics and every
    weight is a plain matrix an analog tile can hold.
    """
    layers = [ResidualLayer("stem", -1, 0, 3, 1, 1)]
    blocks = []
    for stage in range(3):
        for b in range(spec.depth // 6):
            down = stage > 0 and b == 0
            source = stage - 1 if down else stage
            name = f"stage{stage}.block{b}"
            conv1 = len(layers)
            layers.append(ResidualLayer(f"{name}.conv1", source, stage, 3, 2 if down else 1, 1))
            layers.append(ResidualLayer(f"{name}.conv2", stage, stage, 3, 1, 1))
            shortcut = None
            if down:
                shortcut = len(layers)
                layers.append(ResidualLayer(f"{name}.shortcut", source, stage, 1, 2, 0))
            blocks.append(ResidualBlock(conv1, conv1 + 1, shortcut, stage))
    return tuple(layers), tuple(blocks)


def _out_spatial(spatial: tuple[int, ...], kernel: int, stride: int, padding: int):
    return tuple((n + 2 * padding - kernel) // stride + 1 for n in spatial)


def resnet_maps(spec) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input, output) spatial shape of every ResNet conv."""
    layers, _ = resnet_layers(spec)
    stream = {-1: spec.input_shape[:-1]}  # spatial shape of each group's stream
    maps = []
    for layer in layers:
        spatial_in = stream[layer.in_group]
        spatial_out = _out_spatial(spatial_in, layer.kernel, layer.stride, layer.padding)
        stream[layer.out_group] = spatial_out
        maps.append((spatial_in, spatial_out))
    return maps


def apply_resnet(spec, x, unit_masks, layer, head_input, scale) -> jax.Array:
    """The ResNet forward (`networks.apply`): every stream is masked to its stage's width after
    each add. ``layer(i, h)`` is conv i's pre-activation output (the head's for the last i),
    ``head_input(h)`` the global average the head reads, ``scale(y, mask)`` y times a unit mask."""
    layers, blocks = resnet_layers(spec)

    def keep(group, y):
        return y if unit_masks is None else scale(y, unit_masks[group])

    h = keep(0, jax.nn.relu(layer(0, x)))
    for block in blocks:
        r = keep(block.group, jax.nn.relu(layer(block.conv1, h)))
        shortcut = h if block.shortcut is None else layer(block.shortcut, h)
        h = keep(block.group, jax.nn.relu(layer(block.conv2, r) + shortcut))
    return layer(len(layers), head_input(h))


class ResNet:
    """The ResNet family: ``depth`` = 6n + 2 layers in 3 stages, each stage one width group,
    a dense head over the globally averaged last stage."""

    name = "resnet"
    default_widths = (16, 32, 64)
    width_count = 3
    widths_rule = "3 stages: give 3 widths"
    takes_depth = True
    user_module = False

    def check(self, spec):
        """Raise unless the ResNet has 3 stages, a depth of 6n + 2 and positions left."""
        if spec.network is not None:
            raise ValueError("only a module family takes a network")
        if len(spec.input_shape) - 1 not in CONV_DIMENSIONS:
            raise ValueError(
                "a resnet needs input_shape (length, channels) or (height, width, channels), "
                f"got {spec.input_shape}"
            )
        if len(spec.widths) != 3:
            raise ValueError(f"a resnet has 3 stages: give 3 widths, got {spec.widths}")
        if spec.depth < 8 or (spec.depth - 2) % 6:
            raise ValueError(f"a resnet's depth is 6n + 2 (8, 14, 20, ...), got {spec.depth}")
        if spec.kernel_sizes or spec.strides or spec.paddings:
            raise ValueError("a resnet takes no kernel_sizes, strides or paddings")

    def default(self, input_shape):
        """ResNet-8 at the CIFAR widths 16, 32, 64 (He et al. 2016, sec. 4.2)."""
        if len(input_shape) - 1 not in CONV_DIMENSIONS:
            return None
        return {"widths": self.default_widths, "depth": 8}

    def spec_fields(self, model, input_shape):
        fields = self.default(input_shape)
        if fields is None:
            raise ValueError(f"no default 'resnet' network for input shape {input_shape}")
        return {**fields, "widths": tuple(model.widths), "depth": model.depth}

    def num_layers(self, model) -> int:
        """The stem, 2 convs per block, 2 shortcut projections and the head."""
        return (model.depth - 2) + 4

    def groups(self, spec):
        layers, _ = resnet_layers(spec)
        return (*((l.in_group, l.out_group) for l in layers), (len(spec.widths) - 1, -1))

    def shapes(self, spec):
        """The head reads the globally averaged last stage (K = C); each layer names the layer
        whose outputs it reads (``source``), so the energy model follows the shortcuts."""
        layers, _ = resnet_layers(spec)
        producer = {-1: -1}
        shapes = []
        for i, (layer, (spatial_in, spatial_out)) in enumerate(
            zip(layers, resnet_maps(spec), strict=True)
        ):
            in_units = spec.input_shape[-1] if layer.in_group < 0 else spec.widths[layer.in_group]
            shapes.append(
                LayerShape(
                    in_units=in_units,
                    out_units=spec.widths[layer.out_group],
                    kernel_area=layer.kernel ** len(spatial_in),
                    positions=math.prod(spatial_out),
                    name=layer.name,
                    source=producer[layer.in_group],
                )
            )
            producer.setdefault(layer.out_group, i)
        head = LayerShape(spec.widths[-1], spec.num_classes, name="head", source=producer[2])
        return (*shapes, head)

    def init(self, spec, key, draw):
        """Fresh weights, with the second conv of every block at zero (`resnet_layers`)."""
        shapes = self.shapes(spec)
        params = draw(shapes, key)
        for layer, shape in zip(params, shapes, strict=True):
            if shape.name.endswith(".conv2"):
                layer["w"], layer["b"] = jnp.zeros_like(layer["w"]), jnp.zeros_like(layer["b"])
        return params

    def geometry(self, spec, layer_index):
        layers, _ = resnet_layers(spec)
        if layer_index == len(layers):
            return None
        layer = layers[layer_index]
        return Conv(layer.kernel, layer.stride, layer.padding)

    def dense_input(self, spec, layer_index, h):
        return jnp.mean(h, axis=tuple(range(1, h.ndim - 1)))

    def apply(self, spec, params, x, unit_masks, layer, op):
        keep = functools.partial(per_unit, multiply=1)
        head_input = functools.partial(self.dense_input, spec, -1)
        return apply_resnet(spec, x, unit_masks, layer, head_input, keep)
