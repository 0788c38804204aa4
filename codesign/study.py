"""The Optuna edge: storages, samplers, studies, results told to and read from trials, and the
bookkeeping that lets several workers share one study.

Storage defaults to an Optuna journal file in the run directory (no server; optuna-dashboard
reads it); any Optuna storage URL works. A study remembers the search space it was made with.
A trial's numbers are a `Result` (`codesign.evaluate`), stored as its user attributes; its
objective values and budget constraints are what every Optuna client (the `optuna` CLI,
optuna-dashboard) reads. Bookkeeping: which trials count towards a total, trials left RUNNING
by a dead worker (failed, their candidate asked again), trials that lost a race for the last
slots (failed as surplus), heartbeats on RDB storages.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import threading
import time
import warnings

import optuna

from codesign.errors import CodesignError
from codesign.evaluate import Problem, Result, failure_attrs
from codesign.journal import BatchedJournalStorage
from codesign.space import SearchSpace, parse_space

__all__ = [
    "JOURNAL_NAME",
    "counts",
    "enqueue",
    "find_study",
    "history",
    "open_study",
    "quiet_optuna",
    "recover_stale_trials",
    "result_of",
    "sampler_for",
    "storage_for",
    "study_space",
    "tell",
]

JOURNAL_NAME = "study.journal"
# RDB storages (PostgreSQL, ...): a worker records a heartbeat for its running trials this often;
# a trial silent for 3 intervals is failed by the next worker that asks, and its candidate retried.
HEARTBEAT_S = 20
COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
RUNNING, WAITING = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING


# --- storages, samplers, studies ---


def quiet_optuna() -> None:
    """Optuna logs warnings only (codesign shows its own progress)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_for(storage, out_dir: str | pathlib.Path):
    """An Optuna storage: the URL given, or a journal file in the run directory.

    An already-built Optuna storage object is returned as it is.
    """
    if storage is not None and not isinstance(storage, str):
        return storage
    if storage:
        if storage.endswith(".journal") or storage.endswith(".log"):
            return _journal(pathlib.Path(storage))
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    storage,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=3 * HEARTBEAT_S,
                    heartbeat_stale_trial_callback=(
                        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
                    ),
                )
        except Exception as err:  # bad URL, missing driver, unreachable server
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CodesignError(f"--storage {storage!r}: {reason}") from None
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CodesignError(f"--out {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return _journal(out / JOURNAL_NAME)


def _journal(path: pathlib.Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return BatchedJournalStorage(str(path))


def sampler_for(space: SearchSpace, seed: int):
    """The Optuna sampler the space names."""
    name = space.sampler.name
    if name == "energy-aware":
        # The search enqueues every candidate (codesign.screening); this only fills gaps.
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            population_size=space.sampler.population_size, seed=seed
        )
    if name == "tpe":
        # constant_liar: a batch of asks sees its pending trials, so it does not repeat itself.
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


def open_study(space: SearchSpace, storage, study_name: str | None = None, seed: int | None = None):
    """Create the study, or load it when it exists (resume)."""
    seed = space.sampler.seed if seed is None else seed
    study = optuna.create_study(
        study_name=study_name or space.name,
        storage=storage,
        directions=space.problem.directions,
        sampler=sampler_for(space, seed),
        load_if_exists=True,
    )
    if study.metric_names is None:
        with warnings.catch_warnings():  # set_metric_names is marked experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(space.problem.metric_names)
    if "space" not in study.user_attrs:
        study.set_user_attr("space", space.raw)
        study.set_user_attr("space_path", space.path)
        study.set_user_attr("seed", seed)
    return study


def find_study(storage, name: str | None) -> optuna.Study:
    """The study `name` in `storage`, or its only study when no name is given."""
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if name is None:
        if len(names) != 1:
            raise CodesignError(f"--study: give one of {', '.join(names) or '(no studies)'}")
        name = names[0]
    if name not in names:
        raise CodesignError(f"--study {name!r}: not found; studies: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=storage)


def study_space(study: optuna.Study) -> SearchSpace:
    """The search space a codesign study was created with."""
    if "space" not in study.user_attrs:
        raise CodesignError(f"--study {study.study_name!r}: not a codesign study (no search space)")
    return parse_space(study.user_attrs["space"], study.user_attrs.get("space_path", "<study>"))


# --- results <-> trials ---


def result_of(trial: optuna.trial.FrozenTrial) -> Result | None:
    return Result.from_attrs(trial.user_attrs)


def scored(trial: optuna.trial.FrozenTrial) -> Result | None:
    """The result of a COMPLETE trial that was trained to a finite accuracy, else None."""
    result = result_of(trial) if trial.state == COMPLETE else None
    return result if result is not None and result.ok else None


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Complete, trained, within every budget, not degenerate (`Result.feasible`)."""
    result = scored(trial)
    return result is not None and result.feasible(trial.constraints)


def tell(study: optuna.Study, trial: optuna.Trial, problem: Problem, result: Result) -> None:
    """Store a result in its trial and finish it: COMPLETE with objective values and budget
    constraints (over budget before training: accuracy 0), or FAIL if the fine-tune diverged."""
    for key, value in result.to_attrs().items():
        trial.set_user_attr(key, value)
    for key, value in problem.violations(result).items():
        trial.set_constraint(key, value)
    if result.trained and not result.ok:
        study.tell(trial, state=FAIL)
    else:
        study.tell(trial, problem.objective_values(result))


# --- the energy-aware sampler's view of a study ---


def enqueue(study: optuna.Study, params: dict) -> None:
    """Queue a proposal; its params stay readable (as "proposed") while it waits to be asked."""
    study.enqueue_trial(params, user_attrs={"proposed": params})


def history(trials, names) -> tuple[list, list[dict], list[dict]]:
    """Trials as `screening.propose` takes them: (params, energy_j, accuracy) of the trained,
    params of the pending (asked or queued, not scored), and params of every trial."""
    params_of = [t.user_attrs.get("proposed", t.params) for t in trials]
    has_all = [set(names) <= set(p) for p in params_of]
    trained = [
        (t.params, r.energy_j, r.accuracy)
        for t, ok in zip(trials, has_all, strict=True)
        if ok and (r := scored(t)) is not None
    ]
    pending = [
        {name: p[name] for name in names}
        for t, p, ok in zip(trials, params_of, has_all, strict=True)
        if ok and t.state in (RUNNING, WAITING)
    ]
    return trained, pending, params_of


# --- workers sharing a study ---


def _counts_towards_total(trial: optuna.trial.FrozenTrial) -> bool:
    """Complete, or failed on its own (diverged). Not a trial whose worker died (its candidate
    is asked again) nor a surplus trial."""
    if trial.state == COMPLETE:
        return True
    result = result_of(trial) if trial.state == FAIL else None
    return result is not None and result.diverged


def counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials that count towards the total."""
    trials = study.get_trials(deepcopy=False)
    return sum(map(_counts_towards_total, trials)), sum(t.state == RUNNING for t in trials)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _is_stale(trial, now: float, stale_after_s: float) -> bool:
    """A RUNNING trial whose worker process is gone (same host), or silent for too long."""
    host, _, pid = str(trial.user_attrs.get("worker", "")).partition(":")
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    started = trial.datetime_start.timestamp() if trial.datetime_start else now
    return now - started > stale_after_s


def recover_stale_trials(study, storage, log=None, stale_after_s: float = 3600.0) -> int:
    """Mark RUNNING trials left by dead workers as FAIL and re-ask their parameters.

    A trial's worker (host:pid) is stored when it is asked: on the same host a dead pid means
    stale at once; a trial from another host, or one asked without a worker, is stale after
    `stale_after_s` without finishing.
    """
    now = time.time()
    running = study.get_trials(deepcopy=False, states=(RUNNING,))
    stale = [t for t in running if _is_stale(t, now, stale_after_s)]
    for trial in stale:
        trial_id = _trial_id(study, storage, trial.number)
        for key, value in failure_attrs("stale: process died").items():
            storage.set_trial_user_attr(trial_id, key, value)
        study.tell(trial.number, state=FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
    if stale and log:
        log(f"recovered {len(stale)} interrupted trial(s); their candidates are re-asked")
    return len(stale)


def drop_surplus(study, asked: list, trials: int) -> list:
    """Keep the asked trials that fit within `trials`; the rest lost a race with another worker.

    Without a lock (RDB storages), two workers may claim the last slots at once. Claims are ranked
    by trial number; a trial beyond the total is failed at once (as 'surplus', not counted) and
    never evaluated.
    """
    claimed = sorted(
        t.number
        for t in study.get_trials(deepcopy=False)
        if t.state == RUNNING or _counts_towards_total(t)
    )
    allowed = set(claimed[:trials])
    kept = []
    for trial in asked:
        if trial.number in allowed:
            kept.append(trial)
        else:
            for key, value in failure_attrs("surplus: the study already had its total").items():
                trial.set_user_attr(key, value)
            study.tell(trial, state=FAIL)
    return kept


def _trial_id(study, storage, number: int) -> int:
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


@contextlib.contextmanager
def heartbeats(study, storage, trials):
    """Record heartbeats for `trials` while a fine-tune runs (RDB storages with heartbeats)."""
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if not interval:
        yield
        return
    ids = [_trial_id(study, storage, t.number) for t in trials]
    stop = threading.Event()

    def beat():
        while not stop.is_set():
            for trial_id in ids:
                storage.record_heartbeat(trial_id)
            stop.wait(interval)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
