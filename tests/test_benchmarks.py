"""Benchmark scripts run and report what they measured, consistently (tiny sizes; the figures
themselves are judged against the committed JSON by test_readme_figures.py)."""

import importlib.util
import json
import pathlib

import jax
import pytest

from codesign.search.evaluate import Evaluator
from tests.test_experiments_a import run_quick

BENCH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_energy_reports_throughput(capsys, tmp_path, monkeypatch):
    result = _load("bench_energy").main(["--quick", "--out", str(tmp_path)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == result
    assert json.loads((tmp_path / "bench_energy.json").read_text()) == result
    # Without --out, a quick run leaves the repository (and its committed JSON) alone.
    (tmp_path / "q").mkdir()
    quick = run_quick(_load("bench_energy").main, "bench_energy", tmp_path / "q", monkeypatch)
    assert quick["candidates"] == 2000
    # The reported speedup is the ratio of the two reported rates (rounding aside).
    assert result["speedup_vs_loop"] == pytest.approx(
        result["candidates_per_s"] / result["loop_candidates_per_s"], rel=0.05, abs=0.1
    )
    assert result["candidates"] == 2000 and result["mode"] == "quick"
    # The energy API is timed against the jitted model it wraps, on the same candidates.
    assert result["estimate_api_over_core"] == pytest.approx(
        result["estimate_api_s"] / result["estimate_core_s"], rel=0.05, abs=0.1
    )


def test_bench_search_summaries_from_fixed_trajectories():
    """Hypervolume, test hypervolume and trials-to-95% on hand-made runs, no training."""
    bench = _load("bench_search")
    ref_e, ref_acc = 1.0, 0.5
    # Run a: one design at 0.1 J with 0.9 val / 0.7 test accuracy at trial 2 (trial 1 infeasible).
    a = [None, [0.1, 0.9, 0.7]]
    # Run b: 0.01 J at 0.8 val / 0.8 test at trial 1; then a dominated design.
    b = [[0.01, 0.8, 0.8], [0.1, 0.7, 0.9]]
    assert bench.hv_val(a, 1, ref_e, ref_acc) == 0.0
    assert bench.hv_val(a, 2, ref_e, ref_acc) == pytest.approx(1 * 0.4)  # 1 decade x 0.4
    assert bench.hv_val(b, 2, ref_e, ref_acc) == pytest.approx(2 * 0.3)
    # Test hypervolume reads the test accuracy of the validation front only: b's second design
    # is dominated on validation, so its 0.9 test accuracy does not count.
    assert bench.hv_test(b, 2, ref_e, ref_acc) == pytest.approx(2 * 0.3)
    assert bench.hv_test(a, 2, ref_e, ref_acc) == pytest.approx(1 * 0.2)
    runs = [
        {"sampler": "energy-aware", "seed": 0, "trials": 2, "reference_energy_j": ref_e,
         "overhead_s": 0.0, "trajectory": b},
        {"sampler": "random", "seed": 0, "trials": 2, "reference_energy_j": ref_e,
         "overhead_s": 0.0, "trajectory": a},
    ]  # fmt: skip
    summary = bench.summarise(runs, [1, 2], ref_acc)
    # Pooled front: (0.01, 0.8) and (0.1, 0.9): 1 x 0.3 + 1 x 0.4.
    assert summary["reference_hv"] == pytest.approx(0.7)
    ours, theirs = summary["samplers"]["energy-aware"], summary["samplers"]["random"]
    assert ours["hv_mean"]["2"] == pytest.approx(0.6)
    # Neither reaches 0.95 x 0.7 = 0.665: counted as trials + 1.
    assert ours["trials_to_95pct"] == {"per_seed": [None], "reached": 0, "mean": 3.0}
    assert theirs["trials_to_95pct"]["mean"] == 3.0
    goal = bench.goal(summary["samplers"])
    assert goal["met"] is False and goal["ratio"] == 1.0
    assert bench.trials_to(b, 0.5, ref_e, ref_acc) == 1
    assert bench.trials_to(a, 0.4, ref_e, ref_acc) == 2


@pytest.mark.slow
def test_bench_search_quick(tmp_path, monkeypatch):
    """Two samplers, one seed, 8 trials, as a user runs --quick: nothing written to the repo,
    and JAX's compilation cache and the evaluator left as they were for what runs next."""
    before = (jax.config.jax_compilation_cache_dir, Evaluator.evaluate)
    result = run_quick(_load("bench_search").main, "bench_search", tmp_path, monkeypatch)
    assert (jax.config.jax_compilation_cache_dir, Evaluator.evaluate) == before
    assert set(result["samplers"]) == {"energy-aware", "random"}
    for s in result["samplers"].values():
        # More trials never shrink a front's hypervolume.
        assert s["hv_mean"]["8"] >= s["hv_mean"]["4"]
    assert result["reference_accuracy"] == 0.5  # digits_mlp's min_accuracy budget
    assert len(result["runs"]) == 2 and all(len(r["trajectory"]) == 8 for r in result["runs"])


def test_bench_search_overhead_with_stubbed_evaluation(tmp_path, monkeypatch):
    """--stub-evaluation measures the framework's own time per trial without any fine-tune:
    both samplers, and the evaluator put back afterwards."""
    before = Evaluator.evaluate
    args = ["--stub-evaluation"]
    result = run_quick(
        _load("bench_search").main, "bench_search_overhead", tmp_path, monkeypatch, args
    )
    assert Evaluator.evaluate is before
    overhead = result["overhead_ms_per_trial"]
    assert set(overhead) == {"energy-aware", "random"} and all(v > 0 for v in overhead.values())


@pytest.mark.slow
def test_bench_gradient_quick(tmp_path, monkeypatch):
    """Hypervolume against fine-tune FLOPs: the gradient sampler's relaxed runs count."""
    result = run_quick(_load("bench_gradient").main, "bench_gradient", tmp_path, monkeypatch)
    methods = result["methods"]
    assert set(methods) == {"energy-aware", "gradient"}
    for row in methods.values():
        hv = row["hv_at_flops"]
        assert hv == sorted(hv)  # more FLOPs never shrink a front
    ref = methods["energy-aware"]
    # the reference's last budget is its own total: its final hypervolume, reached within it
    assert ref["hv_at_flops"][-1] == pytest.approx(result["reference_final_hv"], abs=1e-4)
    assert ref["flops_to_match"]["share_of_reference_total"] <= 1.0
    (grad,) = [r for r in result["runs"] if r["method"] == "gradient"]
    (trained,) = [r for r in result["runs"] if r["method"] == "energy-aware"]
    assert len(trained["trajectory"]) == 6 and trained["budget_flops"] is None
    # The gradient sampler gets the reference's FLOPs, not its trial count: it stops after the
    # batch (3 trials) that reaches them, or at --max-trials (12 in --quick).
    spent = [f for f, *_ in grad["trajectory"]]
    assert grad["budget_flops"] == pytest.approx(sum(f for f, *_ in trained["trajectory"]))
    assert len(spent) % 3 == 0 and sum(spent[:-3]) < grad["budget_flops"]
    assert sum(spent) >= grad["budget_flops"] or len(spent) == 12
    # --replot draws a results JSON's plot again, beside it
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "r.json").write_text(json.dumps(result))
    _load("bench_gradient").main(["--replot", str(tmp_path / "again" / "r.json")])
    assert (tmp_path / "again" / f"{result['name']}.png").stat().st_size > 10_000


def test_bench_gradient_reuses_only_runs_made_with_the_same_setting():
    bench = _load("bench_gradient")
    setting = {"trials": 6, "max_trials": 12, "finetune_steps": 10, "gradient_steps": 30}
    for method in bench.METHODS:
        run = {"method": method, **setting}
        assert bench._same_setting(run, setting)
        assert not bench._same_setting({**run, "trials": 7}, setting)
        assert not bench._same_setting({**run, "finetune_steps": 20}, setting)
        # Other relaxed steps: only the gradient sampler's runs are made again.
        other = {**run, "gradient_steps": 100}
        assert bench._same_setting(other, setting) == (
            method in ("energy-aware", "nsga2", "early-stop")
        )


def test_bench_gradient_summary_pairs_each_seed_with_the_reference():
    """hv at FLOPs budgets, FLOPs to match and the goal on hand-made trajectories, no training:
    rows are [FLOPs, energy_j, val acc, test acc] (None: not feasible)."""
    bench = _load("bench_gradient")
    ref_e, ref_acc = 1.0, 0.5

    def run(method, traj):
        return {"method": method, "seed": 0, "reference_energy_j": ref_e, "trajectory": traj}

    runs = [
        run("energy-aware", [[1.0, 0.1, 0.9, 0.8]]),  # 1 decade x 0.4 after 1 FLOP
        run("early-stop", [[0.25, None, None, None], [0.25, 0.1, 0.9, 0.7]]),  # same, at 0.5
        run("gradient", [[2.0, 0.1, 0.8, 0.8]]),  # 1 x 0.3, past the budget
    ]
    s = bench.summarise(runs, [0.5, 1.0], ref_acc)
    ref, early, grad = (s["methods"][m] for m in ("energy-aware", "early-stop", "gradient"))
    assert s["reference_final_hv"] == pytest.approx(0.4)
    assert ref["hv_at_flops"] == [0.0, 0.4] and early["hv_at_flops"] == [0.4, 0.4]
    assert early["test_hv_at_flops"] == [pytest.approx(0.2)] * 2
    assert grad["hv_at_flops"] == [0.0, 0.0]  # nothing finished within the budget counts
    assert early["flops_to_match"]["share_per_seed"] == [0.5]
    assert grad["flops_to_match"] == {
        "per_seed": [None], "share_per_seed": [None], "reached": 0, "mean": None,
        "share_of_reference_total": None,
    }  # fmt: skip
    goal = bench.goal(s["methods"])
    assert goal["met"] is True and goal["best"] == "early-stop"
    assert goal["share_of_reference_flops"] == 0.5
    runs[1]["trajectory"][0][0] = 0.5  # now it matches on 0.75 of the FLOPs: goal not met
    assert bench.goal(bench.summarise(runs, [1.0], ref_acc)["methods"])["met"] is False
