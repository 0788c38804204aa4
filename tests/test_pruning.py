"""Mask makers: one shared contract for every granularity, then what each one promises."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codesign.nn import pruning


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


K, N, M = 12, 10, 4
W = jax.random.normal(jax.random.key(0), (K, N))


def _tiles_brute_force(mask, n_analog, tile_rows, tile_cols):
    """Oracle: loop over the tile grid of the compacted analog block (rows and columns that hold
    no weight removed, first n_analog columns), counting tiles and tiles holding a weight."""
    m = np.asarray(mask) != 0
    m = m[m.any(axis=1)][:, m.any(axis=0)][:, :n_analog]
    total = nonzero = 0
    for row in range(0, m.shape[0], tile_rows):
        for col in range(0, m.shape[1], tile_cols):
            total += 1
            nonzero += bool(m[row : row + tile_rows, col : col + tile_cols].any())
    return total, nonzero


def _production_tiles(mask, analog_fraction, tile_rows, tile_cols):
    """(tiles, active tiles) as production counts them: `energy.counts_from_masks`."""
    import dataclasses

    from codesign.hardware.energy import counts_from_masks
    from codesign.hardware.presets import get_preset
    from codesign.nn.networks import LayerShape

    acc = dataclasses.replace(
        get_preset("hybrid-22nm"),
        tile_rows=float(tile_rows),
        tile_cols=float(tile_cols),
        cell_bits=8.0,  # one cell per weight: tile columns are weight columns
    )
    net = (LayerShape(*mask.shape),)
    counts = counts_from_masks(net, [mask], analog_fraction, acc)
    return int(counts.tiles[0]), int(counts.tiles_active[0]), int(counts.n_analog[0])


MAKERS = {
    "unstructured": lambda w, s, r, c, tr, tc: pruning.unstructured_mask(w, s, r, c),
    "row": lambda w, s, r, c, tr, tc: pruning.row_mask(w, s, r, c),
    "column": lambda w, s, r, c, tr, tc: pruning.column_mask(w, s, r, c),
    "block": pruning.block_mask,
    "nm": lambda w, s, r, c, tr, tc: pruning.nm_mask(w, s, r, c, m=M),
}

# (sparsity, rows_kept, cols_kept, tile_rows, tile_cols): widths and tiles that do not divide.
CANDIDATES = [(0.5, 10, 8, 4, 3), (0.3, 12, 10, 5, 4), (0.7, 7, 5, 2, 2)]


def _knobs(sparsity, rows_kept, cols_kept, tile_rows, tile_cols):
    """Per-candidate knobs as traced-ready arrays with fixed dtypes."""
    ints = (jnp.asarray(v, jnp.int32) for v in (rows_kept, cols_kept, tile_rows, tile_cols))
    return (jnp.asarray(sparsity, jnp.float32), *ints)


def _grid_blocks(rows_kept, cols_kept, tile_rows, tile_cols):
    """Slices of each block of the tile grid clipped to the kept prefix."""
    return [
        (slice(r, min(r + tile_rows, rows_kept)), slice(c, min(c + tile_cols, cols_kept)))
        for r in range(0, rows_kept, tile_rows)
        for c in range(0, cols_kept, tile_cols)
    ]


def _achieved(name, mask, rows_kept, cols_kept, tile_rows, tile_cols):
    """(fraction of units pruned, number of units) in the maker's own unit."""
    kept = mask[:rows_kept, :cols_kept]
    if name == "unstructured":
        return 1.0 - kept.mean(), kept.size
    if name == "row":
        return np.mean(~kept.any(axis=1)), rows_kept
    if name == "column":
        return np.mean(~kept.any(axis=0)), cols_kept
    if name == "block":
        blocks = _grid_blocks(rows_kept, cols_kept, tile_rows, tile_cols)
        return np.mean([not mask[b].any() for b in blocks]), len(blocks)
    full = kept[: rows_kept // M * M]  # N:M promises its ratio on full groups
    return 1.0 - full.mean(), M


def _kept(rows_kept, cols_kept):
    return np.asarray(pruning.kept_mask((K, N), rows_kept, cols_kept), np.float32)


def test_makers_cover_every_granularity():
    assert tuple(MAKERS) == pruning.GRANULARITIES


@pytest.mark.parametrize("name", pruning.GRANULARITIES)
def test_mask_maker_contract(name):
    maker = MAKERS[name]
    for candidate in CANDIDATES:
        sparsity, rows_kept, cols_kept, tile_rows, tile_cols = candidate
        mask = np.asarray(maker(W, *_knobs(*candidate)))
        assert mask.shape == W.shape and mask.dtype == np.float32
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert not mask[rows_kept:].any() and not mask[:, cols_kept:].any()
        achieved, units = _achieved(name, mask, rows_kept, cols_kept, tile_rows, tile_cols)
        # round(sparsity * units) units are pruned: off by at most half a unit.
        assert abs(achieved - sparsity) <= 0.5 / units + 1e-6, (candidate, achieved)
        assert achieved > 0.0

        dense = maker(W, *_knobs(0.0, rows_kept, cols_kept, tile_rows, tile_cols))
        np.testing.assert_array_equal(dense, _kept(rows_kept, cols_kept))
        np.testing.assert_array_equal(jax.jit(maker)(W, *_knobs(*candidate)), mask)

    population = [jnp.stack(knob) for knob in zip(*(_knobs(*c) for c in CANDIDATES), strict=True)]
    masks = jax.jit(jax.vmap(maker, in_axes=(None, 0, 0, 0, 0, 0)))(W, *population)
    for mask, candidate in zip(masks, CANDIDATES, strict=True):
        np.testing.assert_array_equal(mask, maker(W, *_knobs(*candidate)))


@pytest.mark.parametrize("candidate", [(0.5, 10, 8, 4, 3), (0.4, 11, 9, 3, 5), (0.6, 12, 10, 1, 2)])
def test_block_mask_is_a_union_of_whole_grid_blocks(candidate):
    _, rows_kept, cols_kept, tile_rows, tile_cols = candidate
    mask = np.asarray(pruning.block_mask(W, *_knobs(*candidate)))
    blocks = _grid_blocks(rows_kept, cols_kept, tile_rows, tile_cols)
    assert all(np.unique(mask[b]).size == 1 for b in blocks)
    assert 0 < sum(not mask[b].any() for b in blocks) < len(blocks)


def test_block_pruning_empties_tiles_and_unstructured_does_not():
    w = jax.random.normal(jax.random.key(1), (32, 32))
    knobs = _knobs(0.5, 32, 32, 8, 8)
    block = jax.jit(pruning.block_mask)(w, *knobs)
    scattered = jax.jit(pruning.unstructured_mask)(w, *knobs[:3])
    for mask, empty_fraction in ((block, 0.5), (scattered, 0.0)):
        total, nonzero, _ = _production_tiles(np.asarray(mask), 1.0, 8, 8)
        assert int(total) == 16
        assert 1.0 - int(nonzero) / int(total) == pytest.approx(empty_fraction)
        assert float(mask.mean()) == pytest.approx(0.5)


@pytest.mark.parametrize(("sparsity", "n"), [(0.25, 3), (0.5, 2), (0.75, 1), (0.95, 1)])
def test_nm_mask_keeps_n_per_group(sparsity, n):
    rows_kept, cols_kept = 10, 7  # two full groups of 4 rows, then a group cut to 2 rows
    mask = np.asarray(pruning.nm_mask(W, sparsity, rows_kept, cols_kept, m=M))
    groups = mask[:8, :cols_kept].reshape(2, M, cols_kept).sum(axis=1)
    np.testing.assert_array_equal(groups, n)
    np.testing.assert_array_equal(mask[8:10, :cols_kept].sum(axis=0), min(n, 2))
    abs_w = np.abs(np.asarray(W))[:8, :cols_kept].reshape(2, M, cols_kept)
    kept = mask[:8, :cols_kept].reshape(2, M, cols_kept) > 0
    smallest_kept = np.where(kept, abs_w, np.inf).min(axis=1)
    assert np.all(smallest_kept >= np.where(kept, -np.inf, abs_w).max(axis=1))  # n largest kept


@settings(max_examples=60, deadline=None)
@given(
    mask=hnp.arrays(np.bool_, st.sampled_from([(12, 10), (5, 7)])),
    data=st.data(),
)
def test_tile_count_matches_brute_force(mask, data):
    # The one implementation production uses (energy.counts_from_masks) against a loop oracle.
    fraction = data.draw(st.floats(0.0, 1.0))
    tile_rows, tile_cols = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    total, nonzero, n_analog = _production_tiles(mask, fraction, tile_rows, tile_cols)
    assert (total, nonzero) == _tiles_brute_force(mask, n_analog, tile_rows, tile_cols)


def test_make_mask_compiles_once_for_a_search_space():
    traces = 0

    def mask_for(granularity, w, sparsity, rows_kept, cols_kept, tile_rows, tile_cols):
        nonlocal traces
        traces += 1
        return pruning.make_mask(
            granularity, w, sparsity, rows_kept, cols_kept, tile_rows, tile_cols
        )

    compiled = jax.jit(mask_for)
    combos = [  # (granularity index, sparsity, rows_kept, cols_kept, tile_rows, tile_cols)
        (0, 0.5, 10, 8, 4, 3),
        (1, 0.3, 12, 10, 5, 4),
        (2, 0.7, 7, 5, 2, 2),
        (3, 0.5, 10, 8, 4, 3),
        (4, 0.5, 9, 6, 3, 3),
        (3, 0.25, 12, 9, 6, 2),
    ]
    expected = []
    for granularity, *candidate in combos:
        mask = compiled(jnp.int32(granularity), W, *_knobs(*candidate))
        expected.append(MAKERS[pruning.GRANULARITIES[granularity]](W, *_knobs(*candidate)))
        np.testing.assert_array_equal(mask, expected[-1])
    assert traces == 1
    assert compiled._cache_size() == 1

    # A population mixing granularities runs as one vmapped call.
    knobs = [jnp.stack(k) for k in zip(*(_knobs(*c[1:]) for c in combos), strict=True)]
    granularities = jnp.array([c[0] for c in combos], jnp.int32)
    masks = jax.jit(jax.vmap(mask_for, in_axes=(0, None, 0, 0, 0, 0, 0)))(granularities, W, *knobs)
    np.testing.assert_array_equal(masks, np.stack(expected))


def test_pruned_weights_stay_exactly_zero_through_adamw():
    keys = jax.random.split(jax.random.key(2), 3)
    x, y = jax.random.normal(keys[0], (16, 8)), jax.random.normal(keys[1], (16, 6))
    w = jax.random.normal(keys[2], (8, 6))
    mask = pruning.unstructured_mask(w, 0.5, 8, 6)
    masks = {"w": mask, "b": jnp.ones(6)}
    optimizer = optax.adamw(0.1, weight_decay=0.1)

    def loss(params):
        return jnp.mean((x @ params["w"] + params["b"][None, :] - y) ** 2)

    @jax.jit
    def step(params, state, masks):
        updates, state = optimizer.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, pruning.masked_update(updates, masks)), state

    def fine_tune(masks):
        params = {"w": pruning.prune(w, mask), "b": jnp.zeros(6)}
        state = optimizer.init(params)
        for _ in range(5):
            params, state = step(params, state, masks)
        return params["w"]

    pruned = np.asarray(mask) == 0
    tuned = np.asarray(fine_tune(masks))
    assert np.all(tuned[pruned] == 0.0)
    assert np.all(tuned[~pruned] != np.asarray(w)[~pruned])  # the kept weights did train
    unmasked = np.asarray(fine_tune(jax.tree.map(jnp.ones_like, masks)))
    assert np.all(unmasked[pruned] != 0.0)  # without the mask, Adam revives pruned weights
