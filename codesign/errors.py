"""The one user-facing error type: the CLI prints its message as one line and exits with code 2."""


class CodesignError(ValueError):
    """Bad user input (a file, key, value or choice), said in one line that names it."""
