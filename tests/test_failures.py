"""Hostile inputs and failing candidates: one line, exit code 2, and no damage to a study."""

import dataclasses
import gc
import json
import os
import signal
import sys
import warnings

import jax
import numpy as np
import optuna
import pytest
import yaml

from codesign import cli, errors
from codesign.cli import main
from codesign.data import datasets as data
from codesign.design import FORMAT, FORMAT_VERSION
from codesign.engine import finetune as transfer
from codesign.nn import networks
from codesign.search import loop as search
from codesign.search import study as studies
from codesign.search.evaluate import Evaluator
from codesign.search.space import parse_space
from tests.test_search import TINY


@pytest.fixture
def existing(tmp_path):
    """A run directory holding a study with two finished trials, and its journal's bytes."""
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    storage = studies.storage_for(None, run)
    study = optuna.create_study(
        study_name="tiny", storage=storage, directions=["minimize", "maximize"]
    )
    study.set_user_attr("space", TINY)
    for energy, accuracy in ((1e-9, 0.5), (2e-9, 0.9)):
        trial = study.ask()
        trial.set_user_attr("candidate", {"widths": [4, 4]})
        trial.set_user_attr("energy_j", energy)
        trial.set_user_attr("accuracy", accuracy)
        study.tell(trial, [energy, accuracy])
    journal = run / studies.JOURNAL_NAME
    return {"space": space, "run": run, "journal": journal, "bytes": journal.read_bytes()}


def _bad_npz(tmp_path):
    path = tmp_path / "wrong.npz"
    np.savez(path, images=np.zeros((10, 3)), labels=np.zeros(10))
    return path


def _design(tmp_path, **changes):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **changes}))
    return path


CASES = {
    "bad storage url": (
        lambda e, t: ["search", str(e["space"]), "--storage", "nosuchdb://x"],
        "--storage",
    ),
    "unreachable database": (
        lambda e, t: ["pareto", "--storage", "postgresql://u:p@127.0.0.1:1/db", "--study", "x"],
        "--storage",
    ),
    "negative trial count": (
        lambda e, t: ["search", str(e["space"]), "--out", str(e["run"]), "--trials", "-3"],
        "--trials must be in [0, ",
    ),
    "zero batch": (
        lambda e, t: ["search", str(e["space"]), "--out", str(e["run"]), "--batch", "0"],
        "--batch must be in [1, ",
    ),
    "unknown trial": (
        lambda e, t: ["export", "--out", str(e["run"]), "--trial", "99"],
        "no such trial",
    ),
    "unknown study": (
        lambda e, t: ["pareto", "--out", str(e["run"]), "--study", "nope"],
        "not found; studies: tiny",
    ),
    "pick nothing": (
        lambda e, t: ["export", "--out", str(e["run"]), "--pick", "accuracy>=0.99:min-energy"],
        "no feasible front trial",
    ),
    "malformed pick": (
        lambda e, t: ["export", "--out", str(e["run"]), "--pick", "fast"],
        "expected METRIC>=VALUE",
    ),
    "no such device count": (
        lambda e, t: ["search", str(e["space"]), "--out", str(e["run"]), "--devices", "9"],
        "--devices (or CODESIGN_DEVICES) '9': give a whole number from 1 to",
    ),
    "zero devices": (
        lambda e, t: ["train", str(t / "none.json"), "--devices", "0"],
        "--devices (or CODESIGN_DEVICES) '0'",
    ),
    "missing design": (lambda e, t: ["train", str(t / "none.json")], "no such design file"),
    "corrupted design": (
        lambda e, t: ["train", str(_write(t / "c.json", "{not json"))],
        "not valid JSON",
    ),
    "not a design": (
        lambda e, t: ["train", str(_write(t / "n.json", "[1, 2]"))],
        "not a codesign design file",
    ),
    "newer design": (
        lambda e, t: ["train", str(_design(t, format_version=FORMAT_VERSION + 1))],
        "newer than this codesign reads",
    ),
    "design missing keys": (lambda e, t: ["train", str(_design(t))], "malformed design file"),
    "out is a file": (
        lambda e, t: ["search", str(e["space"]), "--out", str(_write(t / "f", "x"))],
        "is not a directory",
    ),
    "npz with wrong arrays": (
        lambda e, t: [
            "search",
            str(
                _write(
                    t / "s.yaml", yaml.safe_dump({**TINY, "task": {"dataset": str(_bad_npz(t))}})
                )
            ),
            "--out",
            str(t / "r2"),
        ],
        "missing array(s) x, y",
    ),
    "worker without study": (
        lambda e, t: ["worker", "--out", str(t / "nothing")],
        "no study journal",
    ),
}


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_leaves_the_study_alone(name, existing, tmp_path, capsys):
    argv_fn, message = CASES[name]
    argv = argv_fn(existing, tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("codesign: error:"), err
    assert message in err[0], err[0]
    assert existing["journal"].read_bytes() == existing["bytes"], "the study was modified"


def test_diverging_finetune_is_detected():
    task = data.transfer_split("digits")
    spec = networks.NetworkSpec("mlp", task.source.input_shape, 5, (8, 8))
    base = networks.init_params(spec, jax.random.PRNGKey(0))
    wild = transfer.FinetuneConfig(steps=5, batch_size=16, eval_draws=1, learning_rate=1e30)
    engine = transfer.Engine(spec, task, wild, base_params=base)
    row = {
        "widths": [8, 8],
        "sparsity": [0.0] * 3,
        "granularity": ["unstructured"] * 3,
        "analog_fraction": [0.0] * 3,
        "tile_rows": 8,
        "tile_cols": 8,
        "adc_bits": 8,
        "dac_bits": 8,
        "seed": 0,
    }
    out = engine.evaluate_population(transfer.Population.stack([row]))
    assert bool(out.diverged[0])


def test_diverged_candidate_becomes_a_failed_trial_and_the_search_goes_on(tmp_path, monkeypatch):
    space = parse_space({**TINY, "trials": 6}, str(tmp_path / "space.yaml"))
    original = Evaluator.evaluate

    def first_diverges(self, cands, seeds, chunk):
        results = original(self, cands, seeds, chunk)
        if seeds[0] % 1_000_003 == 0:  # the very first trial
            results[0] = dataclasses.replace(results[0], diverged=True, final_loss=float("nan"))
        return results

    monkeypatch.setattr(Evaluator, "evaluate", first_diverges)
    study = search.run_search(space, out_dir=tmp_path / "run")
    states = [t.state.name for t in study.trials]
    assert states[0] == "FAIL" and "diverged" in study.trials[0].user_attrs["fail_reason"]
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == 5 and len(states) == 6


def test_a_stop_python_drops_in_a_gc_callback_still_ends_the_search(tmp_path, monkeypatch):
    # A signal handler's raise that lands in a garbage-collection callback (JAX registers one) is
    # printed and dropped by Python; the search must still stop, at its next phase boundary.
    space = parse_space({**TINY, "trials": 12, "batch": 3}, str(tmp_path / "space.yaml"))
    original, calls, dropped = Evaluator.evaluate, [], []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: dropped.append(u.exc_type))

    def dropped_stop(phase, info):
        gc.callbacks.remove(dropped_stop)
        errors.stop(signal.SIGTERM)

    def evaluate(self, cands, seeds, chunk):
        calls.append(len(cands))
        gc.callbacks.append(dropped_stop)
        gc.collect()  # Python: "Exception ignored in: <function dropped_stop ...>"
        return original(self, cands, seeds, chunk)

    monkeypatch.setattr(Evaluator, "evaluate", evaluate)
    try:
        with pytest.raises(errors.Interrupted):
            search.run_search(space, out_dir=tmp_path / "run")
    finally:
        errors.clear_stops()
    assert dropped == [errors.Interrupted] and calls == [3]
    storage = studies.storage_for(None, tmp_path / "run")
    states = [t.state.name for t in optuna.load_study(study_name="tiny", storage=storage).trials]
    assert len(states) == 3 and set(states) <= {"COMPLETE", "PRUNED"}  # that batch kept, no more


def test_what_a_stop_leaves_half_built_says_nothing_after_the_one_line(monkeypatch, capsys):
    # SIGTERM inside asyncio's event-loop constructor (orbax saving the base) left a loop whose
    # __del__ raised AttributeError, and coroutines never awaited: a traceback and warnings
    # after "interrupted". Both come as the stop's frames are freed, before the command returns.
    class HalfBuilt:
        def __del__(self):
            self._ssock.close()  # asyncio's loop, cut short before it set _ssock

    async def never_awaited():
        pass

    def cut_short(args):
        leftovers = [HalfBuilt(), never_awaited()]  # noqa: F841 (freed with this frame)
        errors.stop(signal.SIGTERM)

    monkeypatch.setattr(cli, "_cmd_energy", cut_short)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        code = main(["energy"])
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGTERM and not errors.stopped()
    assert err == "codesign: interrupted (SIGTERM); run the same command to resume\n"
    assert not [w for w in warned if "never awaited" in str(w.message)]
    # With no stop, the same failure is a bug worth seeing, and is printed.
    monkeypatch.setattr(cli, "_cmd_energy", lambda args: HalfBuilt() and 0)
    assert main(["energy"]) == 0 and "AttributeError" in capsys.readouterr().err


def _stop_cut_an_import_short(*args, **kwargs):
    # SIGTERM while Python imports a compiled module (it happened with tensorstore, which orbax
    # imports lazily): the handler's Interrupted reaches the caller as this ImportError instead.
    try:
        errors.stop(signal.SIGTERM)
    except errors.Interrupted as err:
        raise ImportError("initialization failed") from err


def test_a_stop_that_became_an_import_error_releases_the_batch(tmp_path, monkeypatch):
    space = parse_space({**TINY, "trials": 12, "batch": 3}, str(tmp_path / "space.yaml"))
    monkeypatch.setattr(Evaluator, "evaluate", _stop_cut_an_import_short)
    try:
        with pytest.raises(ImportError):
            search.run_search(space, out_dir=tmp_path / "run")
    finally:
        errors.clear_stops()
    storage = studies.storage_for(None, tmp_path / "run")
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    # The three asked trials were released (failed as interrupted, their params queued again),
    # as for any stop; without a pending stop the same ImportError leaves them to stale recovery.
    assert [t.state.name for t in trials[:3]] == ["FAIL"] * 3
    assert all("interrupted" in t.user_attrs["fail_reason"] for t in trials[:3])


def test_the_cli_exits_as_stopped_when_a_stop_became_an_import_error(monkeypatch, capsys):
    from codesign import cli

    monkeypatch.setattr(cli, "_cmd_energy", _stop_cut_an_import_short)
    assert cli.main(["energy"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == (
        "codesign: interrupted (SIGTERM); run the same command to resume\n"
    )
    # The same ImportError without a stop is a real error: it is not hidden.
    monkeypatch.setattr(cli, "_cmd_energy", lambda args: __import__("no_such_module_here"))
    with pytest.raises(ImportError):
        cli.main(["energy"])


def test_devices_flag_holds_for_its_command_only(monkeypatch, capsys):
    from codesign import cli
    from codesign.engine import core as engine

    assert cli.DEVICES_ENV == engine.DEVICES_ENV
    monkeypatch.delenv(engine.DEVICES_ENV, raising=False)
    assert main(["train", "none.json", "--devices", "0"]) == 2
    assert engine.DEVICES_ENV not in os.environ
    monkeypatch.setenv(engine.DEVICES_ENV, "1")
    assert main(["train", "none.json", "--devices", "7"]) == 2
    assert os.environ[engine.DEVICES_ENV] == "1"
    assert capsys.readouterr().err.count("--devices (or CODESIGN_DEVICES)") == 2


def _drop_a_stop(signum=signal.SIGINT):
    """What Ctrl-C does when it lands in JAX's gc callback: Python drops the raise."""

    def dropped_stop(phase, info):
        gc.callbacks.remove(dropped_stop)
        errors.stop(signum)

    gc.callbacks.append(dropped_stop)
    gc.collect()


def _after(function, signum=signal.SIGINT):
    def wrapped(*args, **kwargs):
        out = function(*args, **kwargs)
        _drop_a_stop(signum)
        return out

    return wrapped


@pytest.mark.parametrize("command", ["energy", "pareto", "export", "train"])
def test_a_stop_python_drops_ends_every_command_with_nothing_written(
    command, existing, tmp_path, monkeypatch, capsys
):
    from codesign import cli
    from codesign.hardware import report
    from codesign.search.space import SearchSpace
    from tests.test_hostile import _design_file

    run, out = str(existing["run"]), tmp_path / "out"
    if command == "energy":
        monkeypatch.setattr(report, "energy_summary", _after(report.energy_summary))
        argv = ["energy", "--layers", "64x32,32x10"]
    elif command in ("pareto", "export"):
        monkeypatch.setattr(studies, "study_space", _after(studies.study_space))
        argv = [command, "--out", run] + (
            ["--trial", "1", "-o", str(out)] if command == "export" else []
        )
        argv += ["--plot", str(tmp_path / "p.html")] if command == "pareto" else []
    else:  # the fine-tune itself is not what is checked here: a stand-in returns at once

        class Trained:
            def train(self, candidate, seed):
                _drop_a_stop(signal.SIGTERM)
                return dataclasses.make_dataclass("R", [("diverged", bool)])(False), [], []

        monkeypatch.setattr(SearchSpace, "evaluator", lambda self, **kw: Trained())
        argv = ["train", _design_file(tmp_path), "--out", str(out)]
    signum = signal.SIGTERM if command == "train" else signal.SIGINT
    try:
        assert cli.main(argv) == 128 + signum
    finally:
        errors.clear_stops()
    captured = capsys.readouterr()
    err = "\n" + captured.err  # lines logged before the stop come first
    name = signal.Signals(signum).name
    assert err.endswith(f"\ncodesign: interrupted ({name}); run the same command to resume\n")
    assert captured.out == "" and not out.exists() and not (tmp_path / "p.html").exists()
    assert existing["journal"].read_bytes() == existing["bytes"]


def test_same_seed_gives_the_same_front(tmp_path):
    space = parse_space({**TINY, "trials": 6}, str(tmp_path / "space.yaml"))
    fronts = []
    for run in ("a", "b"):
        study = search.run_search(space, out_dir=tmp_path / run)
        fronts.append([(t.params, t.values) for t in search_front(study)])
    assert fronts[0] == fronts[1] and fronts[0]


def search_front(study):
    from codesign.search import pareto

    return pareto.front(study)


def test_a_trial_asked_but_never_claimed_is_recovered_after_its_grace(tmp_path, monkeypatch):
    # On RDB storages a trial is asked and claimed (its worker attr) in two writes; a worker
    # killed between them leaves a RUNNING trial nobody owns. It must not hold the total back.
    space = parse_space({**TINY, "trials": 3, "batch": 3}, str(tmp_path / "space.yaml"))
    study = search.run_search(space, trials=0, out_dir=tmp_path / "run")
    orphan = study.ask()  # asked, never claimed
    assert studies.unclaimed(study)
    monkeypatch.setattr(studies, "UNCLAIMED_GRACE_S", 0.0)
    study = search.run_search(space, out_dir=tmp_path / "run")
    states = {t.number: t.state.name for t in study.trials}
    assert states[orphan.number] == "FAIL"
    assert "stale" in study.trials[orphan.number].user_attrs["fail_reason"]
    assert sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == 3
    assert not studies.unclaimed(study)
