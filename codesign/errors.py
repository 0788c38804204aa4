"""The one user-facing error type: the CLI prints its message as one line and exits with code 2;
and the stop by signal, which the search also checks for between its phases."""

import signal


class CodesignError(ValueError):
    """Bad user input (a file, key, value or choice), said in one line that names it."""


class Interrupted(KeyboardInterrupt):
    """A stop by signal (SIGTERM from a job scheduler or `kill`), handled like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_stops: list[int] = []  # signals received by `stop` in this process, until `clear_stops`


def stop(signum, frame=None):
    """Signal handler: raise `Interrupted`, and remember the signal. Python prints and drops an
    exception raised while it runs a garbage-collection callback or a `__del__` (JAX has both);
    `check_stop` raises it again at the search's next phase boundary."""
    _stops.append(signum)
    raise Interrupted(signum)


def check_stop() -> None:
    """Raise `Interrupted` if `stop` ran since the last `clear_stops`."""
    if stopped():
        raise Interrupted(_stops[0])


def stopped() -> bool:
    """Whether `stop` ran since the last `clear_stops`."""
    return bool(_stops)


def caused_by_stop(err: BaseException) -> bool:
    """Whether `err` is a stop, or came while one was pending: a stop raised inside an import of
    a compiled module reaches the caller as ImportError("initialization failed"), not as itself."""
    return isinstance(err, KeyboardInterrupt) or stopped()


def stop_signal(err: BaseException) -> int:
    """The signal behind a stop (`caused_by_stop(err)`); SIGINT for a plain Ctrl-C."""
    return getattr(err, "signum", None) or (_stops[0] if _stops else int(signal.SIGINT))


def clear_stops() -> None:
    _stops.clear()
