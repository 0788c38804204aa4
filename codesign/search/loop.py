"""The co-design search: a batched ask -> evaluate -> tell loop around an Optuna study.

    space --ask (sampler, or energy-aware proposals)--> candidates --Evaluator--> results
          (energy first: over-budget candidates spend no fine-tune) --tell--> study

Optuna lives in `codesign.search.study`; evaluation in `codesign.search.evaluate`; this module only
runs the loop. Re-running the same search resumes it: completed trials are never recomputed.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
import warnings
from collections.abc import Callable

import numpy as np
import optuna

from codesign.data.datasets import cache_root
from codesign.engine.core import devices_line
from codesign.errors import CodesignError, caused_by_stop, check_stop
from codesign.files import writable_folder
from codesign.search import gradient, screening
from codesign.search import study as studies
from codesign.search.fronts import staircase
from codesign.search.journal import batch as storage_batch
from codesign.search.space import SearchSpace

__all__ = ["check_counts", "run_search"]


MAX_BATCH = 1024  # candidates per batch: one compiled population of that size must fit in memory
MAX_TRIALS = 1_000_000


def check_counts(trials: int | None, batch: int | None) -> None:
    """Reject a trial count or batch size out of range before any work starts."""
    if trials is not None and not 0 <= trials <= MAX_TRIALS:
        raise CodesignError(f"--trials must be in [0, {MAX_TRIALS}], got {trials}")
    if batch is not None and not 1 <= batch <= MAX_BATCH:
        raise CodesignError(f"--batch must be in [1, {MAX_BATCH}], got {batch}")


def _proposals(space, study, evaluator, want: int, rng, reference_energy_j) -> list[dict]:
    """The energy-aware sampler's next params (`codesign.search.screening`), from the study so
    far."""
    dims = space.param_dims()
    past = study.get_trials(deepcopy=False)
    trained, pending, tried = studies.history(past, dims)
    waiting = sum(t.state == studies.WAITING for t in past)
    return screening.propose(
        dims,
        trained,
        pending,
        tried,
        lambda params: evaluator.budget_energies([space.candidate(p) for p in params]),
        want - waiting,
        rng,
        min_accuracy=space.problem.budgets.accuracy_floor,
        reference_energy_j=reference_energy_j,
    )


def front_params(trained: list) -> list[dict]:
    """Params of the non-dominated (energy_j, accuracy) entries of `trained` ((params, energy,
    accuracy) triples, as `study.history` gives them), cheapest first."""
    steps = staircase([(energy, -accuracy) for _, energy, accuracy in trained])
    return [trained[i][0] for i in steps]


def _gradient_proposals(space, study, evaluator, batch: int, base_seed: int):
    """The gradient sampler's next params (`codesign.search.gradient`): `batch` starting points,
    each with its own trade-off weight, learned by gradient, snapped onto the space's grid;
    duplicates of each other or of tried params dropped (random asks fill in). Up to half the
    starts are designs of the study's front so far (refined: moved along the trade-off from where
    the search stands), the rest random points of the space. Returns (params, user attrs) pairs."""
    past = study.get_trials(deepcopy=False)
    rng = np.random.default_rng([base_seed, len(past), 7])
    config = space.sampler.gradient
    trained, _, tried_params = studies.history(past, space.param_dims())
    front = front_params(trained)
    picks = rng.permutation(len(front))[: batch // 2]
    start_params = [front[i] for i in picks] + space.sample_params(rng, batch - len(picks))
    starts = [space.candidate(p) for p in start_params]
    lams = gradient.lambdas(batch, config, rng)
    seeds = rng.integers(2**31 - 1, size=batch)
    learned, run = evaluator.codesign(starts, seeds, lams, space.bounds(), config)
    tried = {repr(sorted(p.items())) for p in tried_params}
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


def _evaluate(space, evaluator, storage, study, asked, cands, seeds, batch) -> list:
    """Results of a batch: energy for all, a fine-tune for those worth training."""
    estimates = evaluator.estimate(cands, pad_to=max(batch, len(cands)))  # one compile
    results = [dataclasses.replace(r, seed=s) for r, s in zip(estimates, seeds, strict=True)]
    train = [i for i, r in enumerate(results) if space.problem.worth_training(r)]
    if train:
        with studies.heartbeats(study, storage, asked):
            trained = evaluator.evaluate(
                [cands[i] for i in train], [seeds[i] for i in train], chunk=batch
            )
        for i, result in zip(train, trained, strict=True):
            results[i] = result
    return results


def run_search(
    space: SearchSpace,
    *,
    trials: int | None = None,
    batch: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int | None = None,
    out_dir: str | pathlib.Path | None = None,
    cache_dir=None,
    progress: Callable | None = None,
    log: Callable | None = None,
    recover_stale: bool = True,
    force_new_study: bool = False,
):
    """Run (or resume) the study until it holds `trials` finished trials; returns the study."""
    trials = space.trials if trials is None else trials
    batch = space.batch if batch is None else batch
    check_counts(trials, batch)
    out_dir = pathlib.Path(out_dir or pathlib.Path("runs") / (study_name or space.name))
    # The environment (cache, run folder, devices) fails here in one line, before any write.
    writable_folder(cache_root(), "CODESIGN_CACHE")
    if storage is None:
        writable_folder(out_dir, "--out")
    devices = devices_line()
    evaluator = space.evaluator(cache_dir=cache_dir, log=log)  # bad data fails before any write
    storage = studies.storage_for(storage, out_dir)
    study = studies.open_study(space, storage, study_name, seed, force_new=force_new_study)
    if log:
        log(devices)  # the first line once the search starts (the engine logs when built)
    if study.user_attrs.get("target_trials") != trials:
        study.set_user_attr("target_trials", trials)  # what `codesign worker` aims for
    base_seed = study.user_attrs.get("seed", 0)
    started = time.perf_counter()
    done_at_start = studies.counts(study)[0]
    screened = space.sampler.name == "energy-aware"
    by_grad = space.sampler.name == "gradient"
    reference_j = None
    if screened:
        reference = evaluator.budget_energies([evaluator.dense_digital(space.tiles[0])])[0]
        reference_j = float(reference) if np.isfinite(reference) else None
    worker = studies.worker_id()
    # Ask/tell with heartbeats is what we want; Optuna's heartbeat helpers warn about it.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    while True:
        asked: list = []
        try:
            check_stop()  # a stop whose raise Python dropped (in a gc callback) ends it here
            # Asking: under the journal's lock (one fsync), so workers sharing a study claim at
            # most `trials` in total; dead workers' trials are recovered first. SIGINT and SIGTERM
            # wait for the end of a storage phase, so a stop never cuts one in half.
            # The gradient sampler learns its proposals outside the lock: other workers go on.
            learned = []
            if by_grad and trials > sum(studies.counts(study)):
                learned = _gradient_proposals(space, study, evaluator, batch, base_seed)
            with studies.uninterrupted(), storage_batch(storage):
                if recover_stale:
                    studies.recover_stale_trials(study, storage, log)
                    optuna.storages.fail_stale_trials(study)  # RDB heartbeats; else a no-op
                finished, running = studies.counts(study)
                want = min(batch, trials - finished - running)
                if want <= 0:
                    if not (recover_stale and studies.unclaimed(study)):
                        break
                    time.sleep(1.0)  # a dead worker's unclaimed trial, recovered after its grace
                    continue
                for params, attrs in learned[:want]:
                    studies.enqueue(study, params, attrs)
                if screened:  # under the lock: workers see each other's pending trials
                    rng = np.random.default_rng([base_seed, len(study.get_trials(deepcopy=False))])
                    for params in _proposals(space, study, evaluator, want, rng, reference_j):
                        studies.enqueue(study, params)
                for _ in range(want):  # claimed at once: on RDB storages these are two writes
                    asked.append(study.ask())
                    asked[-1].set_user_attr("worker", worker)
                asked = studies.drop_surplus(study, asked, trials)
                cands = [space.suggest(t) for t in asked]
            if not asked:
                continue
            seeds = [base_seed * 1_000_003 + t.number for t in asked]
            results = _evaluate(space, evaluator, storage, study, asked, cands, seeds, batch)
            with studies.uninterrupted(), storage_batch(storage):  # telling: one fsync
                for trial, result in zip(asked, results, strict=True):
                    studies.tell(study, trial, space.problem, result)
        except BaseException as err:  # SIGINT, or SIGTERM (the CLI raises it): resume redoes these
            if not caused_by_stop(err):
                raise
            with studies.uninterrupted(), storage_batch(storage):
                studies.release(study, asked, "interrupted: the search was stopped")
            raise
        if progress:
            progress(study, done_at_start, trials, time.perf_counter() - started)
    if trials and "baseline" not in study.user_attrs:
        baseline = evaluator.baseline(space.tiles[0], base_seed, batch)
        study.set_user_attr("baseline", baseline)
    return study
