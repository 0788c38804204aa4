"""Every figure quoted in the README and its docs/ pages ("Measured figures" in
docs/benchmarks.md, the co-design headline in README.md) and in experiments/README.md's claims
table is rendered here from the committed JSON it comes from, and must appear there verbatim;
every number in those cells must be one of them. Also: the README stays short, links every docs
page, and every relative link in them resolves."""

import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SAMPLERS = ("energy-aware", "random-filtered", "tpe", "nsga2", "gp", "random")


def _json(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _pct(x: float) -> str:
    return f"{x:.1%}"


# --- README.md ---


def energy_row() -> str:
    e = _json("bench_energy")
    return (
        f"{e['candidates_per_s'] / 1e6:.2f} million candidates/s; a one-candidate jitted loop: "
        f"{e['loop_candidates_per_s']:,}/s; `Evaluator.estimate` (candidates in, results out) on "
        f"{e['candidates']:,} digits_mlp.yaml candidates {e['estimate_api_s']:.2f} s, "
        f"{e['estimate_api_over_core']}x the jitted model inside it"
    )


def finetune_row() -> str:
    f = _json("bench_finetune")
    mlp, r, m = f["mlp"], f["resnet"], f["memory"]

    def gb(key):
        return "not measured" if m.get(key) is None else f"{m[key]:.2f} GB"

    return (
        f"digits MLP, {f['settings']['mlp_candidates']} candidates x "
        f"{f['settings']['mlp_steps']} steps: the engine {f['mlp_engine_over_flax']}x the plain "
        f"Flax loop's time with analog noise on ({mlp['engine']['run_s']:.2f} s against "
        f"{mlp['flax']['run_s']:.2f} s), {f['mlp_all_digital_over_flax']}x all-digital, "
        f"{f['mlp_pcm_over_flax']}x with the pcm device model a year after programming "
        f"({f['mlp_pcm_over_sram']}x the sram model's time); "
        f"ResNet-20 on CIFAR shapes, batch {r['batch']}: pretraining step "
        f"{f['resnet_pretrain_step_over_flax']}x plain Flax ({r['engine_pretrain_step_s']:.2f} s "
        f"against {r['flax_step_s']:.2f} s), analog fine-tune step "
        f"{f['resnet_finetune_step_over_flax']}x, at "
        f"{_pct(f['resnet_flops_fraction_of_peak'])} of the peak matmul FLOP/s measured in the "
        f"same run ({f['peak_matmul_flops_per_s'] / 1e9:.0f} GFLOP/s); MNIST-1D CNN, analog, full "
        f"width: {f['cnn_flops_over_flax']}x plain Flax's FLOP/s; peak memory: "
        f"{gb('mnist1d_resnet_search_peak_gb')} for a mnist1d_resnet.yaml search, "
        f"{gb('resnet20_population_8_peak_gb')} for a ResNet-20 population of 8; "
        f"cifar10_resnet20.yaml (pretraining and 40 trials) projected at "
        f"{f['cifar10_resnet20_search_projected_h']} h"
    )


def ceiling_text() -> str:
    """How far the ResNet-20 analog fine-tune can get on the benchmark's machine: the same
    candidates all-digital plus the floor of its input patches (`bench_finetune.patch_floor`)."""
    f = _json("bench_finetune")
    r = f["resnet"]
    return (
        f"the same candidates all-digital take {r['all_digital_step_s']:.2f} s a step "
        f"({_pct(f['resnet_all_digital_flops_fraction_of_peak'])} of the peak); writing and "
        f"reading the analog layers' input patches once ({r['patch_bytes'] / 1e6:.0f} MB a "
        f"candidate and step, at the {r['stream_bytes_per_s'] / 1e9:.1f} GB/s of an elementwise "
        f"pass in the same run) adds at least {r['patch_floor_s']:.2f} s, so an analog fine-tune "
        f"can reach at most {_pct(f['resnet_flops_fraction_ceiling'])} of the peak there; the "
        f"engine's reaches {_pct(f['resnet_flops_fraction_of_peak'])}"
    )


def turns_text() -> str:
    """The peak that the ResNet-20 fine-tune's FLOP/s is a fraction of, measured taking turns
    with it (`bench_finetune.taking_turns`), and where the fine-tune stands against it."""
    f = _json("bench_finetune")
    r = f["resnet"]
    runs = r["runs_s"]["peak"]  # the peak is the best round's rate: scale it to each round's
    rounds = [f["peak_matmul_flops_per_s"] * min(runs) / s / 1e9 for s in runs]
    return (
        f"{max(rounds):.0f} GFLOP/s in the best of the table's run's {len(rounds)} rounds, "
        f"{min(rounds):.0f} in the slowest. The plain Flax ResNet-20 step itself reaches "
        f"{_pct(f['flax_resnet_flops_fraction_of_peak'])} of that peak, the engine's analog "
        f"fine-tune {_pct(f['resnet_flops_fraction_of_peak'])}, against a ceiling of "
        f"{_pct(f['resnet_flops_fraction_ceiling'])} from its input patches"
    )


def other_machine_text() -> str:
    """The same benchmark on another CPU (`bench_finetune.py --tag xeon`), beside the table's."""
    f = _json("bench_finetune_xeon")
    others = [ok for goal, ok in f["goals"].items() if goal != "resnet_20pct_of_peak"]
    others_met = all(ok for ok in others if ok is not None)  # None: memory, not measured
    return (
        f"On a 2-core {f['machine']['cpu']} (`bench_finetune_xeon.json`, "
        f"{f['git_sha'][:7]}, memory not measured) the same benchmark read: digits MLP "
        f"{f['mlp_engine_over_flax']}x ({f['mlp_all_digital_over_flax']}x all-digital), ResNet-20 "
        f"pretraining step {f['resnet_pretrain_step_over_flax']}x and analog fine-tune step "
        f"{f['resnet_finetune_step_over_flax']}x plain Flax, MNIST-1D CNN "
        f"{_pct(f['cnn_flops_over_flax'])} of Flax's FLOP/s; the ResNet-20 fine-tune at "
        f"{_pct(f['resnet_flops_fraction_of_peak'])} of a peak of "
        f"{f['peak_matmul_flops_per_s'] / 1e9:.0f} GFLOP/s (goal 20%: "
        f"{_met(f['goals']['resnet_20pct_of_peak'])} there), the plain "
        f"Flax step at {_pct(f['flax_resnet_flops_fraction_of_peak'])}, the same candidates "
        f"all-digital at {_pct(f['resnet_all_digital_flops_fraction_of_peak'])} and the "
        f"patches' ceiling at {_pct(f['resnet_flops_fraction_ceiling'])}. "
        + ("Every other goal holds there" if others_met else "Not every other goal holds there")
    )


def performance_table() -> str:
    """README's "Performance" table: each goal of the engine against its measured figure."""
    f, e, o = _json("bench_finetune"), _json("bench_energy"), _json("bench_search_overhead")
    g, m = f["goals"], f["memory"]
    overhead = o["overhead_ms_per_trial"]["energy-aware"]
    cnn_whole = f["cnn_whole_evaluation_flops_over_flax"]

    def gb(key):
        return "not measured" if m.get(key) is None else f"{m[key]:.2f} GB"

    def within_3gb(key):  # each memory row judged on its own figure
        return None if m.get(key) is None else m[key] <= 3

    rows = [
        ("digits MLP, 8 candidates: engine (analog noise on) / plain Flax loop, time",
         "<= 3x", f"{f['mlp_engine_over_flax']}x", g["mlp_3x"]),
        ("the same, every candidate all-digital", "<= 1.5x",
         f"{f['mlp_all_digital_over_flax']}x", g["mlp_all_digital_1.5x"]),
        ("ResNet-20, CIFAR shapes: digital pretraining step / plain Flax step", "<= 1.5x",
         f"{f['resnet_pretrain_step_over_flax']}x", g["resnet_pretrain_1.5x"]),
        ("ResNet-20: analog fine-tune step (per candidate) / plain Flax step", "<= 3x",
         f"{f['resnet_finetune_step_over_flax']}x", g["resnet_finetune_3x"]),
        ("MNIST-1D CNN, full width, analog: engine training FLOP/s / plain Flax FLOP/s (with "
         f"inheritance and scoring in the engine's time: {_pct(cnn_whole)})", ">= 50%",
         _pct(f["cnn_flops_over_flax"]), g["cnn_flops_50pct_of_flax"]),
        ("ResNet-20 analog fine-tune FLOP/s / peak matmul FLOP/s (the plain Flax step's: "
         f"{_pct(f['flax_resnet_flops_fraction_of_peak'])})", ">= 20%",
         _pct(f["resnet_flops_fraction_of_peak"]), g["resnet_20pct_of_peak"]),
        ("peak memory, a mnist1d_resnet.yaml search", "<= 3 GB",
         gb("mnist1d_resnet_search_peak_gb"), within_3gb("mnist1d_resnet_search_peak_gb")),
        ("peak memory, a ResNet-20 population of 8", "<= 3 GB",
         gb("resnet20_population_8_peak_gb"), within_3gb("resnet20_population_8_peak_gb")),
        (f"`Evaluator.estimate` on {e['candidates']:,} candidates / the jitted energy model",
         "<= 10x", f"{e['estimate_api_over_core']}x", e["estimate_api_over_core"] <= 10),
        ("study overhead per trial, energy-aware sampler, evaluation stubbed", "<= 30 ms",
         f"{overhead} ms", overhead <= 30),
    ]  # fmt: skip
    lines = ["| what | goal | measured | |", "|---|---|---|---|"]
    for what, goal, value, ok in rows:
        verdict = "not measured" if ok is None else _met(ok)
        lines.append(f"| {what} | {goal} | {value} | {verdict} |")
    return "\n".join(lines)


def _hv(s: dict, key: str, n: str) -> str:
    return f"{s[f'{key}_mean'][n]:.2f} +- {s[f'{key}_sd'][n]:.2f}"


def search_row() -> str:
    b = _json("bench_search")
    n = str(max(b["checkpoints"]))
    cells = "; ".join(
        f"{name} [{len(s['seeds'])} seeds] {_hv(s, 'hv', n)} / {_hv(s, 'test_hv', n)}"
        for name, s in b["samplers"].items()
    )
    goal = b["goal_3x_fewer_trials"]
    ours = b["samplers"]["energy-aware"]["trials_to_95pct"]["mean"]
    best = goal["best_optuna_sampler"]
    theirs = b["samplers"][best]["trials_to_95pct"]["mean"]
    return (
        f"after {n} trials, validation / test: {cells}; trials to 95% "
        f"of the pooled front: energy-aware {ours}, {best} {theirs} ({b['trials'] + 1} = not "
        f"reached within {b['trials']} trials)"
    )


def overhead_row() -> str:
    s = _json("bench_search")["samplers"]
    return (
        f"energy-aware {s['energy-aware']['overhead_ms_per_trial']} ms, random "
        f"{s['random']['overhead_ms_per_trial']} ms"
    )


def overhead_stub_row() -> str:
    b = _json("bench_search_overhead")
    o = b["overhead_ms_per_trial"]
    return (
        f"energy-aware {o['energy-aware']} ms, random {o['random']} ms; once per process, not "
        f"charged to trials: the energy model's compile {b['energy_model_compile_s_once']} s, "
        f"the sampler's libraries {b['sampler_import_s_once']} s"
    )


def workers_row() -> str:
    w = _json("bench_workers")
    return (
        f"journal: {w['journal_1w_trials_per_min']} trials/min with 1 worker, "
        f"{w['journal_2w_trials_per_min']} with 2"
    )


GRADIENT_SPACES = ("mnist1d_mlp", "mnist1d_cnn")


def _gradient(space: str) -> dict:
    return _json(f"bench_gradient_{space}")


def _match(row: dict) -> str:
    m = row["flops_to_match"]
    if not m["reached"]:
        return f"never (0/{len(row['seeds'])} seeds)"
    return (
        f"{m['share_of_reference_total']} of its FLOPs ({m['reached']}/{len(row['seeds'])} seeds)"
    )


def gradient_row(space: str) -> str:
    g = _gradient(space)
    methods = g["methods"]
    cells = "; ".join(
        f"{name} {row['hv_at_flops'][-1]:.2f} +- {row['hv_at_flops_sd'][-1]:.2f} / "
        f"{row['test_hv_at_flops'][-1]:.2f} +- {row['test_hv_at_flops_sd'][-1]:.2f}"
        for name, row in methods.items()
    )
    matches = "; ".join(
        f"{name} {_match(row)}" for name, row in methods.items() if name != "energy-aware"
    )
    return (
        f"within the energy-aware sampler's FLOPs ({g['reference_total_flops'] / 1e9:.1f} GFLOP "
        f"per run, {g['trials']} trials, {len(g['seeds'])} seeds), validation / test: {cells}; "
        f"FLOPs to reach its final validation hypervolume in the same seed, as a share of what "
        f"it spent there: {matches}"
    )


def relaxed_row(space: str) -> str:
    """The gradient methods of the variant with 25 relaxed steps (the others are the same runs)."""
    g = _json(f"bench_gradient_{space}_relaxed25")
    cells = "; ".join(
        f"{name} {row['hv_at_flops'][-1]:.2f} +- {row['hv_at_flops_sd'][-1]:.2f} / "
        f"{row['test_hv_at_flops'][-1]:.2f} +- {row['test_hv_at_flops_sd'][-1]:.2f}, "
        f"reaches it {_match(row)}"
        for name, row in g["methods"].items()
        if name.startswith("gradient")
    )
    return f"with {g['gradient_steps']} relaxed steps instead: {cells}"


def mnist1d_mlp_gradient_row() -> str:
    return gradient_row("mnist1d_mlp")


def mnist1d_cnn_gradient_row() -> str:
    return gradient_row("mnist1d_cnn")


def mnist1d_mlp_relaxed_row() -> str:
    return relaxed_row("mnist1d_mlp")


def mnist1d_cnn_relaxed_row() -> str:
    return relaxed_row("mnist1d_cnn")


def mnist1d_row() -> str:
    c = _json("claim_mnist1d_table")
    m, sd = c["our_test_acc"], c["our_test_acc_sd"]
    return (
        f"MLP {_pct(m['mlp'])} (sd {_pct(sd['mlp'])}), CNN {_pct(m['cnn'])} (sd {_pct(sd['cnn'])}) "
        f"test accuracy over {len(c['seeds'])} seeds"
    )


def codesign_headline() -> str:
    c = _json("claim_codesign")
    s = c["searches"]["codesign"]
    return (
        f"co-design picks save {_pct(s['energy_saving']['mean'])} (sd "
        f"{_pct(s['energy_saving']['sd'])}, {s['picked']} of {s['runs']} seeds) of the energy "
        f"of the dense 128x128 all-digital net, with a test accuracy loss of "
        f"{s['test_loss']['mean']:+.3f} against it (sd {s['test_loss']['sd']:.3f})"
    )


def codesign_references() -> str:
    r = _json("claim_codesign")["reference_savings"]
    return (
        f"the same dense net all-analog already saves {_pct(r['dense_all_analog'])} and the "
        f"best small all-digital net {_pct(r['best_small_all_digital'])}"
    )


def _met(ok):
    return "met" if ok else "not met"


def gradient_goal_text() -> str:
    parts = []
    for space in GRADIENT_SPACES:
        goal = _gradient(space)["goal_half_the_flops"]
        seeds = len(_gradient(space)["seeds"])
        best = (
            f"best {goal['best']}: {goal['best_reached_seeds']}/{seeds} seeds, "
            f"{goal['share_of_reference_flops']} of its FLOPs"
            if goal["best"]
            else "no method reached it in any seed"
        )
        parts.append(f"on {space} {_met(goal['met'])} ({best})")
    return (
        "gradient co-design, early stopping or both reach the energy-aware sampler's final "
        f"hypervolume on at most half its fine-tune FLOPs in every seed: {'; '.join(parts)}"
    )


def goals_text() -> str:
    f, b = _json("bench_finetune"), _json("bench_search")
    g, fg = b["goal_3x_fewer_trials"], _json("bench_finetune")["goals"]
    met = _met

    return (
        f"the engine with analog noise takes {f['mlp_engine_over_flax']}x a plain Flax loop's "
        f"time on the digits MLP (goal 3x: {met(fg['mlp_3x'])}; all-digital "
        f"{f['mlp_all_digital_over_flax']}x, goal 1.5x: {met(fg['mlp_all_digital_1.5x'])}), its "
        f"ResNet-20 pretraining step {f['resnet_pretrain_step_over_flax']}x (goal 1.5x: "
        f"{met(fg['resnet_pretrain_1.5x'])}) and analog fine-tune step "
        f"{f['resnet_finetune_step_over_flax']}x (goal 3x: {met(fg['resnet_finetune_3x'])}); "
        f"the energy-aware sampler "
        f"reaches 95% of the pooled front's hypervolume in {g['ratio']}x fewer trials than the "
        f"best Optuna sampler, {g['best_optuna_sampler']} (goal 3x: {met(g['met'])}, runs of "
        f"{b['trials']} trials)"
    )


def pretraining_figures(d) -> str:
    """bench_devices' data-parallel pretraining: examples/s per device count."""
    if "pretraining" not in d:  # made before pretraining was data-parallel
        return ""
    first, *more = d["pretraining"]
    return (
        f"; pretraining ({first['network']}, batch {first['batch']}) examples/s "
        + ", ".join(f"{r['examples_per_s']:.1f}" for r in d["pretraining"])
        + " on "
        + ", ".join(str(r["devices"]) for r in d["pretraining"])
        + " devices"
        + "".join(
            f" ({r['devices']} over 1: {r['examples_per_s'] / first['examples_per_s']:.2f}x)"
            for r in more
        )
    )


def devices_row() -> str:
    d = _json("bench_devices")
    rows = {(r["devices"], r["population"]): r for r in d["rows"]}
    sizes = sorted({p for _, p in rows})
    counts = sorted({n for n, _ in rows})

    def rate(n):
        return ", ".join(f"{rows[n, p]['candidates_per_s']:.2f}" for p in sizes)

    top = counts[-1]
    return (
        f"digits_mlp.yaml fine-tunes ({d['steps']} steps), populations of "
        f"{', '.join(map(str, sizes))}: candidates/s "
        + "; ".join(f"on {n} device{'s' if n > 1 else ''} {rate(n)}" for n in counts)
        + f" ({top} over 1: "
        + ", ".join(f"{d['candidates_per_s_speedup'][f'{top}_over_1_at_{p}']:.2f}x" for p in sizes)
        + f"); at {sizes[-1]} candidates "
        + ", ".join(f"{rows[n, sizes[-1]]['fraction_of_one_device_peak']:.1%}" for n in counts)
        + " of one device's peak matmul FLOP/s; compile "
        + ", ".join(f"{rows[n, sizes[-1]]['compile_s']:.0f} s" for n in counts)
        + pretraining_figures(d)
        + (
            " (two forced host devices sharing this CPU's cores)"
            if d["forced_host_devices"]
            else ""
        )
    )


def held_out_text() -> str:
    """The energy model on layers held out from its matching against ZigZag-IMC."""
    v = _json("validate_energy_model")
    rows = v["held_out_layers"]
    inside = [r for r in rows if 1 / 1.2 <= r["ratio"] <= 1.2]
    outside = [r for r in rows if r not in inside]
    worst = max(max(r["ratio"], 1 / r["ratio"]) for r in inside)
    band = [r["per_band_ratio"] for r in rows]
    return (
        f"counted per band, the held-out layers are {min(band):.2f}-{max(band):.2f}x ZigZag's "
        f"energy. On {len(rows)} held-out layers, {v['held_out_partly_filled']} of them "
        f"filling no tile exactly, {len(inside)} are within {worst:.3f}x of ZigZag; outside "
        "1.2x: " + "; ".join(f"{r['layer']} ({r['ratio']:.3f}x)" for r in outside)
    )


def same_mapping_text() -> str:
    """The energy model against ZigZag's cost model on the same mapping, and its mapper's trades."""
    v = _json("validate_energy_model")
    rows = {r["layer"]: r for r in v["zigzag_layers"] + v["held_out_layers"]}
    trades = [rows[name] for name in v["mapper_prefers_memory"]]
    return (
        f"pinned in ZigZag to the mapping that fills the array as codesign does, all {len(rows)} "
        f"layers are within {v['same_mapping_max_ratio']:.3f}x of ZigZag, analog and digital "
        f"({v['same_mapping_within_1p2x']:.0%} within 1.2x). ZigZag's mapper minimises its total "
        "energy, memories included: "
        + "; ".join(
            f"on {r['layer']} its mapping costs {r['zigzag_total_pj']:,.0f} pJ in all against "
            f"{r['zigzag_filled_total_pj']:,.0f} pJ on the filled array, whose array side is "
            f"{r['zigzag_filled_pj']:,.0f} pJ (codesign {r['codesign_pj']:,.0f} pJ)"
            for r in trades
        )
    )


def dimc_text() -> str:
    """The digital in-memory chip against ZigZag's, and the analog-vs-digital winner."""
    v = _json("validate_energy_model")
    rows = v["zigzag_layers"] + v["held_out_layers"]
    inside = [r for r in rows if 1 / 1.2 <= r["dimc_ratio"] <= 1.2]
    outside = [r for r in rows if r not in inside]
    worst = max(max(r["dimc_ratio"], 1 / r["dimc_ratio"]) for r in inside)
    split = v["analog_vs_digital"]
    return (
        f"of the {v['dimc_layers']} layers of both lists ({sum(r['partly_filled'] for r in rows)} "
        f"partly filled), {len(inside)} are within {worst:.3f}x of ZigZag's dimc; outside 1.2x: "
        + "; ".join(f"{r['layer']} ({r['dimc_ratio']:.3f}x)" for r in outside)
        + f". The analog-vs-digital winner is ZigZag's on {v['winner_agreement']:.0%} of the "
        f"layers (analog wins {v['analog_wins_zigzag']} by ZigZag, {v['analog_wins_codesign']} by "
        f"codesign); aimc over dimc on a dense 128x128 layer: "
        f"{split['codesign_aimc_over_dimc']:.2f} (ZigZag {split['zigzag_aimc_over_dimc']:.2f})"
    )


def digital_text() -> str:
    """digital-int8-45nm against ZigZag's digital cost model, per layer."""
    rows = _json("validate_energy_model")["digital_layers"]
    filled = [r for r in rows if abs(r["mac_ratio"] - 1) < 1e-4]
    padded = [r["mac_ratio"] for r in rows if r not in filled]
    sram = [r["sram_ratio"] for r in rows]
    return (
        f"on {len(rows)} dense and conv layers the MAC energy is ZigZag's on the {len(filled)} "
        f"that fill the array and {min(padded):.2f}-{max(padded):.2f}x where they do not; the "
        f"SRAM energy is {min(sram):.2f}-{max(sram):.2f}x ZigZag's"
    )


def gradient_check_text() -> str:
    """The width gradient against one unit fewer, every preset."""
    v = _json("validate_energy_model")
    by = v["gradient_within_2x_by_preset"]
    return (
        f"the width gradient is within 2x of what one unit fewer saves on "
        f"{v['gradient_within_2x']:.0%} of {len(v['gradients'])} layers ("
        + ", ".join(f"{k} {x:.0%}" for k, x in by.items())
        + f"; against the relaxed model's difference {v['gradient_relaxed_within_2x']:.0%})"
    )


MACRO_LABELS = {
    "macro-ania-22nm": "imec AnIA (Papistas et al., CICC 2021), ZigZag-IMC's geometry",
    "macro-sinangil-7nm": "Sinangil et al., JSSC 2021 (64x64, 4 columns charge-shared into a 4b "
    "flash ADC)",
    "macro-iscas22-65nm": "65 nm 7T SRAM CIM, ISCAS 2022 (same scheme)",
    "macro-jia-65nm": "Jia et al., JSSC 2020 (2304x256 charge-domain cells)",
    "macro-jssc23-28nm": "ZigZag-IMC's AIMC2, JSSC 2023 (16 of 512 rows, 5b ADCs)",
    "macro-isscc23-22nm": "ZigZag-IMC's AIMC3, ISSCC 2023 7.8 (8 rows, bit-serial, 3b ADCs)",
    "macro-dimc-isscc22-28nm": "ZigZag-IMC's DIMC1, ISSCC 2022 15.5 (digital, 32x6, 2b/cycle)",
}


def macro_rows() -> str:
    """The published-macro table of docs/energy-model.md, one row per macro."""
    rows = []
    for m in _json("validate_energy_model")["macros"]:
        w, a = (int(b) for b in m["bits_w_x_a"])
        adc = "digital" if m["adc_bits"] is None else f"{int(m['adc_bits'])}b {m['adc']}"
        term, share = max(m["breakdown_share"].items(), key=lambda kv: kv[1])
        term = {"adc": "ADC", "dac": "DAC", "digital_mac": "digital MAC"}.get(term, term)
        paper, model = m["reported_tops_w"], m["modelled_tops_w"]
        digits = 0 if paper >= 100 else 1
        rows.append(
            f"| {MACRO_LABELS[m['preset']]} | {m['node_nm']:.0f} nm, {m['vdd']:g} V | "
            f"{w}b x {a}b, {adc} | {paper:,.{digits}f} | {model:,.{digits}f} | "
            f"{m['error']:+.0%} | {term} {share:.0%} |"
        )
    return "\n".join(rows)


def analog_validation_text() -> str:
    """docs/engine.md: codesign's analog simulation against the stored aihwkit reference."""
    v = _json("validate_analog_model")
    rows = {r["name"]: r for r in v["rows"]}
    year = rows["pcm adc4 tile32 t=3.1536e+07s"]
    strongest = rows["sram adc4 tile128 prog0.28"]
    return (
        f"codesign agrees with aihwkit {v['aihwkit_version']} on {v['agree']} of {v['settings']} "
        f"settings (largest difference {v['max_diff_points']:.2f} points, {v['seeds']} seeds "
        f"each; digital accuracy {100 * v['digital_accuracy']:.2f}%): for example pcm with a "
        f"4-bit ADC and 32-row tiles a year after programming, "
        f"{100 * year['codesign_mean']:.2f} +- {100 * year['codesign_std']:.2f}% against "
        f"{100 * year['aihwkit_mean']:.2f} +- {100 * year['aihwkit_std']:.2f}%, and the sram "
        f"mismatch at 16x its default on one 128-row tile per layer, "
        f"{100 * strongest['codesign_mean']:.2f} +- {100 * strongest['codesign_std']:.2f}% "
        f"against {100 * strongest['aihwkit_mean']:.2f} +- {100 * strongest['aihwkit_std']:.2f}%"
    )


def drift_text() -> str:
    """docs/engine.md: the pcm front at programming and a year later (claim_drift)."""
    d = _json("claim_drift")
    drop = d["analog_test_drop_points"]
    cands = d["times"]["0 s"]["candidates"]

    def name(i):  # width, analog share, ADC bits
        c = cands[i]["candidate"]
        share = c["analog_fraction"][0]
        chip = f"{share:g} analog, {c['adc_bits']}-bit ADC" if share else "digital"
        return f"{c['widths'][0]} wide, {chip}"

    def front(key):
        return "; ".join(name(i) for i in d[key])

    return (
        f"at 0 s the front holds {front('front_0s')}; a year later {front('front_1y')} "
        f"({d['seeds']} seeds; the candidates with analog columns lose {drop['mean']:.1f} test "
        f"points on average after a year, {drop['max']:.1f} at most)"
    )


README_FIGURES = (
    analog_validation_text,
    drift_text,
    held_out_text,
    same_mapping_text,
    macro_rows,
    dimc_text,
    digital_text,
    gradient_check_text,
    goals_text,
    ceiling_text,
    turns_text,
    other_machine_text,
    performance_table,
    energy_row,
    finetune_row,
    search_row,
    overhead_row,
    overhead_stub_row,
    *((workers_row,) if (RESULTS / "bench_workers.json").exists() else ()),
    devices_row,
    mnist1d_mlp_gradient_row,
    mnist1d_cnn_gradient_row,
    mnist1d_mlp_relaxed_row,
    mnist1d_cnn_relaxed_row,
    gradient_goal_text,
    mnist1d_row,
    codesign_headline,
    codesign_references,
)

# --- experiments/README.md ---


def claim_cells() -> dict[str, str]:
    """Claim number -> the figures its "we measured" cell quotes."""
    cells = {}
    p = _json("claim_pruning")["results"]["all-digital"]
    cells["1"] = ", ".join(
        f"{g} {p[g]['macs_removed']:.0%} / {p[g]['energy_removed_all_digital']:.0%}"
        for g in ("unstructured", "row", "column", "block")
    )
    a = _json("claim_analog_vs_digital")
    nets = a["networks"]
    cells["2"] = (
        f"{nets['digits_mlp']['ratio_digital_over_analog']:.1f}x (digits MLP), "
        f"{nets['mnist1d_mlp']['ratio_digital_over_analog']:.1f}x (MNIST-1D MLP); compute only, "
        f"per MAC: {a['compute_only_per_mac']['ratio']:.1f}x"
    )
    t = _json("claim_tile_alignment")
    cells["3"] = (
        f"{t['analog_ratio_20_vs_16']:.2f}x the analog energy per MAC of a 16x16 layer; "
        f"{t['total_ratio_20_vs_16']:.2f}x in total"
    )
    tr = _json("claim_transfer")
    reach = {m: tr["methods"][m]["reach"] for m in ("transfer", "scratch")}
    key = next(iter(reach["transfer"]))
    cells["4"] = (
        f"to reach {reach['transfer'][key]['target_accuracy']:.3f} validation accuracy: "
        f"fine-tuning from the base {reach['transfer'][key]['steps']} steps vs from scratch "
        f"{reach['scratch'][key]['steps']} steps"
    )
    cells["4b"] = few_shot_cell()
    searches = _json("claim_codesign")["searches"]
    one_sided = ", ".join(
        f"{k.replace('_', '-')} search {_pct(searches[k]['energy_saving']['mean'])} (test loss "
        f"{searches[k]['test_loss']['mean']:+.3f})"
        for k in ("software_only", "hardware_only")
    )
    cells["5"] = (
        f"{codesign_headline()}; with no search, {codesign_references()}; one-sided: {one_sided}"
    )
    life = _json("claim_lifecycle")["networks"]
    values = [d for n in life.values() for d in n["designs"].values()]
    ft = [d["breakeven_finetune_only"] for d in values]
    pre = [d["breakeven_with_pretraining"] for d in values]
    cells["6"] = (
        f"break-even inferences: {min(ft):.1e} to {max(ft):.1e} counting the fine-tune only, "
        f"{min(pre):.1e} to {max(pre):.1e} with the base's pretraining"
    )
    cells["7"] = mnist1d_row()
    return cells


def few_shot_cell() -> str:
    f = _json("claim_transfer_few_shot")
    m = f["methods"]
    t, s = (m[k]["reach"][next(iter(m[k]["reach"]))] for k in ("transfer", "scratch"))
    scratch = f"{s['steps']} steps" if s["steps"] else f"never within {f['steps']} steps"

    def test(k):
        return f"{m[k]['final_test_accuracy']:.3f} +- {m[k]['final_test_accuracy_sd']:.3f}"

    return (
        f"{f['examples_per_class']} training examples per target class, {len(f['seeds'])} seeds "
        f"(a new draw each): to reach {t['target_accuracy']:.3f} validation accuracy, "
        f"fine-tuning from the base {t['steps']} steps vs from scratch {scratch} (its best "
        f"{m['scratch']['best_val_accuracy']:.3f}); test accuracy after {f['steps']} steps "
        f"{test('transfer')} vs {test('scratch')}; the base's pretraining "
        f"({f['pretraining']['flops']:.2g} FLOPs) pays off from {'' if s['steps'] else 'at most '}"
        f"{f['targets_to_amortise_pretraining']} target tasks"
    )


# --- the checks ---


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end > 0 else None]


def _numbers(text: str) -> list[str]:
    """Numeric tokens: 6.65, 1,234, 99.2%, 2.5e6 (not digits inside names like 128x128)."""
    return re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?", text)


def _table_cells(section: str, column: int) -> list[str]:
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [row.split(" | ")[column] for row in rows[1:] if not row.startswith("|---")]


DOCS = sorted((ROOT / "docs").glob("*.md"))


def _readme_and_docs() -> str:
    return "\n".join(p.read_text() for p in [ROOT / "README.md", *DOCS])


@pytest.mark.parametrize("figure", README_FIGURES, ids=lambda f: f.__name__)
def test_readme_quotes_the_committed_figure(figure):
    assert figure() in _readme_and_docs()


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_is_short_and_every_link_resolves():
    """A newcomer's README (under 250 lines) that links every docs/ page; every relative link in
    the README and the docs names a file that exists and, after '#', a heading in it."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    assert DOCS and all(f"](docs/{p.name})" in readme for p in DOCS)
    for page in [ROOT / "README.md", *DOCS]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), (page.name, target)
            if anchor:
                headings = [
                    _anchor(line.lstrip("#"))
                    for line in file.read_text().splitlines()
                    if line.startswith("#")
                ]
                assert anchor in headings, (page.name, target)


def test_every_number_in_readme_measured_figures_is_from_json():
    section = _section((ROOT / "docs" / "benchmarks.md").read_text(), "## Measured figures")
    rendered = " ".join(f() for f in README_FIGURES)
    for cell in _table_cells(section, -1):
        for number in _numbers(cell):
            assert number in rendered, (number, cell)


def test_experiments_readme_quotes_the_committed_figures():
    text = (ROOT / "experiments" / "README.md").read_text()
    cells = claim_cells()
    rows = [line for line in _section(text, "| claim").splitlines() if line.startswith("| ")]
    measured = {row[2 : row.index(".")]: row.split(" | ")[2] for row in rows[1:]}
    for number, figures in cells.items():  # claims 1-7 (8, the split, has its own JSON test)
        assert figures in measured[number], number
        for token in _numbers(measured[number]):
            assert token in figures, (number, token)


def test_every_results_json_is_stamped_with_a_committed_sha():
    # Commit the code, then run: a stamp of uncommitted code ("-dirty") names no code anyone
    # can check out, so no figure may come from one.
    stamps = {p.name: json.loads(p.read_text()).get("git_sha", "") for p in RESULTS.glob("*.json")}
    assert len(stamps) >= 20
    bad = {name: sha for name, sha in stamps.items() if not re.fullmatch(r"[0-9a-f]{40}", sha)}
    assert not bad, bad
