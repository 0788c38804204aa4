"""Claim: on phase-change memory, the energy/accuracy front a year after programming is not the
front right after it, so a search should score accuracy at the time the chip will be used.

AnalogNAS (IBM) ranks candidates by accuracy after drift; codesign's `pcm` device model
(aihwkit's PCMLikeNoiseModel with global drift compensation, checked against aihwkit 1.2.0 by
experiments/validate_analog_model.py) does the same with `finetune.inference_time`.

What we measure: search_spaces/digits_mlp.yaml with `hardware.device: pcm`, one fixed set of
candidates (two widths x analog fraction 0.5 or 1 on every layer x ADC 3, 4, 6 or 8 bits, plus
the all-digital designs), each fine-tuned and scored by the search's own evaluator over several
seeds at inference times 0 s, 1 day and 1 year. Per time: each candidate's energy (the same at
every time) and mean validation / test accuracy with the seeds' spread; the front selected on
validation accuracy (mean over seeds) and reported on test. The claim holds when the fronts at
0 s and 1 year hold different candidates.

    PYTHONPATH=. python experiments/claim_drift.py              # committed results
    PYTHONPATH=. python experiments/claim_drift.py --quick      # 1 seed, 2 times, ~1 min CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _results  # noqa: E402

from codesign.search.fronts import staircase  # noqa: E402
from codesign.search.problem import Candidate  # noqa: E402
from codesign.search.space import load_space  # noqa: E402

CLAIM = (
    "On PCM compute-in-memory, the designs worth building depend on when they are read: the "
    "energy/accuracy front one year after programming differs from the front at programming."
)
SPACE = _results.ROOT / "search_spaces" / "digits_mlp.yaml"
TIMES = {"0 s": 0.0, "1 day": 86400.0, "1 year": 365.0 * 86400.0}


def front_indices(points: list[tuple[float, float]]) -> list[int]:
    """The points (energy, accuracy) no other point beats on both (lower energy, higher
    accuracy), ties in both kept once (the first), in index order."""
    return sorted(staircase([(e, -a) for e, a in points]).tolist())


def candidates(layers: int) -> list[Candidate]:
    out = []
    for width in (32, 128):
        common = dict(
            widths=(width,) * (layers - 1),
            sparsity=(0.0,) * layers,
            granularity=("unstructured",) * layers,
            tile=(128, 128),
        )
        out.append(Candidate(**common, analog_fraction=(0.0,) * layers, adc_bits=8))
        for fraction in (0.5, 1.0):
            for adc in (3, 4, 6, 8):
                out.append(Candidate(**common, analog_fraction=(fraction,) * layers, adc_bits=adc))
    return out


def measure(times: dict, seeds: int) -> dict:
    base = load_space(str(SPACE))
    problem = dataclasses.replace(base.problem, device="pcm")
    cands = candidates(problem.model.num_layers)
    rows = {}
    for label, t in times.items():
        space = dataclasses.replace(base, problem=problem).with_finetune(inference_time=t)
        evaluator = space.evaluator()
        start = time.perf_counter()
        results = evaluator.evaluate(
            [c for c in cands for _ in range(seeds)], [s for _ in cands for s in range(seeds)]
        )
        print(
            f"{label}: {len(results)} fine-tunes in {time.perf_counter() - start:.0f} s", flush=True
        )
        per = []
        for i, cand in enumerate(cands):
            mine = results[i * seeds : (i + 1) * seeds]
            val = np.asarray([r.accuracy for r in mine])
            test = np.asarray([r.test_accuracy for r in mine])
            per.append(
                {
                    "candidate": cand.to_dict(),
                    "energy_j": mine[0].energy_j,
                    "val_mean": float(val.mean()),
                    "val_std": float(val.std()),
                    "test_mean": float(test.mean()),
                    "test_std": float(test.std()),
                }
            )
        front = front_indices([(r["energy_j"], r["val_mean"]) for r in per])
        rows[label] = {"time_s": t, "candidates": per, "front": sorted(int(i) for i in front)}
    return rows


def plot(rows: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label in rows if label in ("0 s", "1 year")] or list(rows)
    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 4), sharey=True)
    for ax, label in zip(np.atleast_1d(axes), labels, strict=True):
        per, front = rows[label]["candidates"], rows[label]["front"]
        e = [r["energy_j"] for r in per]
        acc = [r["test_mean"] for r in per]
        err = [r["test_std"] for r in per]
        ax.errorbar(e, acc, yerr=err, fmt="o", color="lightgrey", label="candidates")
        order = sorted(front, key=lambda i: e[i])
        ax.plot([e[i] for i in order], [acc[i] for i in order], "o-", color="C3", label="front")
        for i in order:
            c = per[i]["candidate"]
            ax.annotate(f"{c['analog_fraction'][0]:g}/{c['adc_bits']}b", (e[i], acc[i]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("energy per inference (J)")
        ax.set_title(f"pcm, read {label} after programming")
    np.atleast_1d(axes)[0].set_ylabel("test accuracy (front chosen on validation)")
    np.atleast_1d(axes)[0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 0 s and 1 year")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", help="output directory (default: results/, quick: temporary)")
    args = parser.parse_args(argv)
    stamped = _results.stamp("quick" if args.quick else "full")
    times = {k: v for k, v in TIMES.items() if k != "1 day"} if args.quick else TIMES
    rows = measure(times, 1 if args.quick else args.seeds)
    first, last = rows["0 s"]["front"], rows["1 year"]["front"]
    now, year = rows["0 s"]["candidates"], rows["1 year"]["candidates"]
    analog = [i for i, r in enumerate(now) if r["candidate"]["analog_fraction"][0] > 0]
    drops = [100 * (now[i]["test_mean"] - year[i]["test_mean"]) for i in analog]
    summary = {
        "claim": "drift",
        "seed_claim": CLAIM,
        "space": str(SPACE.relative_to(_results.ROOT)),
        "seeds": 1 if args.quick else args.seeds,
        "fronts_differ": first != last,
        "front_0s": first,
        "front_1y": last,
        "analog_test_drop_points": {
            "mean": round(float(np.mean(drops)), 3),
            "max": round(float(np.max(drops)), 3),
        },
        "verdict": "holds" if first != last else "does not hold",
        "times": rows,
    }
    out = _results.out_dir(args.out, args.quick, "claim_drift")
    plot(rows, out / "claim_drift.png")
    _results.write({**_results.finish(stamped), **summary}, out, "claim_drift")
    print(f"front at 0 s: {first}; at 1 year: {last}; verdict: {summary['verdict']}")
    print(json.dumps({k: summary[k] for k in ("fronts_differ", "analog_test_drop_points")}))
    return summary


if __name__ == "__main__":
    main()
