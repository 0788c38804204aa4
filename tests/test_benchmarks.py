"""Benchmark scripts run and report what they measured (tiny sizes; figures not judged)."""

import importlib.util
import pathlib

BENCH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_energy_reports_throughput(capsys):
    result = _load("bench_energy").main(
        ["--candidates", "2000", "--repeats", "1", "--baseline-sample", "5"]
    )
    assert result["bench"] == "energy" and result["candidates_per_s"] > 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith('{"bench": "energy"')
