"""Strict JAX for the whole suite: implicit rank promotion is a bug here, not a convenience.

One persistent XLA compilation cache for the whole test session, this process and every
subprocess it starts (`JAX_COMPILATION_CACHE_DIR`, read when JAX is imported): end-to-end tests
that run the same spaces in fresh processes (signals, workers, benchmarks' children) compile
each program once per session instead of once per process. A directory of its own, removed at
exit, so no test reads a cache it did not fill. Set JAX_COMPILATION_CACHE_DIR yourself to keep it.
"""

import atexit
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _xla = tempfile.mkdtemp(prefix="codesign-tests-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _xla
    atexit.register(shutil.rmtree, _xla, ignore_errors=True)

import jax  # noqa: E402  (after the cache directory is chosen: JAX reads it at import)

jax.config.update("jax_numpy_rank_promotion", "raise")
