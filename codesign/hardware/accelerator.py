"""The accelerator as a frozen pytree of numbers, and what one operation costs on it.

Named presets whose constants cite their sources are in `codesign.hardware.presets`. Every field of
`Accelerator` and `EnergyTable` is an array leaf, so a whole population of accelerators
(different tile sizes, ADC bits, analog splits) can be vmapped through one compiled energy model.
Only `name` is static. Change a config with `dataclasses.replace`.

Technology scaling. Every `EnergyTable` states the node and supply its constants hold at
(`node_nm`, `vdd`); an `Accelerator` states the node and supply it runs at. The energy model
scales every on-chip energy by `tech_scale` = (node / table node) * (vdd / table vdd)^2: switched
capacitance proportional to feature size, energy C*V^2. This is the classical first-order rule
that ZigZag-IMC itself uses to move its 28 nm constants to 22 nm chips (its AIMC validation of
AnIA, `aimc_validation.py`: "the energy will scale from 28nm -> 22nm"). It is an ASSUMPTION:
Stillmaker & Baas (Integration 58, 2017) show such classical rules drift from simulated PTM/ITRS
devices, most below 22 nm (FinFET nodes), where they fit per-node polynomials instead. DRAM energy
is not scaled (set by the off-chip device and interface, not the logic node); timing is not scaled.
The digital energies of Horowitz (ISSCC 2014) are for 45 nm at 0.9 V; presets at 22 nm / 0.8 V
use them scaled by the same rule: (22/45) * (0.8/0.9)^2 = 0.386.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Accelerator",
    "EnergyTable",
    "SCALE_45NM_TO_22NM",
    "TRAINING_J_PER_FLOP",
    "accumulate_j",
    "adc_energy_j",
    "add_energy_j",
    "analog_output_j",
    "mac_energy_j",
    "sram_j_per_byte",
    "tech_scale",
    "with_tile",
    "zigzag_bands",
    "zigzag_dimc_j",
]

# First-order C*V^2 scaling from 45 nm / 0.9 V (Horowitz) to 22 nm / 0.8 V (AnIA's node and its
# nominal supply): (22/45) * (0.8/0.9)^2. Assumption; see the module docstring.
SCALE_45NM_TO_22NM = (22 / 45) * (0.8 / 0.9) ** 2

# Energy of one training FLOP on a datacentre GPU, for lifecycle energy: NVIDIA A100 datasheet,
# 312 TFLOP/s dense bf16 at 400 W TDP -> 1.28 pJ/FLOP at peak; at an assumed 40 % utilisation
# (typical of small-batch fine-tuning) 3.2 pJ/FLOP.
TRAINING_J_PER_FLOP = 400.0 / (312e12 * 0.4)

PJ = 1e-12
FJ = 1e-15


def _pytree(cls):
    """Register a frozen dataclass as a pytree: every field a leaf except `name`."""
    fields = [f.name for f in dataclasses.fields(cls)]
    meta = [f for f in fields if f == "name"]
    data = [f for f in fields if f != "name"]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


@_pytree
@dataclasses.dataclass(frozen=True)
class EnergyTable:
    """Technology constants, in joules (per event) and seconds; each preset cites its values."""

    # Analog compute-in-memory tile.
    dac_j_per_bit: float  # DAC energy per conversion, per input bit driven onto a row
    adc_j_per_bit: float  # ADC energy per conversion, per bit, in the low-resolution region
    adc_knee_bits: float  # ADC resolution above which energy grows ~4x per extra bit
    cell_j: float  # array energy per cell per tile cycle (bitline charge, sensing)
    program_j_per_cell: float  # energy to (re)write one cell
    # Digital logic at the preset's node: E(bits) = E8 * (bits / 8) ** exponent.
    mult8_j: float  # 8-bit integer multiply
    mult_exponent: float  # fitted between Horowitz's 8-bit and 32-bit multipliers
    add8_j: float  # 8-bit integer add
    add_exponent: float  # fitted between Horowitz's 8-bit and 32-bit adders
    # Memories, per 64-bit access.
    sram_j_per_64b_8kb: float  # 64-bit read from an 8 KB SRAM
    sram_size_exponent: float  # E(size) = E(8 KB) * (size / 8 KB) ** exponent
    dram_j_per_64b: float
    # Timing.
    tile_cycle_s: float  # one analog tile cycle (DAC drive, settle, ADC conversion)
    program_s_per_row: float  # time to write one row of a tile
    digital_clock_hz: float
    # Added with issue 10; defaults are the values the older presets implied.
    reg_j_per_bit: float = 0.0  # one flip-flop write per bit (accumulator registers)
    node_nm: float = 22.0  # technology node the constants above hold at
    vdd: float = 0.8  # supply voltage the constants above hold at


@_pytree
@dataclasses.dataclass(frozen=True)
class Accelerator:
    """A hybrid chip: analog CIM tiles beside a digital MAC array, sharing an on-chip SRAM."""

    # Analog tiles.
    tile_rows: float  # cells per tile column (inputs, K direction)
    tile_cols: float  # physical cell columns per tile (outputs x cells per weight)
    tiles: float  # tiles on the chip; a model needing more is re-programmed every batch
    cell_bits: float  # bits stored per cell; a weight spans ceil(weight_bits / cell_bits) cells
    dac_bits: float  # input bits applied per cycle (bit-serial slicing of activations)
    adc_bits: float  # ADC resolution per column conversion
    # Shared precisions.
    weight_bits: float
    activation_bits: float
    accumulator_bits: float  # digital accumulation of partial sums
    # Digital MAC array.
    mac_rows: float
    mac_cols: float
    zero_skip: float  # fraction of zero-weight MAC energy the digital array avoids (0..1)
    # Memory.
    sram_bytes: float  # on-chip SRAM for digital weights; the excess streams from DRAM
    energy: EnergyTable
    # Added with issue 10 (each preset sets them explicitly; the defaults keep older code valid).
    gate_idle: float = 0.0  # share of idle DACs/ADCs/rows/columns/PEs switched off (0..1)
    columns_per_adc: float = 1.0  # cell columns merged (charge sharing) into one ADC conversion
    adc_flash: float = 0.0  # ADC architecture: 0 successive approximation (SAR), 1 flash
    digital_slice_bits: float = 8.0  # activation bits a digital PE takes per cycle (1: bit-serial)
    batch: float = 1.0  # inferences per weight fetch: weight reads and re-programming amortised
    # How analog tiles are counted. None: per band, the physical count on a chip whose partial
    # row band still fires every mapped column's ADC (a layer of 129 rows on 128-row tiles
    # converts twice per column). 1: as ZigZag-IMC counts (MACs over the rows and columns one
    # macro activation maps: 129 rows cost 129/128 of a conversion per column; convolutions
    # unrolled by whole loop factors), for presets that reproduce ZigZag. See
    # `codesign.hardware.accelerator.zigzag_bands`.
    zigzag_counting: float | None = None
    # How the digital array is counted. None: per MAC (`mac_energy_j`), with gating and
    # zero-skipping. 1: as ZigZag-IMC counts its digital in-memory macro (dimc): every macro
    # activation fires the whole mac_rows x mac_cols multiplier array, adder trees of mac_rows
    # inputs on the mapped columns, and one accumulator per mapped column. See `zigzag_dimc_j`.
    zigzag_digital: float | None = None
    node_nm: float = 22.0  # technology node the chip is built in
    vdd: float = 0.8  # supply voltage it runs at
    name: str = "custom"


def tech_scale(acc: Accelerator):
    """Energy factor from the table's node/supply to the chip's: (node ratio) * (Vdd ratio)^2."""
    t = acc.energy
    return (acc.node_nm / t.node_nm) * (acc.vdd / t.vdd) ** 2


def with_tile(acc: Accelerator, rows, cols, *, keep_area: bool = True) -> Accelerator:
    """The accelerator with another tile size; by default the chip keeps its total cell count.

    A tile-size search compares chips of equal analog array area: 64 tiles of 256 x 256 become
    16,384 tiles of 16 x 16. With keep_area=False the number of tiles stays as it is.
    """
    tiles = acc.tiles
    if keep_area:
        tiles = acc.tiles * acc.tile_rows * acc.tile_cols / (rows * cols)
    return dataclasses.replace(acc, tile_rows=rows * 1.0, tile_cols=cols * 1.0, tiles=tiles)


# --- what one operation costs on the chip (at its node and supply) ---


def adc_energy_j(bits, acc: Accelerator):
    """Energy per ADC conversion: linear in bits below the knee, ~4x per bit above it.

    `adc_j_per_bit` is one comparator decision with its share of the converter (ZigZag-IMC's
    100 fF * Vdd^2 per bit of a SAR ADC, which decides once per bit). A flash ADC decides with
    2^b - 1 comparators at once (Razavi, "The flash ADC", IEEE Solid-State Circuits Magazine 9(3),
    2017), so it pays 2^b - 1 decisions instead of b; `adc_flash` blends the two (0 SAR, 1 flash).
    ASSUMPTION: a flash comparator decision costs what one SAR bit cycle costs. The noise term
    (4x per bit above the knee) is the same for both.
    """
    t = acc.energy
    decisions = (1.0 - acc.adc_flash) * bits + acc.adc_flash * (2.0**bits - 1.0)
    e = t.adc_j_per_bit * (decisions + t.adc_knee_bits * 4.0 ** (bits - t.adc_knee_bits))
    return e * tech_scale(acc)


def add_energy_j(bits, acc: Accelerator):
    """One `bits`-wide integer addition at the chip's node and supply."""
    t = acc.energy
    return t.add8_j * (bits / 8.0) ** t.add_exponent * tech_scale(acc)


def accumulate_j(acc: Accelerator):
    """One add into an accumulator register of accumulator_bits (adder + register write)."""
    bits = acc.accumulator_bits
    return add_energy_j(bits, acc) + bits * acc.energy.reg_j_per_bit * tech_scale(acc)


def tree_adders_per_input(inputs, input_bits):
    """1-bit full adders per input of a ripple-carry adder tree of `inputs` `input_bits` words.

    ZigZag-IMC's count (imc_array.py, adders_regular): inputs * (b + 1) - (b + log2(inputs) + 1)
    full adders for the whole tree; 0 for a single input.
    """
    n = jnp.maximum(inputs, 1.0)
    return (input_bits + 1.0) - (input_bits + jnp.log2(n) + 1.0) / n


def shift_add_adders(inputs, input_bits):
    """Full adders of ZigZag's place-value (shift-and-add) tree merging `inputs` bit slices.

    imc_array.py, adders_pv: b * (n - 1) + n * (log2(n) - 0.5) for n > 1, else 0.
    """
    n = jnp.maximum(inputs, 1.0)
    return jnp.where(n > 1.0, input_bits * (n - 1.0) + n * (jnp.log2(n) - 0.5), 0.0)


def mac_energy_j(acc: Accelerator):
    """One digital MAC: multiply, its share of the adder tree, and of the accumulator.

    The multiply scales from Horowitz's 8-bit one (weight x activation bits). Products enter a
    mac_rows-input adder tree (full adders per input: `tree_adders_per_input`), once per input
    slice of digital_slice_bits (bit-serial arrays run the tree once per slice); each column's
    tree output is added into an accumulator_bits register once per slice, shared by mac_rows
    MACs.
    """
    t = acc.energy
    wb, ab = acc.weight_bits, acc.activation_bits
    s = jnp.minimum(acc.digital_slice_bits, ab)
    slices = ab / s
    mult = t.mult8_j * (wb * ab / 64.0) ** (t.mult_exponent / 2.0) * tech_scale(acc)
    product_bits = jnp.log2((2.0**wb - 1.0) * (2.0**s - 1.0) + 1.0)  # exact product width
    per_bit = add_energy_j(product_bits, acc) / product_bits
    tree = slices * tree_adders_per_input(acc.mac_rows, product_bits) * per_bit
    merge = shift_add_adders(slices, product_bits) * per_bit / acc.mac_rows
    return mult + tree + merge + slices * accumulate_j(acc) / acc.mac_rows


def sram_j_per_byte(acc: Accelerator):
    t = acc.energy
    per_64b = t.sram_j_per_64b_8kb * (acc.sram_bytes / 8192.0) ** t.sram_size_exponent
    return per_64b * tech_scale(acc) / 8.0


def analog_output_j(acc: Accelerator, cells_per_weight, cycles, row_bands):
    """Digital periphery per output column per cycle and row band: merge the cell slices' ADC
    results (shift-and-add tree) and, when there is more than one partial sum to add (several
    cycles or row bands), accumulate. ZigZag-IMC's adders_pv and accumulators."""
    slices = jnp.maximum(cells_per_weight / acc.columns_per_adc, 1.0)
    per_bit = add_energy_j(acc.adc_bits, acc) / acc.adc_bits
    merge = shift_add_adders(slices, acc.adc_bits) * per_bit
    accumulate = jnp.where(cycles * row_bands > 1.0, accumulate_j(acc), 0.0)
    return merge + accumulate


def _zigzag_mapped_rows(network, rows, tile_rows):
    """Rows one macro activation maps per layer ([layers]), as ZigZag-IMC unrolls them (see
    `zigzag_bands`): a step function of the layer's rows, so no gradient flows through it."""
    mapped = []
    for i, layer in enumerate(network):
        area = layer.kernel_area
        channels = rows[i] / area
        best = jnp.minimum(channels, tile_rows)  # channels alone, unevenly
        if area > 1:
            side = math.isqrt(area)
            kernel = sorted({area, side} if side * side == area else {area})
            divisor = np.arange(1, layer.in_units + 1, dtype=np.float32)
            divides = (jnp.mod(jnp.round(channels), divisor) == 0) & (divisor <= channels)
            for f in kernel:
                fits = divides & (divisor * f <= tile_rows)
                best = jnp.maximum(best, jnp.max(jnp.where(fits, divisor * f, 0.0)))
        mapped.append(best)
    return jax.lax.stop_gradient(jnp.stack(mapped))


def _ratio(a, b):  # 0 for an empty layer
    return jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)


def zigzag_bands(network, rows, n_analog, tile_rows, logical_cols):
    """Row and column bands per layer ([layers] each) as ZigZag-IMC counts them: a layer's MACs
    over the rows and columns one macro activation maps (`get_mapped_oa_dim` in ZigZag's
    imc_array.py), so a layer one row past a tile costs 1/tile_rows of a band more, not a whole
    band. `network`: the layers' shapes (`kernel_area`, `in_units`); rows and n_analog: kept
    rows and analog columns.

    Columns (output channels, K) and the input channels of a dense layer unroll unevenly: up to
    a tile's worth are mapped. A convolution's rows unroll whole loop factors: input channels
    c dividing C times a kernel factor (1, one kernel side, the whole kernel), the largest such
    product within the tile (a 3x3 conv of 64 channels maps 32 x 3 = 96 of 128 rows, 6 bands
    for its K = 576), or min(C, tile_rows) channels alone. Kernel sides are read from the
    kernel area (a square kernel's side; a 1-D kernel is its own side)."""
    mapped = _zigzag_mapped_rows(network, rows, tile_rows)
    return _ratio(rows, mapped), _ratio(n_analog, jnp.minimum(n_analog, logical_cols))


def adder_tree_j(mapped, inputs, bits, acc: Accelerator):
    """One pass of a ripple-carry adder tree of `inputs` `bits`-wide words, `mapped` of them in
    use: ZigZag-IMC's count (imc_unit.py, get_regular_adder_trees_energy). A whole tree has
    inputs * (b + 1) - (b + log2(inputs) + 1) full adders; with fewer inputs in use, the
    subtrees fed only by zeros are off and an adder with one live input is "half activated"
    (its carry path idle): half a full adder (ZigZag's gate model: 2 XOR2 against 3 NAND2 +
    2 XOR2, 2.1 fF of 4.2 fF). The walk halves the tree level by level, as ZigZag's does."""
    full_j = add_energy_j(1.0, acc)
    depth = jnp.floor(jnp.log2(inputs))
    whole = inputs * (bits + 1.0) - (bits + depth + 1.0)
    left, base, full, half = mapped, inputs, 0.0, 0.0
    for _ in range(17):  # trees of up to 65,536 inputs (`codesign.search.checks`' mac_rows bound)
        base = base / 2.0
        live = (left > 0) & (base >= 1.0)
        d = jnp.floor(jnp.log2(jnp.maximum(base, 1.0)))
        last = (left <= 1.0) & (base == 1.0)
        more, less = ~last & (left > base), ~last & (left < base)
        equal = ~last & ~more & ~less
        sub = base * (bits + 1.0) - (bits + d + 1.0)
        full = full + jnp.where(live, more * (sub + bits + d) + equal * sub, 0.0)
        half = half + jnp.where(live, last * bits + (less | equal) * (bits + d), 0.0)
        left = jnp.where(live & (last | equal), 0.0, jnp.where(live & more, left - base, left))
    full, half = jnp.where(mapped >= inputs, whole, full), jnp.where(mapped >= inputs, 0.0, half)
    return jnp.where(mapped >= 1.0, (full + 0.5 * half) * full_j, 0.0)


def zigzag_dimc_j(network, rows, n_digital, positions, acc: Accelerator):
    """Energy per layer ([layers]) of the digital columns on a digital in-memory macro of
    mac_rows x mac_cols weights, counted as ZigZag-IMC counts its dimc
    (imc_array.py, get_energy_for_a_layer, imc_type digital): per macro activation (the layer's
    MACs over the rows and columns one activation maps, `zigzag_bands`' rule) and input slice
    of digital_slice_bits, every 1-bit multiplier of the whole array (mac_rows x mac_cols x
    weight_bits x slice bits; a 1-bit multiplier is 1/64 of the table's 8 x 8 multiply), one
    adder tree of mac_rows weight_bits-wide inputs per mapped column and slice bit
    (`adder_tree_j`), a shift-and-add tree merging the slice bits, and one accumulator of
    activation_bits + log2(mac_rows) + weight_bits per mapped column (none when a slice is the
    whole activation). No gating and no zero-skipping: ZigZag models neither."""
    d2, d1 = acc.mac_rows, acc.mac_cols
    wb, ab = acc.weight_bits, acc.activation_bits
    bsp = jnp.minimum(acc.digital_slice_bits, ab)
    mapped_rows = _zigzag_mapped_rows(network, rows, d2)
    mapped_cols = jnp.minimum(n_digital, d1)
    activations = positions * _ratio(rows, mapped_rows) * _ratio(n_digital, mapped_cols)
    scale = tech_scale(acc)
    mults = acc.energy.mult8_j / 64.0 * scale * bsp * wb * d1 * d2
    trees = adder_tree_j(mapped_rows, d2, wb, acc) * bsp
    merge = shift_add_adders(bsp, wb + jnp.floor(jnp.log2(d2))) * add_energy_j(1.0, acc)
    bits = ab + jnp.log2(d2) + wb
    accumulate = jnp.where(
        bsp == ab, 0.0, add_energy_j(bits, acc) + bits * acc.energy.reg_j_per_bit * scale
    )
    return activations * (ab / bsp) * (mults + (trees + merge + accumulate) * mapped_cols)
