"""The CIFAR-style residual CNN family's layout and forward pass (used by `codesign.nn.networks`).

A spec here is a `codesign.nn.networks.NetworkSpec` of family "resnet"; its weights are the
[K, N] matrices `networks.layer_shapes` describes, in the order `resnet_layers` lists them.
"""

from __future__ import annotations

import dataclasses

import jax

__all__ = ["ResidualBlock", "ResidualLayer", "apply_resnet", "resnet_layers", "resnet_maps"]


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
