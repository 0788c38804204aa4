"""The fine-tune benchmark times the engine and its plain Flax baselines on the same work and
reports ratios consistent with its own timings (quick mode: tiny sizes, figures not judged)."""

import importlib.util
import json
import pathlib
import sys

import pytest

from tests.test_experiments_a import run_quick

BENCH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its Flax modules are dataclasses, which look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_finetune_quick_reports_engine_over_baselines(capsys, tmp_path, monkeypatch):
    result = run_quick(_load("bench_finetune").main, "bench_finetune", tmp_path, monkeypatch)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    keys = {
        "mlp_engine_over_flax", "mlp_all_digital_over_flax", "resnet_pretrain_step_over_flax",
        "resnet_finetune_step_over_flax", "cnn_flops_over_flax", "resnet_flops_fraction_of_peak",
        "resnet_search_peak_gb", "cifar10_resnet20_search_projected_h",
    }  # fmt: skip
    assert keys <= set(last) and last == {k: result[k] for k in last}
    mlp, resnet, cnn = result["mlp"], result["resnet"], result["cnn"]
    # Ratios are the measured times' ratios (rounded to 2 places).
    assert result["mlp_engine_over_flax"] == pytest.approx(
        mlp["engine"]["run_s"] / mlp["flax"]["run_s"], abs=0.006
    )
    assert result["resnet_finetune_step_over_flax"] == pytest.approx(
        resnet["engine_finetune_step_s"] / resnet["flax_step_s"], abs=0.006
    )
    assert cnn["flax_flops_per_s"] == pytest.approx(
        cnn["training_flops"] / min(cnn["flax_one_by_one_s"], cnn["flax_vmapped_s"])
    )
    # Each time is the best of the rounds in which the programs compared took turns; the peak
    # that ResNet's fraction divides by is one of them.
    assert cnn["engine_train_s"] == min(cnn["runs_s"]["engine_train"])
    assert cnn["flax_vmapped_s"] == min(cnn["runs_s"]["flax_vmapped"])
    assert cnn["engine_flops_per_s"] == pytest.approx(cnn["training_flops"] / cnn["engine_train_s"])
    per_step = resnet["candidates"] * result["settings"]["resnet_ft_steps"]
    assert resnet["engine_finetune_step_s"] == pytest.approx(
        min(resnet["runs_s"]["analog"]) / per_step
    )
    assert result["peak_matmul_flops_per_s"] == resnet["peak_matmul_flops_per_s"]
    assert len({len(v) for v in [*cnn["runs_s"].values(), *resnet["runs_s"].values()]}) == 1
    # Same candidates both ways: as many accuracies, each a fraction.
    assert len(mlp["engine"]["val_accuracy"]) == len(mlp["flax"]["val_accuracy"]) == 2
    assert all(0 <= a <= 1 for a in mlp["engine"]["val_accuracy"] + mlp["flax"]["val_accuracy"])
    # The ceiling: the all-digital step plus writing and reading every conv layer's input
    # patches (float32, [batch x positions, K]) once at the measured stream rate.
    from codesign.nn import networks

    patches = sum(s.positions * s.rows for s in networks.layer_shapes(
        networks.NetworkSpec("resnet", (32, 32, 3), 5, (16, 32, 64), depth=resnet["depth"])
    ) if s.kernel_area > 1)  # fmt: skip
    assert resnet["patch_bytes"] == 4 * resnet["batch"] * patches
    assert resnet["patch_floor_s"] == pytest.approx(
        2 * resnet["patch_bytes"] / resnet["stream_bytes_per_s"]
    )
    assert result["resnet_flops_fraction_ceiling"] == pytest.approx(
        resnet["finetune_flops_per_step"]
        / (resnet["all_digital_step_s"] + resnet["patch_floor_s"])
        / result["peak_matmul_flops_per_s"],
        abs=6e-5,
    )
    # An engine cannot beat the machine's peak matmul; a projection is positive hours.
    assert 0 < result["resnet_flops_fraction_of_peak"] < 1
    assert result["cifar10_resnet20_search_projected_h"] > 0
    assert result["goals"]["mlp_3x"] == (result["mlp_engine_over_flax"] <= 3)
    assert result["mode"] == "quick" and len(result["git_sha"].split("-")[0]) == 40
