"""Claim scripts (pruning, transfer, co-design) run in --quick mode without touching the
repository and write stamped reports; their verdict rules are checked on fixed inputs."""

import importlib.util
import pathlib

import pytest

from tests.test_experiments_a import run_quick

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_claim_pruning_quick(tmp_path, monkeypatch):
    report = run_quick(_load("claim_pruning").main, "claim_pruning", tmp_path, monkeypatch)
    for chip, per_gran in report["results"].items():
        assert set(per_gran) == {"unstructured", "row", "column", "block"}, chip
        for r in per_gran.values():
            assert r["curve"][0]["sparsity"] == 0.0 and r["curve"][0]["macs_removed"] == 0.0
            # Removing more weights never keeps more MACs.
            macs = [p["macs_removed"] for p in r["curve"]]
            assert macs == sorted(macs)
        # Whole columns removed save energy on every chip; scattered zeros save less of it.
        col, uns = per_gran["column"]["curve"][-1], per_gran["unstructured"]["curve"][-1]
        assert col["energy_removed_hybrid"] > uns["energy_removed_hybrid"]


def test_claim_transfer_quick(tmp_path, monkeypatch):
    report = run_quick(_load("claim_transfer").main, "claim_transfer", tmp_path, monkeypatch)
    assert set(report["methods"]) == {"transfer", "scratch"}
    n = len(report["curves"]["steps"])
    assert len(report["curves"]["transfer"]) == len(report["curves"]["scratch"]) == n
    # A pretrained base starts ahead of a random one on the first evaluation.
    assert report["curves"]["transfer"][0] > 0.2  # above chance for 5 classes
    assert report["pretraining"]["flops"] > report["flops_per_step"]


@pytest.mark.slow
def test_claim_codesign_quick(tmp_path, monkeypatch):
    module = _load("claim_codesign")
    report = run_quick(module.main, "claim_codesign", tmp_path, monkeypatch)
    refs = report["references"]
    # Moving the same dense net onto analog tiles saves energy; the reference rows are priced.
    assert refs["dense_all_analog"]["energy_j"] < refs["dense_all_digital"]["energy_j"]
    assert refs["best_small_all_digital"]["energy_j"] < refs["dense_all_digital"]["energy_j"]
    # Each one-sided search searched only its side.
    for run in report["runs"]["software_only"]["seeds"]:
        assert all(set(r["candidate"]["analog_fraction"]) == {0.0} for r in run["front"])
    for run in report["runs"]["hardware_only"]["seeds"]:
        for r in run["front"]:
            assert r["candidate"]["widths"] == [128, 128]
            assert set(r["candidate"]["sparsity"]) == {0.0}
    # Picks are made on validation only: within 1 point of the baseline there.
    for kind in report["runs"].values():
        for run in kind["seeds"]:
            if run["pick"] is not None:
                assert run["pick"]["accuracy"] >= run["baseline"]["accuracy"] - 0.01 - 1e-9


def _summary(saving, test_loss):
    return {
        "picked": 3,
        "energy_saving": {"mean": saving, "sd": 0.01},
        "test_loss": {"mean": test_loss, "sd": 0.01},
    }


def test_claim_codesign_verdict_on_fixed_inputs():
    verdict = _load("claim_codesign").verdict
    refs = {
        "dense_all_digital": {"energy_j": 100.0},
        "dense_all_analog": {"energy_j": 5.0},
        "best_small_all_digital": {"energy_j": 3.0},
    }
    one_sided = {"software_only": _summary(0.9, 0.0), "hardware_only": _summary(0.95, 0.0)}
    holds = verdict({"codesign": _summary(0.99, 0.005), **one_sided}, refs)
    assert holds["verdict"] == "holds"
    # The reason names what the saving is measured against and what needs no search.
    assert "all-digital" in holds["reason"] and "95.0%" in holds["reason"]
    assert "97.0%" in holds["reason"]
    partly = verdict({"codesign": _summary(0.99, 0.025), **one_sided}, refs)
    assert partly["verdict"] == "partly"
    assert verdict({"codesign": _summary(0.8, 0.0), **one_sided}, refs)["verdict"] == (
        "does not hold"
    )
    none = verdict({"codesign": {"picked": 0, "runs": 3}, **one_sided}, refs)
    assert none["verdict"] == "does not hold"


def test_claim_codesign_lowest_within():
    lowest_within = _load("claim_codesign").lowest_within
    rows = [
        {"energy_j": 1.0, "accuracy": 0.80},
        {"energy_j": 2.0, "accuracy": 0.90},
        {"energy_j": 3.0, "accuracy": 0.95},
    ]
    assert lowest_within(rows, 0.85)["energy_j"] == 2.0
    assert lowest_within(rows, 0.80)["energy_j"] == 1.0
    assert lowest_within(rows, 0.99) is None
