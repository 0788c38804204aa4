"""Several workers on one study, and a worker killed mid fine-tune: nothing lost, nothing redone."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from codesign import search
from tests.test_search import TINY

pytestmark = pytest.mark.slow


def _space(tmp_path, **changes):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def _env(tmp_path):
    return {**os.environ, "CODESIGN_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}


def _cli(*argv):
    return [sys.executable, "-m", "codesign.cli", *argv]


def _study(run):
    return optuna.load_study(study_name="tiny", storage=search.storage_for(None, run))


def test_three_workers_share_one_journal_exactly(tmp_path):
    space, run = _space(tmp_path), tmp_path / "run"
    env = _env(tmp_path)
    # The first process creates the study (and the cached base) and runs its share ...
    first = subprocess.Popen(
        _cli("search", str(space), "--trials", "30", "--out", str(run)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = run / search.JOURNAL_NAME
    deadline = time.time() + 120
    while not journal.exists() and time.time() < deadline:
        time.sleep(0.2)
    # ... two more join it as workers.
    workers = [
        subprocess.Popen(
            _cli("worker", "--out", str(run), "--study", "tiny"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    assert first.wait(timeout=600) == 0
    for w in workers:
        assert w.wait(timeout=600) == 0, w.stderr.read()
    trials = _study(run).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 30
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers)
    assert len({t.user_attrs["worker"] for t in complete}) >= 2, "the work was shared"


def test_killed_worker_is_recovered_without_recomputing(tmp_path):
    space = _space(
        tmp_path, finetune={"steps": 600, "batch_size": 32, "eval_draws": 1}, trials=9, batch=3
    )
    run = tmp_path / "run"
    env = _env(tmp_path)
    proc = subprocess.Popen(
        _cli("search", str(space), "--out", str(run)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # Wait until one batch is complete and the next is running, then kill -9 mid fine-tune.
    deadline = time.time() + 300
    killed_running, done_before = [], {}
    while time.time() < deadline:
        time.sleep(0.5)
        if not (run / search.JOURNAL_NAME).exists():
            continue
        trials = _study(run).trials
        running = [t.number for t in trials if t.state.name == "RUNNING"]
        complete = {t.number: t.values for t in trials if t.state.name == "COMPLETE"}
        if complete and running:
            os.killpg(proc.pid, signal.SIGKILL)
            killed_running, done_before = running, complete
            break
    proc.wait(timeout=60)
    assert killed_running, "never saw a running trial to kill"

    assert (
        subprocess.run(
            _cli("search", str(space), "--out", str(run)), env=env, capture_output=True, timeout=600
        ).returncode
        == 0
    )
    trials = _study(run).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 9
    for number in killed_running:
        killed = trials[number]
        assert killed.state.name == "FAIL"
        assert killed.user_attrs["fail_reason"].startswith("stale")
        assert any(
            t.params == killed.params and t.state.name == "COMPLETE"
            for t in trials
            if t.number > number
        ), "the killed trial's candidate is asked again"
    for number, values in done_before.items():
        assert trials[number].values == values, "a completed trial was recomputed"
