"""Differentiable co-design: a population's design variables learned together with its weights.

Every member of a population starts from a candidate of the space (its categorical choices, tile
size and pruning granularity, stay fixed) and gets its own trade-off weight lambda, swept
log-uniformly across the population. One compiled program fine-tunes each member's inherited
base on the target task together with its relaxed design variables, minimising

    cross-entropy(relaxed network) + lambda * log(energy per inference of the relaxed design)

where the energy is `codesign.hardware.energy.estimate_energy`: exact forward, straight-through
backward, so its gradient with respect to widths, sparsity, analog split and ADC bits has the
physical sign. The relaxations, per member (each variable lives on its dimension's range through a
sigmoid):

    widths    w per width group; unit j of the importance-sorted group is gated by
              sigmoid((w - j - 0.5) / temperature): soft width gates (the energy model sees w)
    sparsity  s per layer; a weight is gated by a sigmoid of |w| minus the s-quantile that |w|
              would have if the layer's weights were normal (sigma sqrt(2) erfinv(s): no sort,
              so a far smaller program than an exact quantile): soft magnitude pruning; every
              granularity is relaxed this way, the energy model sees s with the member's own
    analog    a per layer; the layer's outputs carry sqrt(a) times the analog error of an
              all-analog layer (its variance is the share of analog outputs)
    ADC bits  b; the analog error is an ADC step of 2 x range x 2^-b drawn as uniform noise, the
              differentiable proxy for quantisation of DiffQ (Defossez et al., "Differentiable
              Model Compression via Pseudo Quantization Noise", TMLR 2022), plus the read noise
              of `analog.AnalogConfig` (out_noise x range)

The learned values are continuous; the search snaps them onto the space's grid
(`SearchSpace.params_of`) and scores the hardened designs like any candidate: energy from their
real masks, accuracy from the standard fine-tune under analog noise. What a study stores is never
the relaxed model's number (that one is kept beside it, as the trial's `relaxed_energy_j`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from codesign.engine.core import TrainState, adam_per_part, compiled, cross_entropy, streams, train
from codesign.hardware.energy import Design, estimate_energy
from codesign.nn import networks

__all__ = ["Bounds", "GradientConfig", "Learned", "Relaxation", "lambdas"]


@dataclasses.dataclass(frozen=True)
class GradientConfig:
    """Settings of the relaxed co-design run (the weights use the space's fine-tune settings)."""

    steps: int = 100  # joint weight and design steps per population
    design_learning_rate: float = 0.1  # Adam, on the design variables' logits
    lambda_low: float = 0.01  # the sweep's smallest and largest trade-off weights
    lambda_high: float = 1.0
    temperature: float = 1.0  # soft width gates' width, in units
    sharpness: float = 0.05  # soft pruning's width, as a share of the layer's mean |w|


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Each design variable's range: (low, high); low == high keeps it fixed."""

    widths: tuple[tuple[float, float], ...]  # per width group
    sparsity: tuple[float, float]
    analog_fraction: tuple[float, float]
    adc_bits: tuple[float, float]


def lambdas(count: int, config: GradientConfig, rng: np.random.Generator) -> np.ndarray:
    """count trade-off weights, log-uniform over [lambda_low, lambda_high] with a random offset
    (stratified: one per equal slice of the log range), so successive populations interleave."""
    lo, hi = np.log(config.lambda_low), np.log(config.lambda_high)
    slices = (np.arange(count) + rng.uniform(size=count)) / count
    return np.exp(lo + (hi - lo) * slices).astype(np.float32)


def _to_unit(value, low, high):
    """A value's logit on its range (clipped inside it, so a bound value can still move)."""
    span = np.maximum(np.asarray(high, np.float32) - low, 1e-6)
    share = np.clip((np.asarray(value, np.float32) - low) / span, 0.02, 0.98)
    return np.log(share / (1.0 - share)).astype(np.float32)


def _from_unit(u, low, high):
    return low + (high - low) * jax.nn.sigmoid(u)


@functools.lru_cache(maxsize=16)
def _program(spec, shapes, ft, config: GradientConfig, bounds: Bounds):
    """The population program of a network, fine-tune settings, config and bounds: jitted and
    compiled on first use per population size; cached, so every evaluator of one space shares
    it (the base and the data are arguments)."""
    w_lo = jnp.asarray([b[0] for b in bounds.widths], jnp.float32)
    w_hi = jnp.asarray([b[1] for b in bounds.widths], jnp.float32)
    (s_lo, s_hi), (a_lo, a_hi), (b_lo, b_hi) = (
        bounds.sparsity,
        bounds.analog_fraction,
        bounds.adc_bits,
    )

    def relaxed(theta):
        return {
            "widths": _from_unit(theta["widths"], w_lo, w_hi),
            "sparsity": _from_unit(theta["sparsity"], s_lo, s_hi),
            "analog_fraction": _from_unit(theta["analog_fraction"], a_lo, a_hi),
            "adc_bits": _from_unit(theta["adc_bits"], b_lo, b_hi),
        }

    def energy(knobs, granularity, acc):
        design = Design(
            widths=networks.layer_widths(spec, knobs["widths"])[1],
            analog_fraction=knobs["analog_fraction"],
            sparsity=knobs["sparsity"],
            granularity=granularity,
        )
        acc = dataclasses.replace(acc, adc_bits=knobs["adc_bits"])
        return estimate_energy(shapes, design, acc).energy_j

    def forward(params, knobs, x, key):
        gates = [
            jax.nn.sigmoid((knobs["widths"][g] - jnp.arange(n) - 0.5) / config.temperature)
            for g, n in enumerate(spec.widths)
        ]
        keys = jax.random.split(key, 2 * len(shapes))

        def matmul(i, xm, w):
            magnitude = jnp.abs(w)
            scale = jax.lax.stop_gradient(jnp.sqrt(jnp.mean(w * w))) + 1e-12
            # the s-quantile of |w| for normal weights (no sort: a far smaller program)
            threshold = scale * jnp.sqrt(2.0) * jax.scipy.special.erfinv(knobs["sparsity"][i])
            width = config.sharpness * scale
            y = xm @ (w * jax.nn.sigmoid((magnitude - threshold) / width))
            bound = jax.lax.stop_gradient(jnp.max(jnp.abs(y)) + 1e-12)
            step = 2.0 * bound * jnp.exp2(-knobs["adc_bits"])
            adc = step * jax.random.uniform(keys[2 * i], y.shape, minval=-0.5, maxval=0.5)
            read = ft.out_noise * bound * jax.random.normal(keys[2 * i + 1], y.shape)
            return y + jnp.sqrt(knobs["analog_fraction"][i]) * (adc + read)

        return networks.apply(spec, params, x, unit_masks=gates, matmul=matmul)

    # The weights train at the fine-tune's rate, the design variables at their own, both by Adam.
    optimizer = adam_per_part({"weights": ft.learning_rate, "design": config.design_learning_rate})

    def member(theta, granularity, acc, lam, seed, base, x_train, y_train):
        keys = streams(seed, 3)  # init (the new head), batches, noise: `codesign.engine.core`
        params = {"weights": (*base, networks.init_params(spec, keys.init)[-1]), "design": theta}

        def loss(p, xb, yb, key):
            knobs = relaxed(p["design"])
            ce = cross_entropy(forward(p["weights"], knobs, xb, key), yb)
            return ce + lam * jnp.log(energy(knobs, granularity, acc)), ce

        state = TrainState.create(params, optimizer, config.steps)
        state = train(
            state, loss, optimizer, (x_train, y_train), keys, batch_size=ft.batch_size,
            has_aux=True,
        )  # fmt: skip
        knobs = relaxed(state.params["design"])
        return {
            **knobs,
            "relaxed_energy_j": energy(knobs, granularity, acc),
            "loss": state.losses[-1],
        }

    run = jax.vmap(member, in_axes=(0, 0, 0, 0, 0, None, None, None))
    return compiled(run)


@dataclasses.dataclass(frozen=True)
class Learned:
    """What a co-design run learned, NumPy arrays with a row per member: its design
    (continuous: snap it onto the space's grid before scoring), the relaxed energy there, its
    final loss, and the run's training matmul FLOPs at maximum widths (soft gates mask nothing
    away)."""

    widths: np.ndarray  # [P, groups]
    sparsity: np.ndarray  # [P, layers]
    analog_fraction: np.ndarray  # [P, layers]
    adc_bits: np.ndarray  # [P]
    relaxed_energy_j: np.ndarray
    loss: np.ndarray
    flops: np.ndarray


class Relaxation:
    """Differentiable co-design on one engine (its base, target data and fine-tune settings):
    one compiled program per population size."""

    def __init__(self, engine, config: GradientConfig, bounds: Bounds):
        self.engine, self.config, self.bounds = engine, config, bounds
        self._run = _program(engine.spec, engine.shapes, engine.config, config, bounds)

    def __call__(self, design: Design, accelerators, group_widths, lambdas_, seeds) -> Learned:
        """Learn each member's design from its starting point.

        design: the members' starting points (`Design` of [P, layers] arrays as the evaluator
        builds them; sparsity, analog_fraction and granularity are read), group_widths
        [P, groups] their widths, accelerators their chips (leaves [P]; adc_bits is the start).
        """
        b = self.bounds
        theta = {
            "widths": _to_unit(group_widths, *np.asarray(b.widths, np.float32).T),
            "sparsity": _to_unit(design.sparsity, *b.sparsity),
            "analog_fraction": _to_unit(design.analog_fraction, *b.analog_fraction),
            "adc_bits": _to_unit(accelerators.adc_bits, *b.adc_bits),
        }
        x_train, y_train = self.engine.data["train"]
        out = self._run(
            theta,
            jnp.asarray(design.granularity),
            jax.tree.map(jnp.asarray, accelerators),
            jnp.asarray(lambdas_, jnp.float32),
            jnp.asarray(seeds, jnp.int32),
            self.engine.base,
            x_train,
            y_train,
        )
        macs = sum(s.rows * s.out_units * s.positions for s in self.engine.shapes)
        steps, batch = self.config.steps, self.engine.config.batch_size
        flops = np.full(len(seeds), 6.0 * macs * batch * steps)
        return Learned(**{k: np.asarray(v) for k, v in out.items()}, flops=flops)
