"""The network a search varies, at its maximum widths (`Model`): a family and its widths, or
your own NNX module. The search's `Problem` holds one; `codesign.nn.nnx_model` builds the one of
your own module."""

from __future__ import annotations

import dataclasses

__all__ = ["Model"]


@dataclasses.dataclass(frozen=True)
class Model:
    """A network family at its maximum widths, one per width group: an mlp's hidden layers, a
    cnn's 3 conv channel counts, a resnet's 3 stage widths (`depth` = 6n + 2 layers)."""

    family: str = "mlp"
    widths: tuple[int, ...] = (128, 128)
    depth: int = 8  # resnet only
    # family "module", your own NNX model (`codesign.nn.nnx_model.module_model` fills these in):
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
        """Weight layers: the hidden ones and the head (a resnet's: stem, 2 convs per block,
        2 shortcut projections, head)."""
        if self.family == "resnet":
            return (self.depth - 2) + 4
        if self.family == "module":
            return self.layers
        return len(self.widths) + 1
