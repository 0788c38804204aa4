"""Your own pretrained base network from a file, instead of pretraining one.

An .npz of per-layer arrays or an orbax checkpoint (what codesign's base cache and `train`
write), checked against the model's layer shapes; `codesign.engine.finetune` loads it as its base.
"""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from codesign.nn import networks

__all__ = ["load_checkpoint"]


def load_checkpoint(spec: networks.NetworkSpec, path: str | os.PathLike):
    """Your own pretrained base: per layer ``w`` [K, N] (rows unit-major, see
    `networks.layer_shapes`) and ``b`` [N], from an .npz holding ``layer{i}_w`` and
    ``layer{i}_b``, or an orbax checkpoint of that tuple of dicts (what codesign's base cache and
    `train` write). The head may be missing or sized for other classes: it is replaced anyway.
    Units are sorted most important first, as after pretraining. One-line `CodesignError` when
    a file is missing or a shape does not match the model.
    """
    from codesign.errors import CodesignError

    path = pathlib.Path(path)
    shapes = networks.layer_shapes(spec)
    if not path.exists():
        raise CodesignError(f"pretrain.checkpoint: {path}: no such file or directory")
    try:
        if path.is_dir():
            import orbax.checkpoint as ocp

            raw = ocp.StandardCheckpointer().restore(path.resolve())
            raw = raw.get("params", raw) if isinstance(raw, dict) else raw
            layers = [dict(layer) for layer in (raw.values() if isinstance(raw, dict) else raw)]
        else:
            with np.load(path) as f:
                count = sum(1 for k in f.files if k.startswith("layer") and k.endswith("_w"))
                layers = [{"w": f[f"layer{i}_w"], "b": f[f"layer{i}_b"]} for i in range(count)]
    except CodesignError:
        raise
    except Exception as err:
        raise CodesignError(f"pretrain.checkpoint: {path}: unreadable ({err})") from None
    if len(layers) not in (len(shapes), len(shapes) - 1):
        raise CodesignError(
            f"pretrain.checkpoint: {path}: {len(layers)} layers, the model has {len(shapes)}"
        )
    head = networks.init_params(spec, jax.random.PRNGKey(0))[-1]
    params = []
    for i, shape in enumerate(shapes):
        if i == len(shapes) - 1:
            if i < len(layers) and np.shape(layers[i]["w"])[0] != shape.rows:
                raise CodesignError(
                    f"pretrain.checkpoint: {path}: layer{i}_w ({shape.name}) has "
                    f"{np.shape(layers[i]['w'])[0]} rows, the model's head {shape.rows}"
                )
            if i < len(layers):  # its rows count in the last stage's unit importance
                head = {k: jnp.asarray(layers[i][k], jnp.float32) for k in ("w", "b")}
            params.append(head)
            continue
        want = {"w": (shape.rows, shape.out_units), "b": (shape.out_units,)}
        for name, dims in want.items():
            got = tuple(np.shape(layers[i].get(name)))
            if got != dims:
                raise CodesignError(
                    f"pretrain.checkpoint: {path}: layer{i}_{name} ({shape.name}) has shape "
                    f"{got}, the model needs {dims}"
                )
        params.append({k: jnp.asarray(layers[i][k], jnp.float32) for k in ("w", "b")})
    return networks.sort_units(spec, tuple(params))
