"""Your own Flax NNX model as a codesign network: its Linear and Conv layers become the weight
matrices that the engine masks, prunes, runs through the analog simulator and prices.

    module (a class, "pkg.mod:Class" + kwargs) --one traced forward--> ModuleNetwork
        layers   every nnx.Linear / nnx.Conv in call order: K = c_in * kernel area, N, positions
        groups   width coupling: a layer's input is coupled to the layers whose outputs reach it
                 unit by unit (through activations, residual adds, pooling, flattening), found
                 from the Jacobian of every layer's input with respect to a probe on every
                 layer's output; `groups` from the user joins more (names that share a width)
        apply    the module with each of its layers replaced by `matmul(layer, x_matrix, w)`

Rules:
- The last layer called is the head: its outputs are the logits (its width is the task's class
  count, whatever the module was built with) and nothing may be added to them.
- Only Linear and Conv weights are trained; any other parameter (a norm's scale) stays as built.
  The module runs in inference mode (`nnx.Module.eval`): BatchNorm normalises with its running
  statistics as built, never updated; Dropout is off.
- Conv: any padding and stride, no dilation, no feature groups. A Linear after a flatten of an
  NHWC map (position-major features) keeps its rows unit-major inside codesign and is written
  back in the module's order at export.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from codesign.errors import CodesignError

__all__ = [
    "ModuleLayer",
    "ModuleNetwork",
    "build_module",
    "hashable",
    "load_factory",
    "trace_module",
    "traced",
]


def load_factory(module) -> Callable:
    """The module class (or factory) a search space names: an object, or "pkg.mod:Class"."""
    if not isinstance(module, str):
        return module
    name, _, attr = module.partition(":")
    if not name or not attr:
        raise CodesignError(f"model.module: {module!r} is not of the form 'package.module:Class'")
    try:
        return getattr(importlib.import_module(name), attr)
    except Exception as err:  # noqa: BLE001  (user code: any error it raises on import)
        why = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CodesignError(
            f"model.module: cannot import {module!r} ({type(err).__name__}: {why})"
        ) from None


def build_module(module, kwargs: dict) -> nnx.Module:
    """An instance of the module, built with ``rngs=nnx.Rngs(0)`` where it takes rngs."""
    if isinstance(module, nnx.Module):
        return nnx.clone(module)
    factory = load_factory(module)
    kwargs = dict(kwargs)
    try:
        init = factory.__init__ if isinstance(factory, type) else factory
        takes_rngs = "rngs" in inspect.signature(init).parameters
    except (TypeError, ValueError):
        takes_rngs = False
    if takes_rngs and "rngs" not in kwargs:
        kwargs["rngs"] = nnx.Rngs(0)
    try:
        built = factory(**kwargs)
    except Exception as err:
        raise CodesignError(f"model.module: building {module!r} failed: {err}") from None
    if not isinstance(built, nnx.Module):
        raise CodesignError(f"model.module: {module!r} did not build an nnx.Module")
    return built


@dataclasses.dataclass(frozen=True)
class ModuleLayer:
    """One Linear or Conv of the module, as the engine sees it."""

    name: str  # its path in the module, e.g. "blocks.0.conv1"
    path: tuple
    is_conv: bool
    in_units: int
    out_units: int
    kernel_area: int  # a conv's kernel size; a Linear after a flatten: positions flattened
    positions: int
    out_shape: tuple[int, ...]  # per example
    strides: tuple[int, ...] = ()
    padding: object = "SAME"
    kernel_size: tuple[int, ...] = ()
    position_major: bool = False  # a Linear reading an NHWC flatten: rows reordered


class _Hook:
    """The layer function every tap of one traced module calls, set for the length of a call
    (`calling`): each traced network has its own, so networks and nested calls never share one."""

    def __init__(self):
        self.fn: Callable | None = None

    @contextlib.contextmanager
    def calling(self, fn: Callable):
        outer, self.fn = self.fn, fn
        try:
            yield
        finally:
            self.fn = outer


class _Tap(nnx.Module):
    """Stands in for one Linear or Conv: hands its input to its network's hook."""

    def __init__(self, index: int, hook: _Hook):
        self.index = index
        self.hook = hook

    def __call__(self, x):
        return self.hook.fn(self.index, x)


def _get(node, key):
    return node[key] if isinstance(key, int) else getattr(node, key)


def _set(node, key, value):
    if isinstance(key, int):
        node[key] = value
    else:
        setattr(node, key, value)


def _conv_patches(layer: ModuleLayer, x: jax.Array) -> jax.Array:
    dims = x.ndim - 2
    padding = layer.padding
    if isinstance(padding, int):
        padding = ((padding, padding),) * dims
    elif not isinstance(padding, str):
        padding = tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)
    strides = layer.strides if isinstance(layer.strides, tuple) else (layer.strides,) * dims
    specs = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}[dims]
    return jax.lax.conv_general_dilated_patches(
        x,
        filter_shape=layer.kernel_size,
        window_strides=strides,
        padding=padding,
        dimension_numbers=specs,
        precision=jax.lax.Precision.HIGHEST,
    )


def _layer_input(layer: ModuleLayer, x: jax.Array) -> jax.Array:
    """The [B*P, K] matrix the layer multiplies, rows unit-major like every codesign layer."""
    if layer.is_conv:
        patches = _conv_patches(layer, x)
        return patches.reshape(-1, patches.shape[-1])
    x = x.reshape(-1, x.shape[-1])
    if layer.position_major:  # features p * C + c -> c * S + p
        x = x.reshape(x.shape[0], layer.kernel_area, layer.in_units)
        x = jnp.swapaxes(x, 1, 2).reshape(x.shape[0], -1)
    return x


def _kernel_matrix(layer: ModuleLayer, kernel: np.ndarray) -> np.ndarray:
    """The module's kernel as a codesign [K, N] matrix (rows unit-major)."""
    kernel = np.asarray(kernel)
    if layer.is_conv:  # [*kernel, C, N] -> [C, *kernel, N]
        return np.moveaxis(kernel, -2, 0).reshape(-1, kernel.shape[-1])
    if layer.position_major:
        k = kernel.reshape(layer.kernel_area, layer.in_units, -1)
        return np.swapaxes(k, 0, 1).reshape(-1, kernel.shape[-1])
    return kernel


def _module_kernel(layer: ModuleLayer, w: np.ndarray, kernel_shape) -> np.ndarray:
    """Inverse of `_kernel_matrix`."""
    w = np.asarray(w)
    if layer.is_conv:
        c = kernel_shape[-2]
        return np.moveaxis(w.reshape(c, *kernel_shape[:-2], w.shape[-1]), 0, -2)
    if layer.position_major:
        k = w.reshape(layer.in_units, layer.kernel_area, -1)
        return np.swapaxes(k, 0, 1).reshape(-1, w.shape[-1])
    return w


@dataclasses.dataclass(frozen=True, eq=False)
class ModuleNetwork:
    """A traced NNX module: its layers, their width groups, and the module with layers tapped.

    Hashed by identity (it sits in a `NetworkSpec`); `key` names it for cache keys.
    """

    key: str
    layers: tuple[ModuleLayer, ...]
    groups: tuple[tuple[int, int], ...]  # (in_group, out_group) per layer; -1 fixed
    widths: tuple[int, ...]  # per group
    tapped: nnx.Module
    hook: _Hook  # what its taps call: set by `apply` for the length of a call
    kernels: tuple  # the module's own initial weights, as codesign matrices
    biases: tuple
    module: object
    kwargs: dict
    input_shape: tuple[int, ...]

    def sources(self) -> tuple[int, ...]:
        """Per layer, a layer whose kept outputs are its inputs (-1: the network input)."""
        producer = {-1: -1}
        for i, (_, g) in enumerate(self.groups):
            producer.setdefault(g, i)
        return tuple(producer[g] for g, _ in self.groups)

    def apply(self, params, x, unit_masks, layer_op) -> jax.Array:
        """The module's logits, every layer computed by ``layer_op(i, x_matrix, w, None)`` (the
        `codesign.nn.networks.apply` hook; a module's convs reach it as their patches) from
        ``params``."""
        batch = x.shape[0]

        def layer_fn(i, h):
            layer = self.layers[i]
            y = layer_op(i, _layer_input(layer, h), params[i]["w"], None) + params[i]["b"][None, :]
            out_shape = (*layer.out_shape[:-1], y.shape[-1])
            y = y.reshape(batch, *out_shape)
            group = self.groups[i][1]
            if unit_masks is not None and group >= 0:
                y = y * unit_masks[group][(None,) * (y.ndim - 1)]
            return y

        with self.hook.calling(layer_fn):
            return self.tapped(x)

    def to_module(self, params) -> nnx.Module:
        """A plain instance of the user's module holding these weights (export)."""
        module = build_module(self.module, self.kwargs)
        for layer, p in zip(self.layers, params, strict=True):
            target = module
            for key in layer.path:
                target = _get(target, key)
            shape = target.kernel[...].shape
            kernel = _module_kernel(layer, p["w"], shape)
            if kernel.shape != shape:
                raise CodesignError(
                    f"model.module: layer {layer.name} holds a {shape} kernel, the design a "
                    f"{kernel.shape} one (build the module for the task's classes)"
                )
            target.kernel[...] = jnp.asarray(kernel)
            if target.bias is not None:
                target.bias[...] = jnp.asarray(p["b"])
        return module


def _find_layers(module: nnx.Module) -> list[tuple[tuple, nnx.Module]]:
    return [
        (tuple(path), node)
        for path, node in nnx.iter_graph(module)
        if isinstance(node, nnx.Linear | nnx.Conv)
    ]


def trace_module(
    module, kwargs: dict, input_shape: tuple[int, ...], groups=(), key: str = ""
) -> ModuleNetwork:
    """Discover the module's layers, their shapes and width groups from traced forward passes."""
    built = build_module(module, kwargs)
    found = _find_layers(built)
    name = key or (module if isinstance(module, str) else getattr(module, "__name__", "module"))
    if not found:
        raise CodesignError(f"model.module: {name} has no nnx.Linear or nnx.Conv layer")
    for path, layer in found:
        if isinstance(layer, nnx.Conv) and (
            layer.feature_group_count != 1 or layer.kernel_dilation not in (1, None)
        ):
            raise CodesignError(
                f"model.module: {'.'.join(map(str, path))}: grouped or dilated convs are not "
                "supported"
            )
    originals = {i: layer for i, (_, layer) in enumerate(found)}
    tapped = nnx.clone(built)
    # Inference mode: BatchNorm normalises with its running statistics as built (they are not
    # updated: codesign trains only Linear and Conv weights), Dropout is off. Either layer in
    # training mode would update its state inside codesign's traced programs.
    tapped.eval()
    hook = _Hook()
    taps = [_Tap(i, hook) for i in range(len(found))]
    for (path, _), tap in zip(found, taps, strict=True):
        parent = tapped
        for k in path[:-1]:
            parent = _get(parent, k)
        _set(parent, path[-1], tap)

    # Pass 1: call order, input and output shapes, with the module's own layers.
    calls = []

    def record(i, x):
        y = originals[i](x)
        calls.append((i, x.shape, y.shape))
        return y

    x0 = jax.random.normal(jax.random.PRNGKey(0), (8, *input_shape))
    with hook.calling(record):
        jax.eval_shape(lambda x: tapped(x), x0)
    order = []
    for i, _, _ in calls:
        if i in order:
            raise CodesignError(
                f"model.module: layer {'.'.join(map(str, found[i][0]))} is called twice; "
                "codesign needs each layer called once"
            )
        order.append(i)
    in_shapes = {i: s for i, s, _ in calls}
    out_shapes = {i: s for i, _, s in calls}

    # Pass 2: which layers' outputs reach each layer's input unit by unit: the Jacobian of every
    # input with respect to a probe added to every output, with paths through weights cut.
    probes = {i: jnp.zeros(out_shapes[i][-1]) for i in order}
    # Generic random weights for the probes' read-out (NumPy: a jax.random draw per layer
    # compiled a program per shape); only which entries of the Jacobian are nonzero is used.
    rng = np.random.default_rng(1)
    weights = {i: jnp.asarray(rng.standard_normal(in_shapes[i]), jnp.float32) for i in order}

    def inputs_of(probes):
        seen = {}

        def probe(i, x):
            seen[i] = jnp.sum(x * weights[i], axis=tuple(range(x.ndim - 1)))
            y = jax.lax.stop_gradient(originals[i](x))
            return y + probes[i][(None,) * (y.ndim - 1)]

        with hook.calling(probe):
            tapped(x0)
        return seen

    jac = jax.jit(jax.jacfwd(inputs_of))(probes)  # jac[i][j]: [C_in_i, N_j]
    parent = {i: i for i in order}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    feeds = {i: [] for i in order}
    layout = {}
    for i in order:
        for j in order:
            m = np.abs(np.asarray(jac[i][j]))
            if m.max() <= 0:
                continue
            nz = m > 1e-6 * m.max()
            if np.any(nz.sum(axis=1) > 1):
                continue  # dense: reaches through another layer's weights, not directly
            c_in, n = nz.shape
            if c_in % n:
                continue
            rows = np.flatnonzero(nz.any(axis=1))
            unit = nz[rows].argmax(axis=1)
            s = c_in // n
            if np.array_equal(unit, rows // s):
                layout[i] = ("channel", s)
            elif np.array_equal(unit, rows % n):
                layout[i] = ("position", s)
            else:
                continue
            feeds[i].append(j)
    for i in order:
        for j in feeds[i][1:]:
            parent[find(j)] = find(feeds[i][0])
    names = {i: ".".join(map(str, found[i][0])) for i in order}
    by_name = {v: k for k, v in names.items()}
    for group in groups:
        members = [by_name.get(n) for n in group]
        if None in members:
            missing = [n for n, m in zip(group, members, strict=True) if m is None]
            raise CodesignError(
                f"model.groups: no layer {missing[0]!r}; layers: {', '.join(names.values())}"
            )
        for j in members[1:]:
            parent[find(j)] = find(members[0])
    head = order[-1]
    group_of, widths = {}, []
    for i in order:
        root = find(i)
        if root == find(head):
            continue
        if root not in group_of:
            group_of[root] = len(widths)
            widths.append(out_shapes[i][-1])
        elif widths[group_of[root]] != out_shapes[i][-1]:
            raise CodesignError(
                f"model.groups: {names[i]} has {out_shapes[i][-1]} outputs, others of its width "
                f"group {widths[group_of[root]]}"
            )
    if any(find(j) == find(head) for j in order if j != head):
        raise CodesignError(f"model.module: the head {names[head]} shares its outputs' width")

    layers, pairs, kernels, biases = [], [], [], []
    position = {i: n for n, i in enumerate(order)}
    for i in order:
        path, orig = found[i]
        in_shape, out_shape = in_shapes[i], out_shapes[i]
        c_in = in_shape[-1]
        in_group = group_of[find(feeds[i][0])] if feeds[i] else -1
        kind, s = layout.get(i, ("channel", 1))
        conv = isinstance(orig, nnx.Conv)
        if conv:
            area, units = math.prod(orig.kernel_size), c_in
        elif in_group >= 0:
            units, area = widths[in_group], s
        else:
            units, area = c_in, 1
        layer = ModuleLayer(
            name=names[i],
            path=path,
            is_conv=conv,
            in_units=units,
            out_units=out_shape[-1],
            kernel_area=area,
            positions=math.prod(out_shape[1:-1]),
            out_shape=tuple(out_shape[1:]),
            strides=orig.strides if conv else (),
            padding=orig.padding if conv else "SAME",
            kernel_size=tuple(orig.kernel_size) if conv else (),
            position_major=not conv and in_group >= 0 and kind == "position" and s > 1,
        )
        layers.append(layer)
        out_group = -1 if i == head else group_of[find(i)]
        pairs.append((in_group, out_group))
        kernels.append(_kernel_matrix(layer, orig.kernel[...]))
        bias = orig.bias[...] if orig.bias is not None else np.zeros(out_shape[-1])
        biases.append(np.asarray(bias))
    for i, tap in enumerate(taps):  # taps index layers in call order, like params
        tap.index = position.get(i, -1)
    return ModuleNetwork(
        key=f"{name}:{sorted(kwargs.items())!r}:{groups!r}",
        layers=tuple(layers),
        groups=tuple(pairs),
        widths=tuple(widths),
        tapped=tapped,
        hook=hook,
        kernels=tuple(kernels),
        biases=tuple(biases),
        module=module,
        kwargs=dict(kwargs),
        input_shape=tuple(input_shape),
    )


def hashable(value):
    """A YAML value as a hashable one (lists become tuples), so traced networks are cached."""
    if isinstance(value, list | tuple):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, hashable(v)) for k, v in value.items()))
    return value


@functools.cache
def traced(module, kwargs: tuple, groups: tuple, input_shape: tuple[int, ...]) -> ModuleNetwork:
    """`trace_module`, once per module, build arguments and input shape in a process (so every
    evaluator of a space shares one traced network)."""
    return trace_module(module, dict(kwargs), tuple(input_shape), groups)
