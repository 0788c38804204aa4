"""codesign: hardware-software co-design of energy-efficient neural networks, in JAX."""

from codesign.energy import (
    COMPONENTS,
    GRANULARITIES,
    Design,
    EnergyReport,
    LayerCounts,
    counts_from_masks,
    estimate_energy,
    estimate_energy_batch,
    peak_tops_per_w,
)
from codesign.errors import CodesignError
from codesign.hardware import (
    DEFAULT_PRESET,
    PRESETS,
    Accelerator,
    EnergyTable,
    get_preset,
    with_tile,
)
from codesign.networks import LayerShape

__all__ = [
    "COMPONENTS",
    "DEFAULT_PRESET",
    "GRANULARITIES",
    "PRESETS",
    "Accelerator",
    "CodesignError",
    "Design",
    "EnergyReport",
    "EnergyTable",
    "LayerCounts",
    "LayerShape",
    "counts_from_masks",
    "estimate_energy",
    "estimate_energy_batch",
    "get_preset",
    "peak_tops_per_w",
    "with_tile",
]
