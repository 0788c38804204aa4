"""The co-design search: an Optuna study driven by batched ask/tell around pure JAX evaluation.

    space --suggest--> candidates --energy model (vmapped)--> budgets checked, no training spent
          on infeasible ones --engine (one compiled population fine-tune)--> accuracy --tell-->

Optuna objects stay here: the energy model and the engine only see arrays. Storage defaults to
an Optuna journal file in the run directory (no server; optuna-dashboard reads it); any Optuna
storage URL works. Re-running the same search resumes it: completed trials are never recomputed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pathlib
import socket
import threading
import time
import warnings
from collections.abc import Callable

import jax
import numpy as np
import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled

from codesign import data, networks, screening, transfer
from codesign.energy import (
    COMPONENTS,
    GRANULARITIES,
    Design,
    counts_from_masks,
    estimate_energy,
    estimate_energy_batch,
)
from codesign.errors import CodesignError
from codesign.hardware import TRAINING_J_PER_FLOP
from codesign.journal import BatchedJournalFileBackend
from codesign.journal import batch as storage_batch
from codesign.space import Candidate, SearchSpace

__all__ = [
    "TRAINING_J_PER_FLOP",
    "Evaluator",
    "open_study",
    "run_search",
    "storage_for",
]

JOURNAL_NAME = "study.journal"
# RDB storages (PostgreSQL, ...): a worker records a heartbeat for its running trials this often;
# a trial silent for 3 intervals is failed by the next worker that asks, and its candidate retried.
HEARTBEAT_S = 20


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
    from optuna.storages.journal import JournalStorage

    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(BatchedJournalFileBackend(str(path)))


def _sampler(space: SearchSpace, seed: int):
    name = space.sampler["name"]
    if name == "energy-aware":
        # run_search enqueues every candidate (codesign.screening); this only fills gaps.
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            population_size=space.sampler["population_size"], seed=seed
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
    seed = space.sampler["seed"] if seed is None else seed
    study = optuna.create_study(
        study_name=study_name or space.name,
        storage=storage,
        directions=space.directions,
        sampler=_sampler(space, seed),
        load_if_exists=True,
    )
    if study.metric_names is None:
        with warnings.catch_warnings():  # set_metric_names is marked experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(space.metric_names)
    if "space" not in study.user_attrs:
        study.set_user_attr("space", space.raw)
        study.set_user_attr("space_path", space.path)
        study.set_user_attr("seed", seed)
    return study


# --- evaluation: candidates -> arrays -> numbers ---


class Evaluator:
    """Everything a space needs to score candidates: data, base network, engine, hardware."""

    def __init__(self, space: SearchSpace, *, cache_dir=None, log: Callable | None = None):
        self.space = space
        task_cfg = space.task
        self.task = data.transfer_split(
            task_cfg["dataset"],
            source_classes=task_cfg["source_classes"],
            target_classes=task_cfg["target_classes"],
            seed=task_cfg["seed"],
        )
        self.spec = network_spec(space, self.task.source)
        self.shapes = networks.layer_shapes(
            dataclasses.replace(self.spec, num_classes=self.task.target.num_classes)
        )
        ft = space.finetune
        self.finetune = transfer.FinetuneConfig(
            steps=ft["steps"],
            learning_rate=ft["learning_rate"],
            batch_size=ft["batch_size"],
            eval_draws=ft["eval_draws"],
            max_row_tiles=transfer.row_tile_bound(self.shapes, min(r for r, _ in space.tiles)),
        )
        pre = space.pretrain
        self.pretrain = transfer.PretrainConfig(
            steps=pre["steps"],
            learning_rate=pre["learning_rate"],
            batch_size=pre["batch_size"],
            seed=task_cfg["seed"],
        )
        self._cache_dir = cache_dir
        self._accelerators = {}
        self._log = log
        self._engine = None

    @property
    def engine(self) -> transfer.Engine:
        """Built on first use, so budget-only work never pretrains."""
        if self._engine is None:
            self._engine = transfer.Engine(
                self.spec,
                self.task,
                self.finetune,
                self.pretrain,
                cache_dir=self._cache_dir,
                log=self._log,
            )
        return self._engine

    def energy_report(self, cands: list[Candidate], pad_to: int | None = None):
        """The energy model on a batch of candidates in one vmapped call; NumPy leaves out.

        Arrays are built in NumPy (no per-candidate dispatch). `pad_to` pads the batch to a fixed
        size, so batches of any size up to it share one compiled program.
        """
        rows = [*cands, *[cands[0]] * ((pad_to or len(cands)) - len(cands))]
        designs = Design(
            widths=np.asarray([[*c.widths, self.shapes[-1].out_units] for c in rows], np.float32),
            analog_fraction=np.asarray([c.analog_fraction for c in rows], np.float32),
            sparsity=np.asarray([c.sparsity for c in rows], np.float32),
            granularity=np.asarray(
                [[GRANULARITIES.index(g) for g in c.granularity] for c in rows], np.int32
            ),
        )
        for c in rows:  # a space has few (tile, ADC) pairs: build each accelerator once
            if (c.tile, c.adc_bits) not in self._accelerators:
                self._accelerators[c.tile, c.adc_bits] = self.space.accelerator(c)
        order = {key: i for i, key in enumerate(self._accelerators)}
        index = np.asarray([order[c.tile, c.adc_bits] for c in rows])
        accs = jax.tree.map(
            lambda *xs: np.asarray(xs, np.float32)[index], *self._accelerators.values()
        )
        report = estimate_energy_batch(self.shapes, designs, accs)
        return jax.tree.map(lambda x: np.asarray(x)[: len(cands)], report)

    def energies(self, cands: list[Candidate]) -> list[dict]:
        """Per-candidate energy numbers (from the design's statistics) for a batch."""
        report = self.energy_report(cands)
        return [_energy_attrs(jax.tree.map(lambda x, i=i: x[i], report)) for i in range(len(cands))]

    def population(self, cands: list[Candidate], seeds: list[int]) -> transfer.Population:
        rows = []
        for cand, seed in zip(cands, seeds, strict=True):
            acc = self.space.accelerator(cand)
            cells = math.ceil(float(acc.weight_bits) / float(acc.cell_bits))
            rows.append(
                {
                    "widths": list(cand.widths),
                    "sparsity": list(cand.sparsity),
                    "granularity": list(cand.granularity),
                    "analog_fraction": list(cand.analog_fraction),
                    "tile_rows": cand.tile[0],
                    "tile_cols": max(1, cand.tile[1] // cells),
                    "adc_bits": cand.adc_bits,
                    "dac_bits": int(acc.dac_bits),
                    "seed": seed,
                }
            )
        return transfer.Population.stack(rows)

    def evaluate(self, cands: list[Candidate], seeds: list[int], chunk: int) -> list[dict]:
        """Fine-tune and score; energy recomputed exactly from the real masks."""
        out = self.engine.evaluate_population(
            self.population(cands, seeds), chunk=chunk, keep_params=True
        )
        results = []
        for i, cand in enumerate(cands):
            masks = [np.asarray(m[i]) for m in out["masks"]]
            counts = counts_from_masks(
                self.shapes, masks, np.asarray(cand.analog_fraction), self.space.accelerator(cand)
            )
            report = estimate_energy(self.shapes, counts, self.space.accelerator(cand))
            energy = _energy_attrs(jax.tree.map(np.asarray, report))
            flops = float(out["finetune_flops"][i])
            results.append(
                {
                    **energy,
                    "accuracy": float(out["val_accuracy"][i]),
                    "test_accuracy": float(out["test_accuracy"][i]),
                    "digital_test_accuracy": float(out["digital_test_accuracy"][i]),
                    "final_loss": float(out["final_loss"][i]),
                    "diverged": bool(out["diverged"][i]),
                    "finetune_flops": flops,
                    "finetune_energy_j": flops * TRAINING_J_PER_FLOP,
                }
            )
        return results


def network_spec(space: SearchSpace, source: data.Dataset) -> networks.NetworkSpec:
    """The maximum-width network of the space for the source task's inputs and classes."""
    base = networks.default_spec(space.model["family"], source.input_shape, source.num_classes)
    return dataclasses.replace(base, widths=tuple(space.model["widths"]))


def _energy_attrs(report) -> dict:
    """JSON-ready numbers of one candidate's EnergyReport (computed in NumPy: no dispatch)."""
    layers = {c: np.asarray(report.layer_j[c], np.float64) for c in COMPONENTS}
    energy = float(sum(v.sum() for v in layers.values()))
    macs = float(np.sum(report.layer_macs))
    return {
        "energy_j": energy,
        "latency_s": float(np.sum(report.layer_latency_s)),
        "tiles": int(np.sum(report.layer_tiles)),
        "tops_per_w": 2.0 * macs / energy / 1e12 if energy > 0 else 0.0,
        "energy_layers_j": {c: [float(x) for x in v] for c, v in layers.items()},
    }


# --- the loop ---


def _violations(space: SearchSpace, result: dict) -> dict[str, float]:
    """Constraint values (> 0 means violated) for the budgets known so far."""
    b, out = space.budgets, {}
    if "max_energy_j" in b:
        out["max_energy_j"] = result["energy_j"] / b["max_energy_j"] - 1.0
    if "max_latency_s" in b:
        out["max_latency_s"] = result["latency_s"] / b["max_latency_s"] - 1.0
    if "max_tiles" in b:
        out["max_tiles"] = result["tiles"] - b["max_tiles"]
    if "min_accuracy" in b:  # untrained (over another budget) counts as accuracy 0
        out["min_accuracy"] = b["min_accuracy"] - result.get("accuracy", 0.0)
    return out


def within_budget(space: SearchSpace, energy: dict):
    """Energy, latency and tiles within budget: worth a fine-tune (numbers or arrays)."""
    violations = _violations(space, {**energy, "accuracy": 1.0})
    ok = np.ones(np.shape(energy["energy_j"]), bool)
    for value in violations.values():
        ok &= np.asarray(value) <= 0
    return ok


def _objective_values(space: SearchSpace, result: dict) -> list[float]:
    lifecycle = (
        result.get("finetune_energy_j", 0.0) + space.lifecycle_inferences * result["energy_j"]
    )
    values = {
        "energy": result["energy_j"],
        "accuracy": result.get("accuracy", 0.0),
        "latency": result["latency_s"],
        "tiles": float(result["tiles"]),
        "lifecycle_energy": lifecycle,
    }
    return [values[o] for o in space.objectives]


def _counts_as_finished(trial) -> bool:
    """Complete, or failed on its own (diverged). Not a trial whose worker died (its candidate
    is asked again) nor a surplus trial."""
    if trial.state == optuna.trial.TrialState.COMPLETE:
        return True
    reason = str(trial.user_attrs.get("fail_reason", ""))
    return trial.state == optuna.trial.TrialState.FAIL and reason.startswith("fine-tune diverged")


def _counts(study) -> tuple[int, int]:
    """(finished, running) trials that count towards the total."""
    trials = study.get_trials(deepcopy=False)
    finished = sum(_counts_as_finished(t) for t in trials)
    running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    return finished, running


def _finished(study) -> int:
    return _counts(study)[0]


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


def recover_stale_trials(study, log=None, stale_after_s: float = 3600.0) -> int:
    """Mark RUNNING trials left by dead workers as FAIL and re-ask their parameters.

    A trial's worker (host:pid) is stored when it is asked: on the same host a dead pid means
    stale at once; a trial from another host, or one asked without a worker, is stale after
    `stale_after_s` without finishing.
    """
    now = time.time()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    stale = [t for t in running if _is_stale(t, now, stale_after_s)]
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "stale: process died")
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
    if stale and log:
        log(f"recovered {len(stale)} interrupted trial(s); their candidates are re-asked")
    return len(stale)


def _drop_surplus(study, asked: list, trials: int) -> list:
    """Keep the asked trials that fit within `trials`; the rest lost a race with another worker.

    Without a lock (RDB storages), two workers may claim the last slots at once. Claims are ranked
    by trial number; a trial beyond the total is failed at once (as 'surplus', not counted) and
    never evaluated.
    """
    claimed = sorted(
        t.number
        for t in study.get_trials(deepcopy=False)
        if t.state == optuna.trial.TrialState.RUNNING or _counts_as_finished(t)
    )
    allowed = set(claimed[:trials])
    kept = []
    for trial in asked:
        if trial.number in allowed:
            kept.append(trial)
        else:
            trial.set_user_attr("fail_reason", "surplus: the study already had its total")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return kept


@contextlib.contextmanager
def _heartbeats(storage, trials):
    """Record heartbeats for `trials` while a fine-tune runs (RDB storages with heartbeats)."""
    if not is_heartbeat_enabled(storage):
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.is_set():
            for trial in trials:
                storage.record_heartbeat(trial._trial_id)
            stop.wait(storage.get_heartbeat_interval())

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def check_counts(trials: int | None, batch: int | None) -> None:
    """Reject a negative trial count or an empty batch before any work starts."""
    if trials is not None and trials < 0:
        raise CodesignError(f"--trials must be >= 0, got {trials}")
    if batch is not None and batch < 1:
        raise CodesignError(f"--batch must be >= 1, got {batch}")


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
):
    """Run (or resume) the study until it holds `trials` finished trials; returns the study."""
    trials = space.trials if trials is None else trials
    batch = space.batch if batch is None else batch
    check_counts(trials, batch)
    out_dir = pathlib.Path(out_dir or pathlib.Path("runs") / (study_name or space.name))
    study = open_study(space, storage_for(storage, out_dir), study_name, seed)
    if study.user_attrs.get("target_trials") != trials:
        study.set_user_attr("target_trials", trials)  # what `codesign worker` aims for
    evaluator = Evaluator(space, cache_dir=cache_dir, log=log)
    base_seed = study.user_attrs.get("seed", 0)
    num_hidden = len(space.model["widths"])
    num_layers = len(evaluator.shapes)
    started = time.perf_counter()
    done_at_start = _finished(study)
    screened = space.sampler["name"] == "energy-aware"
    energy_fn = screening.energy_function(space, evaluator) if screened else None
    reference_energy_j = None
    if screened:
        reference = energy_fn([dense_digital_candidate(space, evaluator)])[0]
        reference_energy_j = float(reference) if np.isfinite(reference) else None
    worker = f"{socket.gethostname()}:{os.getpid()}"
    # Ask/tell with heartbeats is what we want; Optuna's heartbeat helpers warn about it.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    while True:
        # Asking: under the journal's lock (one fsync), so workers sharing a study claim at most
        # `trials` in total; dead workers' trials are recovered first.
        with storage_batch(study._storage):
            if recover_stale:
                recover_stale_trials(study, log)
                optuna.storages.fail_stale_trials(study)  # RDB heartbeats; no-op otherwise
            finished, running = _counts(study)
            want = min(batch, trials - finished - running)
            if want <= 0:
                break
            if screened:  # under the lock: workers see each other's pending trials
                past = study.get_trials(deepcopy=False)
                waiting = sum(t.state == optuna.trial.TrialState.WAITING for t in past)
                rng = np.random.default_rng([base_seed, len(past)])  # same proposals on resume
                for params in screening.propose(
                    space, past, energy_fn, want - waiting, rng, num_hidden, num_layers,
                    reference_energy_j=reference_energy_j,
                ):  # fmt: skip
                    study.enqueue_trial(params)
            asked = [study.ask() for _ in range(want)]
            for t in asked:
                t.set_user_attr("worker", worker)
            asked = _drop_surplus(study, asked, trials)
            cands = [space.suggest(t, num_hidden, num_layers) for t in asked]
        if not asked:
            continue
        seeds = [base_seed * 1_000_003 + t.number for t in asked]
        energies = evaluator.energies(cands)
        train_idx = [i for i, e in enumerate(energies) if within_budget(space, e)]
        results = list(energies)
        if train_idx:
            with _heartbeats(study._storage, asked):
                trained = evaluator.evaluate(
                    [cands[i] for i in train_idx], [seeds[i] for i in train_idx], chunk=batch
                )
            for i, r in zip(train_idx, trained, strict=True):
                results[i] = r
        with storage_batch(study._storage):  # telling: one fsync
            for i, (trial, cand, result) in enumerate(zip(asked, cands, results, strict=True)):
                _tell(study, space, trial, cand, seeds[i], result, trained=i in train_idx)
        if progress:
            progress(study, done_at_start, trials, time.perf_counter() - started)
    if trials and "baseline" not in study.user_attrs:
        study.set_user_attr("baseline", dense_digital_baseline(space, evaluator, base_seed, batch))
    return study


def dense_digital_candidate(space: SearchSpace, evaluator: Evaluator) -> Candidate:
    """The maximum network, unpruned, all digital: the baseline every front is compared to."""
    num_layers = len(evaluator.shapes)
    return Candidate(
        widths=tuple(space.model["widths"]),
        sparsity=(0.0,) * num_layers,
        granularity=("unstructured",) * num_layers,
        analog_fraction=(0.0,) * num_layers,
        tile=space.tiles[0],
        adc_bits=int(space.accelerator().adc_bits),
    )


def dense_digital_baseline(space: SearchSpace, evaluator: Evaluator, seed: int, chunk: int) -> dict:
    """The dense all-digital baseline, fine-tuned like any candidate."""
    cand = dense_digital_candidate(space, evaluator)
    (result,) = evaluator.evaluate([cand], [seed * 1_000_003 - 1], chunk=chunk)
    return {
        "label": "dense all-digital",
        "energy_j": result["energy_j"],
        "accuracy": result["accuracy"],
        "test_accuracy": result["test_accuracy"],
        "candidate": cand.to_dict(),
    }


def _tell(study, space, trial, cand: Candidate, seed: int, result: dict, trained: bool):
    trial.set_user_attr("candidate", cand.to_dict())
    trial.set_user_attr("seed", seed)
    trial.set_user_attr("skipped_training", not trained)
    for key, value in result.items():
        if key != "diverged":
            trial.set_user_attr(key, value)
    for key, value in _violations(space, result).items():
        trial.set_constraint(key, value)
    if not trained:
        # Over budget before training: told with accuracy 0 and its constraint values.
        study.tell(trial, _objective_values(space, result))
    elif result["diverged"] or not np.isfinite(result["accuracy"]):
        trial.set_user_attr(
            "fail_reason", f"fine-tune diverged (final loss {result['final_loss']})"
        )
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial, _objective_values(space, result))
