"""Multi-objective early stopping: a population fine-tunes in rungs, and a candidate that another
of its population beats by a margin on (energy, validation accuracy so far) stops.

Optuna cannot prune a trial of a multi-objective study (`Trial.should_prune` raises), but codesign
knows each candidate's energy exactly before it trains: the energy of its real masks, which the
fine-tune never changes. So only accuracy is uncertain at a rung, and a candidate can be dropped
as soon as another one costs no more energy and is already clearly more accurate.

Rules (`Rungs.evaluate_population`):

- Rungs end at `round(f * steps)` for each fraction `f` of `EarlyStop.rungs`; the fine-tune's
  last step ends the last stretch. Every rung ends inside the fine-tune (`rung_steps` checks).
- After a rung, candidate i stops when some candidate j still training has energy_j <= energy_i
  and accuracy_j - margin >= accuracy_i, one of them strictly (`dominated`). The decision is made
  for the whole rung at once; the best candidates never stop, so someone always finishes.
- A rung's accuracy is a probe: validation accuracy under one analog noise draw (key: the
  candidate's evaluation key folded with the step), so it sees the same hardware as the final
  score at a fraction of its cost, and the final score's noise draws are unchanged. A candidate
  whose loss has gone non-finite probes at 0: it stops others never, and is stopped itself.
- Survivors continue from their state (params, Adam's state, and the batch and noise streams
  at the step reached: `codesign.engine.core.train` slices the whole fine-tune's streams), so a
  survivor ends with the numbers of an uninterrupted fine-tune (`Engine.evaluate_population`):
  the rungs are the engine's own programs, the same steps in the same order.
- Survivors are packed into a population of the next power of two (padded with copies of the
  last survivor), so the programs are: one per first-rung length, one per (rung length, packed
  size) and one final score per packed size; a rung never compiles anything else.
- A stopped candidate reports `steps_run`, its rung accuracies, its final loss over the steps it
  ran, and `finetune_flops` for those steps only (`Engine.step_flops` x steps run); its
  accuracies are NaN. The probes are not counted in `finetune_flops`, as no evaluation is.

No Optuna here: the study turns stopped candidates into PRUNED trials
(`codesign.search.study.tell`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from codesign.engine.core import Scores, TrainState
from codesign.engine.finetune import Engine, Population
from codesign.search.fronts import dominated
from codesign.search.problem import EarlyStop

__all__ = ["EarlyStop", "Rungs", "rung_steps"]


def rung_steps(steps: int, rungs: Sequence[float]) -> list[int]:
    """The step at which each rung ends, then `steps`; ValueError if two rungs share a step or
    one ends at step 0 or at the end."""
    ends = [round(f * steps) for f in rungs]
    if any(b <= a for a, b in zip([0, *ends], [*ends, steps], strict=True)):
        raise ValueError(f"rungs {list(rungs)} of {steps} steps end at steps {ends}")
    return [*ends, steps]


def _packed(n: int, most: int) -> int:
    """The population size n survivors run at: the next power of two, at most `most`."""
    return min(most, 1 << max(0, n - 1).bit_length())


class Rungs:
    """An engine's fine-tunes run in rungs, with multi-objective early stopping between them.

    The programs are the engine's own (`Engine._init`, `_train`, `_score`), shared with its
    plain fine-tunes: any rungs and margin (`EarlyStop`) share them.
    """

    def __init__(self, engine: Engine):
        self.engine = engine

    @property
    def traces(self) -> int:
        """How often one of the engine's population programs was traced (compiled)."""
        return self.engine.traces

    # --- the host loop ---

    def evaluate_population(
        self,
        population: Population,
        energy_j: Callable[[np.ndarray, list[np.ndarray]], np.ndarray],
        config: EarlyStop,
        *,
        chunk: int | None = None,
        keep_params: bool = False,
    ) -> Scores:
        """Fine-tune and score every candidate, stopping the dominated ones at each rung.

        `energy_j(rows, masks)` gives the energy of the candidates at `rows` of the population
        from their masks ([n, K, N] per layer). Returns what `Engine.evaluate_population` does,
        with `steps_run` and `rung_val_accuracies` set. Stopping
        compares candidates of one chunk (default: the whole population), padded as there.
        """
        size = population.size
        chunk = self.engine.placement.padded(chunk or size)  # a whole slice for every device
        parts = []
        for start in range(0, size, chunk):
            rows = np.arange(start, min(start + chunk, size))
            padded = np.r_[rows, np.full(chunk - len(rows), size - 1)]
            part = population.take(padded)
            parts.append(self._chunk(part, rows, energy_j, config, keep_params))
        return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)

    def _chunk(self, part: Population, rows, energy_j, config: EarlyStop, keep_params) -> Scores:
        engine = self.engine
        steps = rung_steps(engine.config.steps, config.rungs)
        n = len(rows)
        state = engine.init_population(part)
        state, probe = engine.train_population(part, state, 0, steps[0], True)
        masks = [np.asarray(m[:n]) for m in state.layer_masks]
        energy = np.asarray(energy_j(rows, masks), np.float64)
        step_flops = np.asarray(engine.step_flops(masks))
        alive = np.arange(n)  # which of the chunk's candidates each row of `state` holds
        rung_acc = np.full((n, len(steps) - 1), np.nan, np.float32)
        pieces = []  # (chunk positions, outputs) of stopped candidates, then of the survivors
        for r, end in enumerate(steps[:-1]):
            acc = np.asarray(probe)[: len(alive)]
            rung_acc[alive, r] = acc
            # Dominated by a margin in accuracy by another candidate of the chunk.
            stop = dominated(np.c_[energy[alive], -acc], (0.0, config.margin))
            if stop.any():
                gone = np.flatnonzero(stop)
                held = jax.tree.map(lambda x, i=gone: np.asarray(x[i]), state)
                pieces.append((alive[gone], _stopped(held, step_flops[alive[gone]], end)))
                keep = np.flatnonzero(~stop)
                packed = engine.placement.padded(_packed(len(keep), part.size))
                take = np.r_[keep, np.full(packed - len(keep), keep[-1])]
                state, part = jax.tree.map(lambda x, i=take: x[i], (state, part))
                alive = alive[keep]
            start = jnp.asarray(end, jnp.int32)
            state, probe = engine.train_population(part, state, start, steps[r + 1] - end, True)
        out = jax.tree.map(
            lambda x: np.asarray(x)[: len(alive)], engine.score_population(part, state)
        )
        pieces.append((alive, dataclasses.replace(out, steps_run=np.full(len(alive), steps[-1]))))
        order = np.argsort(np.concatenate([where for where, _ in pieces]))
        merged = jax.tree.map(lambda *xs: np.concatenate(xs)[order], *[p for _, p in pieces])
        merged = merged if keep_params else merged.without_weights()
        return dataclasses.replace(merged, rung_val_accuracies=rung_acc)


def _stopped(state: TrainState, step_flops: np.ndarray, steps_run: int) -> Scores:
    """The scores of candidates stopped after `steps_run` steps (host arrays, one row each):
    accuracies NaN, loss and FLOPs over the steps run."""
    n = len(step_flops)
    losses = state.losses[:, :steps_run]
    final_loss = losses[:, -max(1, steps_run // 10) :].mean(axis=1)
    nan = np.full(n, np.nan, np.float32)
    return Scores(
        val_accuracy=nan,
        test_accuracy=nan,
        digital_test_accuracy=nan,
        final_loss=final_loss.astype(np.float32),
        diverged=~np.isfinite(final_loss),
        finetune_flops=(step_flops * np.float32(steps_run)).astype(np.float32),
        kept_weights=np.stack([m.sum(axis=(-2, -1)) for m in state.layer_masks], axis=1),
        params=state.params,
        masks=state.layer_masks,
        steps_run=np.full(n, steps_run),
    )
