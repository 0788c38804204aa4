"""Analog crossbar non-idealities in the forward pass, with every per-candidate knob traced.

``hybrid_matmul`` computes ``x @ w`` where the first ``n_analog`` output columns run on
simulated compute-in-memory tiles and the rest are exact digital; ``hybrid_conv`` does the same
for a convolution, each input patch one input vector of the crossbar. The analog model follows IBM
aihwkit's conventions (``InferenceRPUConfig`` / ``IOParameters`` and its
``StandardHWATrainingPreset``, aihwkit/simulator/presets/inference.py), in normalised units
where inputs and weights lie in [-1, 1]:

1. weights are scaled per column by their abs-max (aihwkit's ``weight_scaling_columnwise``) and
   programmed by the device model (below);
2. inputs are scaled per example by their abs-max (aihwkit ``NoiseManagementType.ABS_MAX``) and
   quantized by a ``dac_bits`` DAC over [-1, 1];
3. rows are split into row tiles of ``tile_rows``; each tile's column partial sum gets read noise
   of standard deviation ``out_noise``, is clipped to [-out_bound, out_bound] and quantized by
   an ``adc_bits`` ADC, then partial sums are added digitally across row tiles and rescaled.

Scaling (``tile_scaling``): ``"layer"`` takes the input and weight scales of steps 1-2 over
the whole layer (one scale per example and per column, shared by the row tiles: a chip whose
periphery rescales once per layer, the digital side applying one gain per output); ``"tile"``
takes them per row tile, as aihwkit maps a layer onto several tiles (each tile its own input
abs-max and per-column weight scale: a chip with a scale per tile and column, e.g. aihwkit's
``TileModuleArray`` with ``max_input_size``). Every shipped preset is simulated with
``"layer"`` (the default). Per tile, small tiles keep their resolution (and the sram mismatch
is relative to each tile's own range), but partial sums come closer to ``out_bound``.

Device models (``device``), what each includes:

* ``"sram"`` (default; charge-domain SRAM compute-in-memory, every shipped preset): a fixed
  mismatch per programmed chip, zero-mean with standard deviation ``prog_noise`` of a column's
  weight range on every programmed (non-zero) weight, drawn once per noise key; zero (pruned or
  padding) weights hold no charge and stay exactly zero. Its magnitude, 0.0175, is aihwkit's
  hardware-aware preset's weight noise (``w_noise``): no SRAM macro paper in the presets
  reports a per-cell mismatch in these units, so it stands in as a stated assumption.
* ``"pcm"``: phase-change memory as aihwkit's ``PCMLikeNoiseModel`` (aihwkit/inference/noise/
  pcm.py, fitted on measured devices by Nandakumar et al., ICECS 2019) with its
  ``SinglePairConductanceConverter`` and ``GlobalDriftCompensation``: each weight is a pair of
  devices (g+, g-) with the tile's largest weight at ``PCM_G_MAX``; conductance-dependent
  programming noise on both devices (a zero weight's pair is programmed to 0 uS and gets the
  noise too); drift g(t) = g ((t + t0) / t0) ** -nu with nu drawn per device from its target
  conductance; accumulated 1/f read noise growing with log(t); global drift compensation, one
  gain per tile from the mean absolute output of a one-hot read-out through the same noisy,
  quantized periphery (baseline right after programming); plus aihwkit's per-read weight noise
  (``w_noise_type = PCM_READ``): each partial sum gets noise of standard deviation
  ``read_noise * sqrt(sum_k |w_kn| x_k**2)``, redrawn for every input vector. All of it at
  ``inference_time`` seconds after programming. Within a live tile (rows and columns with any
  kept weight) pruned weights are devices in the RESET state, not exact zeros.

Noise is zero-mean with the stated standard deviation, drawn by `standard_noise` (a sum of four
uniform bytes, far cheaper than Gaussian draws on a CPU; its tails end at 3.46 standard
deviations). The pre-2026-12 implementation (Gaussian draws, one matmul per row tile) is kept as
the reference in tests/analog_reference.py: without noise both agree to float rounding.

A b-bit converter is symmetric: 2**(b-1) - 1 levels on each side of 0 (2**b - 2 steps over the
range, aihwkit's ``inp_res = 1 / (2**b - 2)`` convention); b is clipped to >= 2 (ternary).
Hardware-aware fine-tuning as aihwkit does it: the forward pass is the simulated crossbar, the
backward pass is ideal (`hybrid`), so no converter, clip or noise enters a gradient. A fine-tune
draws a new chip (device noise and drift at ``inference_time``) for every training step, so it
trains under the noise it is scored with.

Left out: IR drop, finite conductance levels and weight bit-slicing across cells or several
device pairs, input noise, ADC/output non-linearity, column-to-column variations of the
periphery, bound management (iterative input rescaling on saturation), learned input ranges and
output scales (the aihwkit preset learns them in its own training), stochastic rounding,
separate passes for positive and negative inputs, and RRAM or other device models. Column
tiling does not change accuracy here (columns are read independently), so ``tile_cols`` only
matters to the energy model. experiments/validate_analog_model.py (run by
tests/test_validate_analog.py) checks this model against aihwkit 1.2.0's stored accuracies.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from codesign.nn import conv

__all__ = [
    "DEVICES",
    "TILE_SCALINGS",
    "AnalogConfig",
    "hybrid",
    "hybrid_conv",
    "hybrid_matmul",
    "standard_noise",
]

DEVICES = ("sram", "pcm")
TILE_SCALINGS = ("layer", "tile")


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
    # sram: the fixed per-chip mismatch, of the per-column weight range. Its value is aihwkit
    # StandardHWATrainingPreset's w_noise=0.0175, an assumption for SRAM (module docstring):
    # aihwkit draws that noise per read, scaled by sqrt(|w|) (w_noise_type=PCM_READ), which the
    # pcm model does with `read_noise`.
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
    # pcm: per-read weight noise, aihwkit StandardHWATrainingPreset w_noise=0.0175 with
    # w_noise_type=PCM_READ (src/rpucuda/rpu_forward_backward_pass.cpp, applyOutputWeightNoise).
    read_noise: ArrayLike = 0.0175
    # pcm: seconds since programming finished (aihwkit's t_inference; 0 = right after).
    inference_time: ArrayLike = 0.0
    # The device model ("sram" or "pcm") and where the scales are taken ("layer" or "tile").
    device: str = dataclasses.field(default="sram", metadata=dict(static=True))
    tile_scaling: str = dataclasses.field(default="layer", metadata=dict(static=True))

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.tile_scaling not in TILE_SCALINGS:
            raise ValueError(
                f"tile_scaling must be one of {', '.join(TILE_SCALINGS)}, got {self.tile_scaling!r}"
            )


def _levels(bits) -> jax.Array:
    """Levels on each side of zero of a symmetric converter with ``bits`` bits (>= 2)."""
    return jnp.exp2(jnp.maximum(jnp.asarray(bits, jnp.float32), 2.0) - 1.0) - 1.0


def _quantize(v: jax.Array, bits, bound) -> jax.Array:
    """Clip to [-bound, bound] and round to a symmetric ``bits``-bit grid."""
    step = bound / _levels(bits)
    return jnp.round(jnp.clip(v, -bound, bound) / step) * step


def _abs_max(v: jax.Array, axis: int) -> jax.Array:
    """Abs-max scale along ``axis`` (kept), 1 where all zero."""
    scale = jnp.max(jnp.abs(v), axis=axis, keepdims=True)
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
# A conv's patches spread up to more extra columns: assembled offset-major with the DAC fused in
# (`_conv_dac`) they cost less than row blocks, which need them channel-major and copied into
# blocks. bench_finetune.py's ResNet-20 analog fine-tune step (the engine's training program,
# batch 128, per candidate, 2-core CPU) took 1.20 s at 32, 1.10 s at 128, 1.16 s at 256 and
# 1.54 s spreading every layer.
_SPREAD_CONV_COLUMNS = 128


def _spreads(count: int, cols: int, limit: int = _SPREAD_COLUMNS) -> bool:
    """Whether `_tile_products` spreads w over its ``count`` tiles' columns (else row blocks)."""
    return (count - 1) * cols <= limit


@dataclasses.dataclass(frozen=True)
class _ConvInput:
    """A conv layer's input ``h`` [B, *spatial, C] and ``geometry``: the crossbar's input vectors
    are its patches (`codesign.nn.conv.patches`), which `hybrid_conv` assembles only when it
    simulates the crossbar, already through the DAC."""

    h: jax.Array
    geometry: conv.Conv

    def matrix(self) -> jax.Array:
        return conv.patches(self.h, self.geometry)


# --- the pcm device: aihwkit's PCMLikeNoiseModel (aihwkit/inference/noise/pcm.py), whose fits
# come from measured PCM devices (Nandakumar et al., "Phase-change memory models for deep
# learning training and inference", ICECS 2019). Conductances in microsiemens, times in seconds.

PCM_G_MAX = 25.0  # uS for the largest weight: SinglePairConductanceConverter's default g_max
# Programming noise sigma(g) = c0 + c1 (g / g_max) + c2 (g / g_max)**2, in uS at g_max = 25 uS
# (pcm.py, PCMLikeNoiseModel.prog_coeff).
PCM_PROG_COEFF = (0.26348, 1.9650, -1.1731)
PCM_T0 = 20.0  # first read after programming, the drift fit's reference time (pcm.py t_0)
PCM_T_READ = 250e-9  # read duration of the 1/f noise fit (pcm.py t_read)


def _pcm_nu(g, noise):
    """Drift exponents of devices at target conductance g (pcm.py generate_drift_coefficients)."""
    log_g = jnp.log(jnp.maximum(jnp.abs(g) / PCM_G_MAX, 1e-7))
    mu = jnp.clip(-0.0155 * log_g + 0.0244, 0.049, 0.1)
    sigma = jnp.clip(-0.0125 * log_g - 0.0059, 0.008, 0.045)
    return jnp.abs(mu + sigma * noise)


def _pcm_drift(g, nu, t, noise):
    """Conductances g after `t` seconds: drift and accumulated 1/f read noise (pcm.py
    apply_drift_noise_to_conductance)."""
    t = t + PCM_T0
    drifted = g * (t / PCM_T0) ** (-nu)
    q_s = jnp.minimum(0.0088 / jnp.maximum((jnp.abs(g) / PCM_G_MAX) ** 0.65, 1e-3), 0.2)
    sigma = q_s * jnp.sqrt(jnp.log((t + PCM_T_READ) / (2 * PCM_T_READ)))
    return jnp.maximum(drifted + jnp.abs(drifted) * sigma * noise, 0.0)


def _pcm_weights(w_cells, cells, tile_max, t, noise):
    """Normalised weights [K, N] as programmed and as read `t` seconds later, aihwkit's way.

    A weight w in [-1, 1] is the pair g+ = max(w, 0) g_max, g- = max(-w, 0) g_max. Both get
    programming noise (clipped at 0) and a drift exponent from their target. At time t aihwkit
    converts the programmed weights to a pair again, with the tile's largest programmed weight
    at g_max (`tile_max` gives it per row), drifts them and adds 1/f noise (pcm.py,
    BaseNoiseModel.apply_programming_noise and apply_drift_noise). ``noise``: [6, K, N].
    """
    c0, c1, c2 = PCM_PROG_COEFF
    targets = jnp.stack([jnp.maximum(w_cells, 0.0), jnp.maximum(-w_cells, 0.0)]) * PCM_G_MAX
    ratio = targets / PCM_G_MAX
    programmed = jnp.maximum(targets + (c0 + c1 * ratio + c2 * ratio**2) * noise[:2], 0.0)
    w_prog = jnp.where(cells, (programmed[0] - programmed[1]) / PCM_G_MAX, 0.0)
    scale = PCM_G_MAX / jnp.maximum(tile_max(jnp.abs(w_prog)), 1e-7)
    pairs = jnp.stack(
        [jnp.clip(w_prog * scale, 0.0, PCM_G_MAX), jnp.clip(-w_prog * scale, 0.0, PCM_G_MAX)]
    )
    read = _pcm_drift(pairs, _pcm_nu(targets, noise[2:4]), t, noise[4:6])
    return w_prog, jnp.where(cells, (read[0] - read[1]) / scale, 0.0)


def _tile_products(x, w, tiles, row_tiles, block, spread):
    """Each row tile's partial products [T, B, N] of x[B, K] @ w[K, N] (``tiles``: [blocks, T],
    ``row_tiles``: the same one-hot per row, [K, T]); ``spread``: see `_spreads`.

    Partial sums are formed per block of ``block`` rows (the FLOPs of one matmul) and added
    into row tiles by the one-hot, so the cost does not grow with the tile count.
    """
    (batch, rows), cols = x.shape, w.shape[1]
    blocks, count = tiles.shape
    if spread:
        # Few tiles of few columns: one matmul with each weight spread to its tile's columns,
        # x[B, K] @ w_tiles[K, T * N], costs less than regrouping x's rows into blocks.
        w_tiles = (row_tiles[:, :, None] * w[:, None, :]).reshape(rows, count * cols)
        return (x @ w_tiles).reshape(batch, count, cols).swapaxes(0, 1)
    # Blocks lead ([blocks, B, N]), so both products are plain (batched) matmuls.
    pad = blocks * block - rows
    x_blocks = jnp.pad(x, ((0, 0), (0, pad))).reshape(batch, blocks, block)
    w_blocks = jnp.pad(w, ((0, pad), (0, 0))).reshape(blocks, block, cols)
    per_block = jnp.matmul(x_blocks.swapaxes(0, 1), w_blocks).reshape(blocks, batch * cols)
    return (tiles.T @ per_block).reshape(count, batch, cols)


def _per_tile_max(v, row_tiles):
    """[K, ...] -> [T, ...]: the max of ``v`` (>= 0) over each row tile's rows."""
    return jnp.stack(
        [
            jnp.max(jnp.where(row_tiles[:, t].reshape(-1, *[1] * (v.ndim - 1)) > 0, v, 0), axis=0)
            for t in range(row_tiles.shape[1])
        ]
    )


def _conv_dac(x: _ConvInput, cfg: AnalogConfig, offset_major: bool):
    """A conv's per-patch input scales [B*P, 1] and DAC outputs [B*P, K], the values the matrix
    path computes from the patches, assembled from h with the DAC fused in (rows offset-major
    if asked: cheaper to assemble, and row order does not matter where w is spread)."""
    scale = conv.patch_abs_max(x.h, x.geometry)
    scale = jnp.where(scale > 0, scale, 1.0)
    x_dac = conv.patches(
        x.h,
        x.geometry,
        offset_major=offset_major,
        each=lambda view: _quantize(view / scale, cfg.dac_bits, 1.0),
    )
    return scale.reshape(-1, 1), x_dac


def _analog_matmul(x, w: jax.Array, cfg: AnalogConfig, key) -> jax.Array:
    """All columns of x[B, K] @ w[K, N] through the simulated crossbar (see module docstring);
    x a matrix or a `_ConvInput` (its patches)."""
    rows, cols = w.shape
    block = _row_block(rows, cfg)
    tiles = _block_tiles(rows, block, cfg.tile_rows, cfg.max_row_tiles)  # [blocks, T]
    row_tiles = jnp.repeat(tiles, block, axis=0)[:rows]  # [K, T]
    blocks = tiles.shape[0]
    pad = blocks * block - rows
    nonzero = w != 0
    # x_dac's rows in w's order, or (a conv's patches assembled offset-major) a map of w's rows
    # [K, ...] to x_dac's order.
    in_x_order = lambda v: v  # noqa: E731
    if cfg.tile_scaling == "tile" and isinstance(x, _ConvInput):
        x = x.matrix()
    patches = isinstance(x, _ConvInput)
    spread = _spreads(tiles.shape[1], cols, _SPREAD_CONV_COLUMNS if patches else _SPREAD_COLUMNS)
    if cfg.tile_scaling == "tile":
        # Per row tile: [B, T] input and [T, N] weight scales, spread back onto the rows.
        x_tile = _per_tile_max(jnp.abs(x).T, row_tiles).T
        x_tile = jnp.where(x_tile > 0, x_tile, 1.0)
        w_tile = _per_tile_max(jnp.abs(w), row_tiles)
        w_tile = jnp.where(w_tile > 0, w_tile, 1.0)
        x_dac = _quantize(x / (x_tile @ row_tiles.T), cfg.dac_bits, 1.0)
        w_cells = w / (row_tiles @ w_tile)
        gains = x_tile.T[:, :, None] * w_tile[:, None, :]  # [T, B, N]

        def tile_max(v):  # each row's tile's largest entry of v [K, N]
            return row_tiles @ jnp.max(_per_tile_max(v, row_tiles), axis=1, keepdims=True)
    else:
        if patches:
            area = rows // x.h.shape[-1]
            offset_major = area > 1 and spread
            x_scale, x_dac = _conv_dac(x, cfg, offset_major)
            if offset_major:
                in_x_order = functools.partial(conv.offset_major_rows, kernel_area=area)
        else:
            x_scale = _abs_max(x, axis=1)  # [B, 1] noise management
            x_dac = _quantize(x / x_scale, cfg.dac_bits, 1.0)
        w_scale = _abs_max(w, axis=0)  # [1, N] column-wise weight scaling
        w_cells = w / w_scale

        def tile_max(v):
            return jnp.max(v)

    pcm = cfg.device == "pcm" and key is not None
    if pcm:
        # Every cell of the rows and columns in use is a device pair, zeros included.
        cells = nonzero.any(axis=1, keepdims=True) & nonzero.any(axis=0, keepdims=True)
        prog_key, read_key, out_key = jax.random.split(key, 3)
        noise = standard_noise(prog_key, (6, rows, cols))
        w_prog, w_cells = _pcm_weights(w_cells, cells, tile_max, cfg.inference_time, noise)
    else:
        cells = nonzero
        if key is not None:
            prog_key, out_key = jax.random.split(key)
            noise = standard_noise(prog_key, w.shape)
            w_cells = w_cells + jnp.where(nonzero, cfg.prog_noise * noise, 0.0)
    x_rows = in_x_order(row_tiles)
    partials = _tile_products(x_dac, in_x_order(w_cells), tiles, x_rows, block, spread)
    bound = jnp.asarray(cfg.out_bound, jnp.float32)
    if key is not None:
        # A column segment holding no programmed weight is not read, so it adds no noise.
        held = jnp.pad(cells, ((0, pad), (0, 0))).reshape(blocks, block, cols).any(axis=1)
        read = (tiles.T @ held.astype(jnp.float32) > 0)[:, None, :]  # [T, 1, N]
        sigma = cfg.out_noise
        if pcm:  # aihwkit's PCM_READ: sqrt(sum_k |w_kn| x_k**2) per read, added in variance
            w_abs = in_x_order(jnp.abs(w_cells))
            x2 = jnp.square(x_dac)
            variance = _tile_products(x2, w_abs, tiles, x_rows, block, spread)
            sigma = jnp.sqrt(cfg.out_noise**2 + cfg.read_noise**2 * variance)
        noise = standard_noise(out_key, partials.shape)
        partials = partials + jnp.where(read, sigma * noise, 0.0)
    adc = _quantize(partials, cfg.adc_bits, bound)
    if pcm:
        adc = adc * _drift_gains(w_prog, w_cells, cells, row_tiles, cfg, read_key)
    if cfg.tile_scaling == "tile":
        return _sum_tiles(adc * gains)
    return _sum_tiles(adc) * x_scale * w_scale


def _sum_tiles(v: jax.Array) -> jax.Array:
    """v[T, ...] summed over its (few, static) row tiles as T - 1 elementwise adds, which XLA
    fuses with the ADC's rounding into one loop; as ``jnp.sum(v, axis=0)`` XLA:CPU made it a
    reduction fusion that took 23% of an MNIST-1D CNN fine-tune (2-core CPU, jax 0.10.2)."""
    total = v[0]
    for t in range(1, v.shape[0]):
        total = total + v[t]
    return total


def _drift_gains(w_prog, w_read, cells, row_tiles, cfg: AnalogConfig, key) -> jax.Array:
    """aihwkit's GlobalDriftCompensation, one gain [T, 1, 1] per row tile: the mean absolute
    output of one-hot inputs (each cell read alone through the tile's noisy, quantized periphery)
    right after programming over the same now (aihwkit/inference/compensation/drift.py)."""
    noise = standard_noise(key, (2, 2, *w_prog.shape))
    bound = jnp.asarray(cfg.out_bound, jnp.float32)

    def readout(w, noise):
        sigma = cfg.read_noise * jnp.sqrt(jnp.abs(w))
        out = _quantize(w + cfg.out_noise * noise[0] + sigma * noise[1], cfg.adc_bits, bound)
        return row_tiles.T @ jnp.sum(jnp.where(cells, jnp.abs(out), 0.0), axis=1)  # [T]

    count = jnp.maximum(row_tiles.T @ jnp.sum(cells, axis=1).astype(jnp.float32), 1.0)
    baseline = jnp.maximum(readout(w_prog, noise[0]) / count, 1e-4)
    now = jnp.maximum(readout(w_read, noise[1]) / count, 1e-4)
    return (baseline / now)[:, None, None]


def hybrid(
    digital: jax.Array,
    analog_input: jax.Array,
    w: jax.Array,
    n_analog,
    cfg: AnalogConfig,
    key: jax.Array | None = None,
    analog_on=None,
) -> jax.Array:
    """A layer's outputs [M, N] with columns j < n_analog taken from the simulated crossbar.

    ``digital`` is the exact product [M, N] (a matmul or a convolution); ``analog_input`` is the
    [M, K] matrix the crossbar multiplies by ``w`` [K, N] (for a convolution, its patches:
    `hybrid_conv` assembles them only where the crossbar is simulated).
    The crossbar is simulated only where ``analog_on`` (default ``n_analog > 0``): a
    ``lax.cond``, so when the flag is not batched (one candidate, or a whole population with no
    analog column in this layer) an all-digital layer costs its exact product alone.

    Gradients: the forward pass is the crossbar's, the backward pass is ideal, as in aihwkit's
    hardware-aware training (``InferenceRPUConfig``: "using only the non-idealities of the
    forward-pass, but backward and update passes are ideal"; its backward ``IOParameters`` are
    ``is_perfect=True``). An analog column's gradient is the exact product's: no converter,
    clipping or noise enters it, and the simulation keeps nothing for the backward pass, so it
    costs one forward product (on a 2-core CPU, a digits-MLP population's fine-tune took 0.80 s
    instead of 1.41 s when the simulation was differentiated: experiments/benchmarks/
    bench_finetune.py's MLP). The forward value is the simulation's, exactly.
    """
    is_analog = (jnp.arange(w.shape[1]) < n_analog)[None, :]

    def with_analog():
        # simulated + (digital - digital): the simulated value, the exact product's gradient.
        simulated = jax.lax.stop_gradient(_analog_matmul(analog_input, w, cfg, key))
        ideal = simulated + (digital - jax.lax.stop_gradient(digital))
        return jnp.where(is_analog, ideal, digital)

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
    ``cfg.row_block``). ``key=None`` turns the device off (programming and read noise, and for pcm
    drift and its compensation): quantization and clipping stay on. ``analog_on``: see `hybrid`.
    """
    _check_row_tiles(w.shape[0], cfg)
    batch_shape = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    out = hybrid(x2 @ w, x2, w, n_analog, cfg, key, analog_on)
    return out.reshape(*batch_shape, w.shape[1])


def hybrid_conv(
    h: jax.Array,
    w: jax.Array,
    geometry: conv.Conv,
    n_analog,
    cfg: AnalogConfig,
    key: jax.Array | None = None,
    analog_on=None,
    digital_on=None,
) -> jax.Array:
    """The convolution of h [B, *spatial, C] with w [C * kernel_area, N] (`codesign.nn.conv`):
    [B, *spatial_out, N], columns j < n_analog on analog tiles (each patch one input vector of
    the crossbar), the rest exact digital; the arguments as `hybrid_matmul`'s.

    ``digital_on``: whether any digital column is used (default ``n_analog < N``; a caller that
    zeroes a narrower candidate's removed columns knows better). Where it is False while the
    crossbar is simulated, the exact convolution's forward pass is skipped (a ``lax.cond``, as
    for ``analog_on``) and the digital columns hold zeros: the backward pass, the exact
    convolution's gradient (`hybrid`), needs only h and w.
    """
    _check_row_tiles(w.shape[0], cfg)
    cols = w.shape[1]
    digital_on = jnp.asarray(n_analog) < cols if digital_on is None else digital_on

    def exact():
        return conv.conv(h, w, geometry)

    def with_analog():
        shape = jax.eval_shape(exact)
        simulated = _analog_matmul(_ConvInput(h, geometry), w, cfg, key).reshape(shape.shape)
        digital = jax.lax.cond(digital_on, exact, lambda: jnp.zeros(shape.shape, shape.dtype))
        value = jnp.where(jnp.arange(cols) < n_analog, simulated, digital)
        return conv.straight_through(h, w, geometry, jax.lax.stop_gradient(value))

    analog_on = jnp.asarray(n_analog) > 0 if analog_on is None else analog_on
    return jax.lax.cond(analog_on, with_analog, exact)
