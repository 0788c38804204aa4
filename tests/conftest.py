"""Strict JAX for the whole suite: implicit rank promotion is a bug here, not a convenience.

One persistent XLA compilation cache for the whole test session, this process and every
subprocess it starts (`JAX_COMPILATION_CACHE_DIR`, read when JAX is imported): end-to-end tests
that run the same spaces in fresh processes (signals, workers, benchmarks' children) compile
each program once per session instead of once per process. A directory of its own, removed at
exit, so no test reads a cache it did not fill. Set JAX_COMPILATION_CACHE_DIR yourself to keep it.
Every program is stored, also the small ones JAX skips by default (under 1 s of compile): about
three quarters of a test's time was compiling, and a module reloads its programs from disk after
`jax.clear_caches` (below) instead of compiling them again.
"""

import atexit
import ctypes
import gc
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _xla = tempfile.mkdtemp(prefix="codesign-tests-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _xla
    atexit.register(shutil.rmtree, _xla, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402  (after the cache directory is chosen: JAX reads it at import)
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# The heaviest test modules first, largest first (each one's share of a full run, read off
# `--durations=0` on a 2-core machine, 2026-12-07). Two xdist workers take whole modules
# (--dist loadscope), each taking the next module when it is free: with the long ones first, the
# suite ends on short ones, instead of one worker running a long module alone while the other
# waits. test_devices is one 2-3 minute subprocess that nothing can split: it starts first.
HEAVIEST_FIRST = (
    "test_devices.py",
    "test_resnet.py",
    "test_search.py",
    "test_bench_finetune.py",
    "test_signals.py",
    "test_early_stop.py",
    "test_benchmarks.py",
    "test_docs_commands.py",
    "test_data_formats.py",
    "test_workers.py",
    "test_nnx_model.py",
    "test_transfer.py",
    "test_validate_energy.py",
    "test_experiments_b.py",
    "test_gradient.py",
    "test_analog.py",
    "test_failures.py",
    "test_screening.py",
    "test_experiments_a.py",
    "test_cli_energy.py",
    "test_claim_analog_split.py",
    "test_networks.py",
    "test_refactor_front.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest in order


try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: nothing to trim
    _LIBC = None


def _trim() -> None:
    """Hand freed heap pages back to the system (glibc keeps them for reuse otherwise)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


@pytest.fixture(autouse=True)
def _release_freed_memory():
    """After each test: a worker's memory is what its live objects need, not the high-water
    mark of every test before (a few milliseconds a test)."""
    yield
    _trim()


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each module: drop JAX's compiled programs and traces (a later module that needs
    one gets it from the persistent cache), so a worker's memory does not grow module after
    module (a worker peaked at 4.7 GB without this and the trims)."""
    yield
    jax.clear_caches()
    gc.collect()
    _trim()
