"""Summaries of the energy model for people and programs: a JSON-ready dict and a text table."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from codesign.hardware.accelerator import Accelerator
from codesign.hardware.energy import COMPONENTS, Design, estimate_energy, peak_tops_per_w
from codesign.nn.pruning import GRANULARITIES

__all__ = [
    "energy_summary",
    "format_energy",
    "format_joules",
    "format_preset",
    "peak_or_none",
    "within_2x",
]


def peak_or_none(acc: Accelerator) -> float | None:
    """Peak TOPS/W of one full analog tile; None on a chip without analog tiles (no such tile)."""
    return float(peak_tops_per_w(acc)) if float(acc.tiles) > 0 else None


def format_preset(name: str, acc: Accelerator, source: str) -> str:
    """One line of `codesign energy --list-presets`: name, peak tile efficiency, source."""
    peak = peak_or_none(acc)
    # The tile's converters and cells only, as macro papers quote peaks; the validation's
    # macro figures add the tile's digital shift-and-add (experiments/validate_energy_model.py).
    label = "no analog tiles" if peak is None else f"peak {peak:6.0f} TOPS/W (tile: ADC+DAC+cells)"
    return f"{name:<24} {label:<40} {source}"


def energy_summary(
    network, acc: Accelerator, *, analog, sparsity=0.0, granularity="unstructured", **overrides
) -> dict:
    """Energy report of a full-width network plus d(total)/d(width, analog fraction) per layer."""
    acc = dataclasses.replace(acc, **overrides)
    n = len(network)
    design = dataclasses.replace(
        Design.dense(network),
        analog_fraction=jnp.broadcast_to(jnp.asarray(analog, jnp.float32), (n,)),
        sparsity=jnp.broadcast_to(jnp.asarray(sparsity, jnp.float32), (n,)),
        granularity=jnp.full((n,), GRANULARITIES.index(granularity), jnp.int32),
    )

    def total(d):
        return estimate_energy(network, d, acc).energy_j

    report = estimate_energy(network, design, acc)
    grads = jax.grad(total, allow_int=True)(design)
    # The saving of one unit fewer, beside the gradient: where a count steps (tiles, row bands,
    # re-programming) the gradient is the staircase's average slope and one unit may save far
    # less (or nothing) -- or, at a step, far more.
    energy_of = jax.jit(total)
    full = float(energy_of(design))
    layers = []
    for i, layer in enumerate(network):
        narrower = dataclasses.replace(design, widths=design.widths.at[i].add(-1))
        saving = full - float(energy_of(narrower)) if layer.out_units > 1 else None
        gradient = float(grads.widths[i])
        layers.append(
            {
                "name": layer.name or f"layer{i + 1}",
                "K": layer.rows,
                "N": layer.out_units,
                "P": layer.positions,
                "analog_fraction": float(design.analog_fraction[i]),
                "energy_j": {c: float(report.layer_j[c][i]) for c in COMPONENTS},
                "total_j": float(report.layer_energy_j[i]),
                "tiles": int(report.layer_tiles[i]),
                "latency_s": float(report.layer_latency_s[i]),
                "d_energy_d_width_j_per_unit": gradient,
                "one_unit_fewer_saves_j": saving,
                "width_gradient_is_a_guide": within_2x(gradient, saving),
                "d_energy_d_analog_fraction_j": float(grads.analog_fraction[i]),
            }
        )
    return {
        "preset": acc.name,
        "tile": [float(acc.tile_rows), float(acc.tile_cols)],
        "adc_bits": float(acc.adc_bits),
        "node_nm": float(acc.node_nm),
        "vdd": float(acc.vdd),
        "gate_idle": float(acc.gate_idle),
        "digital_array": f"{float(acc.mac_rows):.0f}x{float(acc.mac_cols):.0f}"
        + (", counted as ZigZag-IMC's dimc" if acc.zigzag_digital is not None else ""),
        "layers": layers,
        "components_j": {c: float(v) for c, v in report.components_j.items()},
        "total_j": float(report.energy_j),
        "macs": float(report.macs),
        "tops_per_w": float(report.tops_per_w),
        "peak_tops_per_w": peak_or_none(acc),
        "latency_s": float(report.latency_s),
        "tiles_used": int(report.tiles_used),
        "chip_tiles": int(acc.tiles),
        "program_once_j": float(report.program_once_j),
    }


def within_2x(gradient: float, saving: float | None) -> bool | None:
    """Whether the width gradient and the saving of one unit fewer agree within 2x (both zero
    counts as agreeing); None for a one-unit layer."""
    if saving is None:
        return None
    if gradient == 0 or saving == 0:
        return gradient == saving
    return 0.5 <= saving / gradient <= 2.0


def format_joules(value: float) -> str:
    """1.2e-9 -> '1.20 nJ'."""
    for unit, scale in (("J", 1.0), ("mJ", 1e-3), ("uJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-15:.3g} fJ"


def format_energy(summary: dict) -> str:
    """A per-layer x per-component table with totals and the gradient hints."""
    total = summary["total_j"]
    unit, scale = next(
        ((u, s) for u, s in (("uJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)) if total >= s * 10),
        ("fJ", 1e-15),
    )
    header = ["layer", "KxN@P", *COMPONENTS, "total", "tiles"]
    rows = []
    for layer in summary["layers"]:
        rows.append(
            [
                layer["name"],
                f"{layer['K']}x{layer['N']}@{layer['P']}",
                *(f"{layer['energy_j'][c] / scale:.3g}" for c in COMPONENTS),
                f"{layer['total_j'] / scale:.3g}",
                str(layer["tiles"]),
            ]
        )
    rows.append(
        [
            "total",
            "",
            *(f"{summary['components_j'][c] / scale:.3g}" for c in COMPONENTS),
            f"{total / scale:.3g}",
            str(summary["tiles_used"]),
        ]
    )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    where = f"{summary['node_nm']:g} nm, {summary['vdd']:g} V"
    gated = "gated" if summary["gate_idle"] >= 0.5 else "not gated"
    chip = (
        f"tile {summary['tile'][0]:.0f}x{summary['tile'][1]:.0f}, ADC {summary['adc_bits']:.0f} b, "
        f"{where}, idle converters {gated}"
        if summary["chip_tiles"] > 0
        else f"no analog tiles, {where}, digital array {summary['digital_array']}"
    )
    lines = [f"preset {summary['preset']}, {chip}; energy per inference in {unit}"]
    for r in [header, *rows]:
        lines.append("  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)))
    peak = summary["peak_tops_per_w"]
    lines += [
        f"total {format_joules(total)} per inference, {summary['tops_per_w']:.3g} TOPS/W effective "
        f"({'no analog tiles' if peak is None else f'peak tile {peak:.0f}'}), "
        f"latency {summary['latency_s'] * 1e6:.3g} us, "
        f"{summary['tiles_used']}/{summary['chip_tiles']} tiles, "
        f"programming once {format_joules(summary['program_once_j'])}",
        "gradient of total energy (straight-through):",
    ]
    for layer in summary["layers"]:
        lines.append(
            f"  {layer['name']}: dE/d(width) {format_joules(layer['d_energy_d_width_j_per_unit'])}"
            " per unit, dE/d(analog fraction) "
            f"{format_joules(layer['d_energy_d_analog_fraction_j'])}"
        )
        if layer["width_gradient_is_a_guide"] is False:
            lines.append(
                f"    not a guide here: one unit fewer saves "
                f"{format_joules(layer['one_unit_fewer_saves_j'])} (tiles, row bands and "
                "re-programming change in whole steps; the gradient is their average slope)"
            )
    shrink = max(summary["layers"], key=lambda layer: layer["d_energy_d_width_j_per_unit"])
    move = min(summary["layers"], key=lambda layer: layer["d_energy_d_analog_fraction_j"])
    lines.append(f"shrink first: {shrink['name']} (largest saving per unit of width)")
    if summary["chip_tiles"] > 0 and move["d_energy_d_analog_fraction_j"] < 0:
        lines.append(f"move to analog first: {move['name']} (largest saving per analog share)")
    return "\n".join(lines)
