"""Candidate evaluation: a cached pretrained base, weight inheritance, one-compile fine-tunes.

Flow for a population of candidates (all arrays, leading axis = candidate), in one jit program:

    base = pretrain once on the source task (cached on disk with orbax, keyed by a hash of all
           that determines it), hidden units sorted most important first
    per candidate:
      inherit  the base's hidden layers; a candidate of width w keeps the first w units of a
               width group (an MLP's or CNN's hidden layer, a ResNet's stage)
      head     fresh, for the target task's classes
      masks    from the inherited weights: widths x pruning (granularity, sparsity, tile grid),
               one (candidate, layer) at a time by `lax.map`, so only the chosen maker runs
    vmapped over candidates (`init_one`, `train_one`, `score_one`; `codesign.search.early_stop` runs
    them as separate programs, a rung at a time):
      finetune `steps` Adam steps on the target task with masks fixed and analog noise on
               (`codesign.hardware.analog.hybrid_matmul` on each layer's analog columns), one
               lax.scan
      evaluate accuracy on the target validation and test splits, averaged over noise draws

Widths are masks over the maximum shapes and every per-candidate knob (widths, sparsity,
granularity, tile size, analog split, converter bits, seed) is a traced array, so a search
space compiles exactly one program per population size. On a CPU, compiling it takes about as
long as running a small population: so the program holds each mask maker once and one noisy
evaluation pass (validation and test together), it is compiled at -O1 (`engine.compiled`),
and `enable_compilation_cache` keeps it on disk for the next process.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from codesign.data.datasets import TransferTask
from codesign.engine.core import (
    Placement,
    Scores,
    TrainState,
    compiled,
    cross_entropy,
    streams,
    train,
)
from codesign.engine.pretraining import (
    PretrainConfig,
    base_key,
    enable_compilation_cache,
    load_or_pretrain,
    pretrain,
    pretrain_program,
)
from codesign.errors import CodesignError
from codesign.hardware import analog
from codesign.hardware.energy import GRANULARITIES
from codesign.nn import networks, pruning
from codesign.nn.checkpoint import load_checkpoint

__all__ = [
    "FinetuneConfig",
    "PretrainConfig",
    "Population",
    "Engine",
    "candidate_keys",
    "compiled",
    "pretrain",
    "pretrain_program",
    "base_key",
    "enable_compilation_cache",
    "load_checkpoint",
    "load_or_pretrain",
    "row_tile_bound",
]


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Static settings of every candidate's fine-tune (shared by the whole search space)."""

    steps: int = 100
    learning_rate: float = 3e-3
    batch_size: int = 64
    eval_draws: int = 3  # noise draws averaged at evaluation
    noise: bool = True  # programming and read noise on (quantization is always on)
    # Noise magnitudes: aihwkit's StandardHWATrainingPreset, cited in `analog.AnalogConfig`.
    prog_noise: float = analog.AnalogConfig.prog_noise
    out_noise: float = analog.AnalogConfig.out_noise
    out_bound: float = analog.AnalogConfig.out_bound
    # The crossbar's device model, its per-read noise (pcm) and the time since programming at
    # which candidates are trained and scored (pcm drifts): `codesign.hardware.analog`'s docstring.
    device: str = analog.AnalogConfig.device
    read_noise: float = analog.AnalogConfig.read_noise
    inference_time: float = 0.0
    tile_scaling: str = analog.AnalogConfig.tile_scaling
    max_row_tiles: int = 8  # static bound: ceil(largest K / smallest tile rows) in the space
    # Rows per analog partial-sum block: must divide every candidate's tile rows (a space's
    # evaluator sets the gcd of its tile rows). See
    # `codesign.hardware.analog.AnalogConfig.row_block`.
    row_block: int = 8
    # How a population is mapped over its candidates: "vmap" (one batched program), "sequential"
    # (`lax.map`, one candidate at a time) or "auto": sequential for 2-D conv networks on a CPU,
    # where XLA runs a vmapped convolution as a grouped one, 6x slower than one convolution per
    # candidate for a ResNet-20 conv (forward and gradient, 8 candidates); else vmap (1-D
    # MNIST-1D convs ran 12% faster vmapped).
    population_map: str = "auto"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Population:
    """Per-candidate knobs as arrays with a leading candidate axis."""

    widths: jax.Array  # [B, groups] int32, kept units per width group (`networks.layer_groups`)
    sparsity: jax.Array  # [B, layers] float32
    granularity: jax.Array  # [B, layers] int32, index into GRANULARITIES
    analog_fraction: jax.Array  # [B, layers] float32
    tile_rows: jax.Array  # [B] int32, rows per analog tile
    tile_cols: jax.Array  # [B] int32, logical weight columns per analog tile
    adc_bits: jax.Array  # [B] int32
    dac_bits: jax.Array  # [B] int32
    seed: jax.Array  # [B] int32

    @property
    def size(self) -> int:
        return int(self.widths.shape[0])

    @classmethod
    def stack(cls, rows: Sequence[dict]) -> Population:
        """From one dict per candidate (granularity by name or index)."""
        fields = {f.name: [] for f in dataclasses.fields(cls)}
        for row in rows:
            for name in fields:
                value = row[name]
                if name == "granularity":
                    value = [GRANULARITIES.index(g) if isinstance(g, str) else g for g in value]
                fields[name].append(value)
        ints = {"widths", "granularity", "tile_rows", "tile_cols", "adc_bits", "dac_bits", "seed"}
        return cls(
            **{
                name: jnp.asarray(np.asarray(v), jnp.int32 if name in ints else jnp.float32)
                for name, v in fields.items()
            }
        )

    def take(self, index) -> Population:
        """The candidates at `index` (a NumPy integer array), gathered on the host: a handful of
        integers per candidate, and no XLA program compiled for the gather."""
        return jax.tree.map(lambda x: jax.device_put(np.asarray(x)[index]), self)


def row_tile_bound(shapes: Sequence[networks.LayerShape], min_tile_rows: int) -> int:
    """The static row-tile bound a search space needs: largest K over the smallest tile rows."""
    return math.ceil(max(s.rows for s in shapes) / min_tile_rows)


class LayerPaths(NamedTuple):
    """Per layer [layers], whether any candidate of a vmapped population has an analog column
    (else the crossbar is not simulated) and whether any has a kept digital column (else a
    convolution's exact forward pass is skipped: `codesign.hardware.analog.hybrid_conv`)."""

    analog: jax.Array
    digital: jax.Array


# --- the engine ---


def candidate_keys(seed):
    """A candidate's streams from its seed: head init, batches, training noise, evaluation
    (`codesign.engine.core.streams`: the one key-stream rule)."""
    return streams(seed, 4)


def _mask_tree(masks):
    """Weight masks as a params-shaped tree; a bias is kept where its column keeps a weight."""
    return tuple({"w": m, "b": (m.sum(axis=0) > 0).astype(m.dtype)} for m in masks)


def pruning_masks(spec, population: Population, params) -> list[jax.Array]:
    """Every candidate's pruning mask of every layer: [B, K, N] per layer.

    Computed one (candidate, layer) at a time by `lax.map`, so `make_mask` branches on the
    granularity and runs only the chosen maker. The layers are zero-padded to one shape, so
    the program holds each maker once; makers read only the kept prefix, so padding changes
    no mask.
    """
    shapes = networks.layer_shapes(spec)
    k_max = max(s.rows for s in shapes)
    n_max = max(s.out_units for s in shapes)
    weights = jnp.stack(
        [
            jnp.pad(p["w"], ((0, 0), (0, k_max - s.rows), (0, n_max - s.out_units)))
            for p, s in zip(params, shapes, strict=True)
        ],
        axis=1,
    )  # [B, L, K_max, N_max]
    size, layers = population.size, len(shapes)
    in_units, cols = networks.layer_widths(spec, population.widths)
    rows = in_units * jnp.asarray([[s.kernel_area for s in shapes]], jnp.int32)
    per_layer = (
        population.granularity,
        weights,
        population.sparsity,
        rows,
        cols,
        jnp.repeat(population.tile_rows[:, None], layers, 1),
        jnp.repeat(population.tile_cols[:, None], layers, 1),
    )
    flat = jax.tree.map(lambda x: x.reshape(size * layers, *x.shape[2:]), per_layer)
    masks = jax.lax.map(lambda args: pruning.make_mask(*args), flat)
    masks = masks.reshape(size, layers, k_max, n_max)
    return [masks[:, l, : s.rows, : s.out_units] for l, s in enumerate(shapes)]


class Engine:
    """Evaluates populations of candidates: inherit, mask, fine-tune under analog noise, score."""

    def __init__(
        self,
        spec: networks.NetworkSpec,
        task: TransferTask,
        finetune: FinetuneConfig = FinetuneConfig(),
        pretrain_config: PretrainConfig = PretrainConfig(),
        *,
        cache_dir=None,
        base_params=None,
        log=None,
    ):
        if spec.num_classes != task.source.num_classes:
            spec = dataclasses.replace(spec, num_classes=task.source.num_classes)
        self.source_spec = spec
        self.spec = dataclasses.replace(spec, num_classes=task.target.num_classes)
        self.task = task
        self.config = finetune
        self.shapes = networks.layer_shapes(self.spec)
        if base_params is None:
            base_params, self.base_cached = load_or_pretrain(
                spec, task.source, pretrain_config, cache_dir, log
            )
        else:
            self.base_cached = True
        # The hidden layers (the head is new per candidate), as fresh uncommitted device arrays:
        # a base restored from the cache is committed to a device and a base just pretrained is
        # not, and the programs that take it would differ in that alone (a resumed search, or a
        # second evaluator of the same space, would compile them again instead of loading them
        # from the compilation cache).
        self.base = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), tuple(base_params[:-1]))
        target = task.target
        self.data = {
            "train": (jnp.asarray(target.x_train), jnp.asarray(target.y_train)),
            # Validation then test examples, scored in one pass: see `score_one`.
            "eval": (
                jnp.asarray(np.concatenate([target.x_val, target.x_test])),
                jnp.asarray(np.concatenate([target.y_val, target.y_test])),
            ),
        }
        self.num_val = len(target.y_val)
        self.traces = 0  # how often a population program was traced (compiled)
        self.optimizer = optax.adam(finetune.learning_rate)
        self._init = compiled(self._counted(self._init_program))
        self._train = compiled(self._counted(self._train_program), static_argnums=(4, 5))
        self._score = compiled(self._counted(self._score_program))
        # The local devices (`codesign.engine.core.Placement`): each runs these programs on its
        # slice of a population, with its own copy of the base weights and the data.
        self.placement = Placement()
        self._base_copies = self.placement.replicate(self.base)
        self._data_copies = self.placement.replicate(self.data)

    # A population's programs over the devices: the population and state split, outputs joined.
    def init_population(self, population: Population) -> TrainState:
        return self.placement.call(self._init, (True, False), population, self._base_copies)

    def train_population(self, population: Population, state, start, steps: int, probe: bool):
        split = (True, True, False, False, False, False)
        args = (population, state, self._data_copies, start, steps, probe)
        return self.placement.call(self._train, split, *args)

    def score_population(self, population: Population, state) -> Scores:
        split = (True, True, False)
        return self.placement.call(self._score, split, population, state, self._data_copies)

    # The population programs: arrays with a leading candidate axis, the per-candidate pieces
    # (`init_one`, `train_one`, `score_one`) mapped by `population_map`. A plain fine-tune is
    # `_init`, `_train` over all its steps, then `_score`; early stopping
    # (`codesign.search.early_stop`)
    # runs `_train` a rung at a time between the same `_init` and `_score`. Every training window
    # starts from a state passed in (never one computed in the same program, whose layout XLA
    # could choose differently), so a candidate's numbers are bit-identical through either path
    # (tests/test_early_stop.py).
    def _counted(self, program):
        def traced(*args):
            self.traces += 1
            return program(*args)

        return traced

    def _init_program(self, population: Population, base) -> TrainState:
        """Every candidate's inherited, masked network and fresh optimizer state."""
        params, masks = self.inherit(population, base)
        return jax.vmap(self.init_one)(params, masks)

    def _train_program(self, population: Population, state, data, start, steps: int, probe: bool):
        """Steps [start, start + steps) from the state reached; with `probe`, also each
        candidate's validation accuracy under one noise draw at the end (`probe`)."""

        def one(cand, state, paths):
            return self.train_one(cand, state, data, start, steps, paths)

        state = self.population_map(one, population, state)
        return (state, self.probe(population, state, data, start + steps)) if probe else state

    def _score_program(self, population: Population, state, data):
        return self.population_map(
            lambda cand, state, paths: self.score_one(cand, state, data, paths),
            population,
            state,
        )

    def probe(self, population: Population, state: TrainState, data, step):
        """Each candidate's validation accuracy under one noise draw (key: its evaluation stream
        folded with `step`); 0 where its loss has gone non-finite."""
        x_val, y_val = (a[: self.num_val] for a in data["eval"])

        def one(cand, params, losses, paths):
            key = jax.random.fold_in(candidate_keys(cand.seed).evaluation, step)
            logits = self.forward(cand, paths)(params, x_val, key)
            accuracy = jnp.mean(jnp.argmax(logits, -1) == y_val)
            return jnp.where(jnp.isfinite(losses).all(), accuracy, 0.0)

        return self.population_map(one, population, state.params, state.losses)

    @property
    def sequential(self) -> bool:
        """Whether populations run one candidate at a time (`FinetuneConfig.population_map`)."""
        how = self.config.population_map
        if how not in ("auto", "vmap", "sequential"):
            raise ValueError(f"population_map must be auto, vmap or sequential, got {how!r}")
        if how == "auto":
            conv_2d = any(networks.layer_geometry(self.spec, i) for i in range(len(self.shapes)))
            return conv_2d and len(self.spec.input_shape) == 3 and jax.default_backend() == "cpu"
        return how == "sequential"

    def population_map(self, fn, population: Population, *mapped):
        """``fn(cand, *one_of_each(mapped), paths)`` for every candidate: [B, ...] results.

        vmapped, ``paths`` is the population's `LayerPaths` (a layer with no analog column in
        any candidate skips the crossbar simulation for all, one with no digital column the
        exact forward pass of its convolution); run one candidate at a time, it is None (each
        candidate decides for itself).
        """
        if self.sequential:
            return jax.lax.map(lambda args: fn(*args, None), (population, *mapped))
        _, cols = networks.layer_widths(self.spec, population.widths)
        n_analog = jnp.round(population.analog_fraction * cols)
        paths = LayerPaths(jnp.any(n_analog > 0, axis=0), jnp.any(n_analog < cols, axis=0))
        return jax.vmap(lambda *args: fn(*args, paths))(population, *mapped)

    def inherit(self, population: Population, base):
        """Every candidate's inherited hidden layers with a fresh head, and its masks."""
        heads = jax.vmap(
            lambda seed: networks.init_params(self.spec, candidate_keys(seed).init)[-1]
        )(population.seed)
        inherited = jax.tree.map(lambda x: jnp.broadcast_to(x, (population.size, *x.shape)), base)
        params = (*inherited, heads)
        return params, tuple(pruning_masks(self.spec, population, params))

    def forward(self, cand: Population, paths: LayerPaths | None = None):
        """One candidate's forward pass on its hardware: `forward(params, x, noise_key)`.

        ``paths``: the layers' paths that may be skipped (see `population_map`); None decides
        per layer from the candidate's own split."""
        spec, cfg, shapes = self.spec, self.config, self.shapes
        widths = [cand.widths[i] for i in range(spec.num_hidden)]
        _, cols = networks.layer_widths(spec, cand.widths)
        n_analog = [jnp.round(cand.analog_fraction[i] * cols[i]) for i in range(len(shapes))]
        analog_on = [None if paths is None else paths.analog[i] for i in range(len(shapes))]
        digital_on = [
            n_analog[i] < cols[i] if paths is None else paths.digital[i] for i in range(len(shapes))
        ]
        unit_masks = networks.width_masks(spec, widths)
        hw = analog.AnalogConfig(
            dac_bits=cand.dac_bits,
            adc_bits=cand.adc_bits,
            tile_rows=cand.tile_rows,
            prog_noise=cfg.prog_noise,
            out_noise=cfg.out_noise,
            out_bound=cfg.out_bound,
            max_row_tiles=cfg.max_row_tiles,
            row_block=cfg.row_block,
            read_noise=cfg.read_noise,
            inference_time=cfg.inference_time,
            device=cfg.device,
            tile_scaling=cfg.tile_scaling,
        )

        def forward(p, x, noise):
            keys = jax.random.split(noise, len(shapes))

            def layer(i, h, w, geometry):
                key = keys[i] if cfg.noise else None
                if geometry is None:
                    return analog.hybrid_matmul(h, w, n_analog[i], hw, key, analog_on[i])
                return analog.hybrid_conv(
                    h, w, geometry, n_analog[i], hw, key, analog_on[i], digital_on[i]
                )

            return networks.apply(spec, p, x, unit_masks=unit_masks, layer=layer)

        return forward

    def init_one(self, params, masks) -> TrainState:
        """One candidate's fine-tune state before its first step: masked params, Adam's state,
        the masks, and room for each step's loss."""
        return TrainState.create(params, self.optimizer, self.config.steps, _mask_tree(masks))

    def train_one(
        self, cand: Population, state: TrainState, data, start, steps: int, paths=None
    ) -> TrainState:
        """One candidate, fully traced: steps [start, start + steps) of its fine-tune under
        analog noise (`codesign.engine.core.train`: a fine-tune run in rungs gives the numbers of
        one run straight through)."""
        forward = self.forward(cand, paths)

        def loss(params, xb, yb, key):
            return cross_entropy(forward(params, xb, key), yb)

        return train(
            state,
            loss,
            self.optimizer,
            data["train"],
            candidate_keys(cand.seed),
            batch_size=self.config.batch_size,
            start=start,
            steps=steps,
        )

    def score_one(self, cand: Population, state: TrainState, data, paths=None):
        """One fine-tuned candidate's accuracies (analog, averaged over noise draws; digital),
        final loss and training FLOPs."""
        spec, cfg = self.spec, self.config
        params, masks, losses = state.params, state.layer_masks, state.losses
        # Validation and test in one pass (one noisy forward in the program, not two): each
        # noise draw is one programmed chip, read on both splits.
        x_eval, y_eval = data["eval"]
        unit_masks = networks.width_masks(spec, [cand.widths[i] for i in range(spec.num_hidden)])
        digital_logits = networks.apply(spec, params, x_eval, unit_masks=unit_masks)
        digital_hits = jnp.argmax(digital_logits, -1) == y_eval
        draws = jax.random.split(candidate_keys(cand.seed).evaluation, cfg.eval_draws)
        forward = self.forward(cand, paths)

        def noisy_hits():  # one draw at a time: a population's activations for all of them
            # at once were most of a conv search's peak memory (mnist1d_resnet.yaml: 3.0 GB
            # with 3 draws at once, 1.5 GB with one)
            hits = jax.lax.map(
                lambda k: jnp.argmax(forward(params, x_eval, k), -1) == y_eval, draws
            )
            return jnp.mean(hits, axis=0)

        # With no analog column, every draw is the digital pass itself: score it once.
        if paths is None:
            _, cols = networks.layer_widths(spec, cand.widths)
            analog_on = jnp.round(cand.analog_fraction * cols) > 0
        else:
            analog_on = paths.analog
        hits = jax.lax.cond(
            jnp.any(analog_on), noisy_hits, lambda: digital_hits.astype(jnp.float32)
        )
        n_val = self.num_val
        final_loss = jnp.mean(losses[-max(1, cfg.steps // 10) :])
        return Scores(
            val_accuracy=jnp.mean(hits[:n_val]),
            test_accuracy=jnp.mean(hits[n_val:]),
            # The same fine-tuned weights on an exact digital chip: the analog penalty's baseline.
            digital_test_accuracy=jnp.mean(digital_hits[n_val:]),
            final_loss=final_loss,
            diverged=~jnp.isfinite(final_loss),
            finetune_flops=self.step_flops(masks) * cfg.steps,
            kept_weights=jnp.stack([jnp.sum(m) for m in masks]),
            params=params,
            masks=tuple(masks),
        )

    def step_flops(self, masks) -> jax.Array:
        """Training FLOPs of one fine-tune step: forward 2 per MAC, backward 4 per MAC, over the
        kept weights (`masks`: one candidate's, or a population's)."""
        kept_macs = sum(
            jnp.sum(m, axis=(-2, -1)) * s.positions for m, s in zip(masks, self.shapes, strict=True)
        )
        return 6.0 * kept_macs * self.config.batch_size

    def check_population(self, population: Population) -> None:
        """Raise unless every candidate's tile rows are a multiple of the row block."""
        rows = np.asarray(population.tile_rows)
        bad = sorted({int(r) for r in rows if r < 1 or r % self.config.row_block})
        if bad:
            raise CodesignError(
                f"tile rows {bad} are not multiples of FinetuneConfig.row_block="
                f"{self.config.row_block}: set row_block to the gcd of the tile rows used"
            )

    def evaluate_population(
        self, population: Population, *, chunk: int | None = None, keep_params=False
    ) -> Scores:
        """Fine-tune and score every candidate: `Scores` of NumPy arrays, a row per candidate.

        The population is evaluated in chunks of `chunk` candidates (default: all at once);
        a short last chunk is padded with copies, so every call shares one compiled program.
        """
        self.check_population(population)
        size = population.size
        chunk = self.placement.padded(chunk or size)  # a whole slice for every device
        results = []
        for start in range(0, size, chunk):
            part = population.take(np.arange(start, min(start + chunk, size)))
            pad = chunk - part.size
            if pad:
                part = population.take(np.r_[np.arange(start, size), np.full(pad, size - 1)])
            state = self.init_population(part)
            state = self.train_population(part, state, 0, self.config.steps, False)
            out = self.score_population(part, state)
            if not keep_params:
                out = out.without_weights()
            out = jax.tree.map(np.asarray, out)
            results.append(jax.tree.map(lambda v, n=chunk - pad: v[:n], out))
        return jax.tree.map(lambda *parts: np.concatenate(parts), *results)
