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

FAMILIES = ("mlp", "cnn", "resnet")
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


def resnet_layers(spec: NetworkSpec) -> tuple[tuple[ResidualLayer, ...], tuple[ResidualBlock, ...]]:
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


def _resnet_maps(spec: NetworkSpec) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
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


def layer_groups(spec: NetworkSpec) -> tuple[tuple[int, int], ...]:
    """(in_group, out_group) of every weight layer, the head last; -1 is a fixed width (the
    network's input or its classes). A candidate keeps ``widths[g]`` units of group g, and every
    layer that writes a group keeps that many output units, every layer that reads it that many
    inputs."""
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
    if spec.family == "resnet":
        layers, _ = resnet_layers(spec)
        producer = {-1: -1}
        shapes = []
        for i, (layer, (spatial_in, spatial_out)) in enumerate(
            zip(layers, _resnet_maps(spec), strict=True)
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
    A ResNet's second conv of each block starts at zero (see `resnet_layers`).
    """
    shapes = layer_shapes(spec)
    params = []
    for shape, layer_key in zip(shapes, jax.random.split(key, len(shapes)), strict=True):
        bound = 1.0 / math.sqrt(shape.rows)
        w_key, b_key = jax.random.split(layer_key)
        w = jax.random.uniform(w_key, (shape.rows, shape.out_units), minval=-bound, maxval=bound)
        b = jax.random.uniform(b_key, (shape.out_units,), minval=-bound, maxval=bound)
        if spec.family == "resnet" and shape.name.endswith(".conv2"):
            w, b = jnp.zeros_like(w), jnp.zeros_like(b)
        params.append({"w": w, "b": b})
    return tuple(params)


def _matmul(layer_index: int, x_matrix: jax.Array, w_matrix: jax.Array) -> jax.Array:
    """The exact digital product; `apply` takes a replacement (e.g. the analog simulator)."""
    del layer_index
    return x_matrix @ w_matrix


def _patches(h: jax.Array, kernel: int, stride: int, padding: int) -> jax.Array:
    """[B, *spatial_out, C * kernel_area] conv patches of h [B, *spatial, C], channel-major."""
    dims = h.ndim - 2
    return jax.lax.conv_general_dilated_patches(
        h,
        filter_shape=(kernel,) * dims,
        window_strides=(stride,) * dims,
        padding=((padding, padding),) * dims,
        dimension_numbers=_CONV_DIMENSIONS[dims],
        precision=jax.lax.Precision.HIGHEST,  # a gather in disguise: keep it exact on any backend
    )


def layer_input(spec: NetworkSpec, layer_index: int, h: jax.Array) -> jax.Array:
    """The [B*P, K] matrix that layer `layer_index` multiplies by its weights, rows unit-major.

    ``h`` is the layer's input: [B, *input_shape] for the first layer, else the previous layer's
    output [B, *spatial, N] (a ResNet layer's: its source's). Conv patches come out channel-major
    (c * kernel_area + offset).
    """
    batch = h.shape[0]
    if spec.family == "mlp":
        return h.reshape(batch, -1)
    if spec.family == "resnet":
        layers, _ = resnet_layers(spec)
        if layer_index == len(layers):  # head: global average pool
            return jnp.mean(h, axis=tuple(range(1, h.ndim - 1)))
        layer = layers[layer_index]
        patches = _patches(h, layer.kernel, layer.stride, layer.padding)
        return patches.reshape(-1, patches.shape[-1])
    if layer_index == spec.num_hidden:  # head: flatten channel-major, like torch's view(B, -1)
        return jnp.moveaxis(h, -1, 1).reshape(batch, -1)
    k, s, p = (v[layer_index] for v in (spec.kernel_sizes, spec.strides, spec.paddings))
    patches = _patches(h, k, s, p)
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
        unit_masks: one [N_max] mask per width group (`layer_groups`; an MLP's or CNN's hidden
            layers), multiplied into the outputs of every layer that writes the group (1 keeps
            a unit, 0 removes it); None keeps every unit.
        matmul: ``matmul(layer_index, x_matrix [B*P, K], w [K, N]) -> [B*P, N]``, the hook where
            a hardware model replaces the exact product.
    """
    if tuple(x.shape[1:]) != spec.input_shape:
        raise ValueError(f"apply expects x of shape [B, *{spec.input_shape}], got {x.shape}")
    num_layers = len(layer_groups(spec))
    if len(params) != num_layers:
        raise ValueError(f"params hold {len(params)} layers, the network has {num_layers}")
    if unit_masks is not None and len(unit_masks) != spec.num_hidden:
        raise ValueError(f"need {spec.num_hidden} unit masks, one per width group")
    matmul = _matmul if matmul is None else matmul
    if spec.family == "resnet":
        return _apply_resnet(spec, params, x, unit_masks, matmul)
    maps = feature_map_shapes(spec) if spec.family == "cnn" else None
    batch, h = x.shape[0], x
    for i, layer in enumerate(params[:-1]):
        y = jax.nn.relu(matmul(i, layer_input(spec, i, h), layer["w"]) + layer["b"][None, :])
        if unit_masks is not None:
            y = y * unit_masks[i][None, :]
        h = y if maps is None else y.reshape(batch, *maps[i + 1], y.shape[-1])
    head = spec.num_hidden
    return matmul(head, layer_input(spec, head, h), params[head]["w"]) + params[head]["b"][None, :]


def _apply_resnet(spec: NetworkSpec, params, x, unit_masks, matmul) -> jax.Array:
    """The ResNet forward: every stream is masked to its stage's width after each add."""
    layers, blocks = resnet_layers(spec)
    maps = _resnet_maps(spec)
    batch = x.shape[0]

    def conv(i, h):  # pre-activation output of conv i, [B, *spatial_out, N]
        y = matmul(i, layer_input(spec, i, h), params[i]["w"]) + params[i]["b"][None, :]
        return y.reshape(batch, *maps[i][1], y.shape[-1])

    def keep(group, y):
        return y if unit_masks is None else y * unit_masks[group][(None,) * (y.ndim - 1)]

    h = keep(0, jax.nn.relu(conv(0, x)))
    for block in blocks:
        r = keep(block.group, jax.nn.relu(conv(block.conv1, h)))
        shortcut = h if block.shortcut is None else conv(block.shortcut, h)
        h = keep(block.group, jax.nn.relu(conv(block.conv2, r) + shortcut))
    head = len(layers)
    return matmul(head, layer_input(spec, head, h), params[head]["w"]) + params[head]["b"][None, :]


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
    fixed_in, fixed_out = spec.input_shape[-1], spec.num_classes
    if spec.family == "mlp":
        fixed_in = math.prod(spec.input_shape)

    def pick(group, fixed):
        if group >= 0:
            return widths[..., group]
        return xp.full(widths.shape[:-1], fixed, widths.dtype)

    groups = layer_groups(spec)
    ins = xp.stack([pick(g, fixed_in) for g, _ in groups], axis=-1)
    outs = xp.stack([pick(g, fixed_out) for _, g in groups], axis=-1)
    return ins, outs


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
