"""Where an experiment writes its results JSON, and the stamp every results JSON carries.

Every claim and benchmark script records the commit it ran at (and whether the tree was dirty),
the versions of the packages that decide its numbers, its mode, and the machine (cores, load
average at start and end: timings on a shared machine are only comparable within one run).
Full runs write into `experiments/results/`; `--quick` runs (smoke tests) write into a fresh
temporary directory unless `--out` is given, so they never overwrite the committed results.
`compilation_cache` gives a benchmark a persistent XLA cache (JAX's own where one is set, else one
of its own) and then puts JAX's settings back.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


@contextlib.contextmanager
def compilation_cache(path: pathlib.Path, min_compile_s: float = 0.5):
    """A persistent compilation cache for the block: the one JAX is set to already (yours, or the
    test session's, which has compiled the tests' tiny space before), else one at `path`; only
    programs that took `min_compile_s` to compile are stored (0 keeps every one, also small ones
    JAX skips by default). Then JAX's settings as they were: a cache left pointing into a
    deleted temporary directory breaks every later compile's write."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cache

    from codesign.engine import finetune as transfer

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {name: getattr(jax.config, name) for name in names}
    # A cache already set, and a lower setting (the tests'), stand.
    transfer.enable_compilation_cache(saved[names[0]] or path, min_compile_s)
    try:
        yield
    finally:
        cache.reset_cache()
        for name, value in saved.items():
            jax.config.update(name, value)


PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "optuna",
    "numpy",
    "scipy",
    "scikit-learn",
    "torch",
    "aihwkit",
)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_sha() -> str:
    """HEAD's commit, with '-dirty' when tracked code (codesign/, experiments/ but its results)
    differs from it."""
    sha = _git("rev-parse", "HEAD") or "unknown"
    code = ("codesign", "experiments", ":(exclude)experiments/results")
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", *code)
    return sha + ("-dirty" if dirty else "")


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages (on 2 shared cores, >2 means contended timings)."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    """The processor's name (Linux's /proc/cpuinfo; else `platform.processor()`): timings and
    peak FLOP/s differ between machines of the same core count."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def stamp(mode: str) -> dict:
    """What a results JSON needs to be reproduced: commit, packages, mode, machine. Take it when
    the run starts (the commit the code was loaded from); `finish` adds the end load average."""
    return {
        "git_sha": git_sha(),
        "versions": versions(),
        "mode": mode,
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_start": load(),
        },
    }


def finish(stamped: dict) -> dict:
    """The stamp with the load average at the end of the run added."""
    return {**stamped, "machine": {**stamped["machine"], "load_avg_end": load()}}


def out_dir(out: str | None, quick: bool, name: str) -> pathlib.Path:
    """`--out` if given; else a new temporary directory for quick runs, results/ for full ones."""
    if out:
        path = pathlib.Path(out)
    elif quick:
        path = pathlib.Path(tempfile.mkdtemp(prefix=f"{name}-"))
    else:
        path = RESULTS
    path.mkdir(parents=True, exist_ok=True)
    return path


def write(result: dict, directory: pathlib.Path, name: str) -> pathlib.Path:
    """`directory/name.json`, indented, ending in a newline."""
    path = directory / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
