"""Analog forward pass: exact when ideal, worse in the ways hardware is, one program per space."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codesign.hardware.analog import AnalogConfig, hybrid, hybrid_conv, hybrid_matmul
from codesign.nn import conv
from codesign.nn.conv import Conv


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


B, K, N = 32, 64, 16
_keys = jax.random.split(jax.random.key(0), 4)
X = jax.random.normal(_keys[0], (B, K))
W = 0.1 * jax.random.normal(_keys[1], (K, N))
EXACT = X @ W
IDEAL = AnalogConfig(dac_bits=16, adc_bits=16, tile_rows=16, prog_noise=0.0, out_noise=0.0)

matmul = jax.jit(hybrid_matmul)


def _rel_err(y, reference=EXACT):
    return float(jnp.linalg.norm(y - reference) / jnp.linalg.norm(reference))


def test_ideal_converters_without_noise_match_exact_matmul():
    assert _rel_err(matmul(X, W, N, IDEAL)) < 1e-3
    assert _rel_err(matmul(X, W, N, IDEAL, _keys[2])) < 1e-3  # zero noise magnitudes
    noisy = dataclasses.replace(IDEAL, prog_noise=0.0175, out_noise=0.04)
    assert _rel_err(matmul(X, W, N, noisy)) < 1e-3  # key=None: noise off


def test_digital_columns_are_exact():
    key = _keys[2]
    np.testing.assert_array_equal(matmul(X, W, 0, AnalogConfig(), key), EXACT)
    split = np.asarray(matmul(X, W, 5, AnalogConfig(tile_rows=16), key))
    np.testing.assert_array_equal(split[:, 5:], EXACT[:, 5:])
    assert not np.allclose(split[:, :5], EXACT[:, :5], rtol=1e-3)


def test_fewer_adc_bits_give_larger_error():
    errors = {
        bits: _rel_err(matmul(X, W, N, dataclasses.replace(IDEAL, adc_bits=bits)))
        for bits in (2, 8)
    }
    assert errors[8] < 0.1
    assert errors[2] > 5 * errors[8]


def test_each_row_tile_adds_its_own_adc_error():
    # Partial sums stay well inside out_bound here, so every extra tile read adds rounding error.
    errors = [
        _rel_err(matmul(X, W, N, dataclasses.replace(IDEAL, adc_bits=8, tile_rows=rows)))
        for rows in (8, 64)
    ]
    assert errors[0] > 1.5 * errors[1]


def test_smaller_row_tiles_avoid_adc_saturation():
    # All-positive inputs and weights: a 64-row partial sum (~36 in normalised units) saturates
    # the ADC at out_bound = 10, while 8-row partial sums (~4.5) fit.
    x = jax.random.uniform(_keys[0], (B, K), minval=0.5, maxval=1.0)
    w = jax.random.uniform(_keys[1], (K, N), minval=0.5, maxval=1.0)
    errors = [
        _rel_err(matmul(x, w, N, dataclasses.replace(IDEAL, adc_bits=8, tile_rows=rows)), x @ w)
        for rows in (8, 64)
    ]
    assert errors[0] < 0.01
    assert errors[1] > 0.5


def test_error_grows_with_programming_noise():
    def mean_error(prog_noise):
        cfg = dataclasses.replace(IDEAL, prog_noise=prog_noise)
        return np.mean([_rel_err(matmul(X, W, N, cfg, key)) for key in jax.random.split(_keys[3])])

    errors = [mean_error(p) for p in (0.0, 0.02, 0.1)]
    assert errors[0] < 1e-3 < errors[1] < errors[2]
    assert errors[2] > 3 * errors[1]


def test_forward_is_the_crossbar_and_backward_is_ideal():
    """aihwkit's hardware-aware training: the crossbar's output forward, the exact product's
    gradient backward, even where the outputs saturate (a 2-bit ADC with a low bound)."""
    x = X.at[0].set(0.0)  # an all-zero input row ...
    w = W.at[:, 3].set(0.0)  # ... and a pruned column must not give NaNs
    cotangent = jax.random.normal(_keys[2], (B, N))
    saturating = dataclasses.replace(AnalogConfig(), adc_bits=2, out_bound=0.5)
    for cfg in (AnalogConfig(tile_rows=16), saturating):
        out, vjp = jax.vjp(lambda x, w, cfg=cfg: hybrid_matmul(x, w, N // 2, cfg, _keys[3]), x, w)
        grad_x, grad_w = vjp(cotangent)
        assert np.all(np.isfinite(grad_x)) and np.all(np.isfinite(grad_w))
        np.testing.assert_allclose(grad_w, x.T @ cotangent, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grad_x, cotangent @ w.T, rtol=1e-5, atol=1e-5)
        # The value is the simulation's: analog columns differ from the exact product.
        exact = x @ w
        np.testing.assert_array_equal(out[:, N // 2 :], exact[:, N // 2 :])
        assert _rel_err(out[:, : N // 2], exact[:, : N // 2]) > 1e-3
    plain = hybrid_matmul(x, w, N // 2, saturating, _keys[3])
    np.testing.assert_array_equal(out, plain)  # the same numbers with or without a gradient


def test_population_of_candidates_compiles_once():
    traces = 0

    def forward(x, w, n_analog, cfg, key):
        nonlocal traces
        traces += 1
        return hybrid_matmul(x, w, n_analog, cfg, key)

    population = jax.jit(jax.vmap(forward, in_axes=(None, None, 0, 0, 0)))

    def stack(*configs):
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *configs)

    candidates = [
        (16, AnalogConfig(dac_bits=8, adc_bits=8, tile_rows=16, prog_noise=0.0175)),
        (10, AnalogConfig(dac_bits=6, adc_bits=4, tile_rows=32, prog_noise=0.05)),
        (4, AnalogConfig(dac_bits=4, adc_bits=6, tile_rows=64, out_noise=0.0, out_bound=5.0)),
    ]
    keys = jax.random.split(_keys[3], 3)
    splits = jnp.array([n for n, _ in candidates])
    outputs = population(X, W, splits, stack(*(cfg for _, cfg in candidates)), keys)
    for output, (n_analog, cfg), key in zip(outputs, candidates, keys, strict=True):
        np.testing.assert_allclose(output, matmul(X, W, n_analog, cfg, key), atol=1e-5)

    others = [AnalogConfig(dac_bits=5, adc_bits=3, tile_rows=8, prog_noise=0.1, out_noise=0.1)] * 3
    population(X, W, splits[::-1], stack(*others), keys)
    assert traces == 1
    assert population._cache_size() == 1


def test_seeded_noise_is_deterministic():
    cfg = AnalogConfig(tile_rows=16)
    first, again = (matmul(X, W, N, cfg, jax.random.key(7)) for _ in range(2))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, matmul(X, W, N, cfg, jax.random.key(8)))


def test_too_many_row_tiles_is_an_error():
    with pytest.raises(ValueError, match="max_row_tiles=8"):
        hybrid_matmul(X, W, N, AnalogConfig(tile_rows=4))


@pytest.mark.parametrize(
    ("rows", "cols", "tile_rows", "row_block"),
    [(64, 16, 16, 16), (131, 40, 32, 32), (100, 8, 32, 32), (96, 32, 64, 32), (144, 16, 64, 64)],
)
def test_matches_the_reference_simulator(rows, cols, tile_rows, row_block):
    """Partial sums by row block (or spread over tile columns) give the per-tile-matmul
    reference's outputs without noise, to float rounding (an ADC step where rounding ties
    break differently), and output errors of the same mean and spread with noise."""
    from tests.analog_reference import reference_matmul

    k = jax.random.split(jax.random.key(5), 3)
    x = jax.random.normal(k[0], (48, rows))
    w = 0.1 * jax.random.normal(k[1], (rows, cols)) * (jax.random.uniform(k[2], (rows, cols)) > 0.3)
    cfg = AnalogConfig(adc_bits=6, tile_rows=tile_rows, row_block=row_block)
    n_analog = cols - 3
    new, ref = matmul(x, w, n_analog, cfg), jax.jit(reference_matmul)(x, w, n_analog, cfg)
    step = float(cfg.out_bound) / (2 ** (6 - 1) - 1) * np.max(np.abs(x)) * np.max(np.abs(w))
    flips = np.abs(np.asarray(new) - np.asarray(ref)) > 1e-5  # more than float rounding
    assert np.mean(flips) < 0.01
    np.testing.assert_allclose(new, ref, atol=step * 1.01)
    exact = x @ w
    draws = jax.random.split(_keys[3], 40)
    errors = [np.asarray(matmul(x, w, cols, cfg, d) - exact) for d in draws]
    reference = [np.asarray(reference_matmul(x, w, cols, cfg, d) - exact) for d in draws]
    # 40 draws of 48 x cols outputs: the spreads agree within a few percent.
    assert np.std(errors) == pytest.approx(np.std(reference), rel=0.05)
    assert abs(np.mean(errors) - np.mean(reference)) < 0.05 * np.std(reference)


def test_noise_has_zero_mean_and_unit_variance_and_differs_per_key():
    from codesign.hardware.analog import standard_noise

    a, b = (np.asarray(standard_noise(k, (256, 256))).ravel() for k in jax.random.split(_keys[0]))
    assert abs(a.mean()) < 0.01 and a.std() == pytest.approx(1.0, abs=0.01)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01 and abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.01


# Convolutions: `hybrid_conv` assembles the patches with the DAC fused in (offset-major where the
# weights are spread over their tiles) and skips the exact forward pass where every used column
# is analog; against the same simulation on the patch matrix (`hybrid` with `patches`), on
# geometries, devices and scalings it was not tuned on.
CONV_CASES = [  # (input [B, *spatial], channels, N, geometry, tile rows)
    ((4, 9, 9), 5, 7, Conv(3, 2, 1), 16),  # strided, K = 45 not a multiple of the tile
    ((4, 8, 8), 16, 16, Conv(3, 1, 1), 64),  # ResNet-20 stage-1-like: spread, offset-major
    ((3, 8, 8), 32, 48, Conv(3, 1, 1), 32),  # many tiles of many columns: row blocks
    ((4, 20), 8, 40, Conv(5, 1, 2), 32),  # 1-D
    ((2, 6, 6), 4, 6, Conv(1, 1, 0), 8),  # 1 x 1: patches are the input
]


@pytest.mark.parametrize(
    "case, scaling, device",
    [
        (CONV_CASES[0], "layer", "sram"),
        (CONV_CASES[1], "layer", "sram"),
        (CONV_CASES[1], "layer", "pcm"),
        (CONV_CASES[2], "layer", "sram"),
        (CONV_CASES[2], "tile", "pcm"),
        (CONV_CASES[3], "layer", "pcm"),
        (CONV_CASES[4], "layer", "sram"),
    ],
    ids=lambda v: v if isinstance(v, str) else f"{len(v[0]) - 1}d-c{v[1]}-n{v[2]}",
)
def test_a_conv_is_the_crossbar_on_its_patches(case, scaling, device):
    shape, c, n, g, tile = case
    k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
    h = jax.random.normal(k1, (*shape, c)) * (jax.random.uniform(k2, (*shape, c)) > 0.3)
    w = 0.3 * jax.random.normal(k3, (c * g.kernel ** (len(shape) - 1), n))
    w = w.at[2].set(0.0)  # a pruned row
    cfg = AnalogConfig(
        tile_rows=tile, max_row_tiles=9, adc_bits=6, dac_bits=5, device=device, tile_scaling=scaling
    )

    variants = {"noise off": (None, n), "noise on": (k1, n), "half analog": (k2, n // 2)}

    def runs():  # one program for the three
        flat = conv.conv(h, w, g).reshape(-1, n)
        out = {}
        for name, (key, n_analog) in variants.items():
            new = hybrid_conv(h, w, g, n_analog, cfg, key)
            out[name] = new, hybrid(flat, conv.patches(h, g), w, n_analog, cfg, key)
        return out

    for name, (new, old) in jax.jit(runs)().items():
        old = old.reshape(new.shape)
        # Equal up to the order of a dot's sums: a rounding may land on the other side of an ADC
        # level, in a few entries at most (none in the runs that wrote this test).
        close = np.isclose(np.asarray(new), np.asarray(old), rtol=1e-5, atol=1e-6)
        assert close.mean() >= 0.999, (name, float(close.mean()))
        assert not np.allclose(new, conv.conv(h, w, g))  # the crossbar, not the exact conv


def test_a_conv_with_no_digital_column_skips_the_exact_pass_and_its_backward_is_exact():
    g = Conv(3, 1, 1)
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    h, w = jax.random.normal(k1, (2, 6, 6, 4)), 0.3 * jax.random.normal(k2, (36, 8))
    cfg = AnalogConfig(tile_rows=16, max_row_tiles=3, row_block=4)
    full = hybrid_conv(h, w, g, 8, cfg, k3)
    # Six analog columns, the other two not used (digital_on=False): the exact conv is not
    # run, the two hold zeros; used (the default), they hold the exact conv's columns.
    skipped = hybrid_conv(h, w, g, 6, cfg, k3, digital_on=False)
    np.testing.assert_array_equal(skipped[..., :6], full[..., :6])
    np.testing.assert_array_equal(skipped[..., 6:], 0.0)
    mixed = hybrid_conv(h, w, g, 6, cfg, k3)
    np.testing.assert_array_equal(mixed[..., :6], full[..., :6])
    np.testing.assert_array_equal(mixed[..., 6:], conv.conv(h, w, g)[..., 6:])
    # Backward: the exact convolution's gradient, whatever the split.
    r = jax.random.normal(k3, full.shape)
    exact = jax.grad(lambda h, w: jnp.sum(conv.conv(h, w, g) * r), argnums=(0, 1))(h, w)
    for n_analog, digital_on in ((8, None), (6, False), (4, None), (0, None)):

        def loss(h, w, a=n_analog, d=digital_on):
            return jnp.sum(hybrid_conv(h, w, g, a, cfg, k3, digital_on=d) * r)

        for got, want in zip(jax.grad(loss, argnums=(0, 1))(h, w), exact, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
