"""The fine-tune benchmark runs its three paths on the same candidates and reports rates that
are consistent with its own timings (quick mode: tiny sizes, figures not judged)."""

import importlib.util
import json
import pathlib

import pytest

from tests.test_experiments_a import run_quick

BENCH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_finetune_quick_reports_three_paths(capsys, tmp_path, monkeypatch):
    result = run_quick(_load("bench_finetune").main, "bench_finetune", tmp_path, monkeypatch)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == {k: v for k, v in result.items() if k != "timing"}
    n, timing = result["candidates"], result["timing"]
    for path in ("naive", "competent", "engine"):
        t = timing[path]
        # Rates are candidates over the measured seconds, and compile = cold - run.
        assert result[f"{path}_per_s"] == pytest.approx(n / t["cold_s"], rel=0.02, abs=1e-3)
        assert t["compile_s"] == pytest.approx(t["cold_s"] - t["run_s"], abs=0.02)
        # A second call of the same compiled programs never costs more than compiling them.
        assert t["run_s"] < t["cold_s"]
    assert result["speedup_vs_competent"] == pytest.approx(
        result["engine_per_s"] / result["competent_per_s"], rel=0.02
    )
    assert result["speedup_vs_naive"] == pytest.approx(
        result["engine_per_s"] / result["naive_per_s"], rel=0.02
    )
    # The FLOP/s fraction is a fraction: an engine can not beat the machine's peak matmul.
    assert 0 < result["engine_flops_fraction_of_peak"] < 1
    assert result["goals"]["engine_2x_competent"] == (result["speedup_vs_competent"] >= 2)
    # Every results JSON says where it came from.
    assert result["mode"] == "quick" and len(result["git_sha"].split("-")[0]) == 40
    assert result["machine"]["cpu_count"] >= 1 and "jax" in result["versions"]
