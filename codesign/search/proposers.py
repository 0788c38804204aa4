"""Who proposes a search's next candidates: one contract (`Proposer`), one class per kind, one
registry (`PROPOSERS`, keyed by the YAML `sampler.name`).

The loop (`codesign.search.loop`) gives a proposer the study's history (`History`: what was
trained and what it scored, what is pending, what was tried) and enqueues what it returns; it
never names a sampler. A proposer may

- `learn`: propose from slow work done outside the storage lock (other workers go on), e.g. the
  gradient program's learned designs;
- `propose`: propose under the lock, where workers see each other's pending trials, e.g. the
  energy-aware sampler's screened candidates;
- and name the Optuna sampler that fills the rest of a batch (`optuna_sampler`): Optuna's own
  samplers (TPE, NSGA-II, GP, random) are proposers that propose nothing themselves.

Adding a proposer is one class here (or in its own module) and one line in `PROPOSERS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import numpy as np
import optuna

from codesign.errors import CodesignError
from codesign.search import gradient, screening
from codesign.search.fronts import staircase

__all__ = [
    "PROPOSERS",
    "EnergyAware",
    "GradientProposer",
    "History",
    "OptunaSampler",
    "Proposer",
    "front_params",
    "optuna_sampler",
    "proposer_for",
]

Proposal = tuple[dict, dict]  # (params, user attributes to store with the trial)


@dataclasses.dataclass(frozen=True)
class History:
    """A study as proposers read it (`codesign.search.study.history`)."""

    trained: list  # (params, energy_j, accuracy) of every scored trial
    pending: list[dict]  # params asked or queued, not scored yet
    tried: list[dict]  # params of every trial
    waiting: int  # trials queued and not asked yet
    size: int  # trials in the study, in any state


class Proposer(Protocol):
    """What the search loop asks of a proposer (see the module docstring)."""

    @staticmethod
    def optuna_sampler(space, seed: int) -> optuna.samplers.BaseSampler: ...

    def learn(self, history: Callable[[], History], batch: int) -> list[Proposal]: ...

    def propose(self, history: Callable[[], History], want: int) -> list[Proposal]: ...


class _Proposer:
    """What every proposer shares: it proposes nothing itself, and Optuna's random asks fill
    the batch (codesign's own proposers enqueue their candidates; random asks only fill gaps)."""

    def __init__(self, space, evaluator, base_seed: int):
        self.space, self.evaluator, self.base_seed = space, evaluator, base_seed

    @staticmethod
    def optuna_sampler(space, seed):
        return optuna.samplers.RandomSampler(seed=seed)

    def learn(self, history, batch):
        return []

    def propose(self, history, want):
        return []


class OptunaSampler(_Proposer):
    """One of Optuna's samplers: it proposes through Optuna's own asks."""

    @staticmethod
    def optuna_sampler(space, seed):
        name = space.sampler.name
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(
                population_size=space.sampler.population_size, seed=seed
            )
        if name == "tpe":
            # constant_liar: a batch of asks sees its pending trials, so it does not repeat itself
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
        if name == "gp":
            try:
                import scipy  # noqa: F401
                import torch  # noqa: F401
            except ImportError:
                raise CodesignError(
                    "sampler gp needs torch and scipy: pip install 'codesign[gp]' "
                    "(or choose nsga2, tpe or random)"
                ) from None
            return optuna.samplers.GPSampler(seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)


class EnergyAware(_Proposer):
    """Exact energies of many random and mutated candidates, screened by a Gaussian process of
    accuracy for expected hypervolume gain (`codesign.search.screening`), under the lock."""

    def __init__(self, space, evaluator, base_seed: int):
        super().__init__(space, evaluator, base_seed)
        dense = evaluator.dense_digital(space.tiles[0])
        reference = evaluator.budget_energies([dense])[0]
        self.reference_j = float(reference) if np.isfinite(reference) else None

    def propose(self, history, want):
        past = history()
        rng = np.random.default_rng([self.base_seed, past.size])
        space = self.space
        params = screening.propose(
            space.param_dims(),
            past.trained,
            past.pending,
            past.tried,
            lambda ps: self.evaluator.budget_energies([space.candidate(p) for p in ps]),
            want - past.waiting,
            rng,
            min_accuracy=space.problem.budgets.accuracy_floor,
            reference_energy_j=self.reference_j,
        )
        return [(p, {}) for p in params]


def front_params(trained: list) -> list[dict]:
    """Params of the non-dominated (energy_j, accuracy) entries of `trained` ((params, energy,
    accuracy) triples, as `History.trained` holds them), cheapest first."""
    steps = staircase([(energy, -accuracy) for _, energy, accuracy in trained])
    return [trained[i][0] for i in steps]


class GradientProposer(_Proposer):
    """The gradient sampler (`codesign.search.gradient`): `batch` starting points, each with its
    own trade-off weight, learned by gradient outside the lock, snapped onto the space's grid;
    duplicates of each other or of tried params dropped (random asks fill in). Up to half the
    starts are designs of the study's front so far (refined: moved along the trade-off from where
    the search stands), the rest random points of the space."""

    def learn(self, history, batch):
        past, space = history(), self.space
        rng = np.random.default_rng([self.base_seed, past.size, 7])
        config = space.sampler.gradient
        front = front_params(past.trained)
        picks = rng.permutation(len(front))[: batch // 2]
        start_params = [front[i] for i in picks] + space.sample_params(rng, batch - len(picks))
        starts = [space.candidate(p) for p in start_params]
        lams = gradient.lambdas(batch, config, rng)
        seeds = rng.integers(2**31 - 1, size=batch)
        learned, run = self.evaluator.codesign(starts, seeds, lams, space.bounds(), config)
        tried = {repr(sorted(p.items())) for p in past.tried}
        out = []
        for i, cand in enumerate(learned):
            params = space.params_of(cand)
            key = repr(sorted(params.items()))
            if key not in tried:
                tried.add(key)
                attrs = {
                    "gradient_lambda": float(lams[i]),
                    "relaxed_energy_j": float(run.relaxed_energy_j[i]),
                    "gradient_start": "front" if i < len(picks) else "random",
                }
                out.append((params, attrs))
        share = float(np.sum(run.flops)) / max(1, len(out))  # the run's FLOPs, over its proposals
        return [(params, {**attrs, "proposal_flops": share}) for params, attrs in out]


# The YAML's `sampler.name` -> its proposer (`codesign.search.sampler.SAMPLERS` lists the names).
PROPOSERS: dict[str, type] = {
    "energy-aware": EnergyAware,
    "gradient": GradientProposer,
    "nsga2": OptunaSampler,
    "tpe": OptunaSampler,
    "gp": OptunaSampler,
    "random": OptunaSampler,
}


def proposer_for(space, evaluator, base_seed: int) -> Proposer:
    """The proposer the space's `sampler:` names, for this evaluator and study seed."""
    return PROPOSERS[space.sampler.name](space, evaluator, base_seed)


def optuna_sampler(space, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a study of this space asks with."""
    return PROPOSERS[space.sampler.name].optuna_sampler(space, seed)
