"""Pretraining the base network once per search space, cached on disk.

pretrain_program   the jitted digital training loop (Adam; `codesign.engine.core.train`), each batch
                   split over the local devices
pretrain           a maximum-width base trained on the source task, units sorted by
                   importance (so a candidate's widths keep the best units)
load_or_pretrain   the base from the cache (keyed by `base_key`: a hash of everything that
                   determines it), or pretrained and saved whole, safe under kills and
                   concurrent processes
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from codesign.data.datasets import Dataset, cache_root
from codesign.engine.core import TrainState, batches, cross_entropy, data_parallel, streams, train
from codesign.nn import networks
from codesign.nn.checkpoint import load_checkpoint

__all__ = [
    "PretrainConfig",
    "base_key",
    "batches",  # re-exported from codesign.engine.core
    "cross_entropy",  # re-exported from codesign.engine.core
    "enable_compilation_cache",
    "load_or_pretrain",
    "pretrain",
    "pretrain_program",
]

# Bumped whenever pretraining changes in a way that invalidates cached bases.
_BASE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    steps: int = 500
    learning_rate: float = 3e-3
    batch_size: int = 64
    seed: int = 0
    checkpoint: str | None = None  # your own pretrained base instead (see `load_checkpoint`)


def pretrain_program(spec: networks.NetworkSpec, config: PretrainConfig, devices=None):
    """The jitted pretraining loop, ``run(params, x, y) -> (params, losses)``: ``config.steps``
    digital Adam steps (`codesign.engine.core.train`) on batches drawn from x, y with the config's
    seed (its `init` and `batches` streams).

    Data-parallel over `devices` (default: the local ones, `codesign.engine.core.data_parallel`):
    each device computes its slice of every batch and the gradients are summed across them
    (XLA partitions the one program). It trains the same network as one device, up to the
    order of floating-point sums; on one device the program has no partitioning at all.
    """
    keys = streams(config.seed, 2)
    optimizer = optax.adam(config.learning_rate)
    devices = data_parallel(config.batch_size, devices)
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def loss(p, xb, yb, _):
        if len(devices) > 1:  # each device its slice of the batch
            xb, yb = jax.lax.with_sharding_constraint((xb, yb), split)
        return cross_entropy(networks.apply(spec, p, xb), yb)

    def run(params, x, y):
        state = TrainState.create(params, optimizer, config.steps)
        state = train(state, loss, optimizer, (x, y), keys, batch_size=config.batch_size)
        return state.params, state.losses

    if len(devices) == 1:
        return jax.jit(run)
    return jax.jit(run, in_shardings=whole, out_shardings=whole)  # weights, data: on every device


def pretrain(spec: networks.NetworkSpec, data: Dataset, config: PretrainConfig, devices=None):
    """Train the maximum-width network digitally on the source task; returns params."""
    params = networks.init_params(spec, streams(config.seed, 2).init)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    params, _ = pretrain_program(spec, config, devices)(params, x, y)
    return networks.sort_units(spec, params)


def enable_compilation_cache(
    path: str | os.PathLike | None = None, min_compile_s: float = 0.5
) -> pathlib.Path:
    """Keep compiled programs on disk, so a new process skips the population program's compile.

    Default path: JAX's cache directory if one is set already, else ``$CODESIGN_CACHE/xla``. Only
    programs that took at least ``min_compile_s`` seconds to compile are stored (JAX's default:
    1 s), or less if JAX is set to store quicker ones
    (``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``).
    The cache is trusted code: keep it in a directory only you can write to.
    """
    from jax.experimental.compilation_cache import compilation_cache

    if path is None:
        path = jax.config.jax_compilation_cache_dir or cache_root() / "xla"
    path = pathlib.Path(path)
    if str(path) != jax.config.jax_compilation_cache_dir:
        compilation_cache.reset_cache()  # JAX opens its cache once: forget one at another path
        jax.config.update("jax_compilation_cache_dir", str(path))
    least = min(jax.config.jax_persistent_cache_min_compile_time_secs, min_compile_s)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", least)
    return path


def base_key(spec: networks.NetworkSpec, data: Dataset, config: PretrainConfig) -> str:
    """Hash of everything that determines a pretrained base: network, data, training, format."""
    digest = hashlib.sha256()
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    fields["network"] = None if spec.network is None else spec.network.key  # your module's name
    canonical = {
        "format": _BASE_FORMAT,
        "spec": fields,
        "config": dataclasses.asdict(config),
        "data": data.name,
    }
    digest.update(json.dumps(canonical, sort_keys=True).encode())  # sorted JSON of the fields
    for array in (data.x_train, data.y_train):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:20]


def load_or_pretrain(
    spec: networks.NetworkSpec,
    data: Dataset,
    config: PretrainConfig,
    cache_dir: str | os.PathLike | None = None,
    log=None,
):
    """The pretrained base from the cache, or pretrain it and save it.

    Safe with concurrent processes and kills: a file lock lets one process pretrain while the
    others wait and then load; the checkpoint is written under a temporary name and renamed into
    place whole, so a killed pretraining leaves no half-written base behind.
    """
    import fcntl
    import shutil
    import uuid

    import orbax.checkpoint as ocp

    if config.checkpoint:
        if log:
            log(f"pretrained base from {config.checkpoint}")
        return load_checkpoint(spec, config.checkpoint), True
    root = pathlib.Path(cache_dir) if cache_dir is not None else cache_root() / "bases"
    root.mkdir(parents=True, exist_ok=True)
    path = (root / f"base-{base_key(spec, data, config)}").resolve()
    template = jax.eval_shape(lambda: networks.init_params(spec, jax.random.PRNGKey(0)))
    checkpointer = ocp.StandardCheckpointer()
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Under this base's lock no one else writes its temporary checkpoints: any left are a
        # killed pretraining's (orbax adds its own suffix to the name given), never to be used.
        for orphan in root.glob(f".{path.name}.*.tmp*"):
            shutil.rmtree(orphan, ignore_errors=True)
        if path.is_dir():
            try:
                params = checkpointer.restore(path, template)
                if log:
                    log(f"loaded pretrained base {path.name}")
                return tuple(params), True
            except Exception as err:  # a damaged cache entry is rebuilt, never trusted
                if log:
                    log(f"cached base {path.name} unreadable ({type(err).__name__}); retraining")
                shutil.rmtree(path, ignore_errors=True)
        if log:
            on = len(data_parallel(config.batch_size))
            on = f", each batch split over {on} devices" if on > 1 else ""
            log(
                f"pretraining base network ({config.steps} steps on {data.name} source classes{on})"
            )
        params = pretrain(spec, data, config)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            checkpointer.save(tmp, params)
            checkpointer.wait_until_finished()
            os.replace(tmp, path)
        finally:  # a failed write (a full disk) leaves no part behind
            for part in root.glob(f"{tmp.name}*"):
                shutil.rmtree(part, ignore_errors=True)
    return params, False
