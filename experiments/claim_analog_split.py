"""Claim: where the analog/digital split lands per layer, and why.

Issue 10 found the split degenerate: on `hybrid-22nm` no per-layer split of the MLPs in
experiments/claim_analog_vs_digital.py beats all-analog. Per layer the choice is decided by how
many MACs (rows, K) share each output's ADC conversions: analog pays, per output column and
position, cycles x row bands x (cells per weight / columns per ADC) conversions plus its share of
the row DACs, whatever K is; digital pays K MACs (and, at one position and batch 1, every weight's
SRAM read). Below a break-even K the digital array is cheaper. MLP layers have K >= 40, so the
MLPs stay all-analog on every setting here; CNNs start with a few-row convolution.

Before issue 10 (commit 01ce6dc, same script) the two CNNs already split the same way on
`hybrid-22nm` (conv0 digital), saving 23-26%, but for a different reason: an ungated 256-row tile
charged all 256 rows and columns for conv0's 5 or 9 rows. With gated converters the saving there
is 6%; it is 27-28% on ZigZag's chips, whose ADCs cost more per output.

What we measure, at full width, unpruned, energy per inference (all components, SRAM and DRAM
included):
- two settings: `hybrid-22nm` (the search spaces' chip) and ZigZag-IMC's two stock 28 nm chips
  on one die (`zigzag-aimc-28nm` tiles beside the bit-serial 128 x 128 digital array of
  `zigzag-dimc-28nm`);
- four networks: the MNIST-1D CNN of search_spaces/mnist1d_cnn.yaml, the 2-D CNN codesign builds
  for 8x8 digits, and the two MLPs of search_spaces (digits 64-128-128-5, MNIST-1D 40-100-100-5);
- per layer, the analog fraction that minimises the network's energy (coordinate descent over
  fractions k/32, two sweeps, every candidate in one vmapped `estimate_energy_batch` call per
  layer), the layer's energy all-analog and all-digital, and its components;
- the break-even K of each chip: analog energy per output column per position over the digital
  energy per MAC.

Accuracy sensitivity, on the realistic setting (search_spaces/mnist1d_cnn.yaml: the MNIST-1D
CNN on `hybrid-22nm` at its 256 x 256 tile, ADC bits of the preset): the search's own evaluator
(`space.evaluator().evaluate`) fine-tunes and scores, under analog noise, the all-analog design
and the designs with ONE layer moved to digital (first, last), over several seeds; per layer we
report the change of test accuracy (mean and spread over seeds) next to the change of energy
per inference (from the trained masks).

    PYTHONPATH=. python experiments/claim_analog_split.py --out experiments/results  # committed
    PYTHONPATH=. python experiments/claim_analog_split.py --quick   # one setting, CNN, ~35 s CPU

Results go to a temporary directory unless --out is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import subprocess
import sys
import tempfile
import time
from importlib import metadata

import numpy as np

CLAIM = (
    "On a hybrid chip the analog/digital split is a per-layer choice: layers with few rows per "
    "output (small K, e.g. first convolutions) belong on the digital array, wide ones on analog "
    "tiles."
)
ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
GRID = 32  # analog fractions k / GRID
ANALOG = ("adc", "dac", "array", "accumulate")
SPACE = ROOT / "search_spaces" / "mnist1d_cnn.yaml"  # the realistic setting for accuracy


def settings() -> dict:
    from codesign.hardware.presets import get_preset

    aimc = get_preset("zigzag-aimc-28nm")
    dimc = get_preset("zigzag-dimc-28nm")
    zigzag_hybrid = dataclasses.replace(
        aimc,
        tiles=64.0,  # enough tiles to hold every network here: no re-programming
        mac_rows=dimc.mac_rows,
        mac_cols=dimc.mac_cols,
        digital_slice_bits=dimc.digital_slice_bits,
        accumulator_bits=24.0,
        # A chip built from ZigZag's components, counted physically (a partly filled row band
        # fires every mapped column's ADC), not as ZigZag counts (the matched preset's mode).
        zigzag_counting=None,
        name="zigzag-aimc+dimc-28nm",
    )
    hybrid = get_preset("hybrid-22nm")
    return {
        "hybrid-22nm": hybrid,
        # The same chip serving batches of 16: digital weights fetched once per batch.
        "hybrid-22nm, batch 16": dataclasses.replace(hybrid, batch=16.0),
        "zigzag-aimc+dimc-28nm": zigzag_hybrid,
    }


def accuracy_sensitivity(quick: bool) -> dict:
    """Fine-tune and score all-analog and one-layer-digital designs (first, last) over seeds.

    Quick mode shortens pretraining and fine-tuning (accuracies indicative only)."""
    from codesign.search.problem import Candidate
    from codesign.search.space import load_space

    space = load_space(SPACE)
    problem = space.problem
    if quick:
        pre = dataclasses.replace(problem.pretrain, steps=150)
        problem = dataclasses.replace(problem, pretrain=pre)
        space = dataclasses.replace(space, problem=problem).with_finetune(steps=10, eval_draws=1)
    seeds = [0, 1] if quick else [0, 1, 2, 3]
    evaluator = space.evaluator()
    layers = len(evaluator.shapes)
    acc = space.accelerator()
    tile = (int(acc.tile_rows), int(acc.tile_cols))
    splits = {
        "all analog": (1.0,) * layers,
        "first layer digital": (0.0,) + (1.0,) * (layers - 1),
        "last layer digital": (1.0,) * (layers - 1) + (0.0,),
    }
    if not quick:
        splits["all digital"] = (0.0,) * layers
    cands, names = [], []
    for name, fractions in splits.items():
        for _ in seeds:
            names.append(name)
            cands.append(
                Candidate(
                    widths=tuple(problem.model.widths),
                    sparsity=(0.0,) * layers,
                    granularity=("unstructured",) * layers,
                    analog_fraction=fractions,
                    tile=tile,
                    adc_bits=int(acc.adc_bits),
                )
            )
    results = evaluator.evaluate(cands, seeds * len(splits), chunk=len(cands))
    rows = {}
    for name, fractions in splits.items():
        rs = [r for n, r in zip(names, results, strict=True) if n == name]
        test = np.asarray([r.test_accuracy for r in rs])
        rows[name] = {
            "analog_fraction": list(fractions),
            "test_accuracy": test.tolist(),
            "test_accuracy_mean": float(test.mean()),
            "test_accuracy_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
            "digital_test_accuracy_mean": float(np.mean([r.digital_test_accuracy for r in rs])),
            "energy_j": float(np.mean([r.energy_j for r in rs])),
        }
    base = rows["all analog"]
    base_test = np.asarray(base["test_accuracy"])
    for row in rows.values():
        delta = np.asarray(row["test_accuracy"]) - base_test  # paired by seed
        row["accuracy_change"] = float(delta.mean())
        row["accuracy_change_std"] = float(delta.std(ddof=1)) if len(delta) > 1 else 0.0
        row["energy_change"] = row["energy_j"] / base["energy_j"] - 1.0
    return {
        "space": str(SPACE.relative_to(ROOT)),
        "preset": problem.preset,
        "tile": list(tile),
        "adc_bits": int(acc.adc_bits),
        "layers": [
            f"{s.name or i}: {s.rows}x{s.out_units}" for i, s in enumerate(evaluator.shapes)
        ],
        "seeds": seeds,
        "pretrain_steps": problem.pretrain.steps,
        "finetune_steps": space.problem.finetune.steps,
        "designs": rows,
    }


def networks(quick: bool) -> dict:
    from codesign.nn.networks import NetworkSpec, chain, default_spec, layer_shapes

    nets = {
        "mnist1d_cnn (40x1, 3 conv + head)": layer_shapes(
            NetworkSpec("cnn", (40, 1), 5, (32, 32, 32), (5, 3, 3), (2, 2, 2), (1, 1, 1))
        ),
        "digits_cnn (8x8x1, 3 conv + head)": layer_shapes(default_spec("cnn", (8, 8, 1), 10)),
        "digits_mlp (64-128-128-5)": chain([64, 128, 128, 5]),
        "mnist1d_mlp (40-100-100-5)": chain([40, 100, 100, 5]),
    }
    if quick:
        nets = dict(list(nets.items())[:1])
    return nets


def _designs(shapes, fractions: np.ndarray):
    import jax.numpy as jnp

    from codesign.hardware.energy import Design

    size, layers = fractions.shape
    widths = np.asarray([s.out_units for s in shapes], np.float32)
    return Design(
        widths=jnp.asarray(np.broadcast_to(widths, (size, layers))),
        analog_fraction=jnp.asarray(fractions, jnp.float32),
        sparsity=jnp.zeros((size, layers), jnp.float32),
        granularity=jnp.zeros((size, layers), jnp.int32),
    )


def best_split(shapes, acc) -> dict:
    """Per-layer analog fractions minimising total energy (coordinate descent on k / GRID)."""
    from codesign.hardware.energy import estimate_energy_batch

    layers = len(shapes)
    grid = np.arange(GRID + 1, dtype=np.float32) / GRID
    current = np.ones(layers, np.float32)
    for _ in range(2):
        for layer in range(layers):
            fractions = np.repeat(current[None, :], GRID + 1, axis=0)
            fractions[:, layer] = grid
            energy = np.asarray(
                estimate_energy_batch(shapes, _designs(shapes, fractions), acc).energy_j
            )
            current[layer] = grid[int(np.argmin(energy))]
    ends = np.stack([current, np.ones(layers), np.zeros(layers)]).astype(np.float32)
    report = estimate_energy_batch(shapes, _designs(shapes, ends), acc)
    return {"fractions": current, "report": report}


def per_layer(shapes, acc) -> dict:
    """Each layer all-analog vs all-digital (others at their best), and the best split."""
    from codesign.hardware.energy import estimate_energy_batch

    best = best_split(shapes, acc)
    fractions = best["fractions"]
    layers = len(shapes)
    rows = []
    for layer, shape in enumerate(shapes):
        ends = np.repeat(fractions[None, :], 2, axis=0)
        ends[:, layer] = [1.0, 0.0]
        report = estimate_energy_batch(shapes, _designs(shapes, ends), acc)

        def parts(i, layer=layer, report=report):
            return {c: float(np.asarray(v)[i, layer]) for c, v in report.layer_j.items()}

        analog, digital = parts(0), parts(1)
        rows.append(
            {
                "layer": shape.name or f"layer{layer}",
                "K": shape.rows,
                "N": shape.out_units,
                "P": shape.positions,
                "best_analog_fraction": float(fractions[layer]),
                "analog_columns": int(np.round(fractions[layer] * shape.out_units)),
                "all_analog_j": sum(analog.values()),
                "all_digital_j": sum(digital.values()),
                "analog_components_j": analog,
                "digital_components_j": digital,
            }
        )
    totals = np.asarray(best["report"].energy_j, np.float64)
    return {
        "layers": rows,
        "best_j": float(totals[0]),
        "all_analog_j": float(totals[1]),
        "all_digital_j": float(totals[2]),
        "num_layers": layers,
    }


def break_even_k(acc, positions: int) -> float:
    """K from which a layer is cheaper on analog tiles than on the digital array.

    Measured, not derived: a K x 32 layer at `positions` positions, all-analog vs all-digital,
    for K in 1..512 by bisection; the smallest K where analog is cheaper. At one position the
    digital array also pays its weights' SRAM reads every inference; at many, they are reused.
    """
    from codesign.hardware.energy import estimate_energy_batch
    from codesign.nn.networks import LayerShape

    def analog_cheaper(k: int) -> bool:
        shapes = (LayerShape(k, 32, positions=positions),)
        both = _designs(shapes, np.asarray([[1.0], [0.0]]))
        energy = np.asarray(estimate_energy_batch(shapes, both, acc).energy_j)
        return bool(energy[0] < energy[1])

    # Bisection (one compile per K tried): analog's advantage grows with K.
    if analog_cheaper(1):
        return 1.0
    if not analog_cheaper(512):
        return float("inf")
    low, high = 1, 512  # digital cheaper at low, analog at high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if analog_cheaper(mid) else (mid, high)
    return float(high)


def verdict(results: dict) -> dict:
    """Holds if (a) on some setting a network's best split is mixed (some layers mostly digital,
    some mostly analog) and beats both all-analog and all-digital by at least 5%, and (b) in every
    network every mostly-digital layer has fewer rows K than every mostly-analog one."""
    mixed, ordered, digital_layers, uniform = [], True, set(), []
    for setting, nets in results.items():
        for net, r in nets["networks"].items():
            share = [row["analog_columns"] / row["N"] for row in r["layers"]]
            k = [row["K"] for row in r["layers"]]
            digital = [k[i] for i, a in enumerate(share) if a < 0.5]
            analog = [k[i] for i, a in enumerate(share) if a >= 0.5]
            digital_layers |= {
                f"{row['layer']} (K={row['K']})"
                for row, a in zip(r["layers"], share, strict=True)
                if a < 0.5
            }
            if digital and analog and max(digital) >= min(analog):
                ordered = False
            gain = 1 - r["best_j"] / min(r["all_analog_j"], r["all_digital_j"])
            if digital and analog and gain >= 0.05:
                mixed.append((setting, net, gain))
            if not (digital and analog):
                uniform.append((setting, net, "analog" if analog else "digital"))
    word = "holds" if mixed and ordered else ("partly" if mixed or ordered else "does not hold")
    reason = (
        f"mixed best splits beating both extremes by >= 5% on {len(mixed)} setting/network "
        f"pairs ({'; '.join(f'{s}: {n} {g:.0%}' for s, n, g in mixed) or 'none'}); "
        f"layers that go digital: {', '.join(sorted(digital_layers)) or 'none'}; "
        f"{'every' if ordered else 'NOT every'} digital layer has fewer rows than the analog ones "
        f"of its network. Uniform splits (every layer one way) on {len(uniform)} pairs, all "
        f"MLPs whose layers have K >= 40 ({'; '.join(f'{s}: {n} all {w}' for s, n, w in uniform)})."
    )
    return {"verdict": word, "holds": word == "holds", "reason": reason}


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(s, n, r) for s, nets in results.items() for n, r in nets["networks"].items()]
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, (setting, net, r) in zip(axes.flat, panels, strict=False):
        names = [
            f"{row['layer']} K={row['K']}\nbest: {row['analog_columns']}/{row['N']} analog"
            for row in r["layers"]
        ]
        x = np.arange(len(names))
        analog = [row["all_analog_j"] * 1e9 for row in r["layers"]]
        digital = [row["all_digital_j"] * 1e9 for row in r["layers"]]
        ax.bar(x - 0.2, analog, 0.4, label="layer all-analog")
        ax.bar(x + 0.2, digital, 0.4, label="layer all-digital")
        ax.set_xticks(x, names, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("nJ per inference, this layer", fontsize=7)
        ax.set_title(f"{setting}\n{net}", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Per-layer energy all-analog vs all-digital (bars); best split: analog columns")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_verdict(sens: dict) -> str:
    """One sentence: per layer moved to digital, the accuracy change against the seeds' spread."""
    base = sens["designs"]["all analog"]
    parts = []
    for name, row in sens["designs"].items():
        if name == "all analog":
            continue
        change, spread = row["accuracy_change"], row["accuracy_change_std"]
        n = len(sens["seeds"])
        significant = abs(change) > 2 * spread / np.sqrt(n)  # ~95% on the paired mean
        parts.append(
            f"{name}: test accuracy {change:+.3f} (paired std {spread:.3f} over {n} seeds, "
            f"{'beyond' if significant else 'within'} noise), energy {row['energy_change']:+.1%}"
        )
    return (
        f"Accuracy sensitivity on {sens['space']} ({sens['preset']}, all-analog test accuracy "
        f"{base['test_accuracy_mean']:.3f} +- {base['test_accuracy_std']:.3f}): " + "; ".join(parts)
    )


def _git_sha() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for package in ("jax", "flax", "optax", "numpy", "codesign"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="one setting, the CNN, short fine-tune (tests)"
    )
    parser.add_argument("--out", help="output directory (default: a temporary one)")
    parser.add_argument("--no-accuracy", action="store_true", help="energy model only")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = {}
    chips = settings()
    if args.quick:
        chips = {"hybrid-22nm": chips["hybrid-22nm"]}
    for setting, acc in chips.items():
        results[setting] = {
            "break_even_k": {p: break_even_k(acc, p) for p in ((64,) if args.quick else (1, 64))},
            "networks": {
                net: per_layer(shapes, acc) for net, shapes in networks(args.quick).items()
            },
        }
    checks = verdict(results)
    sensitivity = None if args.no_accuracy else accuracy_sensitivity(args.quick)
    if sensitivity is not None:
        checks["accuracy"] = accuracy_verdict(sensitivity)
        checks["reason"] += " " + checks["accuracy"] + "."
    summary = {
        "claim": "analog_split",
        "seed_claim": CLAIM,
        "mode": "quick" if args.quick else "full",
        **checks,
        "results": results,
        "accuracy_sensitivity": sensitivity,
        "git_sha": _git_sha(),
        "versions": _versions(),
        "runtime_s": 0.0,
    }
    for setting, r in results.items():
        print(
            f"{setting}: analog beats digital from K = "
            + ", ".join(f"{k:.0f} rows at {p} positions" for p, k in r["break_even_k"].items())
        )
        for net, n in r["networks"].items():
            print(
                f"  {net}: best {n['best_j'] * 1e9:.3g} nJ, all-analog "
                f"{n['all_analog_j'] * 1e9:.3g} nJ, all-digital {n['all_digital_j'] * 1e9:.3g} nJ"
            )
            for row in n["layers"]:
                a = row["analog_components_j"]
                d = row["digital_components_j"]
                print(
                    f"    {row['layer']:<7} K={row['K']:<5} N={row['N']:<4} P={row['P']:<4} "
                    f"best a={row['best_analog_fraction']:.2f}  analog "
                    f"{row['all_analog_j'] * 1e9:.3g} nJ (adc {a['adc'] * 1e9:.2g}, dac "
                    f"{a['dac'] * 1e9:.2g}, acc {a['accumulate'] * 1e9:.2g})  digital "
                    f"{row['all_digital_j'] * 1e9:.3g} nJ (mac {d['digital_mac'] * 1e9:.2g}, "
                    f"sram {d['sram'] * 1e9:.2g})"
                )
    if sensitivity is not None:
        print(f"accuracy sensitivity, seeds {sensitivity['seeds']}:")
        for name, row in sensitivity["designs"].items():
            print(
                f"  {name:<20} test acc {row['test_accuracy_mean']:.3f} +- "
                f"{row['test_accuracy_std']:.3f} (change {row['accuracy_change']:+.3f} +- "
                f"{row['accuracy_change_std']:.3f})  energy {row['energy_j'] * 1e9:.3g} nJ "
                f"({row['energy_change']:+.1%})"
            )
        print(checks["accuracy"])
    print(f"verdict: {checks['verdict']} - {checks['reason']}")
    out = pathlib.Path(args.out) if args.out else pathlib.Path(tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    plot(results, out / "claim_analog_split.png")
    summary["runtime_s"] = round(time.perf_counter() - start, 2)
    (out / "claim_analog_split.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"runtime {summary['runtime_s']} s ({summary['mode']} mode)")
    return summary


if __name__ == "__main__":
    main()
