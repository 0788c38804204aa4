"""Analog crossbar non-idealities in the forward pass, with every per-candidate knob traced.

``hybrid_matmul`` computes ``x @ w`` where the first ``n_analog`` output columns run on
simulated compute-in-memory tiles and the rest are exact digital. The analog model follows IBM
aihwkit's conventions (``InferenceRPUConfig`` / ``IOParameters`` and its
``StandardHWATrainingPreset``, aihwkit/simulator/presets/inference.py), in normalised units
where inputs and weights lie in [-1, 1]:

1. weights are scaled per column by their abs-max (aihwkit's ``weight_scaling_columnwise``) and
   get programming noise of standard deviation ``prog_noise`` per noise draw; zero (pruned or
   padding) weights are programmed to no conductance and stay exactly zero;
2. inputs are scaled per example by their abs-max (aihwkit ``NoiseManagementType.ABS_MAX``) and
   quantized by a ``dac_bits`` DAC over [-1, 1];
3. rows are split into row tiles of ``tile_rows``; each tile's column partial sum gets read noise
   of standard deviation ``out_noise``, is clipped to [-out_bound, out_bound] and quantized by
   an ``adc_bits`` ADC, then partial sums are added digitally across row tiles and rescaled.

Noise is zero-mean with the stated standard deviation, drawn by `standard_noise` (a sum of four
uniform bytes, far cheaper than Gaussian draws on a CPU; its tails end at 3.46 standard
deviations). The pre-2026-12 implementation (Gaussian draws, one matmul per row tile) is kept as
the reference in tests/analog_reference.py: without noise both agree to float rounding.

A b-bit converter is symmetric: 2**(b-1) - 1 levels on each side of 0 (2**b - 2 steps over the
range, aihwkit's ``inp_res = 1 / (2**b - 2)`` convention); b is clipped to >= 2 (ternary).
Quantizers and the clip use straight-through gradients (exact forward rounding, identity gradient
inside the range, zero outside) and the scales carry no gradient, so hardware-aware fine-tuning
sees the digital gradient except where outputs saturate.

Left out: IR drop, conductance drift and drift compensation, 1/f read noise that depends on
conductance and input (aihwkit's ``PCM_READ`` weight noise, here folded into ``prog_noise``),
finite conductance levels and weight bit-slicing across cells or differential pairs, input
noise, ADC/output non-linearity, column-to-column variations, bound management (iterative input
rescaling on saturation), learned input ranges, stochastic rounding and separate passes for
positive and negative inputs. Column tiling does not change accuracy here (columns are read
independently), so ``tile_cols`` only matters to the energy model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["AnalogConfig", "hybrid", "hybrid_matmul", "standard_noise"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AnalogConfig:
    """Analog tile periphery and noise; array leaves may be traced and vmapped per candidate.

    Use the same Python or array types for a leaf across calls (ints for bits and tile rows,
    floats for the rest) so that candidates share one compiled program.
    """

    # aihwkit StandardHWATrainingPreset: inp_res=254.0, i.e. 2**8 - 2 steps -> 8-bit DAC.
    dac_bits: ArrayLike = 8
    # aihwkit StandardHWATrainingPreset: out_res=254.0 -> 8-bit ADC.
    adc_bits: ArrayLike = 8
    # aihwkit StandardHWATrainingPreset: MappingParameter(max_input_size=512) rows per tile.
    tile_rows: ArrayLike = 512
    # aihwkit StandardHWATrainingPreset: w_noise=0.0175 (of the per-column weight range, which
    # the preset remaps channel-wise to wmax = 1). aihwkit draws it per MVM as read noise
    # (w_noise_type=PCM_READ); here it is drawn once per key, as programming noise.
    prog_noise: ArrayLike = 0.0175
    # aihwkit StandardHWATrainingPreset: out_noise=0.04 (IOParameters default is 0.06).
    out_noise: ArrayLike = 0.04
    # aihwkit StandardHWATrainingPreset: out_bound=10.0 (IOParameters default is 12.0).
    out_bound: ArrayLike = 10.0
    # Static upper bound on row tiles per layer: a layer needs ceil(K / tile_rows) of them.
    max_row_tiles: int = dataclasses.field(default=8, metadata=dict(static=True))
    # Static rows per partial-sum block; it must divide every tile_rows a call may see (0: a
    # concrete tile_rows' own gcd, or 1 when traced). The analog product costs one matmul of
    # x @ w plus a [blocks, tiles] sum, whatever the tile count; give it for traced tile sizes.
    row_block: int = dataclasses.field(default=0, metadata=dict(static=True))


def _levels(bits) -> jax.Array:
    """Levels on each side of zero of a symmetric converter with ``bits`` bits (>= 2)."""
    return jnp.exp2(jnp.maximum(jnp.asarray(bits, jnp.float32), 2.0) - 1.0) - 1.0


@jax.custom_jvp
def _round_to(v: jax.Array, step: jax.Array) -> jax.Array:
    """v rounded to a multiple of ``step``, with the identity as its derivative in v (the
    straight-through estimator as one rule, so XLA fuses the rounding into one pass)."""
    return jnp.round(v / step) * step


@_round_to.defjvp
def _round_to_jvp(primals, tangents):
    return _round_to(*primals), tangents[0]


def _quantize(v: jax.Array, bits, bound) -> jax.Array:
    """Clip to [-bound, bound] and round to a symmetric ``bits``-bit grid, straight-through."""
    return _round_to(jnp.clip(v, -bound, bound), bound / _levels(bits))


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


def _row_block(rows: int, cfg: AnalogConfig) -> int:
    """The static row-block size: ``cfg.row_block``, else the gcd of a concrete ``tile_rows``,
    else 1 (right for any traced tile size, but the partial sums take K times the memory)."""
    if cfg.row_block:
        return min(int(cfg.row_block), rows)
    if isinstance(cfg.tile_rows, jax.core.Tracer):
        return 1
    sizes = np.unique(np.asarray(cfg.tile_rows)).astype(int)
    return min(int(np.gcd.reduce(sizes)), rows) if sizes.size else rows


def _block_tiles(rows: int, block: int, tile_rows, max_row_tiles: int) -> jax.Array:
    """[blocks, tiles] one-hot of the row tile each block of ``block`` rows lies in.

    Row r lies in tile r // tile_rows, so a block lies in one tile when ``block`` divides
    ``tile_rows``. If ceil(rows / tile_rows) > max_row_tiles, tiles are enlarged to
    ceil(rows / max_row_tiles) rows (``hybrid_matmul`` raises for a concrete ``tile_rows``, a
    traced one cannot) and a block is charged to the tile of its first row.
    """
    blocks = -(-rows // block)
    tiles = min(blocks, max_row_tiles)
    tile_rows = jnp.maximum(jnp.asarray(tile_rows, jnp.int32), -(-rows // max_row_tiles))
    tile = jnp.arange(blocks, dtype=jnp.int32) * block // tile_rows
    return (tile[:, None] == jnp.arange(tiles, dtype=jnp.int32)[None, :]).astype(jnp.float32)


def _mix32(h: jax.Array) -> jax.Array:
    """A 32-bit integer finaliser (the "lowbias32" constants of Wellons' hash-prospector,
    github.com/skeeto/hash-prospector): every input bit flips each output bit with p ~ 1/2."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x7FEB352D)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(0x846CA68B)
    return h ^ (h >> 16)


def standard_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Zero-mean, unit-variance noise of ``shape``: a counter hash seeded once from ``key``.

    Each element sums the four bytes of a 32-bit hash of its index (Irwin-Hall, n = 4): mean 0
    and variance 1 exactly, kurtosis 2.7 (a Gaussian's is 3), bounded at +-3.46. On a CPU it costs
    about a tenth of ``jax.random.normal`` (threefry), which was most of a fine-tune's time
    (experiments/benchmarks/bench_finetune.py). Noise here only has to have the right mean and
    variance: it stands for many small independent disturbances.
    """
    seed = _mix32(jax.random.bits(key, (), jnp.uint32))
    index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    h = _mix32(index * jnp.uint32(0x9E3779B9) + seed)
    total = sum(((h >> shift) & 0xFF).astype(jnp.float32) for shift in (0, 8, 16, 24))
    # Four uniform bytes: mean 4 * 127.5, variance 4 * (256**2 - 1) / 12.
    return (total - 510.0) * np.float32(1.0 / math.sqrt(4 * (256**2 - 1) / 12))


# Below this many extra columns ((tiles - 1) x N), spreading w over its tiles' columns (T times
# the matmul's FLOPs) beat regrouping x into row blocks (one matmul's FLOPs, but a copy of x):
# on a 2-core CPU, 0.68x the time for a ResNet-20 stage-1 conv (K 144, N 16, 3 tiles), 1.5x for
# a stage-3 one (K 576, N 64, 9 tiles) (experiments/benchmarks/bench_finetune.py's shapes).
_SPREAD_COLUMNS = 32


def _analog_matmul(x: jax.Array, w: jax.Array, cfg: AnalogConfig, key) -> jax.Array:
    """All columns of x[B, K] @ w[K, N] through the simulated crossbar (see module docstring).

    Partial sums are formed per block of ``row_block`` rows (the FLOPs of one matmul) and added
    into row tiles by a [blocks, tiles] one-hot, so the cost does not grow with the tile count.
    """
    rows, cols = w.shape
    x_scale = _abs_max(x, axis=1)  # [B, 1] noise management
    w_scale = _abs_max(w, axis=0)  # [1, N] column-wise weight scaling
    x_dac = _quantize(x / x_scale, cfg.dac_bits, 1.0)
    w_cells = w / w_scale
    programmed = w != 0
    if key is not None:
        prog_key, read_key = jax.random.split(key)
        noise = standard_noise(prog_key, w.shape)
        w_cells = w_cells + jnp.where(programmed, cfg.prog_noise * noise, 0.0)
    block = _row_block(rows, cfg)
    blocks = -(-rows // block)
    pad = blocks * block - rows
    batch = x.shape[0]
    tiles = _block_tiles(rows, block, cfg.tile_rows, cfg.max_row_tiles)  # [blocks, T]
    count = tiles.shape[1]
    if (count - 1) * cols <= _SPREAD_COLUMNS:
        # Few tiles of few columns: one matmul with each weight spread to its tile's columns,
        # x[B, K] @ w_tiles[K, T * N], costs less than regrouping x's rows into blocks.
        row_tiles = jnp.repeat(tiles, block, axis=0)[:rows]  # [K, T]
        w_tiles = (row_tiles[:, :, None] * w_cells[:, None, :]).reshape(rows, count * cols)
        partials = (x_dac @ w_tiles).reshape(batch, count, cols).swapaxes(0, 1)  # [T, B, N]
    else:
        # Blocks lead ([blocks, B, N]), so both products are plain (batched) matmuls.
        x_blocks = jnp.pad(x_dac, ((0, 0), (0, pad))).reshape(batch, blocks, block)
        w_blocks = jnp.pad(w_cells, ((0, pad), (0, 0))).reshape(blocks, block, cols)
        per_block = jnp.matmul(x_blocks.swapaxes(0, 1), w_blocks).reshape(blocks, batch * cols)
        partials = (tiles.T @ per_block).reshape(count, batch, cols)  # [T, B, N]
    if key is not None:
        # A column segment holding no programmed weight is not read, so it adds no noise.
        held = jnp.pad(programmed, ((0, pad), (0, 0))).reshape(blocks, block, cols).any(axis=1)
        read = (tiles.T @ held.astype(jnp.float32) > 0)[:, None, :]  # [T, 1, N]
        noise = standard_noise(read_key, partials.shape)
        partials = partials + jnp.where(read, cfg.out_noise * noise, 0.0)
    adc = _quantize(partials, cfg.adc_bits, jnp.asarray(cfg.out_bound, jnp.float32))
    return jnp.sum(adc, axis=0) * x_scale * w_scale


def hybrid(
    digital: jax.Array,
    analog_input: Callable[[], jax.Array],
    w: jax.Array,
    n_analog,
    cfg: AnalogConfig,
    key: jax.Array | None = None,
    analog_on=None,
    remat: bool = False,
) -> jax.Array:
    """A layer's outputs [M, N] with columns j < n_analog taken from the simulated crossbar.

    ``digital`` is the exact product [M, N] (a matmul or a convolution); ``analog_input()`` gives
    the [M, K] matrix the crossbar multiplies by ``w`` [K, N] (for a convolution, its patches).
    The crossbar is simulated only where ``analog_on`` (default ``n_analog > 0``): a
    ``lax.cond``, so when the flag is not batched (one candidate, or a whole population with no
    analog column in this layer) an all-digital layer costs its exact product alone.

    ``remat``: recompute the simulation's elementwise work (the input, its quantisation, the
    noise) in the backward pass, keeping only its matmul outputs (`jax.checkpoint` with
    ``dots_saveable``). For a convolution, whose input is built from patches, this drops the
    patch-sized buffers a `lax.cond` keeps for the backward pass from both branches: a ResNet-20
    training step at batch 128 on CIFAR shapes needs 1.5 GB of XLA temporaries instead of 4.1,
    for about 8% more time per step (2-core CPU; experiments/benchmarks/bench_finetune.py).
    """
    is_analog = (jnp.arange(w.shape[1]) < n_analog)[None, :]

    def simulated(w):
        return _analog_matmul(analog_input(), w, cfg, key)

    if remat:
        simulated = jax.checkpoint(simulated, policy=jax.checkpoint_policies.dots_saveable)

    def with_analog():
        return jnp.where(is_analog, simulated(w), digital)

    analog_on = jnp.asarray(n_analog) > 0 if analog_on is None else analog_on
    return jax.lax.cond(analog_on, with_analog, lambda: digital)


def hybrid_matmul(
    x: jax.Array,
    w: jax.Array,
    n_analog,
    cfg: AnalogConfig,
    key: jax.Array | None = None,
    analog_on=None,
) -> jax.Array:
    """x[..., K] @ w[K, N] with columns j < n_analog on analog tiles and the rest exact digital.

    ``n_analog`` and the array leaves of ``cfg`` may be traced, so candidates with different
    splits, converters and tile sizes share one compiled program (a traced ``tile_rows`` needs
    ``cfg.row_block``). ``key=None`` turns the stochastic parts (programming and read noise) off;
    quantization and clipping stay on. ``analog_on``: see `hybrid`.
    """
    _check_row_tiles(w.shape[0], cfg)
    batch_shape = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    out = hybrid(x2 @ w, lambda: x2, w, n_analog, cfg, key, analog_on)
    return out.reshape(*batch_shape, w.shape[1])
