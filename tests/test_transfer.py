"""The evaluation engine: cached base, inheritance, masks held, one compile, analog effects.

Every population is evaluated in chunks of 6 so the module compiles few programs (each costs
seconds on a CPU).
"""

import dataclasses

import jax
import numpy as np
import pytest

from codesign.data import datasets as data
from codesign.engine import finetune as transfer
from codesign.nn import networks, pruning

FT = transfer.FinetuneConfig(steps=40, batch_size=32, eval_draws=2, max_row_tiles=4)
PRE = transfer.PretrainConfig(steps=200, batch_size=64)


@pytest.fixture(scope="module")
def task():
    return data.transfer_split("digits")


@pytest.fixture(scope="module")
def spec(task):
    return networks.NetworkSpec("mlp", task.source.input_shape, task.source.num_classes, (32, 32))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bases")


@pytest.fixture(scope="module")
def engine(spec, task, cache):
    return transfer.Engine(spec, task, FT, PRE, cache_dir=cache)


def _cand(
    widths=(32, 32),
    sparsity=0.0,
    granularity="unstructured",
    analog=0.5,
    tile=(16, 16),
    adc=8,
    dac=8,
    seed=0,
    layers=3,
):
    return {
        "widths": list(widths),
        "sparsity": [sparsity] * layers,
        "granularity": [granularity] * layers,
        "analog_fraction": [analog] * layers,
        "tile_rows": tile[0],
        "tile_cols": tile[1],
        "adc_bits": adc,
        "dac_bits": dac,
        "seed": seed,
    }


SIX = [
    _cand(widths=(32, 32), sparsity=0.0, granularity="unstructured", analog=0.0, tile=(16, 16)),
    _cand(widths=(24, 16), sparsity=0.5, granularity="row", analog=0.25, tile=(32, 16), adc=6),
    _cand(widths=(16, 32), sparsity=0.3, granularity="column", analog=0.5, tile=(16, 8), adc=4),
    _cand(widths=(32, 8), sparsity=0.5, granularity="block", analog=1.0, tile=(32, 32), adc=7),
    _cand(widths=(8, 24), sparsity=0.5, granularity="nm", analog=0.75, tile=(64, 16), adc=5),
    _cand(widths=(20, 12), sparsity=0.2, granularity="block", analog=0.6, tile=(16, 16), adc=3),
]


def test_base_is_cached_and_reloaded(spec, task, cache, engine):
    assert not engine.base_cached or any(cache.iterdir())
    again = transfer.Engine(spec, task, FT, PRE, cache_dir=cache)
    assert again.base_cached, "a second engine must load the cached base, not retrain"
    for a, b in zip(engine.base, again.base, strict=True):
        np.testing.assert_array_equal(a["w"], b["w"])
    # Restored (orbax commits it to a device) or just pretrained, the base is the same kind of
    # argument, so the programs that take it are the same programs: a resumed search loads them
    # from the compilation cache instead of compiling them again.
    pop = transfer.Population.stack(SIX[:2])
    lowered = [e._init.lower(pop, e.base).as_text() for e in (engine, again)]
    assert lowered[0] == lowered[1]


def test_base_units_are_sorted_most_important_first(spec, engine):
    importance = networks.unit_importance(
        spec, (*engine.base, {"w": np.zeros((32, 5)), "b": np.zeros(5)})
    )
    # Inherited widths keep a prefix, so the first units must be the heaviest incoming ones.
    incoming = np.sum(np.asarray(engine.base[0]["w"]) ** 2, axis=0)
    assert incoming[:8].mean() > incoming[-8:].mean()
    assert len(importance) == 2


def test_six_different_candidates_compile_once_and_match_one_by_one(engine):
    pop = transfer.Population.stack(SIX)
    before = engine.traces
    together = engine.evaluate_population(pop)
    assert engine.traces - before == 3, "three programs (init, train, score) for a search space"
    again = engine.evaluate_population(transfer.Population.stack(SIX[::-1]))
    assert engine.traces - before == 3, "a second population of the same size must not recompile"
    np.testing.assert_allclose(again.val_accuracy[::-1], together.val_accuracy, atol=1e-6)
    # Chunks of 4 (one padded) give the same results as all six at once.
    chunked = engine.evaluate_population(pop, chunk=4)
    for key in ("val_accuracy", "test_accuracy", "finetune_flops"):
        np.testing.assert_allclose(
            getattr(chunked, key), getattr(together, key), rtol=1e-5, atol=1e-6
        )
    # And one by one (a population of one), for two of them. A program of another batch size
    # sums in another order; through 40 steps of ADC rounding the loss drifts by ~0.1% and at
    # most one borderline example flips.
    for i in (1, 3):
        alone = engine.evaluate_population(transfer.Population.stack([SIX[i]]))
        assert alone.finetune_flops[0] == together.finetune_flops[i]
        np.testing.assert_allclose(alone.final_loss[0], together.final_loss[i], rtol=1e-2)
        for key in ("val_accuracy", "test_accuracy"):
            assert abs(getattr(alone, key)[0] - getattr(together, key)[i]) <= 1 / 134 + 1e-6
    assert together.val_accuracy.shape == (6,)
    assert np.all(together.finetune_flops > 0)
    # The full-width dense candidate is well above chance (5 classes) after fine-tuning.
    assert together.val_accuracy[0] > 0.8


def test_pruned_weights_stay_exactly_zero_through_finetuning(engine):
    pop = transfer.Population.stack([SIX[1], SIX[3], SIX[4]])
    out = engine.evaluate_population(pop, keep_params=True, chunk=6)
    for b in range(3):
        for layer, mask in zip(out.params, out.masks, strict=True):
            w, m = layer["w"][b], mask[b]
            assert np.all(w[m == 0] == 0.0)
            assert np.any(w[m == 1] != 0.0)


def test_masks_match_the_mask_maker_on_each_unpadded_layer(engine):
    # The engine pads all layers to one shape to run one maker per (candidate, layer); the masks
    # must be exactly what `make_mask` gives on each layer's own inherited weights.
    out = engine.evaluate_population(transfer.Population.stack(SIX), keep_params=True, chunk=6)
    for b, cand in enumerate(SIX):
        head_key = jax.random.split(jax.random.PRNGKey(cand["seed"]), 4)[0]
        layers = (*engine.base, networks.init_params(engine.spec, head_key)[-1])
        rows = [engine.shapes[0].rows, *cand["widths"]]
        cols = [*cand["widths"], engine.spec.num_classes]
        for l, params in enumerate(layers):
            expected = pruning.make_mask(
                pruning.GRANULARITIES.index(cand["granularity"][l]), params["w"],
                cand["sparsity"][l], rows[l], cols[l], cand["tile_rows"], cand["tile_cols"],
            )  # fmt: skip
            np.testing.assert_array_equal(out.masks[l][b], expected)


def test_flops_follow_the_kept_weights(engine):
    out = engine.evaluate_population(
        transfer.Population.stack(
            [_cand(widths=(32, 32)), _cand(widths=(8, 8)), _cand(widths=(32, 32), sparsity=0.5)]
        ),
        chunk=6,
    )
    full, narrow, sparse = out.finetune_flops
    assert narrow < 0.5 * full
    assert sparse == pytest.approx(0.5 * full, rel=0.02)


def test_noise_off_16_bit_analog_matches_digital(spec, task, engine):
    quiet = transfer.Engine(
        spec, task, dataclasses.replace(FT, noise=False), PRE, base_params=(*engine.base, None)
    )
    out = quiet.evaluate_population(
        transfer.Population.stack(
            [
                _cand(analog=0.0, adc=16, dac=16),
                _cand(analog=1.0, adc=16, dac=16),
            ]
        ),
        chunk=6,
    )
    # The same fine-tuned weights, read through 16-bit converters vs an exact digital product.
    analog, digital = out.test_accuracy[1], out.digital_test_accuracy[1]
    assert abs(digital - analog) <= 0.005
    # And against a candidate fine-tuned all-digital: close, but training paths diverge a little.
    assert abs(out.test_accuracy[0] - analog) <= 0.05


def test_two_bit_adcs_cost_accuracy(engine):
    out = engine.evaluate_population(
        transfer.Population.stack(
            [
                _cand(analog=1.0, adc=8),
                _cand(analog=1.0, adc=2),
            ]
        ),
        chunk=6,
    )
    good, coarse = out.val_accuracy
    assert good - coarse > 0.2


def test_a_killed_pretrainings_temporary_checkpoints_are_removed_on_the_next_run(
    spec, task, tmp_path
):
    config = transfer.PretrainConfig(steps=5, batch_size=16)
    name = f"base-{transfer.base_key(spec, task.source, config)}"
    orphans = [
        tmp_path / f".{name}.0123abcd.tmp.orbax-checkpoint-tmp-1765000000",  # killed mid-save
        tmp_path / f".{name}.4567ef01.tmp",  # killed between save and rename
    ]
    for orphan in orphans:
        (orphan / "d").mkdir(parents=True)
    other = tmp_path / ".base-of-another-network.89ab.tmp"  # its own lock guards it: left alone
    other.mkdir()
    transfer.load_or_pretrain(spec, task.source, config, tmp_path)
    assert not any(o.exists() for o in orphans) and other.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".base")) == [other.name]


def test_scoring_memory_does_not_grow_with_the_noise_draws(spec, task):
    """The draws are scored one after another: XLA's own temporaries for the scoring program
    (its compile-time memory analysis, no timing) stay flat from 1 to 4 draws. Scored at once,
    a conv search's population needed 3.0 GB for 3 draws against 1.5 GB for one."""
    base = networks.init_params(spec, jax.random.PRNGKey(0))
    population = transfer.Population.stack([_cand(seed=s) for s in range(2)])

    def temporaries(draws):
        config = dataclasses.replace(FT, eval_draws=draws)
        engine = transfer.Engine(spec, task, config, base_params=base)
        state = engine.init_population(population)
        score = jax.jit(engine._score_program)
        compiled = score.lower(population, state, engine.data).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    one, four = temporaries(1), temporaries(4)
    assert four < 1.5 * one, (one, four)


def test_the_base_key_is_a_canonical_serialization_of_what_makes_a_base():
    """Equal specs and configs built apart share a key (no identity, no repr); any field that
    changes the base changes it."""
    task = data.transfer_split("digits")

    def key(widths=(16, 16), steps=5, lr=3e-3, classes=5):
        spec = networks.NetworkSpec("mlp", task.source.input_shape, classes, widths)
        config = transfer.PretrainConfig(steps=steps, learning_rate=lr)
        return transfer.base_key(spec, task.source, config)

    assert key() == key()
    others = [key(widths=(16, 8)), key(steps=6), key(lr=1e-3), key(classes=6)]
    assert len({key(), *others}) == 5
