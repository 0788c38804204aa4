"""The energy model: literature anchors, physics rules, exact counts, gradients, batching."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codesign import energy as E
from codesign.hardware import PRESETS, get_preset
from codesign.networks import LayerShape, chain

HYBRID = get_preset("hybrid-22nm")
ANALOG_PARTS = ("adc", "dac", "array", "accumulate")


def _analog_j(report):
    return sum(float(report.components_j[c]) for c in ANALOG_PARTS)


def _design(network, widths=None, analog=0.0, sparsity=0.0, granularity="unstructured"):
    n = len(network)
    base = E.Design.dense(network, analog)
    return dataclasses.replace(
        base,
        widths=base.widths if widths is None else jnp.asarray(widths, jnp.float32),
        sparsity=jnp.full((n,), sparsity, jnp.float32),
        granularity=jnp.full((n,), E.GRANULARITIES.index(granularity), jnp.int32),
    )


# --- calibration anchors ---


def test_ania_peak_efficiency_in_reported_range():
    # AnIA: 1,050-1,500 TOPS/W at 0.8 V, up to 2,900 TOPS/W at 0.6 V.
    ania = get_preset("ania-22nm")
    assert 1050 <= float(E.peak_tops_per_w(ania)) <= 2900
    # The same figure from a full report: one fully used 1024 x 512 tile, all analog.
    net = (LayerShape(1024, 512),)
    report = E.estimate_energy(net, E.Design.dense(net, 1.0), ania)
    macro_tops_w = 2 * float(report.macs) / float(report.analog_macro_j) / 1e12
    assert 1050 <= macro_tops_w <= 2900


def test_horowitz_int8_mac():
    mac_pj = float(E.mac_energy_j(get_preset("digital-int8-45nm"))) * 1e12
    assert mac_pj == pytest.approx(0.23, rel=0.05)


def test_hybrid_analog_mac_5_to_20x_cheaper_than_digital():
    # Full utilisation: K and N are whole multiples of both the tile and the MAC array.
    net = (LayerShape(1024, 1024),)
    analog = E.estimate_energy(net, E.Design.dense(net, 1.0), HYBRID)
    digital = E.estimate_energy(net, E.Design.dense(net, 0.0), HYBRID)
    analog_per_mac = _analog_j(analog) / float(analog.macs)
    digital_per_mac = float(digital.components_j["digital_mac"]) / float(digital.macs)
    assert 5 <= digital_per_mac / analog_per_mac <= 20


def test_misaligned_layer_wastes_tile_energy():
    # The seed's example: a 20-wide matrix on a 16 x 16 memory block.
    tile16 = dataclasses.replace(HYBRID, tile_rows=16.0, tile_cols=16.0, cell_bits=8.0)
    per_mac = {}
    for n in (16, 20):
        net = (LayerShape(n, n),)
        report = E.estimate_energy(net, E.Design.dense(net, 1.0), tile16)
        per_mac[n] = _analog_j(report) / float(report.macs)
    assert per_mac[20] >= 2 * per_mac[16]


def test_block_sparsity_skips_tiles_unstructured_does_not():
    net = (LayerShape(1024, 1024),)
    dense = _analog_j(E.estimate_energy(net, _design(net, analog=1.0), HYBRID))
    block = _analog_j(
        E.estimate_energy(net, _design(net, analog=1.0, sparsity=0.5, granularity="block"), HYBRID)
    )
    scattered = _analog_j(E.estimate_energy(net, _design(net, analog=1.0, sparsity=0.5), HYBRID))
    assert 0.40 <= 1 - block / dense <= 0.60
    assert 1 - scattered / dense < 0.05


def test_block_savings_measured_on_real_masks():
    # The same claim with counts taken from actual masks rather than nominal rates.
    rng = np.random.default_rng(0)
    net = (LayerShape(512, 512),)
    tile_r, tile_c = 256, 128  # hybrid: 256 x 256 cells, 2 cells per int8 weight
    blocks = rng.random((512 // tile_r, 512 // tile_c)) < 0.5
    block_mask = np.kron(blocks, np.ones((tile_r, tile_c)))
    scattered = rng.random((512, 512)) >= 0.5
    dense_r = E.estimate_energy(
        net, E.counts_from_masks(net, [np.ones((512, 512))], 1.0, HYBRID), HYBRID
    )
    block_r = E.estimate_energy(net, E.counts_from_masks(net, [block_mask], 1.0, HYBRID), HYBRID)
    scat_r = E.estimate_energy(net, E.counts_from_masks(net, [scattered], 1.0, HYBRID), HYBRID)
    kept = blocks.mean()
    assert _analog_j(block_r) / _analog_j(dense_r) == pytest.approx(kept, abs=0.02)
    assert _analog_j(scat_r) == pytest.approx(_analog_j(dense_r), rel=1e-6)


def test_overflowing_the_chip_pays_reprogramming_every_inference():
    net = (LayerShape(1024, 1024),)  # 4 x 8 = 32 tiles of 256 x (256 / 2 cells)
    fits = E.estimate_energy(net, E.Design.dense(net, 1.0), HYBRID)
    small_chip = dataclasses.replace(HYBRID, tiles=16.0)
    overflows = E.estimate_energy(net, E.Design.dense(net, 1.0), small_chip)
    assert float(fits.components_j["program"]) == 0.0
    assert float(overflows.components_j["program"]) > 0.0
    assert float(overflows.energy_j) > 2 * float(fits.energy_j)
    assert float(overflows.latency_s) > float(fits.latency_s)


# --- properties ---

layer_dims = st.integers(min_value=1, max_value=300)


@settings(max_examples=40, deadline=None)
@given(
    k=layer_dims,
    n=layer_dims,
    tile_r=st.sampled_from([8, 16, 32, 64, 128, 256]),
    tile_c=st.sampled_from([8, 16, 32, 64, 128, 256]),
    a=st.floats(0.0, 1.0),
)
def test_tile_count_equals_brute_force(k, n, tile_r, tile_c, a):
    acc = dataclasses.replace(
        HYBRID, tile_rows=float(tile_r), tile_cols=float(tile_c), cell_bits=8.0
    )
    net = (LayerShape(k, n),)
    counts = E.layer_counts(net, E.Design.dense(net, a), acc)
    n_analog = int(np.round(np.float32(a) * n))
    assert int(counts.n_analog[0]) == n_analog
    brute = sum(
        1
        for r0, c0 in itertools.product(range(0, 4096, tile_r), range(0, 4096, tile_c))
        if r0 < k and c0 < n_analog
    )
    assert int(counts.tiles[0]) == brute
    # And from an explicit dense mask.
    from_mask = E.counts_from_masks(net, [np.ones((k, n))], a, acc)
    assert int(from_mask.tiles_active[0]) == brute


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_energy_never_decreases_when_a_layer_widens(data):
    net = chain([48, 96, 96, 10])
    widths = [data.draw(st.integers(1, 96)), data.draw(st.integers(1, 96)), 10]
    layer = data.draw(st.integers(0, 1))
    a = data.draw(st.floats(0.0, 1.0))
    s = data.draw(st.floats(0.0, 0.9))
    g = data.draw(st.sampled_from(E.GRANULARITIES))
    tile = float(data.draw(st.sampled_from([16, 32, 64])))
    acc = dataclasses.replace(HYBRID, tile_rows=tile, tile_cols=tile)
    wider = list(widths)
    wider[layer] = min(96, widths[layer] + data.draw(st.integers(1, 40)))
    e0 = E.estimate_energy(net, _design(net, widths, a, s, g), acc).energy_j
    e1 = E.estimate_energy(net, _design(net, wider, a, s, g), acc).energy_j
    assert float(e1) >= float(e0) * (1 - 1e-6)


@settings(max_examples=25, deadline=None)
@given(
    widths=st.tuples(st.integers(1, 96), st.integers(1, 96)),
    a=st.floats(0.0, 1.0),
    s=st.floats(0.0, 0.9),
    g=st.sampled_from(E.GRANULARITIES),
)
def test_components_add_up_to_total(widths, a, s, g):
    net = chain([48, 96, 96, 10])
    report = E.estimate_energy(net, _design(net, [*widths, 10], a, s, g), HYBRID)
    parts = sum(float(v) for v in report.components_j.values())
    assert parts == pytest.approx(float(report.energy_j), rel=1e-5)
    per_layer = float(jnp.sum(report.layer_energy_j))
    assert per_layer == pytest.approx(float(report.energy_j), rel=1e-5)


# --- gradients ---

NET = chain([64, 256, 256, 10])


def _total(design, acc=HYBRID, relaxed=False):
    return E.estimate_energy(NET, design, acc, relaxed=relaxed).energy_j


def test_gradients_are_finite_with_physical_signs():
    design = _design(NET, [200.0, 150.0, 10.0], analog=0.5, sparsity=0.3, granularity="block")
    grads = jax.grad(_total, allow_int=True)(design)
    for leaf in (grads.widths, grads.analog_fraction, grads.sparsity):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    assert bool(jnp.all(grads.widths > 0)), "wider layers must cost more"
    assert bool(jnp.all(grads.sparsity < 0)), "pruning must save energy"
    # Moving a big layer's outputs from the digital array to analog tiles saves energy.
    assert float(grads.analog_fraction[1]) < 0
    d_adc = jax.grad(lambda acc: _total(design, acc))(HYBRID).adc_bits
    assert float(d_adc) > 0, "more ADC bits must cost more"


def test_straight_through_gradients_match_finite_differences_of_the_relaxation():
    design = _design(NET, [200.0, 150.0, 10.0], analog=0.5, sparsity=0.3, granularity="block")
    grads = jax.grad(_total, allow_int=True)(design)
    relaxed_grads = jax.grad(lambda d: _total(d, relaxed=True), allow_int=True)(design)
    # Straight-through gradients evaluate the chain rule at the rounded counts: close to, not equal
    # to, the smooth relaxation's.
    np.testing.assert_allclose(grads.widths, relaxed_grads.widths, rtol=0.1)
    for field in ("analog_fraction", "sparsity"):
        assert bool(
            jnp.all(jnp.sign(getattr(grads, field)) == jnp.sign(getattr(relaxed_grads, field)))
        )
    jax.config.update("jax_enable_x64", True)
    try:
        d64 = jax.tree.map(
            lambda x: jnp.asarray(x, jnp.float64) if x.dtype.kind == "f" else x, design
        )
        acc64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), HYBRID)
        g64 = jax.grad(lambda d: _total(d, acc64, relaxed=True), allow_int=True)(d64)
        eps = 1e-4
        for field in ("widths", "analog_fraction", "sparsity"):
            for i in range(2):

                def shifted(delta, field=field, i=i):
                    value = getattr(d64, field).at[i].add(delta)
                    return float(_total(dataclasses.replace(d64, **{field: value}), acc64, True))

                fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
                assert float(getattr(g64, field)[i]) == pytest.approx(fd, rel=1e-4, abs=1e-18)
        # A smooth technology term: ADC energy against resolution.
        bits = jnp.float64(7.3)
        fd = (E.adc_energy_j(bits + eps, acc64) - E.adc_energy_j(bits - eps, acc64)) / (2 * eps)
        assert float(jax.grad(E.adc_energy_j)(bits, acc64)) == pytest.approx(float(fd), rel=1e-6)
    finally:
        jax.config.update("jax_enable_x64", False)


# --- batching ---


def _population(size, seed=0):
    rng = np.random.default_rng(seed)
    n = len(NET)
    designs = E.Design(
        widths=jnp.asarray(np.c_[rng.integers(1, 257, (size, 2)), np.full(size, 10)], jnp.float32),
        analog_fraction=jnp.asarray(rng.random((size, n)), jnp.float32),
        sparsity=jnp.asarray(rng.random((size, n)) * 0.9, jnp.float32),
        granularity=jnp.asarray(rng.integers(0, len(E.GRANULARITIES), (size, n)), jnp.int32),
    )
    tiles = jnp.asarray(rng.choice([32.0, 64.0, 128.0, 256.0], size), jnp.float32)
    accs = dataclasses.replace(
        HYBRID,
        tile_rows=tiles,
        tile_cols=tiles,
        adc_bits=jnp.asarray(rng.integers(2, 11, size), jnp.float32),
    )
    return designs, accs


def test_batch_equals_one_by_one_and_compiles_once():
    designs, accs = _population(8)
    E._batched.cache_clear()
    traces = []
    original = E.estimate_energy

    def counting(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    E.estimate_energy = counting
    try:
        batch = E.estimate_energy_batch(NET, designs, accs)
        designs2, accs2 = _population(8, seed=1)
        E.estimate_energy_batch(NET, designs2, accs2)
    finally:
        E.estimate_energy = original
    assert len(traces) == 1, "a second population of the same shape must not recompile"
    for i in range(8):
        one = E.estimate_energy(
            NET,
            jax.tree.map(lambda x, i=i: x[i], designs),
            jax.tree.map(lambda x, i=i: jnp.broadcast_to(x, (8,))[i], accs),
        )
        assert float(batch.energy_j[i]) == pytest.approx(float(one.energy_j), rel=1e-5)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_gives_a_positive_finite_report(name):
    acc = get_preset(name)
    analog = 0.0 if float(acc.tiles) == 0 else 0.5
    report = E.estimate_energy(NET, E.Design.dense(NET, analog), acc)
    assert np.isfinite(float(report.energy_j)) and float(report.energy_j) > 0
    assert float(report.latency_s) > 0
    assert float(report.tops_per_w) > 0


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match="did you mean 'hybrid-22nm'.*valid presets"):
        get_preset("hybrid-22")
