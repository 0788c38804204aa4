"""codesign: hardware-software co-design of energy-efficient neural networks, in JAX."""

from codesign.design import FoundDesign, export_design, load_design, save_design, train_design
from codesign.errors import CodesignError
from codesign.hardware.accelerator import Accelerator, EnergyTable, with_tile
from codesign.hardware.energy import (
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
from codesign.hardware.presets import DEFAULT_PRESET, PRESETS, get_preset
from codesign.nn.networks import LayerShape, NetworkSpec
from codesign.search.evaluate import Evaluator, Result
from codesign.search.loop import run_search
from codesign.search.pareto import front, hypervolume, plot_front
from codesign.search.problem import Candidate, Problem
from codesign.search.space import SearchSpace, load_space
from codesign.search.study import open_study

__all__ = [
    "Candidate",
    "Evaluator",
    "FoundDesign",
    "NetworkSpec",
    "Problem",
    "Result",
    "SearchSpace",
    "export_design",
    "front",
    "hypervolume",
    "load_design",
    "load_space",
    "open_study",
    "plot_front",
    "run_search",
    "save_design",
    "train_design",
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
