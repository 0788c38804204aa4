"""How a space is searched: the sampler's name and settings, read from the YAML `sampler:` key
with one-line errors (`energy-aware` and `gradient` are codesign's own, the rest Optuna's)."""

from __future__ import annotations

import dataclasses

from codesign.search.checks import choice, fail, section, typed
from codesign.search.gradient import GradientConfig

__all__ = ["SAMPLERS", "Sampler", "parse_sampler"]

SAMPLERS = ("energy-aware", "gradient", "nsga2", "tpe", "gp", "random")
_GRADIENT_KEYS = ("steps", "lambdas", "design_learning_rate")


@dataclasses.dataclass(frozen=True)
class Sampler:
    name: str = "energy-aware"
    seed: int = 0
    population_size: int = 16  # nsga2
    gradient: GradientConfig = GradientConfig()  # gradient: the relaxed co-design run


def parse_sampler(raw, path: str) -> Sampler:
    sm = section(raw, "sampler", path, ("name", "seed", "population_size", *_GRADIENT_KEYS))
    name = choice(sm.get("name", Sampler.name), "sampler.name", path, SAMPLERS)
    if name != "gradient" and any(k in sm for k in _GRADIENT_KEYS):
        given = ", ".join(k for k in _GRADIENT_KEYS if k in sm)
        fail(path, "sampler", f"{given}: sampler gradient only")
    lams = sm.get("lambdas", [GradientConfig.lambda_low, GradientConfig.lambda_high])
    if not isinstance(lams, list) or len(lams) != 2:
        fail(path, "sampler.lambdas", f"must be [low, high], two numbers > 0, got {lams!r}")
    low, high = (
        typed(dict(enumerate(lams)), i, "sampler.lambdas", path, float, 0, 1e-9, 1e6)
        for i in (0, 1)
    )
    if low > high:
        fail(path, "sampler.lambdas", f"low {low} > high {high}")
    gradient = GradientConfig(
        steps=typed(sm, "steps", "sampler", path, int, GradientConfig.steps, 1, 100_000),
        design_learning_rate=typed(
            sm, "design_learning_rate", "sampler", path, float, 0.1, 1e-6, 10.0
        ),
        lambda_low=low,
        lambda_high=high,
    )
    return Sampler(
        name=name,
        seed=typed(sm, "seed", "sampler", path, int, 0, 0),
        population_size=typed(sm, "population_size", "sampler", path, int, 16, 2),
        gradient=gradient,
    )
