"""The co-design search end to end: search -> pareto -> export -> train, resume, budgets, errors."""

import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import optuna
import pytest
import yaml

from codesign.cli import main
from codesign.errors import CodesignError
from codesign.search import loop as search
from codesign.search import pareto
from codesign.search import study as studies
from codesign.search.evaluate import Evaluator, Result
from codesign.search.space import load_space, parse_space
from tests.cli_run import as_process, in_process

FINISHED = ("COMPLETE", "PRUNED")  # pruned: infeasible (a constraint broken), still finished
TINY = {
    "name": "tiny",
    "task": {"dataset": "digits", "seed": 0},
    "model": {"family": "mlp", "widths": [16, 16]},
    "pretrain": {"steps": 60, "batch_size": 32},
    "finetune": {"steps": 10, "batch_size": 32, "eval_draws": 1},
    "search": {
        "widths": {"low": 4, "high": 16, "step": 4, "per_layer": True},
        "sparsity": {"low": 0.0, "high": 0.6, "step": 0.3},
        "granularity": {"choices": ["unstructured", "block"]},
        "tile": {"choices": [16, 32]},
        "analog_fraction": {"choices": [0.0, 0.5, 1.0]},
        "adc_bits": {"low": 4, "high": 8},
    },
    "sampler": {"name": "random", "seed": 0},
    "trials": 6,
    "batch": 3,
}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # One pretrained base for the whole module (keyed by its hash), away from ~/.cache.
    monkeypatch.setenv("CODESIGN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _write(tmp_path, data, name="space.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_search_pareto_export_train(tmp_path, capsys):
    space = _write(tmp_path, TINY)
    run = tmp_path / "run"
    assert main(["search", str(space), "--out", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "hypervolume" in out and "baseline (dense all-digital)" in out
    assert err.startswith("codesign: populations run on "), err[:200]  # the first line
    for name in ("study.journal", "pareto.png", "pareto.html"):
        assert (run / name).is_file()
    assert (run / "pareto.png").stat().st_size > 10_000

    study = optuna.load_study(study_name="tiny", storage=studies.storage_for(None, run))
    assert len(study.trials) == 6
    assert study.metric_names == ["energy_j", "accuracy"]
    attrs = study.trials[0].user_attrs
    for key in (
        "candidate",
        "seed",
        "energy_j",
        "energy_layers_j",
        "tiles",
        "latency_s",
        "finetune_flops",
        "accuracy",
    ):
        assert key in attrs
    assert len(attrs["energy_layers_j"]["adc"]) == 3

    assert main(["pareto", "--out", str(run), "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)
    baseline_j = optuna.load_study(study_name="tiny", storage=studies.storage_for(None, run)
                                   ).user_attrs["baseline"]["energy_j"]  # fmt: skip
    points = [(row["energy_j"], row["accuracy"]) for row in front["front"]]
    assert front["front"] and front["hypervolume"] == pytest.approx(
        pareto.hypervolume(points, baseline_j)
    )
    energies = [row["energy_j"] for row in front["front"]]
    assert energies == sorted(energies)

    design = tmp_path / "design.json"
    trial = front["front"][0]["trial"]
    assert main(["export", "--out", str(run), "--trial", str(trial), "-o", str(design)]) == 0
    exported = json.loads(design.read_text())
    assert exported["format_version"] == 1 and exported["source"]["trial"] == trial
    tile = exported["candidate"]["tile"]  # the accelerator written is the candidate's chip
    assert [exported["accelerator"][k] for k in ("tile_rows", "tile_cols")] == tile

    trained = tmp_path / "trained"
    capsys.readouterr()
    assert main(["train", str(design), "--steps", "15", "--out", f"{trained}/"]) == 0
    assert f"wrote {trained}/checkpoint, {trained}/weights.npz" in capsys.readouterr().out
    report = json.loads((trained / "report.json").read_text())
    assert 0 <= report["test_accuracy_analog"] <= 1
    assert report["breakeven_inferences"] == pytest.approx(
        report["finetune_energy_j"] / report["energy"]["energy_j"]
    )
    assert report["compact_weights"] <= report["dense_weights"]
    with np.load(trained / "weights.npz") as weights:
        assert weights["layer0_w"].shape[1] == len(weights["layer0_kept_units"])
    assert (trained / "checkpoint").is_dir()

    # The README's recipe: the compact weights in a plain Flax NNX model give the same accuracy.
    flax_example = _load_script("flax_from_design")
    result = flax_example.main([str(trained / "weights.npz"), "--design", str(design)])
    assert result["digital_test_accuracy"] == pytest.approx(report["test_accuracy_digital"])


def _load_script(name):
    import importlib.util

    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resume_never_recomputes_and_recovers_interrupted_trials(tmp_path):
    space = load_space(_write(tmp_path, TINY))
    run = tmp_path / "run"
    study = search.run_search(space, trials=3, out_dir=run)
    first = {t.number: t.values for t in study.trials}
    # A worker process dies mid-trial: its RUNNING trial is left in the journal.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = study.ask()
    space.suggest(dead)
    dead.set_user_attr("worker", f"{socket.gethostname()}:{gone.stdout.strip()}")
    alive = study.ask()  # a trial another live worker is running: must be left alone
    space.suggest(alive)
    alive.set_user_attr("worker", f"{socket.gethostname()}:{os.getppid()}")
    study = search.run_search(space, trials=6, out_dir=run)
    states = [t.state.name for t in study.trials]
    # The live worker's trial still counts: 5 completed here + 1 it is finishing = 6.
    assert sum(s in FINISHED for s in states) == 5
    assert study.trials[alive.number].state.name == "RUNNING"
    assert study.trials[dead.number].state.name == "FAIL"
    assert study.trials[dead.number].user_attrs["fail_reason"].startswith("stale")
    redone = [t for t in study.trials if t.number > dead.number and t.params == dead.params]
    assert redone and redone[0].state.name in FINISHED
    for number, values in first.items():
        assert study.trials[number].values == values  # never recomputed
    again = search.run_search(space, trials=6, out_dir=run)
    assert len(again.trials) == len(study.trials), "nothing left to do: no new trial"
    # The other worker finishes its trial: the study holds its 6.
    study.tell(alive.number, [1e-9, 0.5])
    assert sum(t.state.name in FINISHED for t in study.trials) == 6


def test_energy_aware_sampler_proposes_every_candidate(tmp_path):
    space = load_space(_write(tmp_path, {**TINY, "sampler": {"name": "energy-aware", "seed": 1}}))
    study = search.run_search(space, trials=6, out_dir=tmp_path / "run")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6
    # Every trial's parameters were chosen by codesign.search.screening and enqueued, not sampled.
    assert all("proposed" in t.user_attrs for t in study.trials)
    assert all(t.user_attrs["proposed"] == t.params for t in study.trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 6


def test_over_budget_candidates_spend_no_finetune(tmp_path, monkeypatch):
    data = {**TINY, "budgets": {"max_tiles": 2}, "trials": 6}
    space = load_space(_write(tmp_path, data))
    trained = []
    original = Evaluator.evaluate

    def spy(self, cands, seeds, chunk):
        trained.extend(cands)
        return original(self, cands, seeds, chunk)

    monkeypatch.setattr(Evaluator, "evaluate", spy)
    study = search.run_search(space, out_dir=tmp_path / "run")
    skipped = [t for t in study.trials if t.user_attrs["skipped_training"]]
    assert skipped, "the budget must exclude some candidates"
    for t in skipped:  # over budget: pruned as infeasible, with its constraint values
        assert t.constraints["max_tiles"] > 0 or t.constraints["empty_layers"] > 0
        assert t.state.name == "PRUNED" and t.values is None
    trained_tiles = {json.dumps(c.to_dict()) for c in trained}
    for t in skipped:
        assert json.dumps(t.user_attrs["candidate"]) not in trained_tiles
    for t in study.trials:
        if not t.user_attrs["skipped_training"]:
            assert t.constraints["max_tiles"] <= 0


BAD = [
    ("model: [1, 2", "YAML syntax error"),
    ("modle: {}", "modle: unknown key (did you mean 'model'?)"),
    ("trials: many", "trials: must be int"),
    ("search: {tile: {choices: []}}", "search.tile.choices: must be a non-empty list"),
    ("search: {sparsity: {low: 0.8, high: 0.2}}", "empty range"),
    ("hardware: {preset: hybrid-22}", "did you mean 'hybrid-22nm'"),
    ("task: {dataset: digitz}", "did you mean 'digits'"),
    ("task: {dataset: missing.npz}", "no such file"),
    ("search: {granularity: {choices: [blocky]}}", "valid: unstructured, row, column, block, nm"),
    ("objectives: [energy]", "must include energy and accuracy"),
    ("sampler: {name: cmaes}", "valid: energy-aware, gradient, nsga2, tpe, gp, random"),
    ("hardware: {overrides: {tile_size: 3}}", "valid keys"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_invalid_space_is_one_line_naming_file_and_key(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    assert main(["search", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and message in err[0]
    assert not (tmp_path / "run").exists(), "nothing written for an invalid space"


def test_shipped_spaces_validate():
    root = pathlib.Path(__file__).resolve().parents[1] / "search_spaces"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert {"digits_mlp.yaml", "mnist1d_mlp.yaml", "mnist1d_cnn.yaml"} <= set(names)
    for name in names:
        load_space(root / name)


def test_bad_command_lines_exit_2_without_traceback(tmp_path, capsys):
    cases = [
        ["search", str(tmp_path / "nope.yaml")],
        ["pareto", "--out", str(tmp_path / "empty")],
        ["export", "--out", str(tmp_path), "--pick", "accuracy>=0.9:min-energy"],
        ["train", str(tmp_path / "missing.json")],
    ]
    # The first as its own process, the rest in this one (see `tests.cli_run`).
    results = [as_process(cases[0])] + [in_process(argv, capsys) for argv in cases[1:]]
    for argv, (code, _, err) in zip(cases, results, strict=True):
        assert code == 2, argv
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2", "gp"])
def test_every_sampler_runs_a_tiny_search(sampler, tmp_path):
    if sampler == "gp":
        pytest.importorskip("torch", reason="Optuna's GPSampler needs codesign[gp] (torch)")
    # TINY's batch (3): the population programs are the ones the module compiled already.
    data = {**TINY, "sampler": {"name": sampler, "seed": 0, "population_size": 3}}
    space = load_space(_write(tmp_path, data))
    study = search.run_search(space, out_dir=tmp_path / "run")
    assert all(t.state.name in FINISHED for t in study.trials) and len(study.trials) == 6
    expected = {"random": "Random", "tpe": "TPE", "nsga2": "NSGAII", "gp": "GP"}[sampler]
    assert type(study.sampler).__name__ == f"{expected}Sampler"
    assert pareto.front(study), "a front from 6 trained trials"


def test_evaluation_api_without_optuna(tmp_path):
    """The README's Optuna-free path: candidates -> estimates -> fine-tuned results; for dense
    designs the energy from the real masks equals the estimate from the design's statistics."""
    space = load_space(_write(tmp_path, TINY))
    evaluator = space.evaluator()
    dense = [
        dataclasses.replace(space.candidate(p), sparsity=(0.0,) * 3)
        for p in space.sample_params(np.random.default_rng(0), 3)
    ]
    estimates = evaluator.estimate(dense)
    results = evaluator.evaluate(dense, seeds=[0, 1, 2])
    for estimate, result in zip(estimates, results, strict=True):
        assert not estimate.trained and result.trained and 0.0 <= result.accuracy <= 1.0
        assert result.energy_j == pytest.approx(estimate.energy_j, rel=1e-6)
        assert result.tiles == estimate.tiles
        assert Result.from_attrs(result.to_attrs()) == result  # the trial attribute round trip


def test_degenerate_designs_are_infeasible_to_every_client_and_still_cost_energy(
    tmp_path, monkeypatch
):
    """A design that prunes a layer away entirely computes a constant: it is never trained, told
    PRUNED with its `empty_layers` constraint (so no Optuna client puts it on a front), and it
    still pays for moving its activations (SRAM), not 0 J."""
    search_dims = {**TINY["search"], "sparsity": 0.95, "granularity": "block", "tile": 64}
    search_dims["analog_fraction"] = 1.0  # every block on tiles: the estimate sees it empty
    space = load_space(_write(tmp_path, {**TINY, "search": search_dims, "trials": 3}))
    trained, original = [], Evaluator.evaluate

    def spy(self, cands, seeds, chunk=None):
        trained.extend(cands)
        return original(self, cands, seeds, chunk)

    monkeypatch.setattr(Evaluator, "evaluate", spy)
    study = search.run_search(space, out_dir=tmp_path / "run")
    assert [c.sparsity for c in trained] == [(0.0,) * 3], "only the dense baseline is trained"
    for t in study.trials:
        assert t.state.name == "PRUNED" and t.constraints["empty_layers"] > 0
        assert "empty_layers" in t.user_attrs["fail_reason"]
        assert t.user_attrs["energy_j"] > 0
        assert t.user_attrs["energy_j"] == pytest.approx(
            sum(t.user_attrs["energy_layers_j"]["sram"])
        )
    assert study.best_trials == [] and pareto.front(study) == []


def test_a_pcm_search_scores_accuracy_after_drift(tmp_path, capsys):
    # The same sampler seed proposes the same candidates; a year of drift changes the accuracy
    # of those with analog columns and of no all-digital one.
    def run(when, name):
        data = {**TINY, "name": name, "hardware": {"device": "pcm"}}
        data["finetune"] = {**TINY["finetune"], "inference_time": when}
        space = _write(tmp_path, data, f"{name}.yaml")
        assert main(["search", str(space), "--out", str(tmp_path / name)]) == 0
        storage = studies.storage_for(None, tmp_path / name)
        study = optuna.load_study(study_name=name, storage=storage)
        return study.user_attrs["space"], {
            json.dumps(t.user_attrs["candidate"], sort_keys=True): t.user_attrs["accuracy"]
            for t in study.trials
        }

    space, now = run(0, "pcm_now")
    assert space["hardware"]["device"] == "pcm"
    _, later = run("1y", "pcm_year")
    assert now.keys() == later.keys()
    analog = [c for c in now if any(f > 0 for f in json.loads(c)["analog_fraction"])]
    digital = [c for c in now if c not in analog]
    assert analog and any(now[c] != later[c] for c in analog)
    assert all(now[c] == later[c] for c in digital)
    capsys.readouterr()
    # Resuming with another inference time is refused, naming the key.
    changed = {**TINY, "name": "pcm_now", "hardware": {"device": "pcm"}}
    changed["finetune"] = {**TINY["finetune"], "inference_time": "1d"}
    again = _write(tmp_path, changed, "pcm_now.yaml")
    assert main(["search", str(again), "--out", str(tmp_path / "pcm_now")]) != 0
    assert "finetune.inference_time: 0.0 -> 86400.0" in capsys.readouterr().err


def test_device_and_tile_scaling_reach_the_engine_and_bad_ones_are_one_line(tmp_path):
    data = {**TINY, "hardware": {"device": "pcm", "tile_scaling": "tile"}}
    data["finetune"] = {**TINY["finetune"], "inference_time": "2h"}
    space = parse_space(data, str(tmp_path / "space.yaml"))
    finetune = space.evaluator().finetune
    assert (finetune.device, finetune.tile_scaling, finetune.inference_time) == (
        "pcm",
        "tile",
        7200.0,
    )
    defaults = parse_space(TINY, str(tmp_path / "space.yaml")).evaluator().finetune
    assert (defaults.device, defaults.tile_scaling, defaults.inference_time) == (
        "sram",
        "layer",
        0.0,
    )
    for hardware, message in (
        ({"tile_scaling": "column"}, "hardware.tile_scaling: unknown value 'column'"),
        ({"device": "rram"}, "hardware.device: unknown value 'rram'"),
    ):
        with pytest.raises(CodesignError, match=message):
            parse_space({**TINY, "hardware": hardware}, "space.yaml")
