"""What every network family is made of: weight layers as the hardware sees them (`LayerShape`),
an MLP's chain of them, and the small helpers the families share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

__all__ = [
    "CONV_DIMENSIONS",
    "LayerShape",
    "biased",
    "chain",
    "check_plain",
    "conv_maps",
    "per_unit",
]

# Conv layers are 1-D for inputs (length, channels) and 2-D for (height, width, channels).
CONV_DIMENSIONS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


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


def conv_maps(spatial, kernel_sizes, strides, paddings) -> tuple[tuple[int, ...], ...]:
    """Spatial shape of an input and of each conv's output in a chain, e.g. ((40,), (19,), ...)."""
    shapes = [tuple(spatial)]
    for k, s, p in zip(kernel_sizes, strides, paddings, strict=True):
        shapes.append(tuple((n + 2 * p - k) // s + 1 for n in shapes[-1]))
    return tuple(shapes)


def per_unit(y: jax.Array, v: jax.Array, multiply: int) -> jax.Array:
    """y [..., N] plus (multiply=0) or times (multiply=1) a per-unit vector v [N]."""
    v = v.reshape((1,) * (y.ndim - 1) + v.shape)
    return y * v if multiply else y + v


def biased(op: Callable, params, geometry: Callable) -> Callable:
    """``layer(i, h)``: layer i's output by the hook ``op(i, h, w, geometry(i))``, plus its bias."""
    return lambda i, h: per_unit(op(i, h, params[i]["w"], geometry(i)), params[i]["b"], 0)


def check_plain(spec) -> None:
    """Raise if a built-in family's spec carries a module's network or a resnet's depth."""
    if spec.network is not None:
        raise ValueError("only a module family takes a network")
    if spec.depth:
        raise ValueError("only a resnet takes a depth")
