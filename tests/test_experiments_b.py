"""Claim scripts (pruning, transfer, co-design) run in --quick mode and write their reports.

The figures are not judged here (quick mode is a smoke run); only that each script measures,
decides a verdict from its numbers and writes `<name>.json` and `<name>.png`.
"""

import importlib.util
import json
import pathlib

import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
VERDICTS = {"holds", "does not hold", "partly"}


def _run(name, tmp_path):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--quick", "--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / f"{name}.json").read_text())
    assert on_disk["verdict"] == report["verdict"]
    assert (tmp_path / f"{name}.png").stat().st_size > 0
    assert report["claim"] == name and report["mode"] == "quick"
    assert report["verdict"] in VERDICTS
    assert isinstance(report["reason"], str) and report["reason"]
    assert isinstance(report["seed_claim"], str)
    assert isinstance(report["runtime_s"], float) and report["runtime_s"] > 0
    return report


@pytest.mark.slow
def test_claim_pruning_quick(tmp_path):
    report = _run("claim_pruning", tmp_path)
    for chip, per_gran in report["results"].items():
        assert set(per_gran) == {"unstructured", "row", "column", "block"}, chip
        for r in per_gran.values():
            assert 0.0 <= r["max_sparsity_within_1pt"] <= 0.9
            assert 0.0 <= r["macs_removed"] < 1.0
            assert isinstance(r["energy_removed_hybrid"], float)
            assert isinstance(r["energy_removed_all_digital"], float)
            assert r["curve"][0]["sparsity"] == 0.0 and r["curve"][0]["macs_removed"] == 0.0
            # Removing more weights never keeps more MACs.
            macs = [p["macs_removed"] for p in r["curve"]]
            assert macs == sorted(macs)


def test_claim_transfer_quick(tmp_path):
    report = _run("claim_transfer", tmp_path)
    assert set(report["methods"]) == {"transfer", "scratch"}
    for m in report["methods"].values():
        for r in m["reach"].values():
            assert r["steps"] is None or (
                r["flops"] == pytest.approx(r["steps"] * report["flops_per_step"])
                and r["energy_j"] == pytest.approx(r["flops"] * report["training_j_per_flop"])
            )
    assert report["pretraining"]["flops"] > 0 and report["pretraining"]["energy_j"] > 0
    n = len(report["curves"]["steps"])
    assert len(report["curves"]["transfer"]) == len(report["curves"]["scratch"]) == n


@pytest.mark.slow
def test_claim_codesign_quick(tmp_path):
    report = _run("claim_codesign", tmp_path)
    baseline = report["baseline"]
    assert baseline["label"] == "dense all-digital" and baseline["energy_j"] > 0
    assert report["trials"] == 8 and report["front_size"] == len(report["front"])
    chosen = report["chosen"]
    if chosen is not None:
        assert chosen["accuracy"] >= baseline["accuracy"] - report["max_accuracy_loss"] - 1e-9
        assert chosen["energy_saving"] == pytest.approx(
            1 - chosen["energy_j"] / baseline["energy_j"]
        )
    else:
        assert report["verdict"] == "does not hold"
