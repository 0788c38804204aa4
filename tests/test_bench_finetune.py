"""The fine-tune benchmark runs both paths on the same candidates and reports their rates."""

import importlib.util
import json
import pathlib

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_finetune_quick_reports_both_rates(capsys):
    result = _load("bench_finetune").main(["--quick"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == result
    assert {"bench", "naive_per_s", "engine_per_s", "speedup"} <= set(result)
    assert result["bench"] == "finetune"
    assert result["naive_per_s"] > 0 and result["engine_per_s"] > 0
