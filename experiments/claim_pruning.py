"""Claim: pruning removes 30-50 % of a network's computations without hurting accuracy.

The seed article: "With the help of this compression strategy, the number of calculations can
already be reduced by 30-50 percent." We test it on the digits MLP of
`search_spaces/digits_mlp.yaml` (64-128-128-5, pretrained on digits 0-4, fine-tuned on 5-9) with
codesign's evaluation engine: the pretrained base is pruned at sparsity 0, 0.1, ..., 0.9 with
each granularity (unstructured weights, input rows, output columns, tile-aligned blocks of the
32-row analog tile grid), fine-tuned for the space's steps with the masks fixed, and scored. The
hidden layers are pruned; the 5-class head is kept dense (column pruning it would delete
classes). Every (granularity, sparsity, seed, chip) candidate is one row of one population: the
engine fine-tunes them all in one compiled, vmapped program.

Two chips: all-digital (analog fraction 0; exact digital arithmetic) and hybrid (half of each
layer's outputs on analog tiles, with programming/read noise and ADC quantization during
fine-tuning and evaluation). MACs removed is counted from the real masks (kept weights); energy
removed is the energy model on the real masks (`counts_from_masks`), on each chip.

The decision "within 1 point of dense" is made on the target validation split, which holds only
134 examples (one example = 0.75 points), so every accuracy is the mean over seeds (fine-tune
batch order, head init and noise draws); the standard error and the test-split accuracy at the
chosen sparsity are reported beside it.

    python experiments/claim_pruning.py           # full: 10 sparsities x 4 granularities x
                                                  # 3 seeds x 2 chips, 222 fine-tunes: 71 s
                                                  # on 2 shared cores (270 s under heavy load)
    python experiments/claim_pruning.py --quick   # 4 sparsities, 1 seed, 20 steps (< 1 min)
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

from codesign.hardware.energy import counts_from_masks, estimate_energy
from codesign.search.evaluate import Candidate
from codesign.search.space import load_space

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _results  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "digits_mlp.yaml"
NAME = "claim_pruning"
CLAIM = "pruning removes 30-50% of the computations (at no real accuracy loss)"
GRANULARITIES = ("unstructured", "row", "column", "block")
CHIPS = {"all-digital": 0.0, "hybrid": 0.5}  # analog fraction of every layer
TILE = (32, 32)  # the space's smallest tile: the block grid is 32 rows x 16 weights
MAX_LOSS = 0.01  # one accuracy point
CLAIM_LOW = 0.30


def _space(quick: bool):
    space = load_space(SPACE)
    if quick:
        space = space.with_finetune(steps=20)
    return space


def _candidate(space, granularity: str, sparsity: float, analog: float) -> Candidate:
    model = space.problem.model
    return Candidate(
        widths=tuple(model.widths),
        sparsity=(sparsity,) * model.num_hidden + (0.0,),  # the head stays dense
        granularity=(granularity,) * model.num_layers,
        analog_fraction=(analog,) * model.num_layers,
        tile=TILE,
        adc_bits=int(space.accelerator().adc_bits),
    )


def _energy(evaluator, cand: Candidate, masks, analog: float) -> float:
    acc = evaluator.accelerator(cand)
    counts = counts_from_masks(evaluator.shapes, masks, np.full(len(masks), analog), acc)
    return float(estimate_energy(evaluator.shapes, counts, acc).energy_j)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run (< 1 min)")
    parser.add_argument("--out", help="output directory (default: results/, quick: temporary)")
    args = parser.parse_args(argv)
    stamp = _results.stamp("quick" if args.quick else "full")
    started = time.perf_counter()
    space = _space(args.quick)
    sparsities = [0.0, 0.3, 0.6, 0.9] if args.quick else [round(0.1 * i, 1) for i in range(10)]
    seeds = [0] if args.quick else [0, 1, 2]
    chips = {"hybrid": CHIPS["hybrid"]} if args.quick else CHIPS

    evaluator = space.evaluator()
    # One population: the dense network once per (chip, seed), then every granularity x sparsity.
    rows = []  # (chip, granularity or None, sparsity, seed)
    for chip in chips:
        for seed in seeds:
            rows.append((chip, None, 0.0, seed))
            rows += [(chip, g, s, seed) for g in GRANULARITIES for s in sparsities if s > 0]
    cands = [_candidate(space, g or "unstructured", s, chips[c]) for c, g, s, _ in rows]
    population = evaluator.population(cands, [1000 + seed for *_, seed in rows])
    out = evaluator.engine.evaluate_population(population, keep_params=True)

    results = {}
    for chip in chips:
        dense_idx = [i for i, r in enumerate(rows) if r[0] == chip and r[1] is None]
        dense_kept = float(out.kept_weights[dense_idx[0]].sum())
        dense_energy = {
            name: _energy(evaluator, cands[dense_idx[0]], _masks(out, dense_idx[0]), a)
            for name, a in CHIPS.items()
        }
        per_gran = {}
        for g in GRANULARITIES:
            curve = []
            for s in sparsities:
                idx = dense_idx if s == 0 else [
                    i for i, r in enumerate(rows) if r[0] == chip and r[1] == g and r[2] == s
                ]  # fmt: skip
                val = np.asarray([out.val_accuracy[i] for i in idx])
                test = np.asarray([out.test_accuracy[i] for i in idx])
                kept = float(out.kept_weights[idx[0]].sum())  # masks do not depend on seed
                energy = {
                    name: _energy(evaluator, cands[idx[0]], _masks(out, idx[0]), a)
                    for name, a in CHIPS.items()
                }
                curve.append(
                    {
                        "sparsity": s,
                        "val_accuracy": float(val.mean()),
                        "val_stderr": float(val.std(ddof=1) / np.sqrt(len(val)))
                        if len(val) > 1
                        else None,
                        "test_accuracy": float(test.mean()),
                        "macs_removed": 1.0 - kept / dense_kept,
                        "energy_removed_all_digital": 1.0
                        - energy["all-digital"] / dense_energy["all-digital"],
                        "energy_removed_hybrid": 1.0 - energy["hybrid"] / dense_energy["hybrid"],
                    }
                )
            dense_acc = curve[0]["val_accuracy"]
            ok = [p for p in curve if p["val_accuracy"] >= dense_acc - MAX_LOSS - 1e-9]
            best = max(ok, key=lambda p: p["sparsity"])
            # A check on twice the examples: validation and test pooled.
            nv, nt = len(evaluator.task.target.y_val), len(evaluator.task.target.y_test)
            pooled = [(p["val_accuracy"] * nv + p["test_accuracy"] * nt) / (nv + nt) for p in curve]
            ok_pooled = [
                p for p, a in zip(curve, pooled, strict=True) if a >= pooled[0] - MAX_LOSS - 1e-9
            ]
            best_pooled = max(ok_pooled, key=lambda p: p["sparsity"])
            per_gran[g] = {
                "curve": curve,
                "dense_val_accuracy": dense_acc,
                "dense_test_accuracy": curve[0]["test_accuracy"],
                "max_sparsity_within_1pt": best["sparsity"],
                "at_sweep_edge": best["sparsity"] == sparsities[-1],
                "max_sparsity_within_1pt_val_test_pooled": best_pooled["sparsity"],
                "macs_removed_val_test_pooled": best_pooled["macs_removed"],
                "val_accuracy_there": best["val_accuracy"],
                "test_accuracy_there": best["test_accuracy"],
                "test_loss_there": curve[0]["test_accuracy"] - best["test_accuracy"],
                "macs_removed": best["macs_removed"],
                "energy_removed_all_digital": best["energy_removed_all_digital"],
                "energy_removed_hybrid": best["energy_removed_hybrid"],
            }
        results[chip] = per_gran

    # The verdict: the claim is about computations, on whatever chip; judged on the all-digital
    # chip in full mode (exact arithmetic), on the hybrid chip in quick mode (the only one run).
    judge = "all-digital" if "all-digital" in results else "hybrid"
    # Holds when some granularity removes >= 30 % of the MACs and that carries into energy
    # (on either chip); partly when the MACs go but the energy model does not follow.
    removed = {g: results[judge][g]["macs_removed"] for g in GRANULARITIES}
    energy = {
        g: max(results[judge][g]["energy_removed_all_digital"],
               results[judge][g]["energy_removed_hybrid"])
        for g in GRANULARITIES
    }  # fmt: skip
    macs_ok = [g for g in GRANULARITIES if removed[g] >= CLAIM_LOW]
    both_ok = [g for g in macs_ok if energy[g] >= CLAIM_LOW]
    summary = (
        f"at <=1 pt validation loss ({judge} chip, seed means) MACs / energy removed: "
        + ", ".join(f"{g} {removed[g]:.0%} / {energy[g]:.0%}" for g in GRANULARITIES)
    )
    edge = [g for g in GRANULARITIES if results[judge][g]["at_sweep_edge"]]
    if edge:
        summary += f" ({', '.join(edge)} at the sweep's last sparsity: a lower bound)"
    if both_ok:
        verdict = "holds"
        reason = f"{', '.join(both_ok)} remove >= {CLAIM_LOW:.0%} of MACs and energy: {summary}"
    elif macs_ok:
        verdict = "partly"
        reason = (
            f"{', '.join(macs_ok)} remove >= {CLAIM_LOW:.0%} of MACs but not of energy: {summary}"
        )
    else:
        verdict = "does not hold"
        reason = f"no granularity removes {CLAIM_LOW:.0%} of MACs: {summary}"
    report = {
        "claim": NAME,
        "seed_claim": CLAIM,
        "mode": "quick" if args.quick else "full",
        "space": str(SPACE.relative_to(ROOT)),
        "finetune_steps": space.problem.finetune.steps,
        "seeds": seeds,
        "sparsities": sparsities,
        "granularities": list(GRANULARITIES),
        "tile": list(TILE),
        "max_accuracy_loss": MAX_LOSS,
        "val_examples": len(evaluator.task.target.y_val),
        "noise_note": _noise_note(evaluator, results[judge]["unstructured"], len(seeds)),
        "results": results,
        "judged_on": judge,
        "macs_removed": removed,
        "verdict": verdict,
        "reason": reason,
    }
    report["runtime_s"] = time.perf_counter() - started
    report.update(_results.finish(stamp))
    _write(report, _results.out_dir(args.out, args.quick, NAME))
    _print(report)
    return report


def _noise_note(evaluator, dense: dict, n_seeds: int) -> str:
    n = len(evaluator.task.target.y_val)
    p = dense["dense_val_accuracy"]
    sd = 100 * np.sqrt(p * (1 - p) / n)
    return (
        f"1 validation example = {100 / n:.2f} points; accuracies are means over {n_seeds} "
        f"seed(s), which average fine-tune noise but not the sampling noise of the {n} "
        f"examples (binomial sd {sd:.1f} points at {p:.3f}): the pooled val+test column checks "
        "the decision on twice the examples"
    )


def _masks(out, i: int) -> list[np.ndarray]:
    return [np.asarray(m[i]) for m in out.masks]


def _print(report: dict) -> None:
    print(f"{NAME} ({report['mode']}): {report['seed_claim']}")
    print(f"  {report['noise_note']}")
    header = (
        f"{'chip':<12}{'granularity':<14}{'dense acc':>10}{'max sparsity':>14}{'val acc':>9}"
        f"{'test acc':>10}{'MACs -':>8}{'E- digital':>12}{'E- hybrid':>11}{'pooled max s':>14}"
    )
    print(header)
    for chip, per_gran in report["results"].items():
        for g, r in per_gran.items():
            print(
                f"{chip:<12}{g:<14}{r['dense_val_accuracy']:>10.3f}"
                f"{r['max_sparsity_within_1pt']:>14.1f}{r['val_accuracy_there']:>9.3f}"
                f"{r['test_accuracy_there']:>10.3f}{r['macs_removed']:>8.0%}"
                f"{r['energy_removed_all_digital']:>12.0%}{r['energy_removed_hybrid']:>11.0%}"
                f"{r['max_sparsity_within_1pt_val_test_pooled']:>14.1f}"
            )
    print(f"verdict: {report['verdict']}: {report['reason']}")
    print(f"runtime: {report['runtime_s']:.0f} s")


def _write(report: dict, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    _results.write(report, out, NAME)
    fig, (ax_acc, ax_e) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    styles = {"all-digital": "-", "hybrid": "--"}
    for chip, per_gran in report["results"].items():
        for k, (g, r) in enumerate(per_gran.items()):
            xs = [p["sparsity"] for p in r["curve"]]
            ax_acc.plot(
                xs, [p["val_accuracy"] for p in r["curve"]], styles[chip], color=f"C{k}",
                marker="o", ms=3, label=f"{g} ({chip})",
            )  # fmt: skip
            if chip == report["judged_on"]:
                key_d, key_h = "energy_removed_all_digital", "energy_removed_hybrid"
                ax_e.plot(xs, [p["macs_removed"] for p in r["curve"]], ":", color=f"C{k}")
                ax_e.plot(xs, [p[key_d] for p in r["curve"]], "-", color=f"C{k}", label=g)
                ax_e.plot(xs, [p[key_h] for p in r["curve"]], "--", color=f"C{k}")
        dense = next(iter(per_gran.values()))["dense_val_accuracy"]
        ax_acc.axhline(dense - MAX_LOSS, color="0.5", lw=0.8, ls=styles[chip])
    ax_acc.set_xlabel("sparsity of the hidden layers")
    ax_acc.set_ylabel("target validation accuracy (seed mean)")
    ax_acc.set_title("accuracy after fine-tune (grey: dense - 1 pt)")
    ax_acc.legend(fontsize=7)
    ax_e.axhspan(0.30, 0.50, color="C2", alpha=0.12, label="seed: 30-50 %")
    ax_e.set_xlabel("sparsity of the hidden layers")
    ax_e.set_ylabel("share removed vs dense")
    ax_e.set_title("MACs (dotted), energy all-digital (solid), hybrid (dashed)")
    ax_e.legend(fontsize=7)
    for ax in (ax_acc, ax_e):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"{NAME}.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
