"""Named accelerator presets; every constant cites its source (assumptions marked as such).

The types and the technology-scaling rule are in `codesign.hardware.accelerator`.
"""

from __future__ import annotations

import dataclasses
import difflib

from codesign.errors import CodesignError
from codesign.hardware.accelerator import FJ, PJ, SCALE_45NM_TO_22NM, Accelerator, EnergyTable

__all__ = [
    "DEFAULT_PRESET",
    "MACRO_REPORTED_TOPS_W",
    "PRESETS",
    "get_preset",
    "preset_sources",
]

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
# ADC scaling with resolution, E(b) = adc_j_per_bit * (b + knee * 4 ** (b - knee)): linear in bits
# at low resolution (overhead and bit cycles), 4x per extra bit above the thermal-noise knee (each
# bit halves the noise, so capacitance x4) -- the shape of Murmann's "ADC Performance Survey
# 1997-2024" (Stanford) envelope. The knee is where ZigZag-IMC's fitted ADC model (ZigZag 3.9.1,
# zigzag/hardware/architecture/imc_array.py, get_adc_cost: E = (100 fF * b + 0.001 fF * 4^b) *
# Vdd^2, "validated against 3 AIMC papers on 28nm") puts it: the two terms are equal at
# 100 b = 0.001 * 4^b, b = 9.97. With that knee the formula above IS ZigZag's, up to the scale.
_ANIA_ADC_6B = 0.40 * PJ


def _zigzag_knee() -> float:
    """The b where 100 fF * b == 0.001 fF * 4^b (bisection; 9.97)."""
    lo, hi = 5.0, 15.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 100.0 * mid > 0.001 * 4.0**mid else (lo, mid)
    return lo


_ADC_KNEE = _zigzag_knee()
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
# A flip-flop costs half a 1-bit full adder: ZigZag-IMC's gate model (imc_unit.py TECH_PARAM_28NM:
# DFF 2.1 fF vs full adder 3 NAND2 + 2 XOR2 = 4.2 fF). Applied to Horowitz's 8-bit add per bit.
_REG_PER_ADD_BIT = 0.5


def _table(scale: float, node_nm: float = 22.0, vdd: float = 0.8) -> EnergyTable:
    """Analog 22 nm constants plus Horowitz digital/memory constants times `scale`."""
    return EnergyTable(
        reg_j_per_bit=_H_ADD8 / 8 * _REG_PER_ADD_BIT * scale,
        node_nm=node_nm,
        vdd=vdd,
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


# ZigZag-IMC's 28 nm technology model (ZigZag 3.9.1, KU Leuven; validated against seven 28 nm
# IMC chips): zigzag/hardware/architecture/imc_unit.py TECH_PARAM_28NM (Vdd 0.9 V, NAND2 0.7 fF,
# XOR2 1.05 fF, DFF 2.1 fF, word/bitline 0.35 fF per cell) and imc_array.py (DAC 50 fF per bit,
# ADC 100 fF per bit + 0.001 fF * 4^b), stock aimc.yaml (cell write 0.095 pJ per 8-bit weight,
# 256 KB SRAM 416.16 pJ per 512-bit read, DRAM 700 pJ per 64-bit access).
_ZZ_VDD = 0.9
_ZZ_V2 = _ZZ_VDD**2
_ZZ_FA = (3 * 0.7 + 2 * 1.05) * FJ * _ZZ_V2  # 1-bit full adder: 3 NAND2 + 2 XOR2 = 3.40 fJ
_ZZ_TABLE = EnergyTable(
    dac_j_per_bit=50 * FJ * _ZZ_V2,  # 40.5 fJ per input bit per row
    adc_j_per_bit=100 * FJ * _ZZ_V2,  # 81 fJ per bit; the 4^b term via the knee (see above)
    adc_knee_bits=_ADC_KNEE,
    # Per cell per cycle: a 1-bit multiplier (0.5 NAND2, "weight stays constant") on the wordline
    # plus the bitline's analog addition (0.35 fF): 0.2835 + 0.2835 fJ.
    cell_j=(0.5 * 0.7 + 0.35) * FJ * _ZZ_V2,
    program_j_per_cell=0.095 * PJ / 8,
    mult8_j=64 * 0.5 * 0.7 * FJ * _ZZ_V2,  # 64 one-bit multipliers (dimc), 18.1 fJ
    mult_exponent=2.0,  # an array multiplier: energy proportional to weight bits x input bits
    add8_j=8 * _ZZ_FA,  # ripple-carry: 8 full adders
    add_exponent=1.0,  # ripple-carry adders are linear in width
    # 416.16 pJ per 512 b at 256 KB is 52 pJ per 64 b; at 8 KB with Horowitz's size exponent.
    sram_j_per_64b_8kb=416.16 * PJ / 8 / 32**_SRAM_EXP,
    sram_size_exponent=_SRAM_EXP,
    dram_j_per_64b=700 * PJ,
    # ADC delay b * (0.00653 ns * rows + 0.64 ns) (imc_array.py get_adc_cost): 11.8 ns at 8 b and
    # 128 rows. Assumption: the tile cycle is the ADC conversion.
    tile_cycle_s=8 * (0.00653 * 128 + 0.64) * 1e-9,
    program_s_per_row=_PROGRAM_S_PER_ROW,
    digital_clock_hz=_CLOCK_HZ,
    reg_j_per_bit=2.1 * FJ * _ZZ_V2,  # DFF, 1.70 fJ
    node_nm=28.0,
    vdd=_ZZ_VDD,
)


def _macro(
    name,
    *,
    node_nm,
    vdd,
    rows,
    cols,
    cell_bits,
    dac_bits,
    adc_bits,
    weight_bits,
    activation_bits,
    columns_per_adc=1.0,
    accumulator_bits=24.0,
    adc_flash=0.0,
    energy=_ZZ_TABLE,
) -> Accelerator:
    """A published CIM macro: its geometry, precision, ADC type, node and supply; ZigZag's
    technology model unless `energy` says otherwise.

    Nothing here is fitted to the macro's reported efficiency: the constants are ZigZag-IMC's
    28 nm ones, moved to the macro's node and supply by `tech_scale`.
    """
    return Accelerator(
        tile_rows=float(rows),
        tile_cols=float(cols),
        tiles=1.0,
        cell_bits=float(cell_bits),
        dac_bits=float(dac_bits),
        adc_bits=float(adc_bits),
        weight_bits=float(weight_bits),
        activation_bits=float(activation_bits),
        accumulator_bits=float(accumulator_bits),
        mac_rows=16.0,  # no digital array on a macro; unused at analog fraction 1
        mac_cols=16.0,
        zero_skip=0.0,
        sram_bytes=64 * 1024.0,
        energy=energy,
        gate_idle=1.0,
        columns_per_adc=float(columns_per_adc),
        adc_flash=float(adc_flash),
        digital_slice_bits=float(activation_bits),
        node_nm=float(node_nm),
        vdd=float(vdd),
        name=name,
    )


# ZigZag-IMC's stock digital chip (zigzag/inputs/hardware/dimc.yaml): a 128 x 128 digital
# in-memory array, 8-bit weights, inputs applied bit-serially (1 bit per cycle) into 128-input
# adder trees, 28 nm, 0.9 V. In codesign terms: no analog tiles, a 128 x 128 digital array,
# counted as ZigZag counts it (zigzag_digital = 1: every activation fires the whole
# multiplier array; adder trees and accumulators on mapped columns; `zigzag_dimc_j`).
_ZIGZAG_DIMC = dataclasses.replace(
    _macro(
        "zigzag-dimc-28nm",
        node_nm=28,
        vdd=0.9,
        rows=128,
        cols=1024,
        cell_bits=1,
        dac_bits=1,
        adc_bits=8,
        weight_bits=8,
        activation_bits=8,
        accumulator_bits=23,
    ),
    tiles=0.0,
    sram_bytes=256 * 1024.0,
    mac_rows=128.0,
    mac_cols=128.0,
    digital_slice_bits=1.0,
    zigzag_digital=1.0,
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
        gate_idle=0.0,  # ASSUMPTION: AnIA is measured fully used; gating is not reported
        digital_slice_bits=7.0,
        node_nm=22.0,
        vdd=0.8,
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
        energy=_table(1.0, node_nm=45.0, vdd=0.9),  # its analog constants are unused (no tiles)
        gate_idle=0.0,  # every pass fires the whole array (Horowitz's per-op figures; assumption)
        node_nm=45.0,
        vdd=0.9,
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
        # Idle converters, rows, columns and PEs switched off, as ZigZag-IMC charges them (mapped
        # rows/columns only) and as chips that power off ADCs of empty blocks do (Yue et al.,
        # "A 2.75-to-75.9TOPS/W CIM NN processor supporting set-associate block-wise zero
        # skipping", ISSCC 2021, 15.2). ASSUMPTION for this hypothetical chip.
        gate_idle=1.0,
        node_nm=22.0,
        vdd=0.8,
        name="hybrid-22nm",
    ),
    # ZigZag-IMC's stock analog chip (zigzag/inputs/hardware/aimc.yaml, ZigZag 3.9.1): one macro
    # of 128 rows x 128 8-bit weights in 1-bit cells (128 x 1024 cells), 8-bit inputs applied in
    # 2-bit DAC slices, an 8-bit ADC per cell column, 28 nm, 0.9 V. ZigZag charges DACs on mapped
    # rows and ADCs on mapped columns: gate_idle = 1. Accumulator: inputs + ADC + weight bits
    # (imc_array.py). Macro activations counted as ZigZag counts them (zigzag_counting = 1:
    # fractional bands, convolutions unrolled by whole loop factors). The digital array and
    # SRAM only matter off the macro (assumptions).
    "zigzag-aimc-28nm": dataclasses.replace(
        _macro(
            "zigzag-aimc-28nm",
            node_nm=28,
            vdd=0.9,
            rows=128,
            cols=1024,
            cell_bits=1,
            dac_bits=2,
            adc_bits=8,
            weight_bits=8,
            activation_bits=8,
            accumulator_bits=24,
        ),
        sram_bytes=256 * 1024.0,
        mac_rows=128.0,
        mac_cols=128.0,
        zigzag_counting=1.0,
    ),
    # ZigZag-IMC's stock digital chip, counted as ZigZag counts it (see _ZIGZAG_DIMC).
    "zigzag-dimc-28nm": _ZIGZAG_DIMC,
    # The same chip with multipliers for kept weights only and each accumulator shared by the
    # array's rows (codesign's per-MAC count with gate_idle = 1): a chip that gates its idle
    # multipliers, as ZigZag's dimc does not. ASSUMPTION: no published dimc macro is fitted here.
    "zigzag-dimc-28nm-gated": dataclasses.replace(
        _ZIGZAG_DIMC, zigzag_digital=None, name="zigzag-dimc-28nm-gated"
    ),
    # Published macros, for validation (experiments/validate_energy_model.py). Geometry,
    # precision, node and supply from each paper; technology constants ZigZag's (see `_macro`).
    # imec AnIA (Papistas et al., CICC 2021), with the geometry ZigZag-IMC's AIMC validation
    # gives it (aimc_validation.py, "CICC2021"): 1024 rows x 512 ternary weights held as 2 one-bit
    # cells (1024 cell columns, one 6-bit ADC each), 7-bit inputs in one DAC step, 22 nm, 0.8 V;
    # reported 1,050 TOPS/W at 0.8 V (the figure ZigZag-IMC validates against).
    "macro-ania-22nm": _macro(
        "macro-ania-22nm",
        node_nm=22,
        vdd=0.8,
        rows=1024,
        cols=1024,
        cell_bits=1,
        dac_bits=7,
        adc_bits=6,
        weight_bits=2,
        activation_bits=7,
        accumulator_bits=16,
    ),
    # Sinangil et al., "A 7-nm CIM SRAM macro supporting multi-bit input, weight and output and
    # achieving 351 TOPS/W and 372.4 GOPS", IEEE JSSC 56(1), 2021 (abstract): 64 x 64 8T cells,
    # 1024 4b x 4b MACs at once, 4-bit inputs as read-wordline pulses (one step), 4-bit weights by
    # charge sharing of 4 binary-weighted columns into one 4-bit FLASH ADC (16 ADCs), 0.8 V.
    "macro-sinangil-7nm": _macro(
        "macro-sinangil-7nm",
        node_nm=7,
        vdd=0.8,
        rows=64,
        cols=64,
        cell_bits=1,
        dac_bits=4,
        adc_bits=4,
        weight_bits=4,
        activation_bits=4,
        columns_per_adc=4,
        accumulator_bits=12,
        # "4-bit Flash ADC" (abstract). CiMLoop's model of this macro multiplies its ADC energy by
        # a calibration factor of 3.5 (mit-emze/cimloop, sinangil_jssc_2021/variables_iso.yaml);
        # 15 comparators instead of 4 SAR decisions give 3.75 here, from the ADC's structure.
        adc_flash=1.0,
    ),
    # "A 65nm compute-in-memory 7T SRAM macro supporting 4-bit multiply and accumulate operation
    # by employing charge sharing", ISCAS 2022 (abstract): the same scheme as Sinangil's (64 x 64
    # cells, 4b inputs as RWL pulses, 4 columns charge-shared into a 4-bit flash ADC) at 65 nm,
    # 1 V; reported 28.9 TOPS/W.
    "macro-iscas22-65nm": _macro(
        "macro-iscas22-65nm",
        node_nm=65,
        vdd=1.0,
        rows=64,
        cols=64,
        cell_bits=1,
        dac_bits=4,
        adc_bits=4,
        weight_bits=4,
        activation_bits=4,
        columns_per_adc=4,
        accumulator_bits=12,
        adc_flash=1.0,  # "quantized by a flash analog to digital converter" (abstract)
    ),
    # Jia et al., "A programmable heterogeneous microprocessor based on bit-scalable in-memory
    # computing", IEEE JSSC 55(9), 2020: a 590 kb CIM unit of 2304 rows x 256 columns of 1-bit
    # charge-domain cells (a metal capacitor per cell), one 8-bit SAR ADC per column, 65 nm,
    # 0.85 V; 1-bit inputs and weights at a time (bit-serial); reported 400 1b-TOPS/W (Table II,
    # as CiMLoop transcribes it: mit-emze/cimloop, models/arch/1_macro/jia_jssc_2020/_tests.py).
    # Its array is a capacitor array, not ZigZag's current-summing bitline: the array energy is
    # DERIVED from the paper's own breakdown (Table I: "CiM" 9.7 pJ per column per cycle at 0.85 V,
    # row drivers included), so the DAC is folded into it. The ADC stays ZigZag's formula (8 b at
    # 65 nm / 0.85 V: 1.45 pJ against the 1.79 pJ Table I measures).
    "macro-jia-65nm": _macro(
        "macro-jia-65nm",
        node_nm=65,
        vdd=0.85,
        rows=2304,
        cols=256,
        cell_bits=1,
        dac_bits=1,
        adc_bits=8,
        weight_bits=1,
        activation_bits=1,
        accumulator_bits=16,
        energy=dataclasses.replace(
            _ZZ_TABLE,
            dac_j_per_bit=0.0,  # in Table I's "CiM" figure
            # 9.7 pJ per column of 2304 cells, moved from 65 nm / 0.85 V to the table's 28 nm /
            # 0.9 V (tech_scale moves it back).
            cell_j=9.7 * PJ / 2304 / ((65 / 28.0) * (0.85 / _ZZ_VDD) ** 2),
        ),
    ),
    # Three macros of ZigZag-IMC's own validation lists (KULeuven-MICAS/zigzag-imc at df34a6f,
    # imc_model_validation/aimc_validation.py and dimc_validation.py; line numbers below), each
    # with the geometry ZigZag's code gives it. Every choice is listed, with its source, in
    # docs/energy-model.md ("Macro choices"), written before the comparison was run.
    # "JSSC2023" (IEEE doc 9896828; paper not identified): of 512 rows (32 groups x 16) one row
    # per group computes, 16 inputs (lines 60, 73); 12 outputs of 8 one-bit cells, a column
    # multiplexer of 2 (cols = 8 x 2 x 12, line 75): 96 cell columns active; 2-bit DACs (line 63),
    # so 4 input slices of an 8-bit input; one 5-bit ADC per active cell column and slice (32
    # conversions per output: ZigZag's 16 ADCs x 2 transfers, lines 79, 99-110); 20-bit
    # accumulator (line 68); 28 nm, 0.9 V (line 72).
    "macro-jssc23-28nm": _macro(
        "macro-jssc23-28nm",
        node_nm=28,
        vdd=0.9,
        rows=16,
        cols=96,
        cell_bits=1,
        dac_bits=2,
        adc_bits=5,
        weight_bits=8,
        activation_bits=8,
        accumulator_bits=20,
    ),
    # "ISSCC2023, 7.8" (IEEE doc 10067289): 8 of 64 rows used (lines 104, 116; subfunc line 51:
    # an 8-bit weight's bits are 8 cells stacked in its column, inferred), 256 output columns,
    # one 3-bit ADC each (lines 105-106); 1-bit inputs over 8 cycles and no DAC (lines 103, 107);
    # 22 nm, 0.8 V (line 115). A weight's 8 stacked cells are one 8-bit cell here, charged 8 cells'
    # energy; the DAC costs nothing. ZigZag assumes 37.5% input toggles and 50% zero weights
    # (lines 98-99); codesign models neither: every input bit and weight switches.
    "macro-isscc23-22nm": _macro(
        "macro-isscc23-22nm",
        node_nm=22,
        vdd=0.8,
        rows=8,
        cols=256,
        cell_bits=8,
        dac_bits=1,
        adc_bits=3,
        weight_bits=8,
        activation_bits=8,
        accumulator_bits=20,
        energy=dataclasses.replace(_ZZ_TABLE, dac_j_per_bit=0.0, cell_j=8 * _ZZ_TABLE.cell_j),
    ),
    # "ISSCC2022, 15.5" (IEEE doc 9731762), a digital in-memory macro: 32 inputs x 6 outputs of
    # 8-bit weights per array (lines 15-16, 26-27), 2 input bits per cycle (line 14), 28 nm, 0.9 V,
    # counted as ZigZag counts its digital macro (zigzag_digital = 1). Its Booth multipliers and
    # ZigZag's 50% toggle and 50% zero-weight assumptions are not modelled.
    "macro-dimc-isscc22-28nm": dataclasses.replace(
        _ZIGZAG_DIMC,
        mac_rows=32.0,
        mac_cols=6.0,
        digital_slice_bits=2.0,
        name="macro-dimc-isscc22-28nm",
    ),
}

# Reported macro efficiencies (TOPS/W) at the preset's precision, node and supply, for validation.
MACRO_REPORTED_TOPS_W = {
    "macro-ania-22nm": 1050.0,  # Papistas et al., CICC 2021 (imec: 1,050-1,500 at 0.8 V)
    "macro-sinangil-7nm": 351.0,  # Sinangil et al., JSSC 2021, abstract
    "macro-iscas22-65nm": 28.9,  # ISCAS 2022, abstract
    "macro-jia-65nm": 400.0,  # Jia et al., JSSC 2020, Table II: 1b-TOPS/W at 0.85 V
    "macro-jssc23-28nm": 15.02,  # zigzag-imc aimc_validation.py line 80, 8b x 8b
    "macro-isscc23-22nm": 18.7,  # zigzag-imc aimc_validation.py line 123, 8b x 8b
    "macro-dimc-isscc22-28nm": 36.63,  # zigzag-imc dimc_validation.py line 32, 8b x 8b
}

DEFAULT_PRESET = "hybrid-22nm"

_SOURCES = {
    "ania-22nm": "imec AnIA (Papistas et al., CICC 2021): 1024x512 SRAM CIM, 22 nm, 0.8 V",
    "digital-int8-45nm": "Horowitz, ISSCC 2014: 45 nm int8 MAC 0.23 pJ, SRAM/DRAM per 64 b",
    "hybrid-22nm": "AnIA analog + Horowitz digital scaled to 22 nm (C*V^2), 256x256 tiles",
    "zigzag-aimc-28nm": "ZigZag-IMC 3.9.1 stock aimc.yaml: 128x128 8b weights, 2b DAC, 8b ADC",
    "zigzag-dimc-28nm": "ZigZag-IMC 3.9.1 stock dimc.yaml: 128x128 digital IMC, bit-serial",
    "zigzag-dimc-28nm-gated": "zigzag-dimc-28nm with idle multipliers gated (assumption)",
    "macro-ania-22nm": "AnIA (CICC 2021) geometry, ZigZag 28 nm constants moved to 22 nm/0.8 V",
    "macro-sinangil-7nm": "Sinangil et al. JSSC 2021, 7 nm 64x64 4b/4b, flash ADC, 351 TOPS/W",
    "macro-iscas22-65nm": "65 nm 7T SRAM CIM (ISCAS 2022), 4b/4b, flash ADC, 28.9 TOPS/W",
    "macro-jia-65nm": "Jia et al. JSSC 2020, 65 nm 2304x256 1b/1b, array energy from Table I",
    "macro-jssc23-28nm": "ZigZag-IMC's AIMC2 (JSSC 2023, 28 nm): 16 of 512 rows, 8b x 8b, 5b ADCs",
    "macro-isscc23-22nm": "ZigZag-IMC's AIMC3 (ISSCC 2023 7.8, 22 nm): 8 rows, bit-serial, 3b ADCs",
    "macro-dimc-isscc22-28nm": "ZigZag-IMC's DIMC1 (ISSCC 2022 15.5, 28 nm): 32x6 digital, 2b/cyc",
}


def preset_sources() -> dict[str, str]:
    """One line per preset naming where its constants come from."""
    return dict(_SOURCES)


def get_preset(name: str) -> Accelerator:
    """The named preset; an unknown name raises CodesignError listing the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CodesignError(
            f"unknown preset {name!r}{hint}; valid presets: {', '.join(PRESETS)}"
        ) from None
