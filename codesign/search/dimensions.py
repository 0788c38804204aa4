"""A searched dimension of a space: a fixed value, choices, or a low..high range with a step.

It samples itself without Optuna, embeds a value in [0, 1] for the energy-aware sampler's
surrogate, says whether a value is one of its points, and asks an Optuna trial for one.
`parse_dimension` reads one from YAML with one-line errors.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from codesign.search.checks import choice, fail, parse_tile, section, typed

__all__ = ["Dimension", "parse_dimension"]


@dataclasses.dataclass(frozen=True)
class Dimension:
    """A searched (or fixed) value: choices, or a low..high range with an optional step."""

    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    is_int: bool = False
    per_layer: bool = False
    is_tile: bool = False  # choices are tile sizes (an int or "ROWSxCOLS")

    @property
    def fixed(self):
        """The value when the dimension has a single choice, else None."""
        return self.choices[0] if self.choices is not None and len(self.choices) == 1 else None

    def sample(self, rng, count: int) -> list:
        """count uniform random values on the dimension's grid, without Optuna."""
        if self.choices is not None:
            return [self.choices[i] for i in rng.integers(len(self.choices), size=count)]
        if self.step:
            steps = rng.integers(int(round((self.high - self.low) / self.step)) + 1, size=count)
            values = np.minimum(self.low + self.step * steps, self.high)  # no drift past high
            return (
                [int(v) for v in values] if self.is_int else [round(float(v), 12) for v in values]
            )
        if self.is_int:
            return [int(v) for v in rng.integers(int(self.low), int(self.high) + 1, size=count)]
        return [float(v) for v in rng.uniform(self.low, self.high, size=count)]

    def features(self, value) -> list[float]:
        """A value as points in [0, 1]: a range scaled linearly, tiles by log2 of their cell
        count, numeric choices by value, other choices one-hot (two categories 1 apart)."""
        if self.choices is None:
            return [(float(value) - self.low) / ((self.high - self.low) or 1.0)]
        if self.is_tile:
            cells = [math.log2(math.prod(parse_tile(c, "search.tile", ""))) for c in self.choices]
            mine = math.log2(math.prod(parse_tile(value, "search.tile", "")))
            return [(mine - min(cells)) / ((max(cells) - min(cells)) or 1.0)]
        if all(isinstance(c, int | float) and not isinstance(c, bool) for c in self.choices):
            low, high = min(self.choices), max(self.choices)
            return [(float(value) - low) / ((high - low) or 1.0)]
        return [1.0 / math.sqrt(2.0) if value == c else 0.0 for c in self.choices]

    def feature_columns(self, values) -> np.ndarray:
        """`features` of many values at once, as rows [len(values), k]: a range scaled in one
        array operation, choices looked up in a table of their features built once."""
        if self.choices is None:
            scaled = (np.asarray(values, np.float64) - self.low) / ((self.high - self.low) or 1.0)
            return scaled.reshape(len(values), 1)
        rows = [self._choice_features.get(v) or self.features(v) for v in values]
        return np.asarray(rows, np.float64).reshape(len(values), -1)

    @functools.cached_property
    def _choice_features(self) -> dict:
        return {c: self.features(c) for c in self.choices}

    def contains(self, value) -> bool:
        """Whether value is a point of this dimension (tiles compared as (rows, cols))."""
        if self.choices is not None:
            if self.is_tile:
                tiles = [parse_tile(c, "search.tile", "") for c in self.choices]
                pair = isinstance(value, list | tuple) and len(value) == 2
                return pair and tuple(value) in tiles
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.is_int and value != int(value):
            return False
        return math.isfinite(value) and self.low - 1e-9 <= value <= self.high + 1e-9

    def snap(self, value):
        """The point of this dimension nearest to a (relaxed) value: a choice by distance (or the
        value itself if it is a choice), a range clipped and rounded onto its step."""
        if self.choices is not None:
            numeric = all(isinstance(c, int | float) for c in self.choices)
            if value in self.choices or not numeric:
                return value if value in self.choices else self.choices[0]
            return min(self.choices, key=lambda c: abs(float(c) - float(value)))
        v = min(max(float(value), self.low), self.high)
        if self.step:
            v = min(self.low + self.step * round((v - self.low) / self.step), self.high)
        return int(round(v)) if self.is_int else round(float(v), 12)

    def describe(self) -> str:
        """Its choices, or its range, for messages."""
        if self.choices is not None:
            return "choices: " + ", ".join(map(str, self.choices))
        return f"{self.low:g}..{self.high:g}"

    def suggest(self, trial, name: str):
        if self.choices is not None:
            if len(self.choices) == 1:
                return self.choices[0]
            return trial.suggest_categorical(name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1))
        return trial.suggest_float(name, self.low, self.high, step=self.step)


def parse_dimension(
    spec, key: str, path: str, *, kind, low=None, high=None, choices=None
) -> Dimension:
    """Parse one searched dimension: a fixed value, {choices: [...]}, or {low, high, step}."""
    full = f"search.{key}"
    if not isinstance(spec, dict):
        spec = {"choices": [spec]}
    spec = section(spec, full, path, ("choices", "low", "high", "step", "per_layer"))
    per_layer = typed(spec, "per_layer", full, path, bool, False)
    if "choices" in spec:
        if any(k in spec for k in ("low", "high", "step")):
            fail(path, full, "give either choices or low/high/step, not both")
        values = spec["choices"]
        if not isinstance(values, list) or not values:
            fail(path, f"{full}.choices", "must be a non-empty list")
        checked = []
        for v in values:
            if choices is not None:
                checked.append(choice(v, f"{full}.choices", path, choices))
            elif key == "tile":
                parse_tile(v, f"{full}.choices", path)
                checked.append(v if isinstance(v, str) else int(v))
            else:
                wrapper = {"v": v}
                checked.append(typed(wrapper, "v", f"{full}.choices", path, kind, None, low, high))
        return Dimension(
            choices=tuple(checked), is_int=kind is int, per_layer=per_layer, is_tile=key == "tile"
        )
    if choices is not None or key == "tile":
        fail(path, full, "takes choices: [...], not a range")
    if "low" not in spec or "high" not in spec:
        fail(path, full, "a range needs both low and high (or give choices: [...])")
    lo = typed(spec, "low", full, path, kind, None, low, high)
    hi = typed(spec, "high", full, path, kind, None, low, high)
    if lo > hi:
        fail(path, full, f"empty range: low {lo} > high {hi}")
    step = spec.get("step")
    if step is not None:
        step = typed(spec, "step", full, path, kind, None)
        if step <= 0:
            fail(path, f"{full}.step", f"must be > 0, got {step}")
    return Dimension(low=lo, high=hi, step=step, is_int=kind is int, per_layer=per_layer)
