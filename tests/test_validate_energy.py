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


# Held-out layers where ZigZag's mapper, not its counting, differs: the chip is the same and
# codesign's count matches ZigZag's for the rows ZigZag maps, but ZigZag leaves rows idle.
KNOWN_MAPPING_DIFFERENCES = {
    "dense 100x50, array 16": "ZigZag maps 100/13 = 7.7 input channels on 16 rows (ADC count 2x)",
}


def test_matched_preset_reproduces_zigzag_on_partly_filled_held_out_layers(validation):
    """zigzag-aimc-28nm counts macro activations as ZigZag does (fractional bands, convolutions
    unrolled by whole loop factors): held-out layers, none of which fills its tiles, agree
    within 1.2x, and the known mapping difference is the only one (it fails if it is fixed)."""
    rows = validation["held_out_layers"]
    assert len(rows) >= 6 and all(r["partly_filled"] for r in rows)
    outside = {r["layer"] for r in rows if not 1 / 1.2 <= r["ratio"] <= 1.2}
    assert outside == set(KNOWN_MAPPING_DIFFERENCES) & {r["layer"] for r in rows}
    assert any("conv 3x3" in r["layer"] for r in rows if r["layer"] not in outside)


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


def test_published_macros_within_25pct_of_their_papers(validation):
    macros = {m["preset"]: m for m in validation["macros"]}
    assert len(macros) >= 4
    for m in macros.values():
        assert m["modelled_tops_w"] > 0 and m["reported_tops_w"] > 0
        assert m["error"] == pytest.approx(m["modelled_tops_w"] / m["reported_tops_w"] - 1)
        assert abs(m["error"]) <= 0.25, m["preset"]  # issue 10's acceptance
    assert validation["macros_within_25pct"] == 1.0
    assert validation["macros_max_error"] == max(abs(m["error"]) for m in macros.values())
