"""Energy per inference of a network on a hybrid analog-CIM + digital accelerator, in pure JAX.

Data flow: (network, Design, Accelerator) --layer_counts--> LayerCounts --energy_from_counts-->
EnergyReport. `counts_from_masks` is the exact alternative to `layer_counts` when the pruning
masks themselves are known. Every step is a pure function of arrays, so the model jits, vmaps
over thousands of candidates, and differentiates.

Exact forward, straight-through backward: every count (kept rows, tiles, array passes, ADC
resolution) is rounded or ceiled exactly in the forward pass; gradients flow as if the rounding
were the identity (straight-through estimator), so d(energy)/d(width, sparsity, analog fraction,
ADC bits) exist and have the physical sign. Clipping the knobs to their ranges is straight-through
too, so a gradient at a bound (full width, all-analog) is not halved by jnp.clip's tie rule.
Where a count steps (a new tile, row band or array pass) the gradient is the staircase's average
slope, not the step. `relaxed=True` drops the rounding altogether: a smooth
model whose gradients can be checked by finite differences, and which the straight-through
gradients follow closely (they differ only in evaluating the chain rule at rounded counts).

The model, per layer (a K x N weight matrix applied at P positions per inference):
- A fraction `a` of the kept output columns runs on analog tiles of tile_rows x tile_cols cells;
  a weight spans ceil(weight_bits / cell_bits) cells, so a tile holds tile_cols / cells_per_weight
  logical columns. A layer uses ceil(K / tile_rows) * ceil(N_a / logical_cols) tiles. Inputs are
  applied bit-serially in ceil(activation_bits / dac_bits) cycles. Each cycle, at every position:
  DACs drive rows, ADCs convert cell columns (columns_per_adc of them charge-shared into one
  conversion), and the array charges cells. A chip that cannot gate (`gate_idle` = 0) pays for
  every row, column and cell of an active tile, used or not; a gating chip (`gate_idle` = 1, as
  ZigZag-IMC counts) pays DACs on mapped rows, ADCs on mapped columns, and the array half per
  mapped row across the tile (wordline, 1-bit multipliers) and half per mapped column down it
  (bitline summation). Tiles whose weights are all pruned are skipped (tile-aligned block
  pruning); scattered zeros save nothing on a tile. Per output, cycle and row band the digital
  periphery merges the cell slices' conversions (shift-and-add tree) and accumulates partial sums
  at accumulator_bits into a register (ZigZag-IMC's adders_pv and accumulators).
- Tiles hold weights in place: programming them is a one-time cost (`program_once_j`), unless the
  whole model needs more tiles than the chip has; then the tiles beyond the chip's capacity are
  re-written (and their weights read from DRAM) once per batch of `batch` inferences.
- The remaining columns run on a mac_rows x mac_cols digital array, weight-stationary (each weight
  loaded once per batch, reused at every position). A MAC is a multiply, its share of a mac_rows-
  input adder tree at product width (run once per input slice of digital_slice_bits) and of the
  column's accumulator. Ungated, every pass fires the whole array (padding PEs cost energy);
  gated, only PEs holding a kept weight do. Zero weights save `zero_skip` of their MAC energy.
  Digital weights are read from on-chip SRAM once per batch; what exceeds the SRAM streams from
  DRAM. Activations are read from SRAM once per analog row band and once per digital column
  pass, outputs written once.
- Every on-chip energy is scaled from the constants' node and supply to the chip's by
  `hardware.tech_scale` (C proportional to node, E = C V^2); DRAM is not.
- Latency: analog tiles of a layer run in parallel, the digital array beside them; layers run one
  after another; re-programming adds its row-write time.

Left out (documented, not modelled): leakage and clock power, the network-on-chip between tiles,
activation functions, pooling and other non-MAC work, im2col reuse in line buffers, pipelining
across layers, data-dependent switching activity (input toggle rates, bit-level sparsity), ADC
sharing by multiplexing (time-sharing one ADC between columns), and device non-idealities (those
live in the accuracy simulation, `codesign.hardware.analog`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from codesign.hardware.accelerator import (
    Accelerator,
    adc_energy_j,
    analog_output_j,
    mac_energy_j,
    sram_j_per_byte,
    tech_scale,
    zigzag_bands,
    zigzag_dimc_j,
)
from codesign.nn.networks import LayerShape
from codesign.nn.pruning import GRANULARITIES

__all__ = [
    "COMPONENTS",
    "GRANULARITIES",
    "Design",
    "EnergyReport",
    "LayerCounts",
    "adc_energy_j",
    "counts_from_masks",
    "energy_from_counts",
    "estimate_energy",
    "estimate_energy_batch",
    "layer_counts",
    "mac_energy_j",
    "peak_tops_per_w",
]

COMPONENTS = ("adc", "dac", "array", "accumulate", "program", "digital_mac", "sram", "dram")
NM_GROUP = 4  # N:M pruning keeps n of every M = 4 consecutive weights along K


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Design:
    """Per-layer choices for one candidate network; every field is an array of shape [layers].

    widths: kept output units of each layer (the next layer keeps the matching inputs).
    analog_fraction: share of the kept outputs mapped to analog tiles, in [0, 1].
    sparsity: fraction of the kept weights pruned, in [0, 1).
    granularity: index into GRANULARITIES (how the pruned weights are arranged).
    """

    widths: jax.Array
    analog_fraction: jax.Array
    sparsity: jax.Array
    granularity: jax.Array

    @classmethod
    def dense(cls, network: Sequence[LayerShape], analog_fraction=0.0) -> Design:
        """Full widths, no pruning, the same analog fraction everywhere."""
        n = len(network)
        return cls(
            widths=jnp.asarray([layer.out_units for layer in network], jnp.float32),
            analog_fraction=jnp.broadcast_to(jnp.asarray(analog_fraction, jnp.float32), (n,)),
            sparsity=jnp.zeros((n,), jnp.float32),
            granularity=jnp.zeros((n,), jnp.int32),
        )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerCounts:
    """What the hardware sees of each layer after widths, pruning and analog split ([layers])."""

    rows: jax.Array  # K rows kept (after width and row pruning)
    cols: jax.Array  # N columns kept (after width and column pruning)
    n_analog: jax.Array  # columns on analog tiles
    row_bands: jax.Array  # ceil(rows / tile_rows)
    tiles: jax.Array  # tiles the analog part spans
    tiles_active: jax.Array  # tiles holding at least one unpruned weight
    digital_density: jax.Array  # nonzero fraction of the digital part's weights
    analog_density: jax.Array  # nonzero fraction of the analog part's weights

    @property
    def n_digital(self) -> jax.Array:
        return self.cols - self.n_analog


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EnergyReport:
    """Energy per inference (J) per layer and component, latency, tiles and efficiency.

    Per-layer fields have the layer axis last; the totals sum over it, so a batched report
    (from `estimate_energy_batch`) gives one total per candidate. The totals use array methods,
    so a report whose leaves were moved to NumPy sums in NumPy (no per-leaf device dispatch).
    """

    layer_j: dict  # component name -> [layers] joules per inference
    layer_latency_s: jax.Array
    layer_tiles: jax.Array  # active analog tiles per layer
    layer_macs: jax.Array  # useful MACs (kept, unpruned weights) per inference
    program_once_j: jax.Array  # one-time cost of programming every active tile
    analog_macro_j: jax.Array  # adc + dac + array: what a CIM macro measurement covers

    @property
    def layer_energy_j(self) -> jax.Array:
        return sum(self.layer_j[c] for c in COMPONENTS)

    @property
    def components_j(self) -> dict:
        return {c: self.layer_j[c].sum(-1) for c in COMPONENTS}

    @property
    def energy_j(self) -> jax.Array:
        return self.layer_energy_j.sum(-1)

    @property
    def latency_s(self) -> jax.Array:
        return self.layer_latency_s.sum(-1)

    @property
    def tiles_used(self) -> jax.Array:
        return self.layer_tiles.sum(-1)

    @property
    def macs(self) -> jax.Array:
        return self.layer_macs.sum(-1)

    @property
    def tops_per_w(self) -> jax.Array:
        """Effective efficiency: 2 ops per useful MAC over all energy spent."""
        return 2.0 * self.macs / self.energy_j / 1e12


# --- rounding with straight-through gradients ---


def _straight_through(x: jax.Array, forward: jax.Array) -> jax.Array:
    """Forward value ``forward``, gradient of ``x`` (identity): the one straight-through
    estimator of the rounded counts below."""
    return x + jax.lax.stop_gradient(forward - x)


def _clip(x, lo, hi):
    """Exact clip forward, identity gradient: jnp.clip's tie rule would halve it at the bounds."""
    return _straight_through(x, jnp.clip(x, lo, hi))


def _round(x, relaxed):
    return x if relaxed else _straight_through(x, jnp.round(x))


def _ceil(x, relaxed):
    return x if relaxed else _straight_through(x, jnp.ceil(x))


def _floor(x, relaxed):
    return x if relaxed else _straight_through(x, jnp.floor(x))


def _safe_div(a, b):
    """a / b, and 0 where b == 0 (gradients stay finite)."""
    nonzero = b != 0
    return jnp.where(nonzero, a / jnp.where(nonzero, b, 1.0), 0.0)


def _tile_geometry(acc: Accelerator, relaxed: bool):
    """(cells per weight, logical columns per tile, bit-serial cycles per activation)."""
    cells_per_weight = _ceil(acc.weight_bits / acc.cell_bits, relaxed)
    logical_cols = jnp.maximum(_floor(acc.tile_cols / cells_per_weight, relaxed), 1.0)
    cycles = _ceil(acc.activation_bits / acc.dac_bits, relaxed)
    return cells_per_weight, logical_cols, cycles


def peak_tops_per_w(acc: Accelerator):
    """Macro efficiency of one fully used tile (adc + dac + array), as CIM papers report it."""
    cells_per_weight, logical_cols, cycles = _tile_geometry(acc, relaxed=False)
    t = acc.energy
    adc_bits = jnp.round(acc.adc_bits)
    per_cycle = (
        acc.tile_rows * acc.dac_bits * t.dac_j_per_bit * tech_scale(acc)
        + acc.tile_cols / acc.columns_per_adc * adc_energy_j(adc_bits, acc)
        + acc.tile_rows * acc.tile_cols * t.cell_j * tech_scale(acc)
    )
    return 2.0 * acc.tile_rows * logical_cols / (cycles * per_cycle) / 1e12


# --- counts ---


def _shape_arrays(network: Sequence[LayerShape]):
    dtype = jnp.result_type(float)  # float32, or float64 under jax_enable_x64
    k = jnp.asarray([layer.rows for layer in network], dtype)
    n = jnp.asarray([layer.out_units for layer in network], dtype)
    p = jnp.asarray([layer.positions for layer in network], dtype)
    return k, n, p


def layer_counts(
    network: Sequence[LayerShape], design: Design, acc: Accelerator, *, relaxed: bool = False
) -> LayerCounts:
    """Counts from the design's statistics: exact widths and tiles, pruning at its nominal rate.

    Layer l keeps rows K_l * widths[l-1] / N_{l-1} (its inputs follow the previous layer's kept
    outputs, times the kernel area; in a residual network, its `LayerShape.source` layer's).
    Row and column pruning remove whole rows/columns (the mapper compacts them); block pruning
    empties round(sparsity * tiles) analog tiles; unstructured and N:M pruning leave every tile
    active and only help the digital array's zero-skipping. A layer whose masks will hold no
    weight (round(sparsity * units) = units) counts no MAC and no active tile.
    """
    k, n, _ = _shape_arrays(network)
    widths = _clip(design.widths, 1.0, n)
    keep_in = jnp.concatenate([jnp.ones((1,), n.dtype), widths[:-1] / n[:-1]])
    if any(layer.source is not None for layer in network):  # a residual network's shortcuts
        src = np.asarray([l - 1 if s.source is None else s.source for l, s in enumerate(network)])
        keep_in = jnp.where(src >= 0, (widths / n)[np.maximum(src, 0)], 1.0)
    rows = _round(k * keep_in, relaxed)
    cols = _round(widths, relaxed)
    s = _clip(design.sparsity, 0.0, 1.0)
    g = jnp.asarray(design.granularity)
    is_row, is_col, is_block, is_nm = (g == GRANULARITIES.index(x) for x in GRANULARITIES[1:])

    rows = rows - jnp.where(is_row, _round(s * rows, relaxed), 0.0)
    cols = cols - jnp.where(is_col, _round(s * cols, relaxed), 0.0)
    n_analog = _round(_clip(design.analog_fraction, 0.0, 1.0) * cols, relaxed)

    _, logical_cols, _ = _tile_geometry(acc, relaxed)
    row_bands = _ceil(rows / acc.tile_rows, relaxed)
    tiles = row_bands * _ceil(n_analog / logical_cols, relaxed)
    tiles_active = tiles - jnp.where(is_block, _round(s * tiles, relaxed), 0.0)

    nm_keep = jnp.clip(_round(NM_GROUP * (1.0 - s), relaxed), 1.0, NM_GROUP) / NM_GROUP
    density = jnp.where(is_row | is_col, 1.0, jnp.where(is_nm, nm_keep, 1.0 - s))
    # The masks prune round(sparsity * units) of a layer's units (`codesign.nn.pruning`): where that
    # is all of them (every weight of a small layer, or its only tile-grid blocks), the layer is
    # empty, as its masks will be. Row and column pruning reach 0 rows or columns above.
    blocks = jnp.ceil(rows / acc.tile_rows) * jnp.ceil(cols / logical_cols)
    emptied = (is_block & (jnp.round(s * blocks) >= blocks)) | (
        (g == GRANULARITIES.index("unstructured")) & (jnp.round(s * rows * cols) >= rows * cols)
    )
    density = jnp.where(emptied, 0.0, density)
    tiles_active = jnp.where(emptied, 0.0, tiles_active)
    return LayerCounts(
        rows=rows,
        cols=cols,
        n_analog=n_analog,
        row_bands=row_bands,
        tiles=tiles,
        tiles_active=tiles_active,
        digital_density=density,
        analog_density=density,
    )


def counts_from_masks(
    network: Sequence[LayerShape], masks: Sequence, analog_fraction, acc: Accelerator
) -> LayerCounts:
    """Exact counts from the actual [K, N] pruning masks (host-side, NumPy; not for jit).

    All-zero rows and columns are compacted away (a mapper would not place them); the first
    round(a * columns) remaining columns go to analog tiles on a grid anchored at (0, 0); a tile
    is active when any of its cells holds an unpruned weight.
    """

    fractions = np.broadcast_to(np.asarray(analog_fraction, np.float64), (len(network),))
    cells_per_weight, logical_cols, _ = (float(v) for v in _tile_geometry(acc, relaxed=False))
    tr, tc = int(acc.tile_rows), int(logical_cols)
    out = {f.name: [] for f in dataclasses.fields(LayerCounts)}
    for layer, mask, a in zip(network, masks, fractions, strict=True):
        m = np.asarray(mask) != 0
        if m.shape != (layer.rows, layer.out_units):
            raise ValueError(
                f"mask for layer {layer.name or '?'} has shape {m.shape}, "
                f"expected {(layer.rows, layer.out_units)}"
            )
        m = m[m.any(axis=1)][:, m.any(axis=0)]
        rows, cols = m.shape
        n_analog = int(np.round(a * cols))
        analog, digital = m[:, :n_analog], m[:, n_analog:]
        rb, cb = -(-rows // tr), -(-n_analog // tc)
        padded = np.zeros((rb * tr, cb * tc), bool)
        padded[:rows, :n_analog] = analog
        active = padded.reshape(rb, tr, cb, tc).any(axis=(1, 3)).sum()
        values = {
            "rows": rows,
            "cols": cols,
            "n_analog": n_analog,
            "row_bands": rb,
            "tiles": rb * cb,
            "tiles_active": active,
            "digital_density": digital.mean() if digital.size else 1.0,
            "analog_density": analog.mean() if analog.size else 1.0,
        }
        for key, value in values.items():
            out[key].append(value)
    return LayerCounts(**{k: jnp.asarray(v, jnp.float32) for k, v in out.items()})


# --- energy ---


def energy_from_counts(
    network: Sequence[LayerShape], counts: LayerCounts, acc: Accelerator, *, relaxed: bool = False
) -> EnergyReport:
    """Energy, latency and tiles per inference from per-layer counts (see the module docstring)."""
    _, _, positions = _shape_arrays(network)
    t = acc.energy
    scale = tech_scale(acc)
    c = counts
    g = acc.gate_idle
    cells_per_weight, logical_cols, cycles = _tile_geometry(acc, relaxed)
    adc_bits = _round(acc.adc_bits, relaxed)
    act_bytes = acc.activation_bits / 8.0

    # Analog tiles, per cycle at every position. Ungated, an active tile drives all its rows,
    # converts all its columns and charges all its cells. Gated (gate_idle = 1), as ZigZag-IMC
    # counts: DACs on mapped rows, ADCs on mapped cell columns, and the array half per mapped row
    # across all columns (wordline and 1-bit multipliers) and half per mapped column down all rows
    # (bitline summation).
    occupancy = _safe_div(c.tiles_active, c.tiles)
    row_bands, col_bands = c.row_bands, _safe_div(c.tiles, c.row_bands)
    if acc.zigzag_counting is not None:  # as ZigZag-IMC counts macro activations
        zz = acc.zigzag_counting
        zz_rows, zz_cols = zigzag_bands(network, c.rows, c.n_analog, acc.tile_rows, logical_cols)
        row_bands = zz * zz_rows + (1.0 - zz) * row_bands
        col_bands = zz * zz_cols + (1.0 - zz) * col_bands
    rows_mapped = c.rows * col_bands * occupancy  # summed over the layer's active tiles
    cols_mapped = c.n_analog * cells_per_weight * row_bands * occupancy
    rows_full = c.tiles_active * acc.tile_rows
    cols_full = c.tiles_active * acc.tile_cols
    rows_on = g * rows_mapped + (1.0 - g) * rows_full
    cols_on = g * cols_mapped + (1.0 - g) * cols_full
    cells_on = g * 0.5 * (rows_mapped * acc.tile_cols + acc.tile_rows * cols_mapped) + (1.0 - g) * (
        rows_full * acc.tile_cols
    )
    steps = positions * cycles
    dac = steps * rows_on * acc.dac_bits * t.dac_j_per_bit * scale
    adc = steps * cols_on / acc.columns_per_adc * adc_energy_j(adc_bits, acc)
    array = steps * cells_on * t.cell_j * scale
    outputs = c.n_analog * row_bands * occupancy
    accumulate = steps * outputs * analog_output_j(acc, cells_per_weight, cycles, row_bands)

    # Tiles beyond the chip's capacity are re-written once per batch, shared out by tile count.
    total_active = jnp.sum(c.tiles_active)
    overflow = jnp.maximum(total_active - acc.tiles, 0.0)
    reprogrammed = overflow * _safe_div(c.tiles_active, total_active) / acc.batch
    cells_per_tile = acc.tile_rows * acc.tile_cols
    program = reprogrammed * cells_per_tile * t.program_j_per_cell * scale
    reprogram_bytes = reprogrammed * cells_per_tile * acc.cell_bits / 8.0

    # Digital array, weight-stationary: each weight is loaded once per batch and reused at every
    # position. Ungated, every pass fires the whole array (padding PEs cost energy); gated, only
    # PEs holding a kept weight fire. Zero weights save zero_skip of their MAC energy.
    n_digital = c.n_digital
    row_passes = _ceil(c.rows / acc.mac_rows, relaxed)
    col_passes = _ceil(n_digital / acc.mac_cols, relaxed)
    passes = row_passes * col_passes
    slots = g * c.rows * n_digital + (1.0 - g) * passes * acc.mac_rows * acc.mac_cols
    skipped = acc.zero_skip * (1.0 - c.digital_density) * c.rows * n_digital
    digital_mac = positions * (slots - skipped) * mac_energy_j(acc)
    if acc.zigzag_digital is not None:  # as ZigZag-IMC counts its digital macro (dimc)
        zz = acc.zigzag_digital
        zz_mac = zigzag_dimc_j(network, c.rows, n_digital, positions, acc)
        digital_mac = zz * zz_mac + (1.0 - zz) * digital_mac

    # Memories: digital weights from SRAM (overflow from DRAM) once per batch, activations
    # through SRAM: read once per analog row band and once per digital column pass.
    weight_bytes = c.rows * n_digital * acc.weight_bits / 8.0
    total_weight_bytes = jnp.sum(weight_bytes)
    dram_share = _safe_div(
        jnp.maximum(total_weight_bytes - acc.sram_bytes, 0.0), total_weight_bytes
    )
    input_reads = col_passes + jnp.minimum(c.tiles_active, 1.0)
    act_traffic = positions * act_bytes * (c.rows * input_reads + c.cols)
    weight_traffic = weight_bytes / acc.batch
    sram = (weight_traffic * (1.0 - dram_share) + act_traffic) * sram_j_per_byte(acc)
    dram = (weight_traffic * dram_share + reprogram_bytes) * t.dram_j_per_64b / 8.0

    analog_latency = positions * cycles * t.tile_cycle_s * jnp.minimum(c.tiles_active, 1.0)
    analog_latency = analog_latency + reprogrammed * acc.tile_rows * t.program_s_per_row
    digital_latency = (
        positions
        * passes
        * (acc.activation_bits / jnp.minimum(acc.digital_slice_bits, acc.activation_bits))
        / t.digital_clock_hz
    )

    analog_macs = c.rows * c.n_analog * occupancy * c.analog_density
    digital_macs = c.rows * n_digital * c.digital_density
    return EnergyReport(
        layer_j={
            "adc": adc,
            "dac": dac,
            "array": array,
            "accumulate": accumulate,
            "program": program,
            "digital_mac": digital_mac,
            "sram": sram,
            "dram": dram,
        },
        layer_latency_s=jnp.maximum(analog_latency, digital_latency),
        layer_tiles=c.tiles_active,
        layer_macs=positions * (analog_macs + digital_macs),
        program_once_j=total_active * cells_per_tile * t.program_j_per_cell * scale,
        analog_macro_j=jnp.sum(adc + dac + array),
    )


def estimate_energy(
    network: Sequence[LayerShape],
    design: Design | LayerCounts,
    accelerator: Accelerator,
    *,
    relaxed: bool = False,
) -> EnergyReport:
    """Energy per inference of `network` shaped by `design` on `accelerator`.

    `design` is a `Design` (statistics: widths, sparsity, granularity, analog fraction) or the
    `LayerCounts` of actual masks (`counts_from_masks`). Pure and jittable with `network` static.
    """
    counts = design
    if isinstance(design, Design):
        counts = layer_counts(network, design, accelerator, relaxed=relaxed)
    return energy_from_counts(network, counts, accelerator, relaxed=relaxed)


@functools.cache
def _batched(network: tuple[LayerShape, ...]):
    def one(design, acc):
        report = estimate_energy(network, design, acc)
        return report

    return jax.jit(jax.vmap(one))


def estimate_energy_batch(
    network: Sequence[LayerShape], designs: Design, accelerators: Accelerator
) -> EnergyReport:
    """`estimate_energy` over a population: every leaf carries a leading candidate axis.

    Accelerator leaves may be scalars (shared) or [candidates] arrays (searched, e.g. tile size
    or ADC bits). One compilation per network shape and population size.
    """
    size = jnp.shape(designs.widths)[0]

    def broadcast(x):  # host values stay in NumPy: one transfer at the call, not one per leaf
        if isinstance(x, jax.Array):
            return jnp.broadcast_to(x.astype(jnp.float32), (size,))
        return np.broadcast_to(np.asarray(x, np.float32), (size,))

    accelerators = jax.tree.map(broadcast, accelerators)
    return _batched(tuple(network))(designs, accelerators)
