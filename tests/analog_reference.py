"""The first analog simulator (one matmul per row tile, Gaussian draws): the reference that
`codesign.hardware.analog` is tested against. Not used by the library."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["reference_matmul"]


from codesign.hardware.analog import AnalogConfig


def _levels(bits) -> jax.Array:
    """Levels on each side of zero of a symmetric converter with ``bits`` bits (>= 2)."""
    return jnp.exp2(jnp.maximum(jnp.asarray(bits, jnp.float32), 2.0) - 1.0) - 1.0


def _straight_through(x: jax.Array, forward: jax.Array) -> jax.Array:
    """Forward value ``forward``, gradient of ``x`` (identity): the one straight-through estimator,
    shared by the energy model's rounded counts."""
    return x + jax.lax.stop_gradient(forward - x)


def _quantize(v: jax.Array, bits, bound) -> jax.Array:
    """Clip to [-bound, bound] and round to a symmetric ``bits``-bit grid, straight-through."""
    clipped = jnp.clip(v, -bound, bound)
    step = bound / _levels(bits)
    return _straight_through(clipped, jnp.round(clipped / step) * step)


def _abs_max(v: jax.Array, axis: int) -> jax.Array:
    """Abs-max scale along ``axis`` (kept), 1 where all zero, with no gradient."""
    scale = jax.lax.stop_gradient(jnp.max(jnp.abs(v), axis=axis, keepdims=True))
    return jnp.where(scale > 0, scale, 1.0)


def _check_row_tiles(rows: int, cfg: AnalogConfig) -> None:
    """Raise if a concrete ``tile_rows`` needs more than ``max_row_tiles`` tiles for ``rows``."""
    if isinstance(cfg.tile_rows, jax.core.Tracer):
        return  # traced: _row_tiles enlarges the tiles instead
    needed = -(-rows // max(int(np.min(np.asarray(cfg.tile_rows))), 1))
    if needed > cfg.max_row_tiles:
        raise ValueError(
            f"{rows} rows need {needed} row tiles, more than max_row_tiles={cfg.max_row_tiles}"
        )


def _row_tiles(rows: int, tile_rows, max_row_tiles: int) -> jax.Array:
    """[rows, max_row_tiles] one-hot of each row's tile.

    If ceil(rows / tile_rows) > max_row_tiles, tiles are enlarged to ceil(rows / max_row_tiles)
    rows: ``hybrid_matmul`` raises for a concrete ``tile_rows``, but a traced one cannot.
    """
    tile_rows = jnp.maximum(jnp.asarray(tile_rows, jnp.int32), -(-rows // max_row_tiles))
    tile = jnp.arange(rows, dtype=jnp.int32) // tile_rows
    return (tile[:, None] == jnp.arange(max_row_tiles, dtype=jnp.int32)[None, :]).astype(
        jnp.float32
    )


def _analog_matmul(x: jax.Array, w: jax.Array, cfg: AnalogConfig, key) -> jax.Array:
    """All columns of x[B, K] @ w[K, N] through the simulated crossbar (see module docstring)."""
    x_scale = _abs_max(x, axis=1)  # [B, 1] noise management
    w_scale = _abs_max(w, axis=0)  # [1, N] column-wise weight scaling
    x_dac = _quantize(x / x_scale, cfg.dac_bits, 1.0)
    w_cells = w / w_scale
    programmed = w != 0
    if key is not None:
        prog_key, read_key = jax.random.split(key)
        noise = jax.random.normal(prog_key, w.shape, w_cells.dtype)
        w_cells = w_cells + jnp.where(programmed, cfg.prog_noise * noise, 0.0)
    tiles = _row_tiles(w.shape[0], cfg.tile_rows, cfg.max_row_tiles)  # [K, T]
    partials = jnp.einsum("bk,kt,kn->btn", x_dac, tiles, w_cells)
    if key is not None:
        # A column segment holding no programmed weight is not read, so it adds no noise.
        read = (tiles.T @ programmed.astype(jnp.float32) > 0)[None, :, :]  # [1, T, N]
        noise = jax.random.normal(read_key, partials.shape, partials.dtype)
        partials = partials + jnp.where(read, cfg.out_noise * noise, 0.0)
    adc = _quantize(partials, cfg.adc_bits, jnp.asarray(cfg.out_bound, jnp.float32))
    return jnp.sum(adc, axis=1) * x_scale * w_scale


def reference_matmul(
    x: jax.Array, w: jax.Array, n_analog, cfg: AnalogConfig, key: jax.Array | None = None
) -> jax.Array:
    """x[..., K] @ w[K, N] with columns j < n_analog on analog tiles and the rest exact digital.

    ``n_analog`` and the array leaves of ``cfg`` may be traced, so candidates with different
    splits, converters and tile sizes share one compiled program. ``key=None`` turns the
    stochastic parts (programming and read noise) off; quantization and clipping stay on.
    """
    _check_row_tiles(w.shape[0], cfg)
    batch_shape = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    digital = x2 @ w
    analog = _analog_matmul(x2, w, cfg, key)
    is_analog = (jnp.arange(w.shape[1]) < n_analog)[None, :]
    return jnp.where(is_analog, analog, digital).reshape(*batch_shape, w.shape[1])
