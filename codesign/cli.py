"""`codesign` command line: parses arguments and calls the library; holds no logic of its own.

Every user error ends as one line on stderr and exit code 2, never a traceback. Set
CODESIGN_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import sys
import threading
import warnings

from codesign import errors
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
    from codesign.nn.networks import LayerShape

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
    from codesign.hardware import report
    from codesign.hardware.accelerator import with_tile
    from codesign.hardware.presets import get_preset, preset_sources

    if args.list_presets:
        for name, source in preset_sources().items():
            print(report.format_preset(name, get_preset(name), source))
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
    errors.check_stop()
    print(json.dumps(result, indent=2) if args.json else report.format_energy(result))
    return 0


def _log(message: str) -> None:
    print(f"codesign: {message}", file=sys.stderr)


def _run_dir(out: str | None, study: str | None, default: str) -> pathlib.Path:
    """--out, else runs/STUDY, else runs/DEFAULT (the one place the default is made)."""
    return pathlib.Path(out or pathlib.Path("runs") / (study or default))


def _load_study(args):
    """The study named by --study in --storage (or the journal in --out)."""
    from codesign.search.study import JOURNAL_NAME, find_study, storage_for, study_space

    if not args.storage:
        journal = pathlib.Path(args.out) / JOURNAL_NAME
        if not journal.is_file():
            raise CodesignError(f"--out {args.out!r}: no study journal ({journal} does not exist)")
    elif args.storage.endswith((".journal", ".log")) and not pathlib.Path(args.storage).is_file():
        raise CodesignError(f"--storage {args.storage!r}: no such journal file")
    study = find_study(storage_for(args.storage, args.out), args.study)
    study_space(study)  # a codesign study, whose space still parses
    errors.check_stop()  # a stop dropped while reading: export and pareto write nothing
    return study, args.storage or args.out


def _cmd_search(args) -> int:
    from codesign.search import pareto
    from codesign.search.loop import check_counts, run_search
    from codesign.search.space import load_space
    from codesign.search.study import quiet_optuna

    space = load_space(args.space)
    out = _run_dir(args.out, args.study, space.name)
    quiet_optuna()
    total = space.trials if args.trials is None else args.trials
    check_counts(args.trials, args.batch)
    with _Progress(total, space) as progress:  # errors before any work print one line, no bar
        study = run_search(
            space,
            trials=args.trials,
            batch=args.batch,
            storage=args.storage,
            study_name=args.study,
            seed=args.seed,
            out_dir=out,
            force_new_study=args.force_new_study,
            progress=progress.update,
            log=progress.log,
        )
    table, baseline = pareto.report(study)
    print(table)
    if baseline:
        print(
            f"baseline (dense all-digital): {baseline.energy_j:.3g} J, "
            f"accuracy {baseline.accuracy:.3f}"
        )
    if not args.storage or out.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        for name in ("pareto.png", "pareto.html"):
            pareto.plot_front(study, out / name, baseline)
        print(f"plots: {out / 'pareto.png'}, {out / 'pareto.html'}")
    return 0


class _Progress:
    """A rich progress bar: trials done / total, feasible front size, best energy, ETA."""

    def __init__(self, total: int, space):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.space = space
        self.bar = Progress(
            TextColumn("[bold]search"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task = self.bar.add_task("search", total=total, info="starting")

        self.started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.started:
            self.bar.stop()
        return False

    def _start(self) -> None:
        """Show the bar only once work begins: an early error prints one line, no bar."""
        if not self.started:
            self.bar.start()
            self.started = True

    def log(self, message: str) -> None:
        self._start()
        self.console.print(f"codesign: {message}")

    def update(self, study, done_at_start: int, total: int, elapsed: float) -> None:
        self._start()
        from codesign.search import pareto
        from codesign.search.study import counts

        info = pareto.progress_line(study, self.space.problem.budgets.accuracy_floor)
        self.bar.update(self.task, completed=min(counts(study)[0], total), info=info)


def _cmd_worker(args) -> int:
    from codesign.search.loop import check_counts, run_search
    from codesign.search.study import counts, quiet_optuna, study_space

    check_counts(args.trials, args.batch)
    study, _ = _load_study(args)
    space = study_space(study)
    total = args.trials if args.trials is not None else study.user_attrs.get("target_trials")
    total = space.trials if total is None else total
    quiet_optuna()
    with _Progress(total, space) as progress:
        run_search(
            space, trials=total, batch=args.batch, storage=args.storage,
            study_name=study.study_name, out_dir=args.out, progress=progress.update,
            log=progress.log,
        )  # fmt: skip
    print(f"study {study.study_name!r}: {counts(study)[0]} finished trials (target {total})")
    return 0


def _cmd_pareto(args) -> int:
    from codesign.search import pareto

    plot = _plot_path(args.plot) if args.plot else None
    study, _ = _load_study(args)
    table, baseline = pareto.report(study, args.format)
    print(table)
    if plot:
        pareto.plot_front(study, plot, baseline)
        if args.format == "table":
            print(f"plot: {args.plot}")
    return 0


def _plot_path(text: str) -> pathlib.Path:
    """--plot's file: .png or .html, in a directory that exists."""
    path = pathlib.Path(text)
    if path.suffix not in (".png", ".html"):
        raise CodesignError(f"--plot {text!r}: give a file ending in .png or .html")
    if not path.parent.is_dir():
        raise CodesignError(f"--plot {text!r}: directory {str(path.parent)!r} does not exist")
    return path


def _cmd_export(args) -> int:
    from codesign.design import export_design, save_design

    study, where = _load_study(args)
    design = export_design(study, trial=args.trial, pick=args.pick, storage_desc=str(where))
    path = save_design(design, args.output)
    m = design.metrics
    print(
        f"exported trial {design.source['trial']} to {path}: energy {m.get('energy_j', 0):.3g} J,"
        f" accuracy {m.get('accuracy', 0):.3f}"
    )
    return 0


def _cmd_train(args) -> int:
    from codesign.design import load_design, train_design

    if args.inferences is not None and not args.inferences >= 0:
        raise CodesignError(f"--inferences must be >= 0, got {args.inferences}")
    design = load_design(args.design)
    report = train_design(
        design, steps=args.steps, out_dir=args.out, inferences=args.inferences, log=_log
    )
    e = report["energy"]
    print(
        f"test accuracy {report['test_accuracy_analog']:.3f} under analog noise "
        f"({report['test_accuracy_digital']:.3f} digital), {e['energy_j']:.3g} J per inference, "
        f"{e['tops_per_w']:.3g} TOPS/W"
    )
    print(
        f"fine-tune {report['finetune_flops']:.3g} FLOPs = {report['finetune_energy_j']:.3g} J; "
        f"inference energy overtakes training after {report['breakeven_inferences']:.3g} "
        f"inferences; lifecycle energy for {report['inferences']:.3g} inferences: "
        f"{report['lifecycle_energy_j']:.3g} J"
    )
    out = pathlib.Path(args.out)  # "trained/" prints as trained/checkpoint, not trained//
    print(
        f"wrote {out / 'checkpoint'}, {out / 'weights.npz'} "
        f"({report['compact_weights']} of {report['dense_weights']} weights), "
        f"{out / 'report.json'}"
    )
    return 0


def _devices_flag(p) -> None:
    p.add_argument(
        "--devices", type=int,
        help="local devices a population is split over (default: all, or CODESIGN_DEVICES)",
    )  # fmt: skip


def _study_flags(p) -> None:
    p.add_argument("--study", help="study name (default: the only study in the storage)")
    p.add_argument("--storage", help="Optuna storage URL (default: the journal file in --out)")
    p.add_argument("--out", default=None, help="run directory holding study.journal")


def build_parser() -> argparse.ArgumentParser:
    from codesign.hardware.presets import DEFAULT_PRESET, PRESETS
    from codesign.nn.pruning import GRANULARITIES

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

    search = sub.add_parser(
        "search",
        help="run or resume a co-design search",
        description="Create or resume an Optuna study over a search space.",
    )
    search.add_argument("space", help="search space YAML file (see search_spaces/)")
    search.add_argument("--trials", type=int, help="trials in total (default: the file's)")
    search.add_argument("--batch", type=int, help="candidates per ask/tell batch")
    search.add_argument("--storage", help="Optuna storage URL (default: journal file in --out)")
    search.add_argument("--study", help="study name (default: the space's name)")
    search.add_argument("--seed", type=int, help="sampler seed (default: the file's)")
    search.add_argument("--out", help="run directory (default: runs/STUDY)")
    search.add_argument(
        "--force-new-study",
        action="store_true",
        help="delete an existing study of this name (and its trials) and start anew",
    )
    _devices_flag(search)
    search.set_defaults(func=_cmd_search)

    worker = sub.add_parser(
        "worker",
        help="join an existing study and evaluate trials until it has its total",
        description="Join a study created by `codesign search` (same storage) and work on it; "
        "run one per host or per process.",
    )
    _study_flags(worker)
    worker.add_argument("--trials", type=int, help="total trials (default: the study's target)")
    worker.add_argument("--batch", type=int, help="candidates per ask/tell batch")
    _devices_flag(worker)
    worker.set_defaults(func=_cmd_worker)

    pareto = sub.add_parser("pareto", help="show the feasible Pareto front of a study")
    _study_flags(pareto)
    pareto.add_argument("--format", default="table", choices=("table", "json", "csv"))
    pareto.add_argument("--plot", help="write a plot: .png (matplotlib) or .html (plotly)")
    pareto.set_defaults(func=_cmd_pareto)

    export = sub.add_parser("export", help="export a found design as JSON")
    _study_flags(export)
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="trial number")
    which.add_argument("--pick", help="e.g. 'accuracy>=0.9:min-energy' (from the feasible front)")
    export.add_argument("-o", "--output", default="design.json", help="output file")
    export.set_defaults(func=_cmd_export)

    train = sub.add_parser("train", help="fine-tune an exported design for longer")
    train.add_argument("design", help="design JSON from codesign export")
    train.add_argument("--steps", type=int, help="fine-tune steps (default: 5x the search's)")
    train.add_argument("--out", default="trained", help="output directory")
    train.add_argument("--inferences", type=float, help="inferences for lifecycle energy")
    _devices_flag(train)
    train.set_defaults(func=_cmd_train)
    return parser


DEVICES_ENV = "CODESIGN_DEVICES"  # codesign.engine.core.DEVICES_ENV (that module imports JAX)


def _unraisable(unraisable) -> None:
    """While a stop is pending, what Python drops and would print as a traceback is noise: the
    stop itself, raised in a gc callback (the search raises it again at its next phase boundary,
    errors.check_stop), or what failed to clean up after it (a stop inside asyncio's event-loop
    constructor, orbax saving the base, leaves a half-built loop whose `__del__` raises)."""
    if not errors.stopped():
        sys.__unraisablehook__(unraisable)


def main(argv=None) -> int:
    # A scheduler's stop (SIGTERM) is handled like Ctrl-C: trials in flight marked, lock freed.
    main_thread = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(sig, errors.stop) for sig in signals] if main_thread else []
    hook, sys.unraisablehook = sys.unraisablehook, _unraisable
    devices = os.environ.get(DEVICES_ENV)  # --devices sets it for this command only
    try:
        with warnings.catch_warnings():
            # After a stop, the work cut short is freed: asyncio warns of each coroutine that
            # orbax never awaited. The command's last word is its one line, "interrupted".
            shown = warnings.showwarning
            warnings.showwarning = lambda *a, **k: None if errors.stopped() else shown(*a, **k)
            return _main(argv)
    finally:
        if devices is None:
            os.environ.pop(DEVICES_ENV, None)
        else:
            os.environ[DEVICES_ENV] = devices
        sys.unraisablehook = hook
        errors.clear_stops()
        for sig, handler in zip(signals, previous, strict=False):  # none off the main thread
            signal.signal(sig, handler)


def _main(argv) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "func", None) in (_cmd_pareto, _cmd_export, _cmd_worker) and not args.out:
            args.out = str(_run_dir(None, args.study, ""))
        if args.func in (_cmd_search, _cmd_worker, _cmd_train):
            from codesign.engine.core import local_devices
            from codesign.engine.finetune import enable_compilation_cache

            if args.devices is not None:
                os.environ[DEVICES_ENV] = str(args.devices)
            local_devices()  # a bad --devices (or CODESIGN_DEVICES) fails before any work

            enable_compilation_cache()  # a rerun or a second worker skips the engine's compile
        # A stop whose raise Python dropped (it landed in a gc callback: JAX's, while importing)
        # ends the command here, before and after its work, not with exit code 0.
        errors.check_stop()
        code = args.func(args)
        errors.check_stop()
        return code
    except CodesignError as err:
        if os.environ.get("CODESIGN_DEBUG"):
            raise
        print(f"codesign: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `codesign energy --json | head`
        sys.stderr.close()
        return 0
    except BaseException as err:  # a stop, or what a stop became (an import cut short)
        if not errors.caused_by_stop(err) or isinstance(err, SystemExit):
            raise
        signum = errors.stop_signal(err)
        name = signal.Signals(signum).name
        print(f"codesign: interrupted ({name}); run the same command to resume", file=sys.stderr)
        return 128 + signum


def entry() -> None:
    """The `codesign` command. After a stop by signal it leaves at once (os._exit): a fine-tune
    cut short may still run on XLA's threads, and tearing the interpreter down under them can
    crash; everything that must last (the journal) is already on disk."""
    code = main()
    if code > 128:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
