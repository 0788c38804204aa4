"""codesign: hardware-software co-design of energy-efficient neural networks, in JAX."""

from codesign.design import FoundDesign, export_design, load_design, save_design, train_design
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
from codesign.evaluate import Evaluator, Result
from codesign.hardware import Accelerator, EnergyTable, with_tile
from codesign.networks import LayerShape, NetworkSpec
from codesign.pareto import front, hypervolume, plot_front
from codesign.presets import DEFAULT_PRESET, PRESETS, get_preset
from codesign.problem import Candidate, Problem
from codesign.search import run_search
from codesign.space import SearchSpace, load_space
from codesign.study import open_study

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
