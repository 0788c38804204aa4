"""Network families at fixed maximum widths, and the layer shapes the energy model reads."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """One weight layer as the hardware sees it: a K x N matrix applied at P positions.

    A dense layer has ``kernel_area == 1`` and ``positions == 1``. A conv layer with ``c_in``
    input channels and a kh x kw kernel has ``in_units == c_in`` and ``kernel_area == kh * kw``,
    so K = c_in * kh * kw, and is applied at ``positions`` output positions per inference.
    ``in_units`` and ``out_units`` are the maximum widths; a candidate keeps a subset of them.
    """

    in_units: int
    out_units: int
    kernel_area: int = 1
    positions: int = 1
    name: str = ""

    def __post_init__(self):
        for field in ("in_units", "out_units", "kernel_area", "positions"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LayerShape.{field} must be a positive int, got {value!r}")

    @property
    def rows(self) -> int:
        """K: rows of the weight matrix (inputs x kernel area)."""
        return self.in_units * self.kernel_area

    @property
    def macs(self) -> int:
        """Multiply-accumulates per inference at maximum width."""
        return self.rows * self.out_units * self.positions


def chain(
    sizes: list[int] | tuple[int, ...], names: tuple[str, ...] = ()
) -> tuple[LayerShape, ...]:
    """Dense layers for an MLP with the given sizes, e.g. (64, 256, 256, 10) -> 3 layers."""
    if len(sizes) < 2:
        raise ValueError("an MLP needs at least an input and an output size")
    names = names or tuple(f"dense{i}" for i in range(len(sizes) - 1))
    return tuple(
        LayerShape(in_units=k, out_units=n, name=name)
        for k, n, name in zip(sizes[:-1], sizes[1:], names, strict=True)
    )


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

FAMILIES = ("mlp", "cnn")
_CONV_DIMENSIONS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """A network family at its maximum widths: static and hashable, so jit can key on it.

    ``widths`` are the hidden dense widths of an MLP or the conv channels of a CNN. A CNN's conv
    layers are 1-D for inputs (length, channels) and 2-D for (height, width, channels), with
    square kernels, and end in a dense head over the flattened last feature map.
    """

    family: str
    input_shape: tuple[int, ...]
    num_classes: int
    widths: tuple[int, ...]
    kernel_sizes: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    paddings: tuple[int, ...] = ()

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
        if self.family == "cnn":
            self._check_cnn()
        elif self.kernel_sizes or self.strides or self.paddings:
            raise ValueError("an mlp takes no kernel_sizes, strides or paddings")

    def _check_cnn(self):
        """Raise unless every conv layer has a kernel, stride and padding and keeps positions."""
        if len(self.input_shape) - 1 not in _CONV_DIMENSIONS:
            raise ValueError(
                "a cnn needs input_shape (length, channels) or (height, width, channels), "
                f"got {self.input_shape}"
            )
        per_layer = (self.kernel_sizes, self.strides, self.paddings)
        if any(len(v) != len(self.widths) for v in per_layer):
            raise ValueError(
                f"a cnn needs one kernel size, stride and padding per conv layer: widths="
                f"{self.widths}, kernel_sizes={self.kernel_sizes}, strides={self.strides}, "
                f"paddings={self.paddings}"
            )
        if min(self.kernel_sizes) < 1 or min(self.strides) < 1 or min(self.paddings) < 0:
            raise ValueError("cnn kernel sizes and strides must be >= 1, paddings >= 0")
        for i, spatial in enumerate(feature_map_shapes(self)[1:]):
            if min(spatial) < 1:
                raise ValueError(f"conv{i} of {self} has no output positions left")

    @property
    def num_hidden(self) -> int:
        """Hidden layers (all but the head): the layers that take a width mask."""
        return len(self.widths)


def default_spec(family: str, input_shape: tuple[int, ...], num_classes: int) -> NetworkSpec:
    """The default maximum-width network of a family for inputs of the given shape.

    MLP: two hidden layers of 256. CNN on (length, channels): the MNIST-1D paper's ConvBase
    layout (kernels 5, 3, 3, stride 2, padding 1; Greydanus 2020, github.com/greydanus/mnist1d
    notebooks/models.py) at 32 channels. CNN on (height, width, channels): three 3x3 convs of 32
    channels, strides 1, 2, 2, padding 1 (8x8 digits -> 8x8 -> 4x4 -> 2x2).
    """
    input_shape = tuple(input_shape)
    if family == "mlp":
        return NetworkSpec("mlp", input_shape, num_classes, widths=(256, 256))
    conv = {2: ((5, 3, 3), (2, 2, 2)), 3: ((3, 3, 3), (1, 2, 2))}  # (kernels, strides) by rank
    if family == "cnn" and len(input_shape) in conv:
        kernels, strides = conv[len(input_shape)]
        widths, paddings = (32, 32, 32), (1, 1, 1)
        return NetworkSpec("cnn", input_shape, num_classes, widths, kernels, strides, paddings)
    raise ValueError(f"no default {family!r} network for input shape {input_shape}")


def feature_map_shapes(spec: NetworkSpec) -> tuple[tuple[int, ...], ...]:
    """Spatial shape of a CNN's input and of each conv layer's output, e.g. ((40,), (19,), ...)."""
    shapes = [spec.input_shape[:-1]]
    for k, s, p in zip(spec.kernel_sizes, spec.strides, spec.paddings, strict=True):
        shapes.append(tuple((n + 2 * p - k) // s + 1 for n in shapes[-1]))
    return tuple(shapes)


def layer_shapes(spec: NetworkSpec) -> tuple[LayerShape, ...]:
    """Every weight layer of the network as a K x N matrix at P positions, the head last.

    A CNN's head reads the flattened last feature map (C channels at S positions), so it is
    described as a layer with ``in_units == C`` and ``kernel_area == S`` at one position: its
    K = C * S rows are channel-major, and dropping a channel drops S rows, as for any conv.
    """
    if spec.family == "mlp":
        sizes = (math.prod(spec.input_shape), *spec.widths, spec.num_classes)
        names = (*(f"dense{i}" for i in range(spec.num_hidden)), "head")
        return chain(sizes, names)
    maps = feature_map_shapes(spec)
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
    head = LayerShape(channels[-1], spec.num_classes, kernel_area=math.prod(maps[-1]), name="head")
    return (*convs, head)


def init_params(spec: NetworkSpec, key: jax.Array) -> tuple[dict[str, jax.Array], ...]:
    """Fresh parameters at maximum widths: w [K, N] and b [N] per layer.

    Both drawn from U(-1/sqrt(K), 1/sqrt(K)), PyTorch's default for Linear and Conv layers, so
    training from scratch matches the MNIST-1D paper's reference models.
    """
    shapes = layer_shapes(spec)
    params = []
    for shape, layer_key in zip(shapes, jax.random.split(key, len(shapes)), strict=True):
        bound = 1.0 / math.sqrt(shape.rows)
        w_key, b_key = jax.random.split(layer_key)
        w = jax.random.uniform(w_key, (shape.rows, shape.out_units), minval=-bound, maxval=bound)
        b = jax.random.uniform(b_key, (shape.out_units,), minval=-bound, maxval=bound)
        params.append({"w": w, "b": b})
    return tuple(params)


def _matmul(layer_index: int, x_matrix: jax.Array, w_matrix: jax.Array) -> jax.Array:
    """The exact digital product; `apply` takes a replacement (e.g. the analog simulator)."""
    del layer_index
    return x_matrix @ w_matrix


def layer_input(spec: NetworkSpec, layer_index: int, h: jax.Array) -> jax.Array:
    """The [B*P, K] matrix that layer `layer_index` multiplies by its weights, rows unit-major.

    ``h`` is the layer's input: [B, *input_shape] for the first layer, else the previous layer's
    output [B, *spatial, N]. Conv patches come out channel-major (c * kernel_area + offset).
    """
    batch = h.shape[0]
    if spec.family == "mlp":
        return h.reshape(batch, -1)
    if layer_index == spec.num_hidden:  # head: flatten channel-major, like torch's view(B, -1)
        return jnp.moveaxis(h, -1, 1).reshape(batch, -1)
    dims = h.ndim - 2
    k, s, p = (v[layer_index] for v in (spec.kernel_sizes, spec.strides, spec.paddings))
    patches = jax.lax.conv_general_dilated_patches(
        h,
        filter_shape=(k,) * dims,
        window_strides=(s,) * dims,
        padding=((p, p),) * dims,
        dimension_numbers=_CONV_DIMENSIONS[dims],
        precision=jax.lax.Precision.HIGHEST,  # a gather in disguise: keep it exact on any backend
    )
    return patches.reshape(-1, patches.shape[-1])


def apply(
    spec: NetworkSpec,
    params,
    x: jax.Array,
    *,
    unit_masks=None,
    matmul: Callable[[int, jax.Array, jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """Logits [B, num_classes] for inputs x [B, *input_shape].

    Args:
        unit_masks: one [N_max] mask per hidden layer, multiplied into that layer's outputs
            (1 keeps a unit, 0 removes it); None keeps every unit.
        matmul: ``matmul(layer_index, x_matrix [B*P, K], w [K, N]) -> [B*P, N]``, the hook where
            a hardware model replaces the exact product.
    """
    if tuple(x.shape[1:]) != spec.input_shape:
        raise ValueError(f"apply expects x of shape [B, *{spec.input_shape}], got {x.shape}")
    if len(params) != spec.num_hidden + 1:
        raise ValueError(f"params hold {len(params)} layers, the network has {spec.num_hidden + 1}")
    if unit_masks is not None and len(unit_masks) != spec.num_hidden:
        raise ValueError(f"need {spec.num_hidden} unit masks, one per hidden layer")
    matmul = _matmul if matmul is None else matmul
    maps = feature_map_shapes(spec) if spec.family == "cnn" else None
    batch, h = x.shape[0], x
    for i, layer in enumerate(params[:-1]):
        y = jax.nn.relu(matmul(i, layer_input(spec, i, h), layer["w"]) + layer["b"][None, :])
        if unit_masks is not None:
            y = y * unit_masks[i][None, :]
        h = y if maps is None else y.reshape(batch, *maps[i + 1], y.shape[-1])
    head = spec.num_hidden
    return matmul(head, layer_input(spec, head, h), params[head]["w"]) + params[head]["b"][None, :]


def width_masks(spec: NetworkSpec, widths) -> tuple[jax.Array, ...]:
    """Masks keeping the first ``widths[l]`` units of each hidden layer; widths may be traced."""
    if len(widths) != spec.num_hidden:
        raise ValueError(f"need {spec.num_hidden} widths, got {widths}")
    return tuple(
        (jnp.arange(n_max) < w).astype(jnp.float32)
        for n_max, w in zip(spec.widths, widths, strict=True)
    )


def _outgoing_rows(shape: LayerShape, w: jax.Array) -> jax.Array:
    """A layer's weights as [in_units, kernel_area, N]: the block of rows each input unit feeds."""
    return w.reshape(shape.in_units, shape.kernel_area, shape.out_units)


def permute_units(spec: NetworkSpec, params, orders):
    """Reorder each hidden layer's units without changing the function the network computes.

    ``orders[l]`` lists hidden layer l's units in their new order: it permutes layer l's weight
    columns and bias, and the matching blocks of kernel_area rows of layer l + 1.
    """
    if len(orders) != spec.num_hidden:
        raise ValueError(f"need {spec.num_hidden} orders, one per hidden layer")
    shapes = layer_shapes(spec)
    params = [dict(layer) for layer in params]
    for l, order in enumerate(orders):
        order = jnp.asarray(order)
        _check_permutation(order, spec.widths[l], l)
        params[l]["w"] = params[l]["w"][:, order]
        params[l]["b"] = params[l]["b"][order]
        nxt = shapes[l + 1]
        params[l + 1]["w"] = _outgoing_rows(nxt, params[l + 1]["w"])[order].reshape(
            nxt.rows, nxt.out_units
        )
    return tuple(params)


def _check_permutation(order: jax.Array, n: int, layer: int) -> None:
    """Raise unless `order` is a permutation of range(n) (values checked only when concrete)."""
    if order.shape != (n,):
        raise ValueError(f"order for hidden layer {layer} has shape {order.shape}, not ({n},)")
    try:
        values = np.asarray(order)
    except jax.errors.TracerArrayConversionError:
        return
    if not np.array_equal(np.sort(values), np.arange(n)):
        raise ValueError(f"order for hidden layer {layer} is not a permutation of range({n})")


def unit_importance(spec: NetworkSpec, params) -> tuple[jax.Array, ...]:
    """Per hidden layer, [N] importance of each unit: the L2 norm of every weight touching it.

    That is the unit's incoming weights and bias together with its outgoing rows in the next
    layer; a unit whose importance is 0 can be removed without changing the output.
    """
    shapes = layer_shapes(spec)
    importance = []
    for l in range(spec.num_hidden):
        incoming = jnp.sum(params[l]["w"] ** 2, axis=0) + params[l]["b"] ** 2
        outgoing = jnp.sum(_outgoing_rows(shapes[l + 1], params[l + 1]["w"]) ** 2, axis=(1, 2))
        importance.append(jnp.sqrt(incoming + outgoing))
    return tuple(importance)


def sort_units(spec: NetworkSpec, params):
    """Permute every hidden layer's units most important first, so width masks keep the best."""
    orders = [jnp.argsort(-imp) for imp in unit_importance(spec, params)]
    return permute_units(spec, params, orders)
