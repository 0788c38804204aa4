"""Pareto fronts as plain functions of numbers: who dominates whom, the staircase, hypervolume.

One definition of dominance for every front in codesign: the study's front
(`codesign.search.pareto`), early stopping between rungs (`codesign.search.early_stop`), the
energy-aware sampler's staircase (`codesign.search.screening`), the gradient sampler's starting
designs (`codesign.search.loop`), and the benchmarks and experiments that read fronts. Every column
is a cost (smaller is better): pass (energy, -accuracy) for an energy-accuracy front.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["dominated", "hypervolume", "staircase"]


def _rows(costs) -> np.ndarray:
    c = np.asarray(costs, np.float64)
    return c[:, None] if c.ndim == 1 else c


def dominated(costs, margins=0.0) -> np.ndarray:
    """[n] bool: whether another of the n points (rows of `costs`, [n, m]) dominates each.

    j dominates i when costs[j] + margins <= costs[i] in every column and < in one. `margins`
    (a number or one per column; default 0) make a point dominate only by that much: early
    stopping gives accuracy a margin so that noise between two close candidates stops neither.
    Identical points do not dominate each other: a front keeps ties.
    """
    c = _rows(costs)
    shifted = c + np.asarray(margins, np.float64)  # [j, m]
    no_worse = (shifted[:, None, :] <= c[None, :, :]).all(-1)  # [j, i]
    better = (shifted[:, None, :] < c[None, :, :]).any(-1)
    return (no_worse & better).any(axis=0)


def staircase(costs) -> np.ndarray:
    """Indices of the non-dominated points, one per distinct point (its first), sorted by the
    first column (then the next): for (energy, -accuracy), the front from its cheapest design
    up, accuracy rising at every step."""
    c = _rows(costs)
    keep = np.flatnonzero(~dominated(c))
    _, first = np.unique(c[keep], axis=0, return_index=True)  # rows sorted lexicographically
    return keep[first]


def hypervolume(points, reference_energy_j: float, reference_accuracy: float = 0.0) -> float:
    """Area dominated by (energy, accuracy) points in (log10 energy, accuracy) space.

    Points with energy above the reference or accuracy below it add nothing. The reference
    energy is usually the dense all-digital baseline, so the number is comparable across runs of
    one search space.
    """
    ref_x = math.log10(reference_energy_j)
    pts = sorted(
        (math.log10(e), a)
        for e, a in points
        if 0 < e < reference_energy_j and a > reference_accuracy
    )
    area, best_acc = 0.0, reference_accuracy
    # Sweep from the lowest energy up: each point adds the strip its accuracy gains.
    for i, (x, acc) in enumerate(pts):
        best_acc = max(best_acc, acc)
        next_x = pts[i + 1][0] if i + 1 < len(pts) else ref_x
        area += (next_x - x) * (best_acc - reference_accuracy)
    return area
