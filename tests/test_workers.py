"""Several workers on one study, and a worker killed mid fine-tune: nothing lost, nothing redone."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from codesign.search import study as studies
from tests.polling import poll_while_running
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


FINISHED = ("COMPLETE", "PRUNED")  # pruned: infeasible (a constraint broken), still finished


def _study(run):
    """The study in run/, or None while another process has made the file but not yet the study
    record (a reader can open the journal between the two)."""
    if not (run / studies.JOURNAL_NAME).exists():
        return None
    try:
        return optuna.load_study(study_name="tiny", storage=studies.storage_for(None, run))
    except KeyError:
        return None


POSTGRES = os.environ.get("CODESIGN_TEST_POSTGRES")
BACKENDS = [
    "journal",
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(
            not POSTGRES, reason="CODESIGN_TEST_POSTGRES not set (.ci/run starts a server)"
        ),
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_workers_share_one_study_exactly(tmp_path, backend):
    space, run = _space(tmp_path), tmp_path / "run"
    env = _env(tmp_path)
    name = f"tiny-{backend}-{os.getpid()}-{time.time_ns()}"
    if backend == "journal":
        flags, storage = ["--out", str(run), "--study", name], studies.storage_for(None, run)
    else:
        flags = ["--storage", POSTGRES, "--study", name, "--out", str(run)]
        storage = studies.storage_for(POSTGRES, run)
    # The first process creates the study (and the cached base) and runs its share ...
    first = subprocess.Popen(
        _cli("search", str(space), "--trials", "30", *flags),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    poll_while_running(
        lambda: name in [s.study_name for s in optuna.get_all_study_summaries(storage)],
        first,
        every=0.3,
    )
    # ... two more join it as workers.
    workers = [
        subprocess.Popen(
            _cli("worker", *flags),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    assert first.wait(timeout=600) == 0, first.stderr.read()
    for w in workers:
        assert w.wait(timeout=600) == 0, w.stderr.read()
    trials = optuna.load_study(study_name=name, storage=storage).trials
    complete = [t for t in trials if t.state.name in FINISHED]
    assert len(complete) == 30
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers)
    assert len({t.user_attrs["worker"] for t in complete}) >= 2, "the work was shared"


def test_killed_worker_is_recovered_without_recomputing(tmp_path):
    # 6000 steps: a batch's fine-tune takes ~2 s on 2 cores, a window the poll below cannot
    # miss (600 steps took 0.17 s, and a run could end between two looks).
    space = _space(
        tmp_path, finetune={"steps": 6000, "batch_size": 32, "eval_draws": 1}, trials=9, batch=3
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
    def running_after_complete():
        study = _study(run)
        trials = study.trials if study else []
        running = [t.number for t in trials if t.state.name == "RUNNING"]
        complete = {t.number: t.values for t in trials if t.state.name in FINISHED}
        return (running, complete) if complete and running else None

    found = poll_while_running(running_after_complete, proc, every=0.1)
    killed_running, done_before = found or ([], {})
    if found:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert killed_running, "never saw a running trial to kill"

    assert (
        subprocess.run(
            _cli("search", str(space), "--out", str(run)), env=env, capture_output=True, timeout=600
        ).returncode
        == 0
    )
    trials = _study(run).trials
    complete = [t for t in trials if t.state.name in FINISHED]
    assert len(complete) == 9
    for number in killed_running:
        killed = trials[number]
        assert killed.state.name == "FAIL"
        assert killed.user_attrs["fail_reason"].startswith("stale")
        assert any(
            t.params == killed.params and t.state.name in FINISHED
            for t in trials
            if t.number > number
        ), "the killed trial's candidate is asked again"
    for number, values in done_before.items():
        assert trials[number].values == values, "a completed trial was recomputed"


def test_killed_pretraining_leaves_no_half_written_base(tmp_path):
    script = (
        "import sys\n"
        "from codesign.data import transfer_split\n"
        "from codesign.engine import PretrainConfig, load_or_pretrain\n"
        "from codesign.nn import NetworkSpec\n"
        "task = transfer_split('digits')\n"
        "spec = NetworkSpec('mlp', task.source.input_shape, 5, (16, 16))\n"
        "print('start', flush=True)\n"
        "config = PretrainConfig(steps=int(sys.argv[2]))\n"
        "load_or_pretrain(spec, task.source, config, sys.argv[1])\n"
    )
    cache = tmp_path / "bases"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(cache), "200000"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "start"
    time.sleep(3)  # inside pretraining
    proc.kill()
    proc.wait(timeout=30)
    assert not [p for p in cache.glob("base-*") if p.is_dir()], "a half-written base was left"
    done = subprocess.run([sys.executable, "-c", script, str(cache), "50"], timeout=300)
    assert done.returncode == 0
    assert len([p for p in cache.glob("base-*") if p.is_dir()]) == 1
