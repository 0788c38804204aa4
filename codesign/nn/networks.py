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
from codesign.nn.resnet import apply_resnet, resnet_layers, resnet_maps


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
    # The layer whose kept output units are this layer's inputs: None for the previous layer (a
    # chain), -1 for the network input. A residual network's layers read other layers' outputs.
    source: int | None = None

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

FAMILIES = ("mlp", "cnn", "resnet", "module")  # module: your own NNX model, `codesign.nn.nnx_model`
_CONV_DIMENSIONS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


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
        if self.family == "module":
            if self.network is None or tuple(self.network.widths) != self.widths:
                raise ValueError("a module network needs its traced network and its widths")
        elif self.network is not None:
            raise ValueError("only a module family takes a network")
        if self.family == "resnet":
            self._check_resnet()
        elif self.depth:
            raise ValueError("only a resnet takes a depth")
        if self.family == "cnn":
            self._check_cnn()
        elif self.family == "mlp" and (self.kernel_sizes or self.strides or self.paddings):
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

    def _check_resnet(self):
        """Raise unless the ResNet has 3 stages, a depth of 6n + 2 and positions left."""
        if len(self.input_shape) - 1 not in _CONV_DIMENSIONS:
            raise ValueError(
                "a resnet needs input_shape (length, channels) or (height, width, channels), "
                f"got {self.input_shape}"
            )
        if len(self.widths) != 3:
            raise ValueError(f"a resnet has 3 stages: give 3 widths, got {self.widths}")
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"a resnet's depth is 6n + 2 (8, 14, 20, ...), got {self.depth}")
        if self.kernel_sizes or self.strides or self.paddings:
            raise ValueError("a resnet takes no kernel_sizes, strides or paddings")

    @property
    def num_hidden(self) -> int:
        """Width groups: the widths a candidate chooses (a CNN's or MLP's hidden layers, a
        ResNet's stages). Each takes one width mask."""
        return len(self.widths)


def default_spec(family: str, input_shape: tuple[int, ...], num_classes: int) -> NetworkSpec:
    """The default maximum-width network of a family for inputs of the given shape.

    MLP: two hidden layers of 256. ResNet: ResNet-8 at the CIFAR widths 16, 32, 64 (He et al.
    2016, sec. 4.2). CNN on (length, channels): the MNIST-1D paper's ConvBase
    layout (kernels 5, 3, 3, stride 2, padding 1; Greydanus 2020, github.com/greydanus/mnist1d
    notebooks/models.py) at 32 channels. CNN on (height, width, channels): three 3x3 convs of 32
    channels, strides 1, 2, 2, padding 1 (8x8 digits -> 8x8 -> 4x4 -> 2x2).
    """
    input_shape = tuple(input_shape)
    if family == "resnet" and len(input_shape) - 1 in _CONV_DIMENSIONS:
        return NetworkSpec("resnet", input_shape, num_classes, (16, 32, 64), depth=8)
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


def layer_groups(spec: NetworkSpec) -> tuple[tuple[int, int], ...]:
    """(in_group, out_group) of every weight layer, the head last; -1 is a fixed width (the
    network's input or its classes). A candidate keeps ``widths[g]`` units of group g, and every
    layer that writes a group keeps that many output units, every layer that reads it that many
    inputs."""
    if spec.family == "module":
        return spec.network.groups
    if spec.family == "resnet":
        layers, _ = resnet_layers(spec)
        return (*((l.in_group, l.out_group) for l in layers), (len(spec.widths) - 1, -1))
    n = spec.num_hidden
    return tuple((l - 1, l if l < n else -1) for l in range(n + 1))


def _group_size(spec: NetworkSpec, group: int, fixed: int) -> int:
    return fixed if group < 0 else spec.widths[group]


def layer_shapes(spec: NetworkSpec) -> tuple[LayerShape, ...]:
    """Every weight layer of the network as a K x N matrix at P positions, the head last.

    A CNN's head reads the flattened last feature map (C channels at S positions), so it is
    described as a layer with ``in_units == C`` and ``kernel_area == S`` at one position: its
    K = C * S rows are channel-major, and dropping a channel drops S rows, as for any conv.
    A ResNet's head reads the globally averaged last stage (K = C); each of its layers names the
    layer whose outputs it reads (``source``), so the energy model follows the shortcuts.
    """
    if spec.family == "module":
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
    if spec.family == "resnet":
        layers, _ = resnet_layers(spec)
        producer = {-1: -1}
        shapes = []
        for i, (layer, (spatial_in, spatial_out)) in enumerate(
            zip(layers, resnet_maps(spec), strict=True)
        ):
            shapes.append(
                LayerShape(
                    in_units=_group_size(spec, layer.in_group, spec.input_shape[-1]),
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
    A ResNet's second conv of each block starts at zero (see `resnet_layers`); a module keeps
    the weights it was built with, except its head.
    """
    shapes = layer_shapes(spec)
    params = []
    if spec.family == "module":  # the module's own initial weights, and a fresh head
        net = spec.network
        params = [
            {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
            for w, b in zip(net.kernels[:-1], net.biases[:-1], strict=True)
        ]
        shapes = shapes[-1:]
        key = jax.random.fold_in(key, len(params))
    for shape, layer_key in zip(shapes, jax.random.split(key, len(shapes)), strict=True):
        bound = 1.0 / math.sqrt(shape.rows)
        w_key, b_key = jax.random.split(layer_key)
        w = jax.random.uniform(w_key, (shape.rows, shape.out_units), minval=-bound, maxval=bound)
        b = jax.random.uniform(b_key, (shape.out_units,), minval=-bound, maxval=bound)
        if spec.family == "resnet" and shape.name.endswith(".conv2"):
            w, b = jnp.zeros_like(w), jnp.zeros_like(b)
        params.append({"w": w, "b": b})
    return tuple(params)


def digital_layer(layer_index: int, h: jax.Array, w: jax.Array, geometry: Conv | None):
    """The exact digital layer: ``h @ w`` for a dense layer, the direct convolution for a conv
    (`codesign.nn.conv`). `apply` takes a replacement (e.g. the analog simulator)."""
    del layer_index
    return h @ w if geometry is None else conv.conv(h, w, geometry)


def layer_geometry(spec: NetworkSpec, layer_index: int) -> Conv | None:
    """The convolution layer ``layer_index`` applies, or None for a dense layer (a head)."""
    if spec.family == "resnet":
        layers, _ = resnet_layers(spec)
        if layer_index == len(layers):
            return None
        layer = layers[layer_index]
        return Conv(layer.kernel, layer.stride, layer.padding)
    if spec.family == "cnn" and layer_index < spec.num_hidden:
        return Conv(*(v[layer_index] for v in (spec.kernel_sizes, spec.strides, spec.paddings)))
    return None


def _head_input(spec: NetworkSpec, h: jax.Array) -> jax.Array:
    """What the head multiplies: an MLP's flattened input or last hidden layer, a CNN's last
    feature map flattened channel-major (like torch's view(B, -1)), a ResNet's global average."""
    if spec.family == "resnet":
        return jnp.mean(h, axis=tuple(range(1, h.ndim - 1)))
    if spec.family == "cnn":
        return jnp.moveaxis(h, -1, 1).reshape(h.shape[0], -1)
    return h.reshape(h.shape[0], -1)


def _per_unit(y: jax.Array, v: jax.Array, multiply: int) -> jax.Array:
    """y [..., N] plus (multiply=0) or times (multiply=1) a per-unit vector v [N]."""
    v = v.reshape((1,) * (y.ndim - 1) + v.shape)
    return y * v if multiply else y + v


def layer_input(spec: NetworkSpec, layer_index: int, h: jax.Array) -> jax.Array:
    """The [B*P, K] matrix that layer `layer_index` multiplies by its weights, rows unit-major.

    ``h`` is the layer's input: [B, *input_shape] for the first layer, else the previous layer's
    output [B, *spatial, N] (a ResNet layer's: its source's). Conv patches come out channel-major
    (c * kernel_area + offset).
    """
    geometry = layer_geometry(spec, layer_index)
    if geometry is not None:
        return conv.patches(h, geometry)
    if spec.family == "mlp" and layer_index < spec.num_hidden:
        return h.reshape(h.shape[0], -1)
    return _head_input(spec, h)


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

    def dense_or_conv(i, h):
        return _per_unit(op(i, h, params[i]["w"], layer_geometry(spec, i)), params[i]["b"], 0)

    if spec.family == "module":
        return spec.network.apply(params, x, unit_masks, op)
    if spec.family == "resnet":
        keep = functools.partial(_per_unit, multiply=1)
        head_input = functools.partial(_head_input, spec)
        return apply_resnet(spec, x, unit_masks, dense_or_conv, head_input, keep)
    h = x.reshape(x.shape[0], -1) if spec.family == "mlp" else x
    for i in range(spec.num_hidden):
        h = jax.nn.relu(dense_or_conv(i, h))
        if unit_masks is not None:
            h = _per_unit(h, unit_masks[i], 1)
    return dense_or_conv(spec.num_hidden, _head_input(spec, h))


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


def sort_units(spec: NetworkSpec, params):
    """Permute every width group's units most important first, so width masks keep the best."""
    orders = [jnp.argsort(-imp) for imp in unit_importance(spec, params)]
    return permute_units(spec, params, orders)
