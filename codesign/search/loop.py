"""The co-design search: a batched ask -> evaluate -> tell loop around an Optuna study.

    space --proposer (`codesign.search.proposers`) + ask--> candidates --Evaluator--> results
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

import optuna

from codesign.data.datasets import cache_root
from codesign.engine.core import devices_line
from codesign.errors import CodesignError, caused_by_stop, check_stop
from codesign.files import writable_folder
from codesign.search import study as studies
from codesign.search.journal import batch as storage_batch
from codesign.search.proposers import proposer_for
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
    proposer = proposer_for(space, evaluator, base_seed)  # the space's `sampler:`

    def history():
        return studies.history(study.get_trials(deepcopy=False), space.param_dims())

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
            # A proposer learns (slow work: the gradient sampler's) outside the lock: other
            # workers go on.
            learned = []
            if trials > sum(studies.counts(study)):
                learned = proposer.learn(history, batch)
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
                # under the lock: workers see each other's pending trials
                for params, attrs in proposer.propose(history, want):
                    studies.enqueue(study, params, attrs)
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
    if trials and studies.baseline_of(study) is None:
        studies.set_baseline(study, evaluator.baseline(space.tiles[0], base_seed, batch))
    return study
