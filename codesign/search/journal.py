"""An Optuna journal file whose writes inside `batch()` reach the disk together.

Optuna's journal file appends and fsyncs every single operation (create a trial, set a param,
set an attribute, tell): about 15 fsyncs per trial, 1-2 ms each. A search asks and tells whole
batches, so it wraps each bookkeeping phase in `batch()`: the file lock is held for the phase,
operations are buffered in memory (and replayed from there, so the study sees them at once), and
the phase ends with one write and one fsync. Holding the lock means no other worker appends in
between, so the log numbers this process replayed are exactly those the file gets. Phases are
short (asking, telling), never a fine-tune; a process killed inside one loses only that phase's
unwritten operations, never a told trial.

The lock is an flock(2) that the kernel drops when its process dies (`FlockLock`): a search
stopped by SIGTERM or kill -9 never leaves a stale lock behind. The backend holds the lock it
hands to Optuna, so it takes and releases it without reaching into Optuna's privates; the one
inherited detail it relies on is the parent's index of log line offsets (`_log_number_offset`),
which tells how many lines the file held when the lock was taken. Paths are made absolute.

Nothing is lost on a crash or a full disk:

- A write that fails (ENOSPC, EIO, a quota) is undone: the file is cut back to its size before
  the write, under the lock, and the error says so in one line (`JournalWriteError`); the study
  stays as it was before the batch, readable and resumable.
- A record cut off by a crash mid-write (no final newline, or a last line that is not JSON) is
  never built upon: every write first checks the file's tail under the lock, moves cut-off bytes
  to ``study.journal.torn-<time>``, cuts the file back to its last complete record and says so
  in one line (`repair`); Optuna's reader already skips such a last line, so the study read
  before is the study kept. A broken record before the last one is refused by the reader.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time

from optuna.storages.journal import JournalFileBackend, JournalStorage

from codesign.errors import CodesignError

__all__ = [
    "BatchedJournalFileBackend",
    "BatchedJournalStorage",
    "FlockLock",
    "JournalWriteError",
    "batch",
    "repair",
]


class JournalWriteError(CodesignError):
    """A journal write failed (disk full, I/O error) and was undone: the study is as before."""


def repair(path: str, say=None) -> int:
    """Cut a journal back to its last complete record; returns the bytes cut (0: it was whole).

    Call with the journal's lock held (every write does, first). Reads the file's tail only. The
    cut bytes are kept in ``PATH.torn-<time>``, and `say` (default: print to stderr) gets one
    line about them. Where nothing can be written the file is left as it is: Optuna's reader
    ignores a cut-off last line, and the write that follows fails in one line.
    """
    size = os.path.getsize(path)
    window = 1 << 16
    with open(path, "rb") as f:
        while True:
            start = max(0, size - window)
            f.seek(start)
            tail = f.read()
            end = tail.rfind(b"\n")
            if end == len(tail) - 1:  # ends with a newline: is the last line a record?
                begin = tail.rfind(b"\n", 0, end)
                if begin < 0 and start > 0:
                    window *= 16  # a last line longer than the window: read more
                    continue
                try:
                    json.loads(tail[begin + 1 :])
                    return 0
                except ValueError:  # a whole line of garbage at the end: cut it too
                    keep = start + begin + 1
            elif end < 0 and start > 0:
                window *= 16
                continue
            else:  # a last line with no newline: cut off mid-write
                keep = start + end + 1
            f.seek(keep)
            torn = f.read()
            break
    if not torn:
        return 0
    saved = f"{path}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        with open(saved, "wb") as f:
            f.write(torn)
            f.flush()
            os.fsync(f.fileno())
        with open(path, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(saved)
        return 0
    (say or _stderr)(
        f"{path}: its last record was cut off ({len(torn)} bytes, from a crash or a full disk "
        f"mid-write); moved to {saved}; the study goes on from the records before it"
    )
    return len(torn)


def _stderr(line: str) -> None:
    print(f"codesign: {line}", file=sys.stderr)


class FlockLock:
    """An flock(2) on `PATH.flock`, the journal's lock for codesign's own writers.

    The kernel releases it when its process exits, however it exits (SIGTERM, kill -9, a crash):
    a killed search never leaves a stale lock for the next run to wait on, and a waiting process
    blocks in the kernel instead of polling. (Optuna's default lock is a symlink whose removal
    depends on the process's cleanup running; it is not used here.)
    """

    def __init__(self, journal_path: str):
        self.path = journal_path + ".flock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class BatchedJournalFileBackend(JournalFileBackend):
    """`JournalFileBackend` with a `batch()` context that writes its operations in one fsync."""

    def __init__(self, file_path: str):
        file_path = os.path.abspath(file_path)
        self.lock = FlockLock(file_path)
        super().__init__(file_path, lock_obj=self.lock)
        self.path = file_path
        self._pending: list | None = None
        self._file_logs = 0

    @contextlib.contextmanager
    def batch(self):
        if self._pending is not None:  # nested: the outer batch writes
            yield
            return
        self.lock.acquire()
        try:
            repair(self.path)  # never build on a record a crash cut off
            known = max(self._log_number_offset)
            self._file_logs = known + sum(1 for _ in super().read_logs(known))
            self._pending = []
            yield
            if self._pending:
                self._write(self._pending)
        finally:
            self._pending = None
            self.lock.release()

    def _write(self, logs: list) -> None:
        """Append `logs` in one write and one fsync (the lock held); a failed write is undone."""
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            try:
                done = 0
                while done < len(data):  # unbuffered: nothing left to flush at close
                    done += os.write(fd, data[done:])
                os.fsync(fd)
            except OSError as err:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # never leave a cut-off record behind
                    os.fsync(fd)
                raise JournalWriteError(
                    f"{self.path}: could not save the study's last {len(logs)} operations "
                    f"({err.strerror or err}); they were undone and the study is as it was "
                    "before them: free space (or fix the disk) and run the command again"
                ) from None
        finally:
            os.close(fd)
        for _ in super().read_logs(self._file_logs):  # index the new lines' offsets
            pass

    def append_logs(self, logs) -> None:
        if self._pending is not None:
            self._pending.extend(logs)
            return
        self.lock.acquire()
        try:
            repair(self.path)
            self._file_logs = max(self._log_number_offset)
            self._file_logs += sum(1 for _ in super().read_logs(self._file_logs))
            self._write(logs)
        finally:
            self.lock.release()

    def read_logs(self, log_number_from: int):
        if self._pending is None:
            yield from super().read_logs(log_number_from)
            return
        if log_number_from < self._file_logs:  # the file cannot change while we hold the lock
            yield from super().read_logs(log_number_from)
        yield from self._pending[max(0, log_number_from - self._file_logs) :]


class BatchedJournalStorage(JournalStorage):
    """An Optuna journal storage on a `BatchedJournalFileBackend`, with its `batch()`."""

    def __init__(self, path: str):
        self.backend = BatchedJournalFileBackend(path)
        super().__init__(self.backend)

    def batch(self):
        return self.backend.batch()


def batch(storage):
    """`storage`'s batch context when it is a batched journal, else a no-op context."""
    if isinstance(storage, BatchedJournalStorage):
        return storage.batch()
    return contextlib.nullcontext()
