"""Network families at fixed maximum widths, and the layer shapes the energy model reads."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from codesign.nn import conv
from codesign.nn.conv import Conv
from codesign.nn.families import FAMILIES, family
from codesign.nn.layers import LayerShape, biased, chain

__all__ = [
    "FAMILIES",
    "LayerShape",
    "NetworkSpec",
    "apply",
    "chain",
    "default_spec",
    "digital_layer",
    "init_params",
    "layer_geometry",
    "layer_groups",
    "layer_input",
    "layer_shapes",
    "layer_widths",
    "permute_units",
    "sort_units",
    "spec_for",
    "unit_importance",
    "width_masks",
]


# ---------------------------------------------------------------------------------------------
# Model families as pure functions over parameter pytrees.
#
# Parameters are a tuple with one {"w": [K, N], "b": [N]} dict per weight layer, in the order of
# `layer_shapes(spec)`. Every weight, dense or conv, is stored as the 2-D matrix the hardware
# holds: K rows ordered input-unit-major (row = in_unit * kernel_area + kernel_offset), N output
# columns. A layer computes `x_matrix [B*P, K] @ w [K, N] + b`, where x_matrix is the input itself
# for a dense layer and the input's patches for a conv layer. A candidate narrower than the
# maximum widths is the maximum network with a mask over each hidden layer's output units, so all
# candidates share one compiled program and a population can be vmapped.

# Each family (`codesign.nn.families`) says what its layers, groups and forward pass are; the
# functions here are the same for every family.


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """A network family at its maximum widths: static and hashable, so jit can key on it.

    ``widths`` are the hidden dense widths of an MLP, the conv channels of a CNN, or the three
    stage widths of a ResNet. Conv layers are 1-D for inputs (length, channels) and 2-D for
    (height, width, channels), with square kernels. A CNN ends in a dense head over the
    flattened last feature map; a ResNet (``depth`` = 6n + 2, n blocks per stage) in one over the
    globally averaged last feature map (see `resnet_layers`).
    """

    family: str
    input_shape: tuple[int, ...]
    num_classes: int
    widths: tuple[int, ...]
    kernel_sizes: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    paddings: tuple[int, ...] = ()
    # resnet only; kept out of repr, so the cache keys of other families stay as they were
    depth: int = dataclasses.field(default=0, repr=False)
    # module only: the traced NNX module (a `codesign.nn.nnx_model.ModuleNetwork`)
    network: object = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        for field in ("input_shape", "widths", "kernel_sizes", "strides", "paddings"):
            object.__setattr__(self, field, tuple(int(v) for v in getattr(self, field)))
        if self.family not in FAMILIES:
            raise ValueError(f"NetworkSpec.family must be one of {FAMILIES}, got {self.family!r}")
        if self.num_classes < 2 or not self.widths or min(self.widths) < 1:
            raise ValueError(
                f"NetworkSpec needs num_classes >= 2 and positive widths, got "
                f"num_classes={self.num_classes}, widths={self.widths}"
            )
        if not self.input_shape or min(self.input_shape) < 1:
            raise ValueError(f"NetworkSpec.input_shape must be positive, got {self.input_shape}")
        family(self.family).check(self)

    @property
    def num_hidden(self) -> int:
        """Width groups: the widths a candidate chooses (a CNN's or MLP's hidden layers, a
        ResNet's stages). Each takes one width mask."""
        return len(self.widths)


def default_spec(family_name: str, input_shape: tuple[int, ...], num_classes: int) -> NetworkSpec:
    """The default maximum-width network of a family for inputs of the given shape (the
    family's `default`): MLP, two hidden layers of 128; ResNet-8 at the CIFAR widths; the
    MNIST-1D paper's ConvBase on (length, channels), three 3x3 convs on images."""
    input_shape = tuple(input_shape)
    fields = family(family_name).default(input_shape)
    if fields is None:
        raise ValueError(f"no default {family_name!r} network for input shape {input_shape}")
    return NetworkSpec(family_name, input_shape, num_classes, **fields)


def spec_for(model, input_shape: tuple[int, ...], num_classes: int) -> NetworkSpec:
    """The maximum-width network of a searched `codesign.nn.model.Model` for these inputs."""
    fields = family(model.family).spec_fields(model, tuple(input_shape))
    return NetworkSpec(model.family, tuple(input_shape), num_classes, **fields)


def layer_groups(spec: NetworkSpec) -> tuple[tuple[int, int], ...]:
    """(in_group, out_group) of every weight layer, the head last; -1 is a fixed width (the
    network's input or its classes). A candidate keeps ``widths[g]`` units of group g, and every
    layer that writes a group keeps that many output units, every layer that reads it that many
    inputs."""
    return family(spec.family).groups(spec)


def layer_shapes(spec: NetworkSpec) -> tuple[LayerShape, ...]:
    """Every weight layer of the network as a K x N matrix at P positions, the head last
    (see each family's `shapes`: a CNN's head reads the flattened last feature map, a ResNet's
    the global average, and a ResNet's layers name the layer they read, ``source``)."""
    return family(spec.family).shapes(spec)


def _draw(shapes, key) -> list[dict]:
    """Fresh w [K, N] and b [N] per layer, both U(-1/sqrt(K), 1/sqrt(K)): one compiled program
    per tuple of shapes (drawn op by op, each draw of each shape compiled a program of its own;
    the numbers are the same either way)."""
    return list(_draw_program(tuple(shapes), key))


@functools.partial(jax.jit, static_argnums=0)
def _draw_program(shapes: tuple[LayerShape, ...], key) -> list[dict]:
    params = []
    for shape, layer_key in zip(shapes, jax.random.split(key, len(shapes)), strict=True):
        bound = 1.0 / math.sqrt(shape.rows)
        w_key, b_key = jax.random.split(layer_key)
        w = jax.random.uniform(w_key, (shape.rows, shape.out_units), minval=-bound, maxval=bound)
        b = jax.random.uniform(b_key, (shape.out_units,), minval=-bound, maxval=bound)
        params.append({"w": w, "b": b})
    return params


def init_params(spec: NetworkSpec, key: jax.Array) -> tuple[dict[str, jax.Array], ...]:
    """Fresh parameters at maximum widths: w [K, N] and b [N] per layer.

    Both drawn from U(-1/sqrt(K), 1/sqrt(K)), PyTorch's default for Linear and Conv layers, so
    training from scratch matches the MNIST-1D paper's reference models.
    A ResNet's second conv of each block starts at zero (see `resnet_layers`); a module keeps
    the weights it was built with, except its head.
    """
    return tuple(family(spec.family).init(spec, key, _draw))


def digital_layer(layer_index: int, h: jax.Array, w: jax.Array, geometry: Conv | None):
    """The exact digital layer: ``h @ w`` for a dense layer, the direct convolution for a conv
    (`codesign.nn.conv`). `apply` takes a replacement (e.g. the analog simulator)."""
    del layer_index
    return h @ w if geometry is None else conv.conv(h, w, geometry)


def layer_geometry(spec: NetworkSpec, layer_index: int) -> Conv | None:
    """The convolution layer ``layer_index`` applies, or None for a dense layer (a head)."""
    return family(spec.family).geometry(spec, layer_index)


def layer_input(spec: NetworkSpec, layer_index: int, h: jax.Array) -> jax.Array:
    """The [B*P, K] matrix that layer `layer_index` multiplies by its weights, rows unit-major.

    ``h`` is the layer's input: [B, *input_shape] for the first layer, else the previous layer's
    output [B, *spatial, N] (a ResNet layer's: its source's). Conv patches come out channel-major
    (c * kernel_area + offset).
    """
    geometry = layer_geometry(spec, layer_index)
    if geometry is not None:
        return conv.patches(h, geometry)
    return family(spec.family).dense_input(spec, layer_index, h)


def apply(
    spec: NetworkSpec,
    params,
    x: jax.Array,
    *,
    unit_masks=None,
    matmul: Callable[[int, jax.Array, jax.Array], jax.Array] | None = None,
    layer: Callable | None = None,
) -> jax.Array:
    """Logits [B, num_classes] for inputs x [B, *input_shape].

    Args:
        unit_masks: one [N_max] mask per width group (`layer_groups`; an MLP's or CNN's hidden
            layers), multiplied into the outputs of every layer that writes the group (1 keeps
            a unit, 0 removes it); None keeps every unit.
        layer: ``layer(i, h, w [K, N], geometry) -> y``, the hook where a hardware model
            replaces the exact layer (`digital_layer`): h is [B, K] and y [B, N] for a dense
            layer (geometry None), h [B, *spatial, C] and y [B, *spatial_out, N] for a conv
            (geometry a `codesign.nn.conv.Conv`).
        matmul: ``matmul(layer_index, x_matrix [B*P, K], w [K, N]) -> [B*P, N]``, a simpler
            hook that sees every layer as a matrix product (convs as their patches); slower.
    """
    if tuple(x.shape[1:]) != spec.input_shape:
        raise ValueError(f"apply expects x of shape [B, *{spec.input_shape}], got {x.shape}")
    num_layers = len(layer_groups(spec))
    if len(params) != num_layers:
        raise ValueError(f"params hold {len(params)} layers, the network has {num_layers}")
    if unit_masks is not None and len(unit_masks) != spec.num_hidden:
        raise ValueError(f"need {spec.num_hidden} unit masks, one per width group")
    if matmul is not None and layer is not None:
        raise ValueError("give apply a layer or a matmul hook, not both")
    op = conv.matmul_layer(matmul) if matmul is not None else (layer or digital_layer)

    layer = biased(op, params, functools.partial(layer_geometry, spec))
    return family(spec.family).apply(spec, params, x, unit_masks, layer, op)


def width_masks(spec: NetworkSpec, widths) -> tuple[jax.Array, ...]:
    """Masks keeping the first ``widths[g]`` units of each width group; widths may be traced."""
    if len(widths) != spec.num_hidden:
        raise ValueError(f"need {spec.num_hidden} widths, got {widths}")
    return tuple(
        (jnp.arange(n_max) < w).astype(jnp.float32)
        for n_max, w in zip(spec.widths, widths, strict=True)
    )


def layer_widths(spec: NetworkSpec, widths):
    """Kept (input units, output units) of every layer for group widths [..., groups]: arrays
    [..., layers], NumPy in, NumPy out, traced in, traced out."""
    xp = jnp if isinstance(widths, jax.Array) else np
    widths = xp.asarray(widths)

    def pick(group, fixed):
        if group >= 0:
            return widths[..., group]
        return xp.full(widths.shape[:-1], fixed, widths.dtype)

    pairs = zip(layer_groups(spec), layer_shapes(spec), strict=True)
    ins, outs = zip(
        *((pick(i, s.in_units), pick(o, s.out_units)) for (i, o), s in pairs), strict=True
    )
    return xp.stack(ins, axis=-1), xp.stack(outs, axis=-1)


def _outgoing_rows(shape: LayerShape, w: jax.Array) -> jax.Array:
    """A layer's weights as [in_units, kernel_area, N]: the block of rows each input unit feeds."""
    return w.reshape(shape.in_units, shape.kernel_area, shape.out_units)


def permute_units(spec: NetworkSpec, params, orders):
    """Reorder each width group's units without changing the function the network computes.

    ``orders[g]`` lists group g's units in their new order: it permutes the weight columns and
    bias of every layer that writes the group, and the matching blocks of kernel_area rows of
    every layer that reads it.
    """
    if len(orders) != spec.num_hidden:
        raise ValueError(f"need {spec.num_hidden} orders, one per width group")
    shapes = layer_shapes(spec)
    groups = layer_groups(spec)
    params = [dict(layer) for layer in params]
    for g, order in enumerate(orders):
        order = jnp.asarray(order)
        _check_permutation(order, spec.widths[g], g)
        for l, (in_group, out_group) in enumerate(groups):
            if out_group == g:
                params[l]["w"] = params[l]["w"][:, order]
                params[l]["b"] = params[l]["b"][order]
            if in_group == g:
                shape = shapes[l]
                params[l]["w"] = _outgoing_rows(shape, params[l]["w"])[order].reshape(
                    shape.rows, shape.out_units
                )
    return tuple(params)


def _check_permutation(order: jax.Array, n: int, layer: int) -> None:
    """Raise unless `order` is a permutation of range(n) (values checked only when concrete)."""
    if order.shape != (n,):
        raise ValueError(f"order for width group {layer} has shape {order.shape}, not ({n},)")
    try:
        values = np.asarray(order)
    except jax.errors.TracerArrayConversionError:
        return
    if not np.array_equal(np.sort(values), np.arange(n)):
        raise ValueError(f"order for width group {layer} is not a permutation of range({n})")


def unit_importance(spec: NetworkSpec, params) -> tuple[jax.Array, ...]:
    """Per width group, [N] importance of each unit: the L2 norm of every weight touching it.

    That is the unit's incoming weights and bias in every layer that writes the group, with its
    outgoing rows in every layer that reads it; a unit whose importance is 0 can be removed
    without changing the output.
    """
    shapes = layer_shapes(spec)
    groups = layer_groups(spec)
    importance = []
    for g in range(spec.num_hidden):
        incoming = sum(
            jnp.sum(params[l]["w"] ** 2, axis=0) + params[l]["b"] ** 2
            for l, (_, out_group) in enumerate(groups)
            if out_group == g
        )
        outgoing = sum(
            jnp.sum(_outgoing_rows(shapes[l], params[l]["w"]) ** 2, axis=(1, 2))
            for l, (in_group, _) in enumerate(groups)
            if in_group == g
        )
        importance.append(jnp.sqrt(incoming + outgoing))
    return tuple(importance)


@functools.partial(jax.jit, static_argnums=0)
def sort_units(spec: NetworkSpec, params):
    """Permute every width group's units most important first, so width masks keep the best
    (one compiled program per network: op by op it compiled ~30)."""
    orders = [jnp.argsort(-imp) for imp in unit_importance(spec, params)]
    return permute_units(spec, params, orders)
