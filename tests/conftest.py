"""Strict JAX for the whole suite: implicit rank promotion is a bug here, not a convenience."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
