"""Pruning masks over a layer's kept prefix, with every per-candidate knob a traced scalar.

A layer is a weight matrix ``w`` of shape [K, N] at maximum width. A candidate keeps the prefix
rows [0, rows_kept) and columns [0, cols_kept) (units are pre-sorted by importance) and prunes a
fraction ``sparsity`` of the kept weights. Sparsity, widths, tile sizes and the granularity index
are traced jnp scalars, so one compiled program serves a whole search space and ``jax.vmap`` runs
a population at once; only shapes (and the N:M group size ``m``) are static.

Conventions shared by every maker:

* The result is a float32 {0, 1} mask of ``w``'s shape, zero outside the kept prefix.
* The number of pruned units is ``round(sparsity * units)`` with ``jnp.round`` (half to even),
  where a unit is a weight, a row, a column or a grid block; N:M keeps
  ``clip(round(m * (1 - sparsity)), 1, m)`` weights per group.
* Units are scored by magnitude (|w| or L2 norm over the kept part) and the lowest scores are
  pruned; equal scores are broken by flat index (lower index pruned first), so masks are
  deterministic. With ``sparsity == 0`` every maker returns the kept-prefix mask.
* Masks carry no gradient: they are chosen once from inherited weights and then held fixed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "GRANULARITIES",
    "block_mask",
    "column_mask",
    "kept_mask",
    "make_mask",
    "masked_update",
    "nm_mask",
    "prune",
    "row_mask",
    "unstructured_mask",
]

GRANULARITIES = ("unstructured", "row", "column", "block", "nm")
"""Granularity names; ``make_mask`` takes the index of one of them as a traced int."""


def kept_mask(shape: tuple[int, int], rows_kept, cols_kept) -> jax.Array:
    """Boolean mask of the kept prefix rows [0, rows_kept) x columns [0, cols_kept)."""
    rows = jnp.arange(shape[0])[:, None] < rows_kept
    cols = jnp.arange(shape[1])[None, :] < cols_kept
    return rows & cols


def _clipped_widths(shape, rows_kept, cols_kept):
    """Widths as int32 clipped to the maximum shape, so counts never exceed the matrix."""
    rows = jnp.clip(jnp.asarray(rows_kept, jnp.int32), 0, shape[0])
    cols = jnp.clip(jnp.asarray(cols_kept, jnp.int32), 0, shape[1])
    return rows, cols


def _num_pruned(sparsity, units) -> jax.Array:
    """round(sparsity * units) as int32, clipped to [0, units]."""
    count = jnp.round(jnp.asarray(sparsity, jnp.float32) * units).astype(jnp.int32)
    return jnp.clip(count, 0, units)


def _rank(scores: jax.Array) -> jax.Array:
    """Ascending rank of each entry of a 1-D array; ties go to the lower index first."""
    order = jnp.argsort(scores, stable=True)
    return jnp.zeros_like(order).at[order].set(jnp.arange(scores.shape[0], dtype=order.dtype))


def _block_ids(shape: tuple[int, int], tile_rows, tile_cols) -> jax.Array:
    """Grid block id (row // tile_rows) * N + col // tile_cols of each element, in [0, K*N)."""
    tile_rows = jnp.maximum(jnp.asarray(tile_rows, jnp.int32), 1)
    tile_cols = jnp.maximum(jnp.asarray(tile_cols, jnp.int32), 1)
    block_row = jnp.arange(shape[0], dtype=jnp.int32)[:, None] // tile_rows
    block_col = jnp.arange(shape[1], dtype=jnp.int32)[None, :] // tile_cols
    return block_row * shape[1] + block_col


def unstructured_mask(w: jax.Array, sparsity, rows_kept, cols_kept) -> jax.Array:
    """Prune the round(sparsity * kept) smallest-|w| individual weights of the kept prefix."""
    rows_kept, cols_kept = _clipped_widths(w.shape, rows_kept, cols_kept)
    kept = kept_mask(w.shape, rows_kept, cols_kept)
    scores = jnp.where(kept, jnp.abs(w), jnp.inf).ravel()
    pruned = _rank(scores) < _num_pruned(sparsity, rows_kept * cols_kept)
    return (kept & ~pruned.reshape(w.shape)).astype(jnp.float32)


def row_mask(w: jax.Array, sparsity, rows_kept, cols_kept) -> jax.Array:
    """Prune whole kept rows (inputs) with the smallest L2 norm over the kept columns."""
    rows_kept, cols_kept = _clipped_widths(w.shape, rows_kept, cols_kept)
    kept = kept_mask(w.shape, rows_kept, cols_kept)
    norms_sq = jnp.sum(jnp.where(kept, w * w, 0.0), axis=1)
    scores = jnp.where(jnp.arange(w.shape[0]) < rows_kept, norms_sq, jnp.inf)
    pruned = _rank(scores) < _num_pruned(sparsity, rows_kept)
    return (kept & ~pruned[:, None]).astype(jnp.float32)


def column_mask(w: jax.Array, sparsity, rows_kept, cols_kept) -> jax.Array:
    """Prune whole kept columns (outputs) with the smallest L2 norm over the kept rows."""
    return row_mask(w.T, sparsity, cols_kept, rows_kept).T


def block_mask(w: jax.Array, sparsity, rows_kept, cols_kept, tile_rows, tile_cols) -> jax.Array:
    """Prune whole blocks of the candidate's tile grid so the analog tiles holding them are skipped.

    The grid of ``tile_rows`` x ``tile_cols`` blocks is anchored at (0, 0) and clipped to the kept
    prefix at its edges; round(sparsity * blocks) blocks with the smallest L2 norm are pruned.
    Edge blocks are smaller, so they tend to go first: they cost a whole tile for fewer weights.
    """
    rows_kept, cols_kept = _clipped_widths(w.shape, rows_kept, cols_kept)
    kept = kept_mask(w.shape, rows_kept, cols_kept)
    num_segments = w.shape[0] * w.shape[1]
    ids = _block_ids(w.shape, tile_rows, tile_cols)
    norms_sq = jax.ops.segment_sum(
        jnp.where(kept, w * w, 0.0).ravel(), ids.ravel(), num_segments=num_segments
    )
    tile_rows = jnp.maximum(jnp.asarray(tile_rows, jnp.int32), 1)
    tile_cols = jnp.maximum(jnp.asarray(tile_cols, jnp.int32), 1)
    segment = jnp.arange(num_segments, dtype=jnp.int32)
    in_kept = ((segment // w.shape[1]) * tile_rows < rows_kept) & (
        (segment % w.shape[1]) * tile_cols < cols_kept
    )
    num_blocks = -(-rows_kept // tile_rows) * -(-cols_kept // tile_cols)
    scores = jnp.where(in_kept, norms_sq, jnp.inf)
    pruned = _rank(scores) < _num_pruned(sparsity, num_blocks)
    return (kept & ~pruned[ids]).astype(jnp.float32)


def nm_mask(w: jax.Array, sparsity, rows_kept, cols_kept, m: int = 4) -> jax.Array:
    """N:M sparsity along K: in each group of m consecutive rows per column keep the n largest |w|.

    n = clip(round(m * (1 - sparsity)), 1, m). Groups are anchored at row 0; a last group cut
    short by ``rows_kept`` is treated as padded with zeros, so it keeps min(n, its size) weights.
    """
    rows_kept, cols_kept = _clipped_widths(w.shape, rows_kept, cols_kept)
    kept = kept_mask(w.shape, rows_kept, cols_kept)
    num_keep = jnp.round(m * (1.0 - jnp.asarray(sparsity, jnp.float32))).astype(jnp.int32)
    num_keep = jnp.clip(num_keep, 1, m)
    groups = -(-w.shape[0] // m)
    pad = groups * m - w.shape[0]
    scores = jnp.where(kept, jnp.abs(w), -jnp.inf)
    scores = jnp.pad(scores, ((0, pad), (0, 0)), constant_values=-jnp.inf)
    scores = scores.reshape(groups, m, w.shape[1])
    # Rank within a group, largest first; ties go to the lower row. m is small, so compare pairs.
    a = scores[:, :, None, :]  # candidate i
    b = scores[:, None, :, :]  # competitor j
    index = jnp.arange(m)
    earlier = (index[None, :] < index[:, None])[None, :, :, None]  # j < i
    beaten_by = (b > a) | ((b == a) & earlier)
    rank = jnp.sum(beaten_by, axis=2)
    keep = (rank < num_keep).reshape(groups * m, w.shape[1])[: w.shape[0]]
    return (kept & keep).astype(jnp.float32)


def make_mask(
    granularity, w: jax.Array, sparsity, rows_kept, cols_kept, tile_rows, tile_cols, m: int = 4
) -> jax.Array:
    """Mask for ``GRANULARITIES[granularity]`` with a traced index, so all share one program."""
    branches = (
        lambda s, r, c, tr, tc: unstructured_mask(w, s, r, c),
        lambda s, r, c, tr, tc: row_mask(w, s, r, c),
        lambda s, r, c, tr, tc: column_mask(w, s, r, c),
        lambda s, r, c, tr, tc: block_mask(w, s, r, c, tr, tc),
        lambda s, r, c, tr, tc: nm_mask(w, s, r, c, m=m),
    )
    index = jnp.asarray(granularity, jnp.int32)
    return lax.switch(index, branches, sparsity, rows_kept, cols_kept, tile_rows, tile_cols)


def prune(w: jax.Array, mask: jax.Array) -> jax.Array:
    """Zero the pruned weights."""
    return w * mask


def masked_update(updates, masks):
    """Zero optimizer updates of pruned weights so they stay exactly 0.0 through fine-tuning.

    ``masks`` has the structure of ``updates`` (use ones for unpruned leaves). Apply it to the
    final updates, after weight decay, then ``optax.apply_updates``: a pruned weight is 0.0 and
    receives 0.0, whatever Adam's moments hold. Idiom::

        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, masked_update(updates, masks))
    """
    return jax.tree.map(lambda u, mask: u * mask.astype(u.dtype), updates, masks)
