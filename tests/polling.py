"""Waiting on subprocesses without reading the clock: a test waits as long as the process it
watches runs (each ends on its own), never for a fixed number of seconds, so a loaded machine
makes it slower, not failed."""

import time


def poll_while_running(check, *procs, every: float = 0.2):
    """``check()`` until it gives a truthy value or every one of ``procs`` has exited (then the
    last check, made after they exited, is returned)."""
    while True:
        running = any(p.poll() is None for p in procs)
        found = check()
        if found or not running:
            return found
        time.sleep(every)
