"""codesign's analog simulation against IBM aihwkit 1.2.0's stored reference (no aihwkit needed)."""

import importlib.util
import json
import pathlib
import sys

import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
REFERENCE = EXPERIMENTS / "results" / "aihwkit_reference.json"


@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    spec = importlib.util.spec_from_file_location(
        "validate_analog_model", EXPERIMENTS / "validate_analog_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("validate_analog")
    result = module.main(["--out", str(out)])  # every setting, as many seeds as aihwkit's
    assert json.loads((out / "validate_analog_model.json").read_text())["agree"] == result["agree"]
    return result


def test_the_reference_is_aihwkits_and_stamped():
    reference = json.loads(REFERENCE.read_text())
    assert reference["simulator"] == "aihwkit"
    assert reference["versions"]["aihwkit"] == "1.2.0"
    assert not reference["git_sha"].endswith("-dirty")
    assert reference["seeds"] >= 20
    for setting in reference["settings"]:
        assert len(setting["accuracies"]) == reference["seeds"]


def test_codesign_agrees_with_aihwkit_on_at_least_24_settings(validation):
    assert validation["settings"] >= 24
    assert validation["agree"] >= 24
    agreed = [r["name"] for r in validation["rows"] if r["agree"]]
    # The settings the acceptance names: pcm at four times, 4-bit ADCs, multi-tile layers.
    for t in ("t=0s", "t=3600s", "t=86400s", "t=3.1536e+07s"):
        assert any(name.startswith("pcm") and t in name for name in agreed), t
    assert any("adc4" in name for name in agreed)
    assert any("tile32" in name for name in agreed)  # 2 and 4 tiles per layer
    for row in validation["rows"]:
        bound = max(1.0, row["bound_points"])
        assert row["agree"] == (row["diff_points"] <= bound + 1e-9)


def test_the_network_reacts_to_noise(validation):
    # A comparison on a network that shrugs noise off would agree whatever the noise model.
    assert validation["largest_drop_points"] >= 3.0
