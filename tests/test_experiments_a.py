"""The claim scripts (tile alignment, analog vs digital, lifecycle, MNIST-1D table) run in quick
mode and write a results JSON with a derived verdict and a non-trivial PNG plot."""

import importlib.util
import json
import pathlib

import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
VERDICTS = {"holds", "partly", "does not hold"}


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name, tmp_path):
    summary = _load(name).main(["--quick", "--out", str(tmp_path)])
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["mode"] == "quick"
    assert isinstance(data["runtime_s"], float) and data["runtime_s"] > 0
    assert isinstance(data["seed_claim"], str) and data["seed_claim"]
    assert data["verdict"] in VERDICTS
    assert isinstance(data["holds"], bool) and data["holds"] == (data["verdict"] == "holds")
    assert isinstance(data["reason"], str) and len(data["reason"]) > 20
    png = tmp_path / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert summary["verdict"] == data["verdict"]
    return data


def test_tile_alignment_sawtooth(tmp_path):
    data = _run("claim_tile_alignment", tmp_path)
    sweep = data["sweep"]
    assert sweep["tiles"] == [8, 16, 32, 64] and sweep["widths"][:3] == [1, 2, 3]
    row16 = sweep["analog_j_per_mac"][sweep["tiles"].index(16)]
    # Sawtooth: 17 wastes more per MAC than 16 (a second tile band), 32 is aligned again.
    assert row16[16] > row16[15] and row16[31] == pytest.approx(row16[15], rel=1e-3)
    assert data["analog_ratio_20_vs_16"] > 1.0
    assert data["cell_utilisation_w20_t16"] == pytest.approx(400 / 1024)


@pytest.mark.slow
def test_analog_vs_digital(tmp_path):
    data = _run("claim_analog_vs_digital", tmp_path)
    assert data["compute_only_per_mac"]["ratio"] > 1.0
    net = data["networks"]["digits_mlp"]
    split = net["split"]
    best, digital = split["best_hybrid"]["energy_j"], split["all_digital"]["energy_j"]
    assert best <= min(digital, split["all_analog"]["energy_j"])
    assert net["ratio_digital_over_analog"] == pytest.approx(
        digital / split["all_analog"]["energy_j"]
    )
    for key in ("all_digital", "all_analog", "best_hybrid"):
        assert 0.0 <= net["accuracy"][key]["test_accuracy_analog"] <= 1.0


@pytest.mark.slow
def test_lifecycle(tmp_path):
    data = _run("claim_lifecycle", tmp_path)
    net = data["networks"]["digits_mlp"]
    assert net["pretrain_flops"] > 0
    for d in net["designs"].values():
        assert d["breakeven_with_pretraining"] > d["breakeven_finetune_only"] > 0
        assert d["breakeven_finetune_only"] == pytest.approx(
            d["finetune_energy_j"] / d["energy_per_inference_j"]
        )


@pytest.mark.slow
def test_mnist1d_table(tmp_path):
    data = _run("claim_mnist1d_table", tmp_path)
    assert set(data["our_test_acc"]) == {"mlp", "cnn"}
    assert data["paper_test_acc"] == {"mlp": 0.68, "cnn": 0.94}
    assert all(0.0 <= v <= 1.0 for v in data["our_test_acc"].values())
