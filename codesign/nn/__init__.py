"""The networks: the built-in families and their layer shapes (`networks`, `resnet`, `conv`),
your own NNX module (`nnx_model`), the searched model (`model`), pruning masks (`pruning`) and
pretrained bases on disk (`checkpoint`). Imports no other part of codesign but `errors`."""

from codesign.nn.checkpoint import load_checkpoint
from codesign.nn.model import Model, module_model
from codesign.nn.networks import (
    FAMILIES,
    LayerShape,
    NetworkSpec,
    apply,
    default_spec,
    init_params,
    layer_shapes,
    sort_units,
    unit_importance,
    width_masks,
)
from codesign.nn.pruning import GRANULARITIES

__all__ = [
    "FAMILIES",
    "GRANULARITIES",
    "LayerShape",
    "Model",
    "NetworkSpec",
    "apply",
    "default_spec",
    "init_params",
    "layer_shapes",
    "load_checkpoint",
    "module_model",
    "sort_units",
    "unit_importance",
    "width_masks",
]
