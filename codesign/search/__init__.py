"""The search: the YAML space (`space`, `dimensions`, `checks`, `sampler`), the problem and its
evaluation (`problem`, `evaluate`), the proposers (`screening`, `gradient`), early stopping,
the Optuna study and its storage (`study`, `journal`), the loop (`loop`), and Pareto fronts
(`fronts`, `pareto`). The only part of codesign that imports Optuna."""

from codesign.search.evaluate import Evaluator, Result
from codesign.search.fronts import dominated, staircase
from codesign.search.loop import run_search
from codesign.search.pareto import front, hypervolume, plot_front
from codesign.search.problem import Budgets, Candidate, EarlyStop, Problem, Task, Training
from codesign.search.space import SearchSpace, load_space, parse_space
from codesign.search.study import find_study, open_study, storage_for

__all__ = [
    "Budgets",
    "Candidate",
    "EarlyStop",
    "Evaluator",
    "Problem",
    "Result",
    "SearchSpace",
    "Task",
    "Training",
    "dominated",
    "find_study",
    "front",
    "hypervolume",
    "load_space",
    "open_study",
    "parse_space",
    "plot_front",
    "run_search",
    "staircase",
    "storage_for",
]
