"""Writing files so that a full disk or a read-only folder costs one line, never a part-file.

load_yaml        a YAML file (a search space) read safely, a key given twice refused
writable_folder  checked before any work: a file can be made in the folder (or in the parent
                 that will hold it), leaving nothing behind
atomic_write     a file written under a temporary name beside it, flushed to disk, then renamed
                 over the old one: readers see the old file or the whole new one; a failed write
                 removes its temporary file and leaves the old file as it was

Both raise `CodesignError` (one line naming the file and the reason: the CLI exits with code 2).
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Callable

import yaml

from codesign.errors import CodesignError

__all__ = ["atomic_write", "load_yaml", "writable_folder"]


class _DuplicateKey(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that names a key twice (PyYAML keeps the last
    silently, so an edit of the first copy would be ignored)."""

    def construct_mapping(self, node, deep=False):
        if not any(k.tag == "tag:yaml.org,2002:merge" for k, _ in node.value):  # `<<` overrides
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(
                            f"key {key!r} appears twice (lines {seen[key]} and {line})"
                        )
                    seen[key] = line
                except TypeError:  # an unhashable key: the base loader says so
                    break
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: pathlib.Path, what: str):
    """The YAML document in `path` (safe tags only), or one line saying what is wrong with it."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as err:
        raise CodesignError(f"{path}: {err}") from None
    except UnicodeDecodeError:
        raise CodesignError(f"{path}: not a text (UTF-8) file; {what} is YAML") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise CodesignError(f"{path}:{where} YAML syntax error: {problem}") from None


def writable_folder(folder: str | os.PathLike, what: str, make: bool = False) -> pathlib.Path:
    """`folder`, after checking a file can be made in it (or, while it does not exist yet, a
    folder in its nearest existing parent: nothing is left behind by the check); with `make`,
    the folder is then made."""
    folder = pathlib.Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CodesignError(f"{what} {str(folder)!r} exists and is not a directory")
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, f"{probe} is not a directory")
        if probe == folder:
            with tempfile.TemporaryFile(dir=folder):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(dir=probe))
        if make:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CodesignError(
            f"{what} {str(folder)!r}: not a writable folder ({err.strerror or err})"
        ) from None
    return folder


def atomic_write(path: str | os.PathLike, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """Call ``write(tmp)`` to write the file at a temporary path, then rename it to `path`."""
    path = pathlib.Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(pathlib.Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            pathlib.Path(tmp).unlink(missing_ok=True)
        raise CodesignError(f"{path}: could not write it ({err.strerror or err})") from None
    return path
