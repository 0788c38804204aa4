"""The analog/digital split claim in --quick mode: energy per layer and accuracy sensitivity of
the layers moved to digital, written to the directory asked for."""

import importlib.util
import json
import pathlib

import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.slow
def test_quick_split_reports_energy_and_accuracy_per_layer(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "claim_analog_split", EXPERIMENTS / "claim_analog_split.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.main(["--quick", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "claim_analog_split.json").read_text())
    assert data == json.loads(json.dumps(summary))
    assert (tmp_path / "claim_analog_split.png").stat().st_size > 10_000
    assert data["mode"] == "quick" and data["verdict"] in {"holds", "partly", "does not hold"}
    assert len(data["git_sha"]) == 40 and data["versions"]["jax"]

    # Energy: the first convolution (K = 5 rows) is cheaper digital on hybrid-22nm.
    (net,) = data["results"]["hybrid-22nm"]["networks"].values()
    first = net["layers"][0]
    assert first["K"] == 5 and first["all_digital_j"] < first["all_analog_j"]

    # Accuracy: every one-layer-digital design is scored over the same seeds as all-analog, and
    # its change is paired by seed against it.
    sens = data["accuracy_sensitivity"]
    assert len(sens["seeds"]) >= 2
    designs = sens["designs"]
    assert {"all analog", "first layer digital", "last layer digital"} <= set(designs)
    base = designs["all analog"]
    for row in designs.values():
        assert len(row["test_accuracy"]) == len(sens["seeds"])
        assert all(0.0 <= a <= 1.0 for a in row["test_accuracy"])
        paired = [a - b for a, b in zip(row["test_accuracy"], base["test_accuracy"], strict=True)]
        assert row["accuracy_change"] == pytest.approx(sum(paired) / len(paired), abs=1e-9)
        assert row["energy_change"] == pytest.approx(row["energy_j"] / base["energy_j"] - 1)
    assert designs["first layer digital"]["analog_fraction"][0] == 0.0
    assert designs["last layer digital"]["analog_fraction"][-1] == 0.0
    # Moving the first convolution to digital saves energy, as the energy part found.
    assert designs["first layer digital"]["energy_change"] < 0
    assert "first layer digital" in data["accuracy"]
