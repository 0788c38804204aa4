"""Claim 6: after about a million inferences, inference energy overtakes training energy.

The seed article: "After about a million inference events, the impact will surpass that of the
training phase" (said of a large NLP model trained in a datacentre).

What we measure, for our models: the break-even number of inferences N* = training energy /
energy per inference, for two designs per task (digits and MNIST-1D, from
`search_spaces/*_mlp.yaml`):
- dense all-digital: the space's maximum widths, unpruned, no analog tiles;
- pruned analog: a searched-style design inside the space's ranges (half the widths, 50 %
  tile-aligned block pruning, all layers on 64x64 analog tiles, 6-bit ADCs; hand-picked, not the
  output of a search).
Both are fine-tuned and scored by the search's evaluation engine (`Evaluator.evaluate`):
it reports the fine-tune FLOPs (6 x kept MACs x batch x steps) and the energy per inference from
the real masks. Training energy = FLOPs x `hardware.TRAINING_J_PER_FLOP` (A100 at 40 %
utilisation). We report N* for the fine-tune alone (what `codesign train` reports) and with the
pretraining of the shared base added (6 x base MACs x batch x steps, the same rule).

How it scales: N* = 6 x MACs_train x B x S x J_per_FLOP / E_inf. For a dense network
E_inf ~ MACs_inf x e_MAC, so N* ~ 6 x (B x S) x (J_per_FLOP / e_MAC) x (MACs_train / MACs_inf):
it grows with the number of training examples processed (B x S) and with how much cheaper an
inference MAC is on the chip than a training FLOP on the GPU, not with the model's size; a
pruned, analog design is cheaper per inference and so takes longer to amortise its training.

    PYTHONPATH=. python experiments/claim_lifecycle.py           # full: both, ~40 s
    PYTHONPATH=. python experiments/claim_lifecycle.py --quick   # digits, ~20 s
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

CLAIM = "After about a million inferences, inference energy surpasses training energy."
SEED_BREAKEVEN = 1e6
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _results  # noqa: E402

RESULTS = ROOT / "experiments" / "results"  # wherever the script is run from
SPACES = {
    "digits_mlp": "search_spaces/digits_mlp.yaml",
    "mnist1d_mlp": "search_spaces/mnist1d_mlp.yaml",
}
TRAIN_DESIGN_STEP_FACTOR = 5  # `codesign train` fine-tunes for 5x the search's steps by default


def designs(space, layers: int) -> dict:
    """The dense all-digital design and a pruned analog one, as Candidates of the space."""
    from codesign.search.evaluate import Candidate

    widths = tuple(space.problem.model.widths)
    return {
        "dense_digital": Candidate(
            widths=widths,
            sparsity=(0.0,) * layers,
            granularity=("unstructured",) * layers,
            analog_fraction=(0.0,) * layers,
            tile=(256, 256),
            adc_bits=6,
        ),
        "pruned_analog": Candidate(
            widths=tuple(w // 2 for w in widths),
            sparsity=(0.5,) * layers,
            granularity=("block",) * layers,
            analog_fraction=(1.0,) * layers,
            tile=(64, 64),
            adc_bits=6,
        ),
    }


def pretrain_flops(evaluator) -> float:
    """6 x MACs of the base network x batch x steps: the fine-tune's FLOP rule, for pretraining."""
    from codesign.nn.networks import layer_shapes

    macs = sum(s.macs for s in layer_shapes(evaluator.spec))
    return 6.0 * macs * evaluator.pretrain.batch_size * evaluator.pretrain.steps


def measure(space) -> dict:
    from codesign.hardware.accelerator import TRAINING_J_PER_FLOP

    evaluator = space.evaluator()
    cands = designs(space, len(evaluator.shapes))
    results = evaluator.evaluate(list(cands.values()), [0] * len(cands), chunk=len(cands))
    pre_j = pretrain_flops(evaluator) * TRAINING_J_PER_FLOP
    ft = evaluator.finetune
    out = {
        "pretrain_flops": pretrain_flops(evaluator),
        "pretrain_energy_j": pre_j,
        "pretrain_steps": evaluator.pretrain.steps,
        "pretrain_batch": evaluator.pretrain.batch_size,
        "finetune_steps": ft.steps,
        "finetune_batch": ft.batch_size,
        "designs": {},
    }
    for (name, cand), r in zip(cands.items(), results, strict=True):
        e_inf = r.energy_j
        train_j = r.finetune_energy_j
        out["designs"][name] = {
            "candidate": cand.to_dict(),
            "test_accuracy_analog": r.test_accuracy,
            "energy_per_inference_j": e_inf,
            "tops_per_w": r.tops_per_w,
            "finetune_flops": r.finetune_flops,
            "finetune_energy_j": train_j,
            "breakeven_finetune_only": train_j / e_inf,
            "breakeven_with_pretraining": (train_j + pre_j) / e_inf,
            "breakeven_train_design_default_steps": TRAIN_DESIGN_STEP_FACTOR * train_j / e_inf,
            # The scaling rule's factors: examples processed and the J ratio per MAC.
            "examples_processed": ft.steps * ft.batch_size,
            "inference_j_per_mac": e_inf * ft.steps * ft.batch_size * 6.0 / r.finetune_flops,
        }
    return out


def verdict(networks: dict) -> dict:
    """'holds' if every fine-tune break-even is within 10x of a million, 'partly' if some are."""
    values = [
        d["breakeven_finetune_only"] for n in networks.values() for d in n["designs"].values()
    ]
    near = [SEED_BREAKEVEN / 10 <= v <= SEED_BREAKEVEN * 10 for v in values]
    word = "holds" if all(near) else ("partly" if any(near) else "does not hold")
    reason = (
        f"break-even after {min(values):.2g} to {max(values):.2g} inferences (fine-tune only) vs "
        f"the seed's ~{SEED_BREAKEVEN:.0e}; 'holds' means within 10x; {sum(near)}/{len(near)} "
        "designs are"
    )
    return {"verdict": word, "holds": word == "holds", "reason": reason}


def plot(networks: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.logspace(2, 10, 200)
    fig, axes = plt.subplots(1, len(networks), figsize=(6 * len(networks), 4.5), squeeze=False)
    for ax, (name, net) in zip(axes[0], networks.items(), strict=True):
        for i, (dname, d) in enumerate(net["designs"].items()):
            color = f"C{i}"
            e = d["energy_per_inference_j"]
            ax.loglog(n, n * e, color=color, label=f"{dname}: inference")
            ax.axhline(
                d["finetune_energy_j"], color=color, ls="--", lw=1, label=f"{dname}: fine-tune"
            )
            ax.axhline(
                d["finetune_energy_j"] + net["pretrain_energy_j"],
                color=color,
                ls=":",
                lw=1,
                label=f"{dname}: fine-tune + pretrain",
            )
            ax.plot(d["breakeven_finetune_only"], d["finetune_energy_j"], "o", color=color)
        ax.axvline(SEED_BREAKEVEN, color="grey", lw=1)
        ax.text(SEED_BREAKEVEN, ax.get_ylim()[0], " seed: 1e6", color="grey", fontsize=8)
        ax.set_xlabel("inferences")
        ax.set_ylabel("energy (J)")
        ax.set_title(f"{name}: cumulative inference energy vs training", fontsize=10)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only, short fine-tune")
    parser.add_argument("--out", help="output directory (default: results/, quick: temporary)")
    args = parser.parse_args(argv)
    stamp = _results.stamp("quick" if args.quick else "full")
    start = time.perf_counter()
    from codesign.hardware.accelerator import TRAINING_J_PER_FLOP
    from codesign.search.space import load_space

    networks = {}
    for name in ["digits_mlp"] if args.quick else list(SPACES):
        space = load_space(ROOT / SPACES[name])
        if args.quick:
            space = space.with_finetune(steps=40, eval_draws=1)
        networks[name] = measure(space)
    checks = verdict(networks)
    print(f"training energy at {TRAINING_J_PER_FLOP * 1e12:.2f} pJ/FLOP (A100, 40 % utilisation)")
    header = (
        f"{'network':<12} {'design':<14} {'acc':>6} {'E/inf':>9} {'fine-tune':>9} "
        f"{'N* ft':>9} {'N* +pre':>9} {'N* 5x':>9}"
    )
    print(header)
    for name, net in networks.items():
        for dname, d in net["designs"].items():
            print(
                f"{name:<12} {dname:<14} {d['test_accuracy_analog']:>6.3f} "
                f"{d['energy_per_inference_j']:>9.3g} {d['finetune_energy_j']:>9.3g} "
                f"{d['breakeven_finetune_only']:>9.3g} {d['breakeven_with_pretraining']:>9.3g} "
                f"{d['breakeven_train_design_default_steps']:>9.3g}"
            )
        print(
            f"{name:<12} pretraining {net['pretrain_flops']:.3g} FLOPs = "
            f"{net['pretrain_energy_j']:.3g} J"
        )
    print(f"verdict: {checks['verdict']} - {checks['reason']}")
    out = _results.out_dir(args.out, args.quick, "claim_lifecycle")
    plot(networks, out / "claim_lifecycle.png")
    summary = {
        "claim": "lifecycle",
        "seed_claim": CLAIM,
        "seed_breakeven_inferences": SEED_BREAKEVEN,
        "mode": "quick" if args.quick else "full",
        "training_j_per_flop": TRAINING_J_PER_FLOP,
        "networks": networks,
        **checks,
        "runtime_s": round(time.perf_counter() - start, 2),
    }
    summary.update(_results.finish(stamp))
    _results.write(summary, out, "claim_lifecycle")
    print(f"runtime {summary['runtime_s']} s ({summary['mode']} mode)")
    return summary


if __name__ == "__main__":
    main()
