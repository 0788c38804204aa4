"""The batched journal: one fsync per batch, same study as Optuna's own journal, safe with peers."""

import subprocess
import sys
import textwrap

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

from codesign.journal import BatchedJournalStorage, batch

WORKER = textwrap.dedent(
    """
    import sys, optuna
    from optuna.storages.journal import JournalStorage
    from codesign.journal import BatchedJournalStorage, batch
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = BatchedJournalStorage(sys.argv[1])
    study = optuna.load_study(study_name="s", storage=storage)
    for _ in range(5):
        with batch(storage):
            trials = [study.ask() for _ in range(4)]
            xs = [t.suggest_float("x", 0, 1) for t in trials]
        with batch(storage):
            for t, x in zip(trials, xs):
                t.set_user_attr("pid", sys.argv[2])
                study.tell(t, x * x)
    """
)


def test_batched_writes_replay_like_optunas_own_journal(tmp_path):
    path = str(tmp_path / "a.journal")
    storage = BatchedJournalStorage(path)
    study = optuna.create_study(
        study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(0)
    )
    with batch(storage):
        trials = [study.ask() for _ in range(3)]
        for t in trials:
            t.suggest_int("n", 1, 9)
        assert len(study.trials) == 3, "buffered operations are visible at once"
    with batch(storage):
        for i, t in enumerate(trials):
            study.tell(t, float(i))
    plain = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(path)))
    assert [t.state.name for t in plain.trials] == ["COMPLETE"] * 3
    assert [t.params for t in plain.trials] == [t.params for t in study.trials]
    assert [t.value for t in plain.trials] == [0.0, 1.0, 2.0]


def test_two_processes_batching_into_one_journal_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.journal")
    storage = BatchedJournalStorage(path)
    optuna.create_study(study_name="s", storage=storage)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, path, str(i)]) for i in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    study = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(path)))
    numbers = [t.number for t in study.trials]
    assert len(numbers) == 40 and sorted(numbers) == list(range(40))
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert {t.user_attrs["pid"] for t in study.trials} == {"0", "1"}
