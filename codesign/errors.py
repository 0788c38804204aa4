"""The one user-facing error type: the CLI prints its message as one line and exits with code 2."""


class CodesignError(ValueError):
    """Bad user input (a file, key, value or choice), said in one line that names it."""


class Interrupted(KeyboardInterrupt):
    """A stop by signal (SIGTERM from a job scheduler or `kill`), handled like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
