"""The accelerator as a frozen pytree of numbers, and named presets whose constants cite sources.

Every field of `Accelerator` and `EnergyTable` is an array leaf, so a whole population of
accelerators (different tile sizes, ADC bits, analog splits) can be vmapped through one compiled
energy model. Only `name` is static. Change a config with `dataclasses.replace`.

Technology scaling. The digital energies of Horowitz (ISSCC 2014) are for 45 nm at 0.9 V. Where a
preset puts them on the same 22 nm node as the analog constants, they are scaled to first order
as C*V^2 with capacitance proportional to feature size: (22/45) * (0.8/0.9)^2 = 0.386. This is an
assumption (a textbook first-order rule), not a measurement; DRAM energy is not scaled (it is set
by the off-chip device and interface, not the logic node).
"""

from __future__ import annotations

import dataclasses

import jax

from codesign.errors import CodesignError

__all__ = [
    "Accelerator",
    "EnergyTable",
    "PRESETS",
    "DEFAULT_PRESET",
    "SCALE_45NM_TO_22NM",
    "TRAINING_J_PER_FLOP",
    "get_preset",
    "with_tile",
    "preset_sources",
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


@_pytree
@dataclasses.dataclass(frozen=True)
class Accelerator:
    """A hybrid chip: analog CIM tiles beside a digital MAC array, sharing an on-chip SRAM."""

    # Analog tiles.
    tile_rows: float  # cells per tile column (inputs, K direction)
    tile_cols: float  # physical cell columns per tile (outputs x cells per weight)
    tiles: float  # tiles on the chip; a model needing more is re-programmed every inference
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
    name: str = "custom"


# ---------------------------------------------------------------------------------------------
# Constants with sources.
#
# Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, 45 nm 0.9 V:
#   int8 add 0.03 pJ, int32 add 0.1 pJ, int8 mult 0.2 pJ, int32 mult 3.1 pJ;
#   64-bit SRAM read 10 pJ (8 KB), 20 pJ (32 KB), 100 pJ (1 MB); DRAM 1.3-2.6 nJ per 64 bits.
_H_ADD8 = 0.03 * PJ
_H_ADD32 = 0.1 * PJ
_H_MULT8 = 0.2 * PJ
_H_MULT32 = 3.1 * PJ
# Exponents fitted through both Horowitz anchors: log(E32/E8) / log(32/8).
_ADD_EXP = 0.868  # log(0.1/0.03)/log(4) = 0.868
_MULT_EXP = 1.977  # log(3.1/0.2)/log(4) = 1.977
# SRAM: 8 KB -> 1 MB (128x) costs 10x: exponent log(10)/log(128) = 0.475 (gives 19.3 pJ at 32 KB,
# Horowitz: 20 pJ).
_SRAM_8KB = 10 * PJ
_SRAM_EXP = 0.475
_DRAM_64B = 2.0 * PJ * 1000  # 2 nJ, inside Horowitz's 1.3-2.6 nJ range

# Analog tile constants for a 22 nm SRAM-based CIM macro, calibrated on imec's AnIA
# (Papistas et al., 22 nm in-memory analog matrix-vector multiplier, IEEE CICC 2021; imec and
# GlobalFoundries press release, July 2020): a 1024 x 512 array, 1024 DACs, 512 ADCs, 6b + sign
# inputs, ternary weights, 6b outputs, 1,050-1,500 TOPS/W at 0.8 V, up to 2,900 TOPS/W at 0.6 V.
# AnIA's per-component split is not published in the sources above; we ASSUME
#   ADC 0.40 pJ per 6-bit conversion, DAC 0.02 pJ per bit per row, cell 0.67 fJ per cycle,
# which add up to 0.70 nJ per full 1024 x 512 matrix-vector product, i.e. 1,500 TOPS/W at 0.8 V:
# the top of AnIA's reported 0.8 V range. The 22 nm DAC/ADC/cell energies are used unchanged by
# the hybrid preset.
# ADC scaling with resolution: Murmann, "ADC Performance Survey 1997-2024" (Stanford): at low
# resolution energy per conversion is set by overhead and bit cycles (roughly linear in bits);
# above the thermal-noise knee it grows 4x per extra bit (each bit halves the noise, so
# capacitance x4). The knee is placed at 8 bits (DESIGN.md; the survey's envelope bends at
# ~8-10 b). E(b) = adc_j_per_bit * (b + knee * 4 ** (b - knee)): both terms equal at the knee.
_ANIA_ADC_6B = 0.40 * PJ
_ADC_KNEE = 8.0
_ADC_J_PER_BIT = _ANIA_ADC_6B / (6 + _ADC_KNEE * 4 ** (6 - _ADC_KNEE))
_DAC_J_PER_BIT = 0.02 * PJ
_CELL_J = 0.67 * FJ
# Programming an SRAM cell costs about one SRAM bit write; we use Horowitz's SRAM read energy per
# bit at 8 KB (10 pJ / 64 b = 0.16 pJ/bit at 45 nm) scaled to 22 nm, per cell. Assumption.
_PROGRAM_J_PER_CELL = _SRAM_8KB / 64 * SCALE_45NM_TO_22NM
# Timing. HERMES-Core (Khaddam-Aljameh et al., IEEE JSSC 2022): a 256 x 256 CIM core with
# 300 ps/LSB CCO-based ADCs, i.e. ~77 ns for an 8-bit conversion; we round a tile cycle to 100 ns.
_TILE_CYCLE_S = 100e-9
# Writing one row per digital clock cycle at 1 GHz (assumption; SRAM-like cells).
_PROGRAM_S_PER_ROW = 1e-9
_CLOCK_HZ = 1e9  # HERMES-Core's main clock is 1 GHz (same source); used for the digital array


def _table(scale: float) -> EnergyTable:
    """Analog 22 nm constants plus Horowitz digital/memory constants times `scale`."""
    return EnergyTable(
        dac_j_per_bit=_DAC_J_PER_BIT,
        adc_j_per_bit=_ADC_J_PER_BIT,
        adc_knee_bits=_ADC_KNEE,
        cell_j=_CELL_J,
        program_j_per_cell=_PROGRAM_J_PER_CELL,
        mult8_j=_H_MULT8 * scale,
        mult_exponent=_MULT_EXP,
        add8_j=_H_ADD8 * scale,
        add_exponent=_ADD_EXP,
        sram_j_per_64b_8kb=_SRAM_8KB * scale,
        sram_size_exponent=_SRAM_EXP,
        dram_j_per_64b=_DRAM_64B,
        tile_cycle_s=_TILE_CYCLE_S,
        program_s_per_row=_PROGRAM_S_PER_ROW,
        digital_clock_hz=_CLOCK_HZ,
    )


PRESETS: dict[str, Accelerator] = {
    # AnIA-like macro: one 1024 x 512 tile, ternary weights in one 2-bit cell, 6b + sign inputs
    # applied in one cycle, 6-bit ADCs (Papistas et al., CICC 2021). The small digital array and
    # the 64 KB buffer are assumptions (AnIA is a macro test chip; they only matter off the tile).
    "ania-22nm": Accelerator(
        tile_rows=1024.0,
        tile_cols=512.0,
        tiles=1.0,
        cell_bits=2.0,
        dac_bits=7.0,
        adc_bits=6.0,
        weight_bits=2.0,
        activation_bits=7.0,
        accumulator_bits=16.0,
        mac_rows=16.0,
        mac_cols=16.0,
        zero_skip=0.0,
        sram_bytes=64 * 1024.0,
        energy=_table(SCALE_45NM_TO_22NM),
        name="ania-22nm",
    ),
    # All-digital int8 reference at 45 nm, straight from Horowitz ISSCC 2014: int8 MAC =
    # 0.2 + 0.03 = 0.23 pJ. A 32 x 32 array and a 256 KB SRAM (assumptions, Edge-TPU-class
    # sizing). No analog tiles: analog fraction must be 0.
    "digital-int8-45nm": Accelerator(
        tile_rows=256.0,
        tile_cols=256.0,
        tiles=0.0,
        cell_bits=8.0,
        dac_bits=8.0,
        adc_bits=8.0,
        weight_bits=8.0,
        activation_bits=8.0,
        accumulator_bits=32.0,
        mac_rows=32.0,
        mac_cols=32.0,
        zero_skip=0.0,
        sram_bytes=256 * 1024.0,
        energy=_table(1.0),
        name="digital-int8-45nm",
    ),
    # Default for searches: 22 nm hybrid chip. Analog: AnIA's per-cell/DAC/ADC energies, 256 x 256
    # tiles (HERMES-Core's size), 64 of them, int8 weights stored as two 4-bit cell slices
    # (multi-level cells; assumption), int8 activations applied in two 4-bit DAC slices, 6-bit
    # ADCs (AnIA). Digital: Horowitz int8 scaled to 22 nm, a 32 x 32 array, 256 KB SRAM, and
    # zero-skipping that saves half of a zero weight's MAC energy (assumption).
    "hybrid-22nm": Accelerator(
        tile_rows=256.0,
        tile_cols=256.0,
        tiles=64.0,
        cell_bits=4.0,
        dac_bits=4.0,
        adc_bits=6.0,
        weight_bits=8.0,
        activation_bits=8.0,
        accumulator_bits=24.0,
        mac_rows=32.0,
        mac_cols=32.0,
        zero_skip=0.5,
        sram_bytes=256 * 1024.0,
        energy=_table(SCALE_45NM_TO_22NM),
        name="hybrid-22nm",
    ),
}

DEFAULT_PRESET = "hybrid-22nm"

_SOURCES = {
    "ania-22nm": "imec AnIA (Papistas et al., CICC 2021): 1024x512 SRAM CIM, 22 nm, 0.8 V",
    "digital-int8-45nm": "Horowitz, ISSCC 2014: 45 nm int8 MAC 0.23 pJ, SRAM/DRAM per 64 b",
    "hybrid-22nm": "AnIA analog + Horowitz digital scaled to 22 nm (C*V^2), 256x256 tiles",
}


def preset_sources() -> dict[str, str]:
    """One line per preset naming where its constants come from."""
    return dict(_SOURCES)


def with_tile(acc: Accelerator, rows, cols, *, keep_area: bool = True) -> Accelerator:
    """The accelerator with another tile size; by default the chip keeps its total cell count.

    A tile-size search compares chips of equal analog array area: 64 tiles of 256 x 256 become
    16,384 tiles of 16 x 16. With keep_area=False the number of tiles stays as it is.
    """
    tiles = acc.tiles
    if keep_area:
        tiles = acc.tiles * acc.tile_rows * acc.tile_cols / (rows * cols)
    return dataclasses.replace(acc, tile_rows=rows * 1.0, tile_cols=cols * 1.0, tiles=tiles)


def get_preset(name: str) -> Accelerator:
    """The named preset; an unknown name raises CodesignError listing the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CodesignError(
            f"unknown preset {name!r}{hint}; valid presets: {', '.join(PRESETS)}"
        ) from None
