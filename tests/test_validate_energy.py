"""The energy model against ZigZag-IMC (run live on a subset of the suite) and published macros."""

import importlib.util
import json
import pathlib
import sys

import pytest

pytest.importorskip("zigzag", reason="ZigZag-IMC comes with the `zigzag` extra (installed in CI)")

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    spec = importlib.util.spec_from_file_location(
        "validate_energy_model", EXPERIMENTS / "validate_energy_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("validate")
    summary = module.main(["--quick", "--out", str(out)])
    assert json.loads((out / "validate_energy_model.json").read_text()) == json.loads(
        json.dumps(summary)
    )
    return summary


def test_every_layer_within_1p5x_of_zigzag_and_same_ranking(validation):
    rows = validation["zigzag_layers"]
    assert len(rows) >= 5
    for row in rows:
        assert 1 / 1.5 <= row["ratio"] <= 1.5, row["layer"]
    assert validation["zigzag_within_1p5x"] == 1.0
    assert validation["zigzag_layer_ranking_agrees"]
    assert validation["zigzag_workload_ranking_agrees"]


def _outside(rows, key):
    return {r["layer"] for r in rows if not 1 / 1.2 <= r[key] <= 1.2}


def test_on_the_same_mapping_every_layer_is_zigzags_and_the_rest_is_its_mapper(validation):
    """ZigZag's mapper minimises its total energy (memories included), codesign's count fills the
    array: run on the mapping that fills the array, ZigZag's cost model agrees within 1.2x on
    every layer, analog and digital; where they differ with ZigZag's own mapping, its mapper
    traded array energy for memory energy (its total is lower on its mapping), and the quick
    suite holds such a layer (dense 100x50 on a 16x16 array: 13 row bands instead of 7)."""
    rows = validation["zigzag_layers"] + validation["held_out_layers"]
    assert not _outside(rows, "same_mapping_ratio") and not _outside(
        rows, "dimc_same_mapping_ratio"
    )
    assert validation["same_mapping_within_1p2x"] == 1.0
    differs = _outside(rows, "ratio") | _outside(rows, "dimc_ratio")
    assert differs and differs <= set(validation["mapper_prefers_memory"])
    for r in rows:
        if r["layer"] in differs:
            assert r["zigzag_total_pj"] < r["zigzag_filled_total_pj"]
            assert r["zigzag_pj"] > 1.2 * r["zigzag_filled_pj"]  # the array side it gave up


def test_matched_preset_reproduces_zigzag_on_partly_filled_held_out_layers(validation):
    """zigzag-aimc-28nm counts macro activations as ZigZag does (fractional bands, convolutions
    unrolled by whole loop factors): held-out layers, none of which fills its tiles, agree
    within 1.2x but where ZigZag's mapper picks another mapping for its memories (above)."""
    rows = validation["held_out_layers"]
    assert len(rows) >= 6 and all(r["partly_filled"] for r in rows)
    outside = _outside(rows, "ratio")
    assert outside <= set(validation["mapper_prefers_memory"]) and len(outside) <= 1
    assert any("conv 3x3" in r["layer"] for r in rows if r["layer"] not in outside)


def test_matched_dimc_preset_reproduces_zigzag_dimc_and_the_winner(validation):
    """zigzag-dimc-28nm counts ZigZag's digital macro as ZigZag does (the whole multiplier
    array per activation, half-activated adders in partly used trees): every layer of the
    quick suite, most of them partly filled, within 1.2x of ZigZag's dimc run live but where its
    mapper picks another mapping for its memories (the same rows on the digital chip), and the
    analog-vs-digital winner the same as ZigZag's on >= 90% of them. The gated variant is a
    different chip: it must come out cheaper than ZigZag on a layer using a fraction of the
    array (a quarter of the columns), or it is not gating."""
    rows = validation["zigzag_layers"] + validation["held_out_layers"]
    assert sum(r["partly_filled"] for r in rows) >= len(rows) / 2
    outside = _outside(rows, "dimc_ratio")
    assert outside <= set(validation["mapper_prefers_memory"]) and len(outside) <= 1
    agree = [r["zigzag_analog_wins"] == r["codesign_analog_wins"] for r in rows]
    assert validation["winner_agreement"] == sum(agree) / len(rows) >= 0.9
    narrow = next(r for r in rows if r["N"] == 10)  # 10 of 128 columns mapped
    assert narrow["codesign_dimc_gated_pj"] < 0.8 * narrow["zigzag_dimc_pj"]


def test_ungated_chip_differs_by_exactly_the_idle_converters_and_cells(validation):
    # codesign deliberately differs from ZigZag on a chip that cannot gate: the MLP's last layer
    # (256 x 10 on 128-row tiles: 2 row bands, 80 of 1024 cell columns mapped) then pays 944 idle
    # 8-bit ADCs and half the charge of 944 idle columns of 128 cells, in 4 input slices x 2 bands.
    row = next(r for r in validation["zigzag_layers"] if r["N"] == 10)
    vdd2 = 0.9**2
    adc_pj = (100 * 8 + 0.001 * 4**8) * 1e-3 * vdd2  # ZigZag's ADC formula
    cell_pj = (0.35 + 0.35) * 1e-3 * vdd2  # 1-bit multiplier + bitline, per cell
    idle = 1024 - 80
    expected = 4 * 2 * (idle * adc_pj + 0.5 * 128 * idle * cell_pj)
    assert row["ungated_extra_pj"] == pytest.approx(expected, rel=1e-3)
    assert row["codesign_ungated_pj"] > 5 * row["zigzag_pj"]


def test_directions_agree_with_zigzag(validation):
    checks = validation["directions"]
    assert checks and all(c["agree"] for c in checks.values())
    pruning = checks["in-tile pruning 128 -> 64 columns saves"]
    assert pruning["zigzag_saving"] == pytest.approx(0.47, abs=0.01)
    assert pruning["codesign_ungated_saving"] < 0.05


def test_analog_over_digital_ratio_matches_zigzag(validation):
    split = validation["analog_vs_digital"]
    assert split["zigzag_aimc_over_dimc"] == pytest.approx(0.78, abs=0.01)
    assert split["codesign_aimc_over_dimc"] == pytest.approx(
        split["zigzag_aimc_over_dimc"], rel=0.25
    )


# The macros whose choices were fixed before issue 23 (issue 10's band holds for them); the ones
# added with their choices written down first are reported whatever their error.
WITHIN_25PCT = ("macro-ania-22nm", "macro-sinangil-7nm", "macro-iscas22-65nm", "macro-jia-65nm")


def test_published_macros_against_their_papers(validation):
    macros = {m["preset"]: m for m in validation["macros"]}
    assert len(macros) >= 6 and any(m["adc"] == "none (digital)" for m in macros.values())
    for m in macros.values():
        assert m["modelled_tops_w"] > 0 and m["reported_tops_w"] > 0
        assert m["error"] == pytest.approx(m["modelled_tops_w"] / m["reported_tops_w"] - 1)
        assert sum(m["breakdown_share"].values()) == pytest.approx(1.0)
    for name in WITHIN_25PCT:
        assert abs(macros[name]["error"]) <= 0.25, name  # issue 10's acceptance
    errors = [abs(m["error"]) for m in macros.values()]
    assert validation["macros_within_25pct"] == sum(e <= 0.25 for e in errors) / len(errors)
    assert validation["macros_max_error"] == max(errors)


def test_adder_tree_count_is_zigzags_for_every_number_of_inputs_in_use():
    """`hardware.adder_tree_j` walks a partly used tree as ZigZag's imc_unit does, for every
    number of live inputs (1 to the whole tree) of trees of 2 to 256 inputs and 1- to 12-bit
    words, with ZigZag's own function and a full adder of 1 (half-activated: 1/2)."""
    import dataclasses
    import types

    import numpy as np
    from zigzag.hardware.architecture.imc_unit import ImcUnit

    from codesign.hardware.accelerator import adder_tree_j
    from codesign.hardware.presets import get_preset

    acc = get_preset("zigzag-dimc-28nm")
    unit_fa = dataclasses.replace(
        acc, energy=dataclasses.replace(acc.energy, add8_j=8.0, add_exponent=1.0),
        node_nm=acc.energy.node_nm, vdd=acc.energy.vdd,
    )  # fmt: skip
    zz = types.SimpleNamespace(
        get_1b_adder_energy=lambda: 1.0, get_1b_adder_energy_half_activated=lambda: 0.5
    )
    for inputs in (2, 4, 16, 128, 256):
        for bits in (1, 8, 12):
            mapped = np.arange(0, inputs + 2, dtype=np.float32)
            ours = np.asarray(adder_tree_j(mapped, float(inputs), float(bits), unit_fa))
            theirs = [ImcUnit.get_regular_adder_trees_energy(zz, bits, m, inputs) for m in mapped]
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, err_msg=f"{inputs} x {bits} b")


def test_digital_array_and_sram_against_zigzags_digital_cost_model(validation):
    """digital-int8-45nm on ZigZag's non-IMC cost model (same MAC and SRAM energies, ZigZag's
    mapper and counting): the MAC energy is ZigZag's wherever the 32 x 32 array is filled, and
    otherwise exceeds it by exactly the padding PEs an ungated array fires; on dense layers
    that fit the SRAM, ZigZag's weight traffic is twice codesign's (it writes each weight into
    the SRAM from DRAM, then reads it; codesign keeps weights resident and reads them once)."""
    import math

    from codesign.hardware.accelerator import sram_j_per_byte
    from codesign.hardware.presets import get_preset

    byte_pj = float(sram_j_per_byte(get_preset("digital-int8-45nm"))) * 1e12
    rows = {r["layer"]: r for r in validation["digital_layers"]}
    assert len(rows) >= 6
    for name, (k, n) in {"dense 128x128": (128, 128), "dense 256x10": (256, 10),
                         "dense 131x40": (131, 40)}.items():  # fmt: skip
        r = rows[name]
        padded = math.ceil(k / 32) * math.ceil(n / 32) * 1024 / (k * n)
        assert r["mac_ratio"] == pytest.approx(padded, rel=1e-5), name
        # (to ZigZag's rounding of a 131 x 40 layer into 64-bit words: 657.5 words, not 655)
        weights = r["zigzag_sram_pj_by_operand"]["W"]
        assert weights == pytest.approx(2 * k * n * byte_pj, rel=0.005), name
    assert rows["conv 3x3 64->64, 8x8 out"]["mac_ratio"] == pytest.approx(1.0, rel=1e-5)
