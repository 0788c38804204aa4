"""Convolutions on codesign's weight matrices, direct and fast inside scanned training loops.

A conv layer's weights are the [K, N] matrix the hardware holds, K = C * kernel_area rows
ordered channel-major (row = c * kernel_area + kernel_offset, see `codesign.nn.networks`). Two ways
to apply it to a feature map h [B, *spatial, C] (1-D or 2-D, square kernel, symmetric padding):

    conv(h, w, geometry)     a direct `lax.conv_general_dilated`: the exact digital product
    patches(h, geometry)     the [B * P, K] matrix of input patches, rows as in w, for a model
                             that needs per-row-tile partial sums (the analog crossbar)
    patch_abs_max(h, g)      each patch's largest |value| (a DAC's scale), without the patches

`conv` carries its own gradient: the input gradient is a direct convolution with the flipped,
transposed kernel (input-dilated by the stride) and the kernel gradient one matmul per kernel
offset. XLA's own conv transposes are as fast at the top level of a CPU program, but inside a
`lax.scan` (every training loop here) they ran 5-24x slower than this
(experiments/benchmarks/bench_finetune.py times both).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = [
    "Conv",
    "conv",
    "matmul_layer",
    "offset_major_rows",
    "patch_abs_max",
    "patches",
    "straight_through",
]

_DIMENSIONS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


@dataclasses.dataclass(frozen=True)
class Conv:
    """A convolution's geometry: square ``kernel``, ``stride`` and symmetric ``padding``."""

    kernel: int
    stride: int = 1
    padding: int = 0

    def out_size(self, n: int) -> int:
        return (n + 2 * self.padding - self.kernel) // self.stride + 1


def _kernel(w: jax.Array, dims: int, kernel: int) -> jax.Array:
    """The channel-major [C * kernel_area, N] matrix as a [*kernel, C, N] kernel."""
    area = kernel**dims
    c, n = w.shape[0] // area, w.shape[1]
    return jnp.moveaxis(w.reshape(c, *(kernel,) * dims, n), 0, -2)


def _forward(h: jax.Array, k: jax.Array, g: Conv) -> jax.Array:
    dims = h.ndim - 2
    return jax.lax.conv_general_dilated(
        h,
        k,
        window_strides=(g.stride,) * dims,
        padding=((g.padding, g.padding),) * dims,
        dimension_numbers=_DIMENSIONS[dims],
    )


def _shifted(h_padded: jax.Array, offset: tuple[int, ...], stride: int, out: tuple[int, ...]):
    """h_padded's values that kernel offset ``offset`` meets at every output position."""
    window = (slice(o, o + stride * (m - 1) + 1, stride) for o, m in zip(offset, out, strict=True))
    return h_padded[(slice(None), *window, slice(None))]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(h: jax.Array, k: jax.Array, g: Conv) -> jax.Array:
    return _forward(h, k, g)


def _conv_fwd(h, k, g):
    return _forward(h, k, g), (h, k)


def _conv_bwd(g, residuals, dy):
    h, k = residuals
    dims = h.ndim - 2
    spatial_in, spatial_out = h.shape[1:-1], dy.shape[1:-1]
    # Input gradient: the transposed convolution, as a direct one over the stride-dilated dy.
    low = g.kernel - 1 - g.padding
    pads = tuple(
        (low, n - (m - 1) * g.stride + g.padding - 1)
        for n, m in zip(spatial_in, spatial_out, strict=True)
    )
    flipped = jnp.swapaxes(jnp.flip(k, axis=tuple(range(dims))), -1, -2)
    dh = jax.lax.conv_general_dilated(
        dy,
        flipped,
        window_strides=(1,) * dims,
        padding=pads,
        lhs_dilation=(g.stride,) * dims,
        dimension_numbers=_DIMENSIONS[dims],
    )
    # Kernel gradient: one [C, B*P] @ [B*P, N] product per kernel offset.
    h_padded = jnp.pad(h, ((0, 0), *((g.padding, g.padding),) * dims, (0, 0)))
    dk = jnp.stack(
        [
            jnp.tensordot(
                _shifted(h_padded, offset, g.stride, spatial_out),
                dy,
                axes=(tuple(range(dims + 1)), tuple(range(dims + 1))),
            )
            for offset in itertools.product(range(g.kernel), repeat=dims)
        ]
    ).reshape(*(g.kernel,) * dims, h.shape[-1], dy.shape[-1])
    return dh, dk


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(h: jax.Array, w: jax.Array, geometry: Conv) -> jax.Array:
    """The convolution of h [B, *spatial, C] with the [C * kernel_area, N] matrix w:
    [B, *spatial_out, N]."""
    return _conv(h, _kernel(w, h.ndim - 2, geometry.kernel), geometry)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _straight_through(h: jax.Array, k: jax.Array, value: jax.Array, g: Conv) -> jax.Array:
    return value


def _straight_through_fwd(h, k, value, g):
    return value, (h, k)


def _straight_through_bwd(g, residuals, dy):
    return (*_conv_bwd(g, residuals, dy), jnp.zeros_like(dy))


_straight_through.defvjp(_straight_through_fwd, _straight_through_bwd)


def straight_through(h: jax.Array, w: jax.Array, geometry: Conv, value: jax.Array) -> jax.Array:
    """``value`` [B, *spatial_out, N] forward, the gradient of ``conv(h, w, geometry)`` backward
    (none to ``value``): a layer whose forward pass is simulated and whose backward pass is the
    exact convolution's, without computing that convolution's forward pass."""
    return _straight_through(h, _kernel(w, h.ndim - 2, geometry.kernel), value, geometry)


def patches(
    h: jax.Array,
    geometry: Conv,
    *,
    offset_major: bool = False,
    each: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """[B * P, C * kernel_area] input patches of h [B, *spatial, C], rows ordered as a conv
    weight matrix's (channel-major), so ``patches(h, g) @ w == conv(h, w, g)`` reshaped.

    ``each``: an elementwise map applied to the input as each kernel offset meets it
    ([B, *spatial_out, C], e.g. a converter's rounding against a per-patch scale of shape
    [B, *spatial_out, 1]) while the patches are assembled. ``offset_major``: rows ordered
    offset * C + c instead (`offset_major_rows` maps them): one contiguous run of C values per
    kernel offset instead of C runs of kernel_area, cheaper to assemble on a CPU.
    """
    dims, g = h.ndim - 2, geometry
    spatial_out = tuple(g.out_size(n) for n in h.shape[1:-1])
    h_padded = jnp.pad(h, ((0, 0), *((g.padding, g.padding),) * dims, (0, 0)))
    shifted = [
        _shifted(h_padded, offset, g.stride, spatial_out)
        for offset in itertools.product(range(g.kernel), repeat=dims)
    ]
    if each is not None:
        shifted = [each(view) for view in shifted]
    if offset_major:
        return jnp.concatenate(shifted, axis=-1).reshape(-1, h.shape[-1] * len(shifted))
    stacked = jnp.stack(shifted, axis=-1)  # [B, *spatial_out, C, kernel_area]
    return stacked.reshape(-1, h.shape[-1] * len(shifted))


def offset_major_rows(v: jax.Array, kernel_area: int) -> jax.Array:
    """v [C * kernel_area, ...] (rows channel-major, as a weight matrix's) with its rows in the
    order of ``patches(..., offset_major=True)``: row offset * C + c."""
    return jnp.swapaxes(v.reshape(-1, kernel_area, *v.shape[1:]), 0, 1).reshape(v.shape)


def patch_abs_max(h: jax.Array, geometry: Conv) -> jax.Array:
    """[B, *spatial_out, 1]: the largest |value| of each input patch, zero padding included (the
    row maxima of ``patches(h, geometry)``, without assembling the patches)."""
    dims, g = h.ndim - 2, geometry
    return jax.lax.reduce_window(
        jnp.max(jnp.abs(h), axis=-1),
        -jnp.inf,  # max pooling's own init; a window always holds values >= 0 (the padding's 0 too)
        jax.lax.max,
        window_dimensions=(1, *(g.kernel,) * dims),
        window_strides=(1, *(g.stride,) * dims),
        padding=((0, 0), *((g.padding, g.padding),) * dims),
    )[..., None]


def matmul_layer(matmul: Callable[[int, jax.Array, jax.Array], jax.Array]) -> Callable:
    """A ``layer(i, h, w, geometry)`` hook (`codesign.nn.networks.apply`) from a
    ``matmul(i, x_matrix [B*P, K], w)`` one: a conv layer becomes its patches times w."""

    def layer(i, h, w, geometry):
        if geometry is None:
            return matmul(i, h, w)
        y = matmul(i, patches(h, geometry), w)
        spatial = tuple(geometry.out_size(n) for n in h.shape[1:-1])
        return y.reshape(h.shape[0], *spatial, w.shape[1])

    return layer
