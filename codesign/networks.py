"""Network families at fixed maximum widths, and the layer shapes the energy model reads."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """One weight layer as the hardware sees it: a K x N matrix applied at P positions.

    A dense layer has ``kernel_area == 1`` and ``positions == 1``. A conv layer with ``c_in``
    input channels and a kh x kw kernel has ``in_units == c_in`` and ``kernel_area == kh * kw``,
    so K = c_in * kh * kw, and is applied at ``positions`` output positions per inference.
    ``in_units`` and ``out_units`` are the maximum widths; a candidate keeps a subset of them.
    """

    in_units: int
    out_units: int
    kernel_area: int = 1
    positions: int = 1
    name: str = ""

    def __post_init__(self):
        for field in ("in_units", "out_units", "kernel_area", "positions"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LayerShape.{field} must be a positive int, got {value!r}")

    @property
    def rows(self) -> int:
        """K: rows of the weight matrix (inputs x kernel area)."""
        return self.in_units * self.kernel_area

    @property
    def macs(self) -> int:
        """Multiply-accumulates per inference at maximum width."""
        return self.rows * self.out_units * self.positions


def chain(sizes: list[int] | tuple[int, ...], names: tuple[str, ...] = ()) -> tuple[LayerShape, ...]:
    """Dense layers for an MLP with the given sizes, e.g. (64, 256, 256, 10) -> 3 layers."""
    if len(sizes) < 2:
        raise ValueError("an MLP needs at least an input and an output size")
    names = names or tuple(f"dense{i}" for i in range(len(sizes) - 1))
    return tuple(
        LayerShape(in_units=k, out_units=n, name=name)
        for k, n, name in zip(sizes[:-1], sizes[1:], names, strict=True)
    )
