"""Multi-objective early stopping: rungs that stop nobody change nothing, stopping never drops a
candidate of the final front in a controlled population, stopped candidates become PRUNED trials
with their rung accuracies, and a bad `finetune.early_stop` gets one line."""

import dataclasses
import json

import jax
import numpy as np
import optuna
import pytest
import yaml

from codesign.cli import main
from codesign.errors import CodesignError
from codesign.search import early_stop
from codesign.search import study as studies
from codesign.search.evaluate import Evaluator
from codesign.search.fronts import dominated
from codesign.search.problem import EarlyStop
from codesign.search.space import parse_space
from tests.test_search import TINY

SPACE = {  # the tests' tiny space, fine-tuned longer, with 3-bit ADCs allowed
    **{k: v for k, v in TINY.items() if k not in ("trials", "batch")},
    "name": "early",
    "finetune": {**TINY["finetune"], "steps": 40},
    "search": {**TINY["search"], "adc_bits": {"low": 3, "high": 8}},
}
POPULATION = 8
# Where nobody stops, rungs give the plain fine-tune's numbers bit for bit (the test below). A
# survivor repacked into a smaller population runs programs of another population size, equal
# up to float rounding; under analog quantization a rounding difference can move a read-out by a
# level, so accuracies may differ by an example or two of the 134 validation digits.
ACCURACY_TOL = 0.02


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CODESIGN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# First: its CLI search turns on the on-disk compilation cache (`codesign.cli`), so the
# controlled population's programs, the same shapes, are compiled once.
@pytest.mark.slow
def test_search_with_early_stopping_writes_pruned_trials(tmp_path, capsys):
    data = {
        **SPACE,
        "finetune": {**SPACE["finetune"], "early_stop": {"rungs": [0.25, 0.5], "margin": 0.0}},
        "trials": 8,
        "batch": 8,
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    assert main(["search", str(path), "--out", str(run)]) == 0
    capsys.readouterr()
    study = optuna.load_study(study_name="early", storage=studies.storage_for(None, run))
    stopped = [t for t in study.trials if "early_stopped_at_step" in t.user_attrs]
    assert stopped, "margin 0 stops every candidate dominated at a rung"
    for trial in stopped:
        attrs = trial.user_attrs
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert attrs["early_stopped_at_step"] in (10, 20)
        assert attrs["fail_reason"].startswith("early-stopped at step")
        assert 1 <= len(attrs["rung_val_accuracies"]) <= 2
        assert attrs["finetune_flops"] > 0 and "accuracy" not in attrs
        assert not attrs["skipped_training"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(len(t.user_attrs["rung_val_accuracies"]) == 2 for t in done)

    assert main(["pareto", "--out", str(run), "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)["front"]
    assert front and not {row["trial"] for row in front} & {t.number for t in stopped}
    design = tmp_path / "design.json"
    trial = str(front[0]["trial"])
    assert main(["export", "--out", str(run), "--trial", trial, "-o", str(design)]) == 0
    assert json.loads(design.read_text())["source"]["trial"] == front[0]["trial"]


@pytest.fixture(scope="module")
def controlled(tmp_path_factory):
    """8 candidates fine-tuned fully (the known result), then with early stopping on."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CODESIGN_CACHE", str(cache))
        space = parse_space(SPACE, "early.yaml")
        full_eval = space.evaluator()
        cands = [space.candidate(p) for p in space.sample_params(np.random.default_rng(0), 8)]
        seeds = list(range(POPULATION))
        full = full_eval.evaluate(cands, seeds)
        stop = EarlyStop(rungs=(0.25, 0.5), margin=0.05)
        problem = space.problem
        problem = dataclasses.replace(
            problem, finetune=dataclasses.replace(problem.finetune, early_stop=stop)
        )
        stopping = Evaluator(problem, min_tile_rows=16)  # the base cached by full_eval
        stopped = stopping.evaluate(cands, seeds)
    return full_eval, stopping, cands, seeds, full, stopped


def test_rungs_that_stop_nobody_give_the_uninterrupted_results_bit_for_bit(controlled):
    """The same candidates and seeds through the plain fine-tune and through rungs that stop
    nobody: identical params, masks and scores (the same engine programs, the same steps)."""
    full_eval, _, cands, seeds, full, _ = controlled
    engine = full_eval.engine
    population = full_eval.population(cands, seeds)
    want = engine.evaluate_population(population, keep_params=True)
    nobody = EarlyStop(rungs=(0.25, 0.5), margin=1.0)  # no accuracy beats another by 1
    got = early_stop.Rungs(engine).evaluate_population(
        population, lambda rows, masks: np.zeros(len(rows)), nobody, keep_params=True
    )
    assert (got.steps_run == SPACE["finetune"]["steps"]).all()
    assert got.rung_val_accuracies.shape == (POPULATION, 2)
    for field in dataclasses.fields(want):
        key = field.name
        if getattr(want, key) is None:  # steps_run, rung_val_accuracies: the rungs' own
            continue
        leaves = jax.tree.leaves(getattr(got, key)), jax.tree.leaves(getattr(want, key))
        for g, w in zip(*leaves, strict=True):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=key)
    # Stopping off (the default): the evaluator's numbers are the engine's, exactly.
    assert [r.accuracy for r in full] == want.val_accuracy.astype(float).tolist()
    assert [r.test_accuracy for r in full] == want.test_accuracy.astype(float).tolist()
    assert [r.finetune_flops for r in full] == want.finetune_flops.astype(float).tolist()


def test_stopping_spares_the_final_front_and_saves_flops(controlled):
    _, stopping, cands, seeds, full, stopped = controlled
    energy = np.asarray([r.energy_j for r in full])
    accuracy = np.asarray([r.accuracy for r in full])
    front = np.flatnonzero(~dominated(np.c_[energy, -accuracy]))
    gone = [i for i, r in enumerate(stopped) if r.early_stopped]
    assert gone, "the controlled population must stop someone, or this test proves nothing"
    assert not set(gone) & set(front), (gone, front)
    steps = SPACE["finetune"]["steps"]
    for i, (f, s) in enumerate(zip(full, stopped, strict=True)):
        assert s.energy_j == f.energy_j  # exact energy, from the same masks
        if s.early_stopped:
            assert s.stopped_at_step in (10, 20) and s.accuracy is None
            assert s.finetune_flops == pytest.approx(f.finetune_flops * s.stopped_at_step / steps)
            assert len(s.rung_accuracies) == [10, 20].index(s.stopped_at_step) + 1
        else:
            assert s.accuracy == pytest.approx(f.accuracy, abs=ACCURACY_TOL), i
            assert s.finetune_flops == f.finetune_flops and len(s.rung_accuracies) == 2
    spent, full_flops = sum(r.finetune_flops for r in stopped), sum(r.finetune_flops for r in full)
    assert spent < 0.8 * full_flops, (spent, full_flops)

    # Programs: init and first rung, one per (rung length, packed size), one score per packed size;
    # the same population again compiles nothing and stops the same candidates.
    rungs = stopping._rungs
    assert rungs.traces <= 2 + 2 * 3 + 3
    before = rungs.traces
    again = stopping.evaluate(cands, seeds)
    assert rungs.traces == before
    assert [r.stopped_at_step for r in again] == [r.stopped_at_step for r in stopped]


@pytest.mark.parametrize(
    "early, key, words",
    [
        ({"rungs": [0.5, 0.25]}, "finetune.early_stop.rungs", "must increase"),
        ({"rungs": [0.0]}, "finetune.early_stop.rungs", "fractions in (0, 1)"),
        ({"rungs": [1.2]}, "finetune.early_stop.rungs", "fractions in (0, 1)"),
        ({"rungs": 0.5}, "finetune.early_stop.rungs", "must be a list"),
        ({"rungs": [0.01]}, "finetune.early_stop.rungs", "own step in 1..39"),
        ({"margin": -0.1}, "finetune.early_stop.margin", "must lie in [0.0, 1.0]"),
        ({"margin": "big"}, "finetune.early_stop.margin", "must be float"),
        ({"margn": 0.1}, "finetune.early_stop.margn", "did you mean 'margin'"),
        ([0.25], "finetune.early_stop", "must be a mapping with keys rungs, margin"),
    ],
)
def test_bad_early_stop_is_one_line(early, key, words):
    data = {**SPACE, "finetune": {**SPACE["finetune"], "early_stop": early}}
    with pytest.raises(CodesignError) as err:
        parse_space(data, "bad.yaml")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"bad.yaml: {key}: "), message
    assert words in message, message


def test_early_stop_parsed_and_kept_out_of_the_hash_when_off():
    data = {**SPACE, "finetune": {**SPACE["finetune"], "early_stop": {"margin": 0.1}}}
    space = parse_space(data, "early.yaml")
    assert space.problem.finetune.early_stop == EarlyStop(rungs=(0.25, 0.5), margin=0.1)
    off = parse_space(SPACE, "early.yaml")
    assert off.problem.finetune.early_stop is None  # off unless given
    assert studies.space_hash(space) != studies.space_hash(off)
    assert "early_stop" not in json.dumps(studies._canonical(off))
