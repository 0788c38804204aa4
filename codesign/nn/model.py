"""The network a search varies, at its maximum widths (`Model`): a family and its widths, or
your own NNX module. The search's `Problem` holds one; `codesign.nn.nnx_model` builds the one of
your own module."""

from __future__ import annotations

import dataclasses

from codesign.errors import CodesignError
from codesign.nn.families import FAMILY, family

__all__ = ["Model", "model_from_section", "module_model"]


@dataclasses.dataclass(frozen=True)
class Model:
    """A network family at its maximum widths, one per width group: an mlp's hidden layers, a
    cnn's 3 conv channel counts, a resnet's 3 stage widths (`depth` = 6n + 2 layers)."""

    family: str = "mlp"
    widths: tuple[int, ...] = FAMILY["mlp"].default_widths  # one default, the family's
    depth: int = 8  # resnet only
    # family "module", your own NNX model (`module_model` fills these in):
    module: object = None  # its class or factory, or "package.module:Class"
    kwargs: tuple = ()  # (name, value) pairs it is built with
    groups: tuple = ()  # tuples of layer names whose outputs share one width
    layers: int = 0  # its Linear and Conv layers
    checkpoint: str = ""  # your own pretrained base (.npz or orbax), instead of pretraining

    @property
    def num_hidden(self) -> int:
        """Width groups: the widths a candidate chooses."""
        return len(self.widths)

    @property
    def num_layers(self) -> int:
        """Weight layers, the head included (a resnet's: stem, 2 convs per block, 2 shortcut
        projections, head): its family's count."""
        return family(self.family).num_layers(self)


def module_model(module, input_shape, *, kwargs: dict | None = None, groups=()) -> Model:
    """The `codesign.nn.model.Model` of your own NNX module (a class, a factory or
    "package.module:Class"), traced for inputs of ``input_shape`` (per example)."""
    from codesign.nn.nnx_model import hashable, traced  # Flax NNX: imported when a module is used

    items = tuple(sorted((k, hashable(v)) for k, v in (kwargs or {}).items()))
    groups = tuple(tuple(g) for g in groups)
    net = traced(module, items, groups, tuple(input_shape))
    return Model(
        family="module",
        widths=net.widths,
        module=module,
        kwargs=items,
        groups=groups,
        layers=len(net.layers),
    )


def model_from_section(section: dict, input_shape) -> Model:
    """The `Model` a search space's ``model: {module, kwargs, groups}`` section names."""
    module, kwargs, groups = (section.get(k) for k in ("module", "kwargs", "groups"))
    if not isinstance(module, str):
        raise CodesignError(f"model.module: must be 'package.module:Class', got {module!r}")
    if not isinstance(kwargs or {}, dict):
        raise CodesignError(f"model.kwargs: must be a mapping of keyword arguments, got {kwargs!r}")
    groups = groups or []
    if not isinstance(groups, list) or not all(
        isinstance(g, list) and all(isinstance(n, str) for n in g) for g in groups
    ):
        raise CodesignError("model.groups: must be a list of lists of layer names")
    return module_model(module, input_shape, kwargs=kwargs, groups=groups)
