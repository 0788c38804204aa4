"""The Optuna edge: storages, samplers, studies, results told to and read from trials, and the
bookkeeping that lets several workers share one study.

Storage defaults to an Optuna journal file in the run directory (no server; optuna-dashboard
reads it); any Optuna storage URL works. A study remembers the search space it was made with.
A trial's numbers are a `Result` (`codesign.search.evaluate`), stored as its user attributes; its
objective values and budget constraints are what every Optuna client (the `optuna` CLI,
optuna-dashboard) reads. Bookkeeping: which trials count towards a total, trials left RUNNING
by a dead worker (failed, their candidate asked again), trials that lost a race for the last
slots (failed as surplus), heartbeats on RDB storages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import signal
import socket
import threading
import time
import warnings

import optuna

from codesign.errors import CodesignError
from codesign.search.evaluate import Baseline, Problem, Result, failure_attrs
from codesign.search.journal import BatchedJournalStorage
from codesign.search.proposers import History, optuna_sampler
from codesign.search.space import SearchSpace, parse_space

__all__ = [
    "JOURNAL_NAME",
    "baseline_of",
    "set_baseline",
    "counts",
    "enqueue",
    "find_study",
    "history",
    "open_study",
    "quiet_optuna",
    "recover_stale_trials",
    "result_of",
    "storage_for",
    "study_space",
    "tell",
]

JOURNAL_NAME = "study.journal"
# RDB storages (PostgreSQL, ...): a worker records a heartbeat for its running trials this often;
# a trial silent for 3 intervals is failed by the next worker that asks, and its candidate retried.
HEARTBEAT_S = 20
COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
PRUNED = optuna.trial.TrialState.PRUNED
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
        storage = _with_installed_driver(storage)
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
    return _journal(out / JOURNAL_NAME, flag="--out")


def _journal(path: pathlib.Path, flag: str = "--storage"):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return BatchedJournalStorage(str(path))
    except OSError as err:
        raise CodesignError(f"{flag} {str(path.parent)!r}: {err.strerror or err}") from None
    except (ValueError, KeyError, TypeError) as err:  # JSON/Unicode decode errors are ValueErrors
        why = type(err).__name__
        raise CodesignError(f"{path}: not an Optuna journal ({why}); nothing changed") from None


def _with_installed_driver(url: str) -> str:
    """A plain postgresql:// URL names SQLAlchemy's default driver (psycopg 3 in SQLAlchemy 2.1,
    psycopg2 before); use whichever of the two is installed."""
    from importlib.util import find_spec

    plain = url.startswith("postgresql://")
    if plain and find_spec("psycopg") is None and find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def open_study(
    space: SearchSpace,
    storage,
    study_name: str | None = None,
    seed: int | None = None,
    *,
    force_new: bool = False,
):
    """Create the study, or load it when it exists (resume) and was made with the same space.

    `force_new` deletes an existing study of that name first.
    """
    seed = space.sampler.seed if seed is None else seed
    name = study_name or space.name
    exists = name in {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if exists and force_new:
        optuna.delete_study(study_name=name, storage=storage)
    elif exists:
        check_same_space(optuna.load_study(study_name=name, storage=storage), space)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=space.problem.directions,
        sampler=optuna_sampler(space, seed),
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
        study.set_user_attr("space_hash", space_hash(space))
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


def baseline_of(study: optuna.Study) -> Baseline | None:
    """The study's dense all-digital baseline, once the search has scored it."""
    return Baseline.from_attrs(study.user_attrs.get("baseline"))


def set_baseline(study: optuna.Study, baseline: Baseline) -> None:
    study.set_user_attr("baseline", baseline.to_attrs())


def scored(trial: optuna.trial.FrozenTrial) -> Result | None:
    """The result of a finished trial that was trained to a finite accuracy (feasible or not),
    else None."""
    result = result_of(trial) if trial.state in (COMPLETE, PRUNED) else None
    return result if result is not None and result.ok else None


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Complete, trained, and every constraint met (`Result.feasible`)."""
    result = scored(trial) if trial.state == COMPLETE else None
    return result is not None and result.feasible(trial.constraints)


def tell(study: optuna.Study, trial: optuna.Trial, problem: Problem, result: Result) -> None:
    """Store a result in its trial, with its constraint values, and finish it.

    COMPLETE with its objective values when every constraint is met; PRUNED when one is not
    (over a budget, so never trained, or below the accuracy budget, or a layer left empty), so
    that every Optuna client (`optuna best-trials`, optuna-dashboard, whose front ignores
    constraints) keeps it off the front, as codesign does; PRUNED too when its fine-tune was
    stopped early (`codesign.search.early_stop`); FAIL when a full fine-tune diverged.
    """
    violations = problem.violations(result)
    broken = [key for key, value in violations.items() if value > 0]
    reason = result.fail_reason or (f"infeasible: {', '.join(broken)}" if broken else None)
    for key, value in {**result.to_attrs(), **failure_attrs(reason)}.items():
        trial.set_user_attr(key, value)
    for key, value in violations.items():
        trial.set_constraint(key, value)
    # optuna-dashboard (0.21) reads only the pre-5 list of values; its names are a user attr.
    # Optuna reads both formats: the list adds the same values under "0", "1", ...
    trial_id = _trial_id(study, trial.storage, trial.number)
    trial.storage.set_trial_system_attr(trial_id, "constraints", list(violations.values()))
    trial.set_user_attr("constraint_names", list(violations))
    if result.trained and not result.ok:
        study.tell(trial, state=FAIL)
    elif broken or result.early_stopped:
        study.tell(trial, state=PRUNED)
    else:
        study.tell(trial, problem.objective_values(result))


# --- the energy-aware sampler's view of a study ---


def enqueue(study: optuna.Study, params: dict, attrs: dict | None = None) -> None:
    """Queue a proposal; its params stay readable (as "proposed") while it waits to be asked."""
    study.enqueue_trial(params, user_attrs={"proposed": params, **(attrs or {})})


def history(trials, names) -> History:
    """Trials as proposers read them (`codesign.search.proposers.History`): (params, energy_j,
    accuracy) of the trained (and of those stopped early, at the accuracy last probed), params
    of the pending (asked or queued, not scored), and params of every trial."""
    params_of = [t.user_attrs.get("proposed", t.params) for t in trials]
    has_all = [set(names) <= set(p) for p in params_of]
    trained = [
        (t.params, r.energy_j, r.accuracy)
        for t, ok in zip(trials, has_all, strict=True)
        if ok and (r := scored(t)) is not None
    ]
    # Stopped early: dominated at a rung; believed at the last accuracy probed there.
    trained += [
        (t.params, r.energy_j, r.rung_accuracies[-1])
        for t, ok in zip(trials, has_all, strict=True)
        if ok and t.state == PRUNED and (r := result_of(t)) is not None and r.early_stopped
    ]
    pending = [
        {name: p[name] for name in names}
        for t, p, ok in zip(trials, params_of, has_all, strict=True)
        if ok and t.state in (RUNNING, WAITING)
    ]
    waiting = sum(t.state == WAITING for t in trials)
    return History(trained, pending, params_of, waiting, len(trials))


# --- workers sharing a study ---


def _counts_towards_total(trial: optuna.trial.FrozenTrial) -> bool:
    """Complete, pruned as infeasible, or failed on its own (diverged). Not a trial whose worker
    died (its candidate is asked again) nor a surplus trial."""
    if trial.state in (COMPLETE, PRUNED):
        return True
    result = result_of(trial) if trial.state == FAIL else None
    return result is not None and result.diverged


def counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials that count towards the total."""
    trials = study.get_trials(deepcopy=False)
    return sum(map(_counts_towards_total, trials)), sum(t.state == RUNNING for t in trials)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


UNCLAIMED_GRACE_S = 30.0  # a trial is asked, then claimed (its worker attr) one write later


def unclaimed(study) -> bool:
    """Whether a RUNNING trial has no worker yet: just asked, or its process died between the
    ask and the claim (two writes on RDB storages; one batch on a journal file)."""
    running = study.get_trials(deepcopy=False, states=(RUNNING,))
    return any("worker" not in t.user_attrs for t in running)


def _is_stale(trial, now: float, stale_after_s: float) -> bool:
    """A RUNNING trial whose worker process is gone (same host), or silent for too long; one
    never claimed by a worker is stale after `UNCLAIMED_GRACE_S`."""
    if "worker" not in trial.user_attrs:
        stale_after_s = min(stale_after_s, UNCLAIMED_GRACE_S)
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
        enqueue(study, trial.params)
    if stale and log:
        log(f"recovered {len(stale)} interrupted trial(s); their candidates are re-asked")
    return len(stale)


@contextlib.contextmanager
def uninterrupted():
    """Hold SIGINT and SIGTERM until the block ends, then deliver them.

    Storage phases (ask, tell) run inside it, so a stop never cuts a batch of journal writes in
    half: the signal arrives between phases, where the search can mark its trials interrupted.
    Outside the main thread (signals go to the main thread only) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: held.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in held[:1]:
            signal.raise_signal(sig)


def release(study, trials, reason: str) -> None:
    """Fail trials this process asked but will not finish, and queue their params again."""
    for trial in trials:
        if study.get_trials(deepcopy=False)[trial.number].state != RUNNING:
            continue
        for key, value in failure_attrs(reason).items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=FAIL)
        enqueue(study, trial.params)


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


# --- the space a study was made with ---


def _canonical(space: SearchSpace, hashed: bool = True) -> dict:
    """What decides a trial's numbers: the problem and the searched dimensions (not the trial
    count, batch size or sampler, which a resume may change). `hashed`: without the keys added
    since, where they hold their defaults, so that older studies keep their hash."""
    dims = {key: dataclasses.asdict(dim) for key, dim in space.dims.items()}
    problem = dataclasses.asdict(space.problem)
    if not hashed:
        return json.loads(json.dumps({**problem, "search": dims}))
    for training in (problem["pretrain"], problem["finetune"]):
        if training["early_stop"] is None:  # off: the hash of spaces from before it existed
            del training["early_stop"]
        if training["inference_time"] == 0.0:  # likewise
            del training["inference_time"]
    if problem["device"] == "sram":
        del problem["device"]
    if problem["tile_scaling"] == "layer":
        del problem["tile_scaling"]
    return json.loads(json.dumps({**problem, "search": dims}))


def space_hash(space: SearchSpace) -> str:
    text = json.dumps(_canonical(space), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _changes(old, new, where: str = "") -> list[str]:
    """'key.path: old -> new' for every leaf that differs between two canonical spaces."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            change
            for key in sorted(set(old) | set(new))
            for change in _changes(old.get(key), new.get(key), f"{where}.{key}" if where else key)
        ]
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


def check_same_space(study: optuna.Study, space: SearchSpace) -> None:
    """Raise unless `space` evaluates trials as the study's own space did."""
    stored = study.user_attrs.get("space")
    if stored is None or study.user_attrs.get("space_hash") == space_hash(space):
        return
    try:
        before = _canonical(
            parse_space(stored, study.user_attrs.get("space_path", "<study>")), False
        )
    except CodesignError:
        before = {}
    changes = _changes(before, _canonical(space, False))
    if not changes:
        return
    shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
    raise CodesignError(
        f"study {study.study_name!r} was made with another search space ({shown}); "
        "resume with the original file, or start anew with --study NEW_NAME "
        "(or --force-new-study to delete this study's trials)"
    )
