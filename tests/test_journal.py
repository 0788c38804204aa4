"""The batched journal: one fsync per batch, same study as Optuna's own journal, safe with peers."""

import contextlib
import os
import subprocess
import sys
import textwrap

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage

from codesign.search.journal import BatchedJournalStorage, batch
from codesign.search.journal import repair as journal_repair

WORKER = textwrap.dedent(
    """
    import sys, optuna
    from optuna.storages.journal import JournalStorage
    from codesign.search.journal import BatchedJournalStorage, batch
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


# --- nothing lost: cut-off records and failed writes ---


def _study_file(path, trials: int) -> None:
    """A journal of `trials` complete trials, one batch (one record line per operation) each."""
    storage = BatchedJournalStorage(str(path))
    study = optuna.create_study(
        study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(0)
    )
    for i in range(trials):
        with batch(storage):
            trial = study.ask()
            trial.suggest_float("x", 0, 1)
            trial.set_user_attr("i", i)
            study.tell(trial, float(i))


def _resume(path, more: int) -> optuna.Study:
    """Open the journal as a search does, add `more` complete trials, then read it back plainly."""
    storage = BatchedJournalStorage(str(path))
    study = optuna.load_study(study_name="s", storage=storage)
    for _ in range(more):
        with batch(storage):
            trial = study.ask()
            study.tell(trial, trial.suggest_float("x", 0, 1))
    return optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))


def _complete(study) -> list:
    done = optuna.trial.TrialState.COMPLETE
    return [(t.params, t.value) for t in study.trials if t.state == done]


def test_a_journal_cut_at_every_byte_of_its_last_record_resumes_with_nothing_lost(tmp_path, capfd):
    whole = tmp_path / "whole.journal"
    _study_file(whole, 4)
    content = whole.read_bytes()
    last = content.rstrip(b"\n").rfind(b"\n") + 1  # where the last record starts
    before = _complete(_resume_copy(tmp_path, content[:last], 0))
    assert len(before) == 3  # the last record is the fourth trial's tell
    for cut in range(last + 1, len(content)):  # every partial last record
        study = _resume_copy(tmp_path, content[:cut], 2)
        got = _complete(study)
        assert got[:3] == before and len(got) == 5, cut
        assert "its last record was cut off" in capfd.readouterr().err
        torn = list(tmp_path.glob("cut.journal.torn-*"))
        assert len(torn) == 1 and torn[0].read_bytes() == content[last:cut]
        torn[0].unlink()
    # A whole last line that is not JSON (a torn write ending in garbage) is cut off too.
    study = _resume_copy(tmp_path, content + b'{"op_code": 4, "broken\n', 1)
    assert len(_complete(study)) == 5
    # The whole file: nothing cut, nothing said.
    capfd.readouterr()
    assert len(_complete(_resume_copy(tmp_path, content, 1))) == 5
    assert not capfd.readouterr().err and not list(tmp_path.glob("cut.journal.torn-*"))


def _resume_copy(tmp_path, content: bytes, more: int) -> optuna.Study:
    path = tmp_path / "cut.journal"
    path.unlink(missing_ok=True)
    for stale in tmp_path.glob("cut.journal.*"):
        stale.unlink()
    path.write_bytes(content)
    return _resume(path, more)


def test_a_broken_record_inside_the_journal_is_refused_not_skipped(tmp_path):
    from codesign.errors import CodesignError
    from codesign.search.study import _journal

    path = tmp_path / "study.journal"
    _study_file(path, 3)
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][: len(lines[2]) // 2]  # a record in the middle, cut short
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(CodesignError, match="not an Optuna journal"):
        _journal(path)
    assert path.read_bytes() == b"\n".join(lines)  # nothing changed
    assert not list(tmp_path.glob("study.journal.torn-*"))


@pytest.mark.parametrize("fails_after", [0, 7, 50])
def test_a_write_that_fails_with_enospc_is_undone_and_the_study_resumes(
    tmp_path, monkeypatch, fails_after
):
    """A full disk part-way through a batch's write: the bytes that made it are cut back off, the
    error is one line, and the study reads and resumes as it was before the batch."""
    import errno

    from codesign.errors import CodesignError
    from codesign.search import journal

    path = tmp_path / "study.journal"
    _study_file(path, 3)
    content = path.read_bytes()
    real_write = journal.os.write

    def full_disk(fd, data):
        if len(data) > fails_after:  # some bytes reach the disk, then it is full
            if fails_after:
                real_write(fd, data[:fails_after])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    storage = BatchedJournalStorage(str(path))
    study = optuna.load_study(study_name="s", storage=storage)
    monkeypatch.setattr(journal.os, "write", full_disk)
    with (
        pytest.raises(CodesignError, match="No space left on device.*undone") as err,
        batch(storage),
    ):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 1))
    assert "\n" not in str(err.value)
    assert path.read_bytes() == content  # the study is as it was before the batch
    monkeypatch.setattr(journal.os, "write", real_write)
    assert len(_complete(_resume(path, 2))) == 5


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs, where the machine lets this process mount one (root in a container that
    allows it); skipped elsewhere (the injected ENOSPC above covers the same path)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_real_full_disk_leaves_the_study_readable_and_resumable(small_disk):
    from codesign.errors import CodesignError

    path = small_disk / "study.journal"
    _study_file(path, 3)
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    for chunk in (4096, 1):  # fill the disk to the last byte
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * chunk):
                pass
    os.close(fd)
    content = path.read_bytes()
    storage = BatchedJournalStorage(str(path))
    study = optuna.load_study(study_name="s", storage=storage)
    with pytest.raises(CodesignError, match="No space left on device"), batch(storage):
        for _ in range(40):  # more than the last free bytes hold
            trial = study.ask()
            trial.set_user_attr("padding", "x" * 200)
            study.tell(trial, trial.suggest_float("x", 0, 1))
    assert path.read_bytes() == content
    filler.unlink()  # space freed: the same study resumes
    assert len(_complete(_resume(path, 2))) == 5


def test_a_cut_off_record_longer_than_the_tail_read_is_found(tmp_path):
    """The tail is read in a 64 KiB window first: a last record longer than that still counts."""
    path = tmp_path / "big.journal"
    _study_file(path, 2)
    storage = BatchedJournalStorage(str(path))
    study = optuna.load_study(study_name="s", storage=storage)
    with batch(storage):
        trial = study.ask()
        trial.set_user_attr("big", "x" * 300_000)
        study.tell(trial, 1.0)
    content = path.read_bytes()
    big = content.rfind(b'"big"')
    for cut in (big + 100_000, len(content) - 1):
        path.write_bytes(content[:cut])
        assert (
            journal_repair(str(path), say=lambda line: None)
            == cut - content.rfind(b"\n", 0, cut) - 1
        )
        assert path.read_bytes().endswith(b"\n") and len(_complete(_resume(path, 1))) == 3
