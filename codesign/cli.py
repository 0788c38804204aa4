"""`codesign` command line: parses arguments and calls the library; holds no logic of its own.

Every user error ends as one line on stderr and exit code 2, never a traceback. Set
CODESIGN_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from codesign.errors import CodesignError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line instead of usage + error."""

    def error(self, message):
        where = self.prog.removeprefix("codesign").strip()
        raise CodesignError(f"{where}: {message}" if where else message)


def _parse_pair(text: str, what: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise CodesignError(f"{what}: {text!r} is not ROWSxCOLS with positive integers, e.g. 16x16")
    return int(parts[0]), int(parts[1])


def parse_layers(text: str):
    """'64x256,256x256@4,256x10' -> LayerShapes (K x N, optional @P positions per inference)."""
    from codesign.networks import LayerShape

    layers = []
    for i, item in enumerate(filter(None, (t.strip() for t in text.split(","))), start=1):
        shape, _, positions = item.partition("@")
        if positions and not (positions.isdigit() and int(positions) > 0):
            raise CodesignError(f"--layers: {item!r}: positions after '@' must be a positive int")
        k, n = _parse_pair(shape, f"--layers: layer {i}")
        layers.append(LayerShape(k, n, positions=int(positions or 1), name=f"layer{i}"))
    if not layers:
        raise CodesignError("--layers: empty; give K x N per layer, e.g. 64x256,256x256,256x10")
    return tuple(layers)


def _float_list(text: str, n: int, what: str, low: float, high: float):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise CodesignError(f"{what}: {text!r} is not a number or comma-separated list") from None
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise CodesignError(f"{what}: {len(values)} values for {n} layers; give 1 or {n}")
    if not all(low <= v <= high for v in values):
        raise CodesignError(f"{what}: values must lie in [{low}, {high}], got {text}")
    return values


def _cmd_energy(args) -> int:
    from codesign import report
    from codesign.hardware import get_preset, preset_sources, with_tile

    if args.list_presets:
        from codesign.energy import peak_tops_per_w
        from codesign.hardware import PRESETS

        for name, source in preset_sources().items():
            peak = float(peak_tops_per_w(PRESETS[name]))
            print(f"{name:<20} peak {peak:7.0f} TOPS/W (one full tile)  {source}")
        return 0
    if not args.layers:
        raise CodesignError("energy: --layers is required, e.g. --layers 64x256,256x256,256x10")
    network = parse_layers(args.layers)
    acc = get_preset(args.preset)
    overrides = {}
    if args.tile:
        acc = with_tile(acc, *_parse_pair(args.tile, "--tile"))
    if args.adc_bits is not None:
        if not 1 <= args.adc_bits <= 16:
            raise CodesignError(f"--adc-bits must be an integer in [1, 16], got {args.adc_bits}")
        overrides["adc_bits"] = float(args.adc_bits)
    analog = _float_list(args.analog, len(network), "--analog", 0.0, 1.0)
    sparsity = _float_list(args.sparsity, len(network), "--sparsity", 0.0, 0.99)
    if any(analog) and float(acc.tiles) == 0:
        raise CodesignError(f"--analog: preset {args.preset!r} has no analog tiles; use --analog 0")
    result = report.energy_summary(
        network, acc, analog=analog, sparsity=sparsity, granularity=args.granularity, **overrides
    )
    print(json.dumps(result, indent=2) if args.json else report.format_energy(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from codesign.energy import GRANULARITIES
    from codesign.hardware import DEFAULT_PRESET, PRESETS

    parser = _Parser(prog="codesign", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    energy = sub.add_parser(
        "energy",
        help="energy per inference of a network on an accelerator preset",
        description="Per-layer, per-component energy per inference, TOPS/W, latency, and the "
        "gradient of total energy with respect to each layer's width and analog fraction.",
    )
    energy.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of {', '.join(PRESETS)}")
    energy.add_argument("--layers", help="K x N per layer, optional @P positions: 64x256,256x10")
    energy.add_argument("--tile", help="analog tile size in cells, ROWSxCOLS (e.g. 256x256)")
    energy.add_argument("--analog", default="0.5", help="analog fraction, one or one per layer")
    energy.add_argument("--adc-bits", type=int, help="ADC resolution in bits")
    energy.add_argument("--sparsity", default="0", help="pruned fraction, one or one per layer")
    energy.add_argument("--granularity", default="unstructured", choices=GRANULARITIES)
    energy.add_argument("--json", action="store_true", help="print JSON instead of a table")
    energy.add_argument("--list-presets", action="store_true", help="list presets and sources")
    energy.set_defaults(func=_cmd_energy)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except CodesignError as err:
        if os.environ.get("CODESIGN_DEBUG"):
            raise
        print(f"codesign: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `codesign energy --json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("codesign: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
