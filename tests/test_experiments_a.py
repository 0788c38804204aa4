"""The claim scripts (tile alignment, analog vs digital, lifecycle, MNIST-1D table) run in quick
mode without touching the repository, write a stamped JSON and a PNG plot, and decide their
verdicts by rules that are checked here on fixed inputs."""

import importlib.util
import json
import pathlib
import subprocess
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def run_quick(main, name: str, tmp_path, monkeypatch, args=()) -> dict:
    """`main(["--quick"])` as a user runs it: no --out. The repository (committed results
    included) is unchanged; the JSON lands in a new temporary directory, stamped."""
    before = _git_status()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    summary = main(["--quick", *args])
    assert _git_status() == before
    (path,) = tmp_path.glob(f"{name}-*/{name}.json")
    data = json.loads(path.read_text())
    assert data["mode"] == "quick" and data["git_sha"].split("-")[0] != "unknown"
    assert data["machine"]["cpu_count"] >= 1 and "jax" in data["versions"]
    png = path.with_suffix(".png")
    if png.exists() or name.startswith("claim_"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert summary.get("verdict") == data.get("verdict")
    return data


def test_tile_alignment_sawtooth(tmp_path, monkeypatch):
    module = _load("claim_tile_alignment")
    data = run_quick(module.main, "claim_tile_alignment", tmp_path, monkeypatch)
    sweep = data["sweep"]
    assert sweep["tiles"] == [8, 16, 32, 64] and sweep["widths"][:3] == [1, 2, 3]
    row16 = sweep["analog_j_per_mac"][sweep["tiles"].index(16)]
    # Sawtooth: 17 wastes more per MAC than 16 (a second tile band), 32 is aligned again.
    assert row16[16] > row16[15] and row16[31] == pytest.approx(row16[15], rel=1e-3)
    assert data["analog_ratio_20_vs_16"] > 1.0
    assert data["cell_utilisation_w20_t16"] == pytest.approx(400 / 1024)


def test_tile_alignment_verdict_on_fixed_sweeps():
    verdict = _load("claim_tile_alignment").verdict

    def sweep(a20, t20):  # w=16 costs 1 per MAC; w=20 costs a20 (analog) and t20 (total)
        per_tile = [[1.0, a20], [1.0, a20]]
        return {
            "tiles": [16, 32],
            "widths": [16, 20],
            "analog_j_per_mac": per_tile,
            "total_j_per_mac": [[1.0, t20], [1.0, t20]],
        }

    assert verdict(sweep(2.5, 1.1))["verdict"] == "holds"
    assert verdict(sweep(2.5, 1.0))["verdict"] == "partly"  # the macro pays, the layer not
    assert verdict(sweep(1.0, 1.0))["verdict"] == "does not hold"


@pytest.mark.slow
def test_analog_vs_digital(tmp_path, monkeypatch):
    module = _load("claim_analog_vs_digital")
    data = run_quick(module.main, "claim_analog_vs_digital", tmp_path, monkeypatch)
    assert data["compute_only_per_mac"]["ratio"] > 1.0
    split = data["networks"]["digits_mlp"]["split"]
    # An exhaustive search over per-layer splits includes both ends, so it is never worse.
    best, digital = split["best_hybrid"]["energy_j"], split["all_digital"]["energy_j"]
    assert best <= min(digital, split["all_analog"]["energy_j"])
    # Real fine-tunes of a pretrained base: far above chance (0.2 for 5 classes) on test.
    for key in ("all_digital", "all_analog", "best_hybrid"):
        assert data["networks"]["digits_mlp"]["accuracy"][key]["test_accuracy_analog"] > 0.5


def test_analog_vs_digital_verdict_on_fixed_ratios():
    verdict = _load("claim_analog_vs_digital").verdict
    digital = {"energy_j": 10.0, "components_j": {"sram": 6.0, "dram": 1.0}}
    assert verdict(12.0, 9.0, digital)["verdict"] == "holds"  # within 2x of the seed's 10x
    assert verdict(27.0, 9.0, digital)["verdict"] == "partly"  # analog wins, by far more
    assert verdict(0.8, 0.9, digital)["verdict"] == "does not hold"
    assert verdict(12.0, 9.0, digital)["all_digital_memory_share"] == pytest.approx(0.7)


@pytest.mark.slow
def test_lifecycle(tmp_path, monkeypatch):
    module = _load("claim_lifecycle")
    data = run_quick(module.main, "claim_lifecycle", tmp_path, monkeypatch)
    net = data["networks"]["digits_mlp"]
    assert net["pretrain_flops"] > 0
    for d in net["designs"].values():
        # Counting the base's pretraining can only push the break-even later.
        assert d["breakeven_with_pretraining"] > d["breakeven_finetune_only"] > 0


def test_lifecycle_verdict_on_fixed_breakevens():
    verdict = _load("claim_lifecycle").verdict

    def nets(*values):
        designs = {str(i): {"breakeven_finetune_only": v} for i, v in enumerate(values)}
        return {"net": {"designs": designs}}

    assert verdict(nets(2e5, 5e6))["verdict"] == "holds"  # both within 10x of 1e6
    assert verdict(nets(2e5, 5e8))["verdict"] == "partly"
    assert verdict(nets(1e3, 5e8))["verdict"] == "does not hold"


@pytest.mark.slow
def test_mnist1d_table(tmp_path, monkeypatch):
    module = _load("claim_mnist1d_table")
    data = run_quick(module.main, "claim_mnist1d_table", tmp_path, monkeypatch)
    assert set(data["our_test_acc"]) == {"mlp", "cnn"}
    # Even the quick run learns: well above chance (0.1 for 10 classes).
    assert all(v > 0.3 for v in data["our_test_acc"].values())


def test_mnist1d_table_verdict_on_fixed_accuracies():
    verdict = _load("claim_mnist1d_table").verdict
    paper = {"mlp": 0.68, "cnn": 0.94}
    assert verdict({"mlp": 0.67, "cnn": 0.925}, paper)["verdict"] == "holds"
    assert verdict({"mlp": 0.60, "cnn": 0.85}, paper)["verdict"] == "partly"  # CNN still ahead
    assert verdict({"mlp": 0.60, "cnn": 0.62}, paper)["verdict"] == "does not hold"
