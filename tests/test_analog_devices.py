"""The device models (sram, pcm) and per-tile scaling of `codesign.hardware.analog`.

The pcm model is checked here against aihwkit's formulas written out independently (the
programming noise's mean and spread on a known weight, drift with compensation); the whole
simulator is compared with aihwkit 1.2.0 itself in tests/test_validate_analog.py.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codesign.hardware import analog
from codesign.hardware.analog import AnalogConfig, hybrid_matmul

matmul = jax.jit(hybrid_matmul)
_keys = jax.random.split(jax.random.key(1), 3)
X = jax.random.uniform(_keys[0], (128, 96))
W = 0.1 * jax.random.normal(_keys[1], (96, 24))
EXACT = X @ W
PCM = AnalogConfig(device="pcm", tile_rows=32, adc_bits=8)


def _rel_err(y):
    return float(jnp.linalg.norm(y - EXACT) / jnp.linalg.norm(EXACT))


def _mean_err(cfg, draws=12):
    keys = jax.random.split(_keys[2], draws)
    return float(np.mean([_rel_err(matmul(X, W, W.shape[1], cfg, k)) for k in keys]))


def test_unknown_device_or_scaling_is_refused():
    with pytest.raises(ValueError, match="device must be one of sram, pcm"):
        AnalogConfig(device="rram")
    with pytest.raises(ValueError, match="tile_scaling must be one of layer, tile"):
        AnalogConfig(tile_scaling="column")


def test_without_noise_pcm_is_the_quantized_crossbar():
    sram = AnalogConfig(tile_rows=32)
    np.testing.assert_array_equal(
        matmul(X, W, 24, PCM, None), matmul(X, W, 24, dataclasses.replace(sram), None)
    )


def test_tile_scaling_on_one_tile_is_layer_scaling():
    one = AnalogConfig(tile_rows=128, adc_bits=6, dac_bits=5)
    tiled = dataclasses.replace(one, tile_scaling="tile")
    np.testing.assert_allclose(
        matmul(X, W, 24, tiled, None), matmul(X, W, 24, one, None), rtol=1e-5, atol=1e-6
    )


def test_tile_scaling_uses_each_tiles_range():
    # The first tile sees inputs 50x larger but holds no weight: one input scale per layer
    # rounds the other tiles' inputs away at a 4-bit DAC, a scale per tile keeps them.
    x = X.at[:, :32].multiply(50.0)
    w = W.at[:32].set(0.0)
    exact = x @ w
    cfg = AnalogConfig(tile_rows=32, adc_bits=8, dac_bits=4)
    errs = {}
    for scaling in ("layer", "tile"):
        out = matmul(x, w, 24, dataclasses.replace(cfg, tile_scaling=scaling), None)
        errs[scaling] = float(jnp.linalg.norm(out - exact) / jnp.linalg.norm(exact))
    assert errs["tile"] < 0.1 < errs["layer"]


def test_pcm_programming_noise_follows_aihwkits_polynomial():
    # A weight at half the range: g+ = 12.5 uS, g- = 0 uS, each programmed with
    # sigma(g) = 0.26348 + 1.9650 r - 1.1731 r**2 (r = g / 25 uS), clipped at 0 uS.
    w = jnp.full((64, 64), 0.5)
    noise = analog.standard_noise(jax.random.key(3), (6, 64, 64))
    prog, _ = analog._pcm_weights(w, jnp.ones_like(w, bool), jnp.max, 0.0, noise)
    s_pos = 0.26348 + 1.9650 * 0.5 - 1.1731 * 0.25
    s_neg = 0.26348
    mean_neg = s_neg / math.sqrt(2 * math.pi)  # E[max(s n, 0)]
    var_neg = s_neg**2 * (0.5 - 1 / (2 * math.pi))
    err = np.asarray(prog - w).ravel() * 25.0  # in uS
    assert err.mean() == pytest.approx(-mean_neg, abs=0.03)
    assert err.std() == pytest.approx(math.sqrt(s_pos**2 + var_neg), rel=0.05)


def test_pcm_error_grows_with_time_and_compensation_keeps_the_scale():
    errs = [_mean_err(dataclasses.replace(PCM, inference_time=t)) for t in (0.0, 3600.0, 3.15e7)]
    assert errs[0] < errs[1] < errs[2]
    assert _mean_err(AnalogConfig(tile_rows=32, adc_bits=8)) < errs[0]  # sram's is smaller
    # Drift alone shrinks every conductance by (t / 20 s) ** -nu, about 0.35 after a year;
    # global drift compensation restores the scale.
    year = matmul(X, W, 24, dataclasses.replace(PCM, inference_time=3.15e7), _keys[2])
    assert float(jnp.sum(year * EXACT) / jnp.sum(EXACT * EXACT)) == pytest.approx(1.0, abs=0.1)


def test_pcm_gradient_is_finite_and_the_digital_one():
    cfg = dataclasses.replace(PCM, inference_time=86400.0, out_noise=0.0, adc_bits=16, dac_bits=16)

    def loss(w, key):
        return jnp.sum(hybrid_matmul(X, w, 24, cfg, key) ** 2)

    g = jax.grad(loss)(W, _keys[2])
    assert bool(jnp.isfinite(g).all())
    g_ideal = jax.grad(lambda w: jnp.sum((X @ w) ** 2))(W)
    cos = float(jnp.sum(g * g_ideal) / jnp.linalg.norm(g) / jnp.linalg.norm(g_ideal))
    assert cos > 0.9
