"""`codesign.search.fronts`: the one definition of dominance, against brute force and by hand."""

import itertools

import numpy as np
import pytest

from codesign.search.fronts import dominated, staircase


def test_dominated_by_a_margin():
    energy = np.asarray([1.0, 2.0, 2.0, 3.0, 1.0])
    accuracy = np.asarray([0.5, 0.6, 0.54, 0.58, 0.5])
    costs = np.c_[energy, -accuracy]
    # 3 is beaten by 1 (less energy) by 0.02: with no margin only; 2 by 1 (same energy) by
    # 0.06; two equal candidates (0, 4) never stop each other.
    assert dominated(costs).tolist() == [0, 0, 1, 1, 0]
    assert dominated(costs, (0.0, 0.05)).tolist() == [0, 0, 1, 0, 0]
    assert dominated(costs, (0.0, 0.1)).tolist() == [0, 0, 0, 0, 0]


def _brute_dominated(points):
    return [
        any(
            all(q <= p for q, p in zip(b, a, strict=True))
            and any(q < p for q, p in zip(b, a, strict=True))
            for b in points
        )
        for a in points
    ]


@pytest.mark.parametrize(("n", "m", "seed"), [(1, 2, 0), (30, 2, 1), (40, 3, 2), (25, 1, 3)])
def test_dominated_and_staircase_match_brute_force_with_ties(n, m, seed):
    """Random points on a coarse grid (many ties, some identical points), 1 to 3 objectives."""
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 4, size=(n, m)).astype(float)
    assert dominated(points).tolist() == _brute_dominated(points.tolist())
    steps = staircase(points)
    front = {
        tuple(p)
        for p, d in zip(points.tolist(), _brute_dominated(points.tolist()), strict=True)
        if not d
    }
    chosen = [tuple(points[i]) for i in steps]
    assert sorted(chosen) == chosen and set(chosen) == front and len(chosen) == len(front)
    for i in steps:  # each distinct point by its first index
        assert not any((points[j] == points[i]).all() for j in range(i))


def test_staircase_of_an_energy_accuracy_front_rises_in_accuracy():
    energy = [3.0, 1.0, 2.0, 2.0, 1.0, 4.0, 5.0]
    accuracy = [0.9, 0.8, 0.7, 0.85, 0.8, 0.9, 0.95]
    steps = staircase(np.c_[energy, np.negative(accuracy)])
    assert steps.tolist() == [1, 3, 0, 6]  # 4 repeats 1; 2 is below 3; 5 ties 0 at more energy
    assert all(accuracy[a] < accuracy[b] for a, b in itertools.pairwise(steps))


def test_empty_inputs():
    assert dominated(np.zeros((0, 2))).tolist() == []
    assert staircase([]).tolist() == []
