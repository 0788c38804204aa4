"""Running `codesign` in a test, as ``(exit code, stdout, stderr)``: as its own process, or in
this one (quicker by an interpreter start; an exception escaping `main` fails the test here as
it would print a traceback there)."""

import subprocess
import sys

from codesign.cli import main


def as_process(argv: list[str]) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "codesign.cli", *argv], capture_output=True, text=True, timeout=120
    )
    return proc.returncode, proc.stdout, proc.stderr


def in_process(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err
