"""The chip: its parameters (`accelerator`), the published macros it is calibrated on
(`presets`), the differentiable energy model (`energy`), the analog physics the fine-tune
simulates (`analog`) and the energy report (`report`). Imports nothing above `codesign.nn`."""

from codesign.hardware.accelerator import (
    TRAINING_J_PER_FLOP,
    Accelerator,
    EnergyTable,
    with_tile,
)
from codesign.hardware.analog import DEVICES, TILE_SCALINGS, AnalogConfig, hybrid_matmul
from codesign.hardware.energy import (
    COMPONENTS,
    Design,
    EnergyReport,
    LayerCounts,
    estimate_energy,
    estimate_energy_batch,
    layer_counts,
    peak_tops_per_w,
)
from codesign.hardware.presets import DEFAULT_PRESET, PRESETS, get_preset, preset_sources

__all__ = [
    "COMPONENTS",
    "DEFAULT_PRESET",
    "DEVICES",
    "PRESETS",
    "TILE_SCALINGS",
    "TRAINING_J_PER_FLOP",
    "Accelerator",
    "AnalogConfig",
    "Design",
    "EnergyReport",
    "EnergyTable",
    "LayerCounts",
    "estimate_energy",
    "estimate_energy_batch",
    "get_preset",
    "hybrid_matmul",
    "layer_counts",
    "peak_tops_per_w",
    "preset_sources",
    "with_tile",
]
