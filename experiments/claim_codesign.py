"""Claim: co-design regains more than 90 % of a network's inference power at no accuracy cost.

The seed article: "By applying these techniques, we can regain more than 90 percent of power"
(it says this of software techniques, "apart from any hardware considerations", and then argues
that co-optimising network and hardware brings the biggest benefit). We test it on the digits MLP
of `search_spaces/digits_mlp.yaml`: `search.run_search` searches widths, pruning, tile size,
analog/digital split and ADC bits together, every candidate fine-tuned under analog noise. The
reference is the study's own baseline (`study.user_attrs["baseline"]`): the maximum network,
dense, all digital, fine-tuned the same way. We take the lowest-energy feasible front trial whose
validation accuracy is at least the baseline's minus 1 point and report its energy saving.

Honesty about selection: the trial is chosen on the validation split (134 examples: one example
= 0.75 points), so a lucky draw can pass the threshold; its test accuracy (never used by the
search) is reported beside the baseline's, and the verdict needs both. A software-only line (the
best all-digital trial, analog fraction 0 everywhere) separates what pruning and narrowing alone
regain from what the analog hardware adds.

    python experiments/claim_codesign.py           # full: 96 trials, 150-step fine-tunes
                                                   # (52 s on 2 shared cores)
    python experiments/claim_codesign.py --quick   # 8 trials, 20-step fine-tunes (< 1 min)
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import shutil
import tempfile
import time

import optuna

from codesign import pareto, search
from codesign.space import load_space, parse_space

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "digits_mlp.yaml"
NAME = "claim_codesign"
CLAIM = "more than 90% of inference power regained at no accuracy loss"
CLAIM_SAVING = 0.90
MAX_LOSS = 0.01


def _space(quick: bool):
    raw = copy.deepcopy(load_space(SPACE).raw)
    if quick:
        raw["finetune"] = {**raw.get("finetune", {}), "steps": 20}
        raw["trials"], raw["batch"] = 8, 8
    else:
        raw["trials"], raw["batch"] = 96, 8
    return parse_space(raw, str(SPACE))


def _row(trial) -> dict:
    a = trial.user_attrs
    return {
        "trial": trial.number,
        "energy_j": a["energy_j"],
        "accuracy": a["accuracy"],
        "test_accuracy": a["test_accuracy"],
        "candidate": a["candidate"],
    }


def _lowest_within(trials, accuracy: float) -> dict | None:
    ok = [t for t in trials if t.user_attrs["accuracy"] >= accuracy - 1e-9]
    return _row(min(ok, key=lambda t: t.user_attrs["energy_j"])) if ok else None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run (< 1 min)")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    space = _space(args.quick)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="claim_codesign-"))
    try:
        study = search.run_search(space, out_dir=workdir)  # a fresh study every run
        baseline = study.user_attrs["baseline"]
        front = pareto.front(study)
        feasible = [t for t in study.get_trials(deepcopy=False) if pareto.feasible(t)]
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        pareto.plot_front(study, out / f"{NAME}.png", baseline=baseline)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    base_e, base_acc, base_test = (baseline[k] for k in ("energy_j", "accuracy", "test_accuracy"))
    chosen = _lowest_within(front, base_acc - MAX_LOSS)
    digital = [
        t for t in feasible if all(a == 0 for a in t.user_attrs["candidate"]["analog_fraction"])
    ]
    software = _lowest_within(digital, base_acc - MAX_LOSS)
    # Also required on test (a selection that peeks at test: a check, not a result).
    both = [t for t in feasible if t.user_attrs["test_accuracy"] >= base_test - MAX_LOSS - 1e-9]
    checked = _lowest_within(both, base_acc - MAX_LOSS)
    for pick in (chosen, software, checked):
        if pick:
            pick["energy_saving"] = 1.0 - pick["energy_j"] / base_e
            pick["test_loss_vs_baseline"] = base_test - pick["test_accuracy"]
    by_tolerance = {}
    for loss in (0.0, 0.01, 0.02, 0.05):
        pick = _lowest_within(front, base_acc - loss)
        by_tolerance[f"{loss:g}"] = None if pick is None else 1.0 - pick["energy_j"] / base_e

    if chosen is None:
        verdict = "does not hold"
        reason = "no feasible front trial within 1 point of the baseline's validation accuracy"
    else:
        s, test_loss = chosen["energy_saving"], chosen["test_loss_vs_baseline"]
        head = (
            f"trial {chosen['trial']} saves {s:.1%} of the dense all-digital energy at "
            f"{base_acc - chosen['accuracy']:+.3f} val / {test_loss:+.3f} test accuracy loss"
        )
        if software:
            head += f"; software alone (all-digital) {software['energy_saving']:.1%}"
        if s >= CLAIM_SAVING and test_loss <= MAX_LOSS + 1e-9:
            verdict, reason = "holds", head
        elif s >= CLAIM_SAVING:
            verdict = "partly"
            reason = f"{head}, but on the test split it loses more than 1 point"
            if checked:
                reason += (
                    f" (the cheapest trial within 1 point on both splits saves "
                    f"{checked['energy_saving']:.1%})"
                )
        else:
            verdict = "does not hold"
            reason = f"{head}: below the claimed {CLAIM_SAVING:.0%}"
    report = {
        "claim": NAME,
        "seed_claim": CLAIM,
        "mode": "quick" if args.quick else "full",
        "space": str(SPACE.relative_to(ROOT)),
        "trials": space.trials,
        "finetune_steps": space.problem.finetune.steps,
        "sampler": space.sampler.name,
        "feasible_trials": len(feasible),
        "front_size": len(front),
        "baseline": baseline,
        "max_accuracy_loss": MAX_LOSS,
        "chosen": chosen,
        "software_only": software,
        "within_1pt_on_val_and_test": checked,
        "energy_saving": None if chosen is None else chosen["energy_saving"],
        "energy_saving_by_val_loss": by_tolerance,
        "front": [_row(t) for t in front],
        "val_examples_note": "134 validation examples: one example = 0.75 points",
        "verdict": verdict,
        "reason": reason,
    }
    report["runtime_s"] = time.perf_counter() - started
    (out / f"{NAME}.json").write_text(json.dumps(report, indent=2))
    _print(report)
    return report


def _print(report: dict) -> None:
    b = report["baseline"]
    print(f"{NAME} ({report['mode']}): {report['seed_claim']}")
    print(f"{report['trials']} trials, {report['feasible_trials']} feasible, front of "
          f"{report['front_size']}")  # fmt: skip
    print(f"{'design':<28}{'energy J':>11}{'saving':>8}{'val acc':>9}{'test acc':>10}")
    print(f"{'dense all-digital baseline':<28}{b['energy_j']:>11.3g}{'':>8}"
          f"{b['accuracy']:>9.3f}{b['test_accuracy']:>10.3f}")  # fmt: skip
    picks = (
        ("co-design (<=1 pt val)", report["chosen"]),
        ("software only, all-digital", report["software_only"]),
        ("<=1 pt on val and test", report["within_1pt_on_val_and_test"]),
    )
    for label, pick in picks:
        if pick is None:
            print(f"{label:<28}{'none within 1 point':>38}")
            continue
        print(
            f"{label:<28}{pick['energy_j']:>11.3g}{pick['energy_saving']:>8.1%}"
            f"{pick['accuracy']:>9.3f}{pick['test_accuracy']:>10.3f}"
        )
    tol = ", ".join(
        f"{k}: {'-' if v is None else f'{v:.1%}'}"
        for k, v in report["energy_saving_by_val_loss"].items()
    )
    print(f"saving by allowed val loss: {tol}")
    print(f"verdict: {report['verdict']}: {report['reason']}")
    print(f"runtime: {report['runtime_s']:.0f} s")


if __name__ == "__main__":
    main()
