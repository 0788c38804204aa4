"""The statistics-based energy (what the sampler and the budgets see, `Evaluator.estimate`)
agrees with the mask-based energy (what is reported for a trained design,
`energy.counts_from_masks`) at partial widths; weights beyond the SRAM stream from DRAM."""

import dataclasses

import jax
import numpy as np
import pytest

from codesign.hardware.accelerator import with_tile
from codesign.hardware.energy import Design, counts_from_masks, estimate_energy, layer_counts
from codesign.hardware.presets import get_preset
from codesign.nn import pruning
from codesign.nn.networks import chain

NETWORK = chain([64, 48, 40, 10])
WIDTHS = (24, 20)  # partial widths of the two hidden layers (multiples of the N:M group)
ANALOG = 0.5


def _masks(granularity: str, sparsity: float, seed: int = 0):
    """Real masks from random weights at the partial widths (kept prefix of each max layer)."""
    rng = np.random.default_rng(seed)
    in_kept = (NETWORK[0].rows, *WIDTHS)
    out_kept = (*WIDTHS, NETWORK[-1].out_units)
    masks = []
    for layer, rows, cols in zip(NETWORK, in_kept, out_kept, strict=True):
        w = jax.numpy.asarray(rng.normal(size=(layer.rows, layer.out_units)), jax.numpy.float32)
        maker = getattr(pruning, f"{granularity}_mask")
        masks.append(np.asarray(maker(w, sparsity, rows, cols)))
    return masks


def _design(granularity: str, sparsity: float) -> Design:
    n = len(NETWORK)
    return Design(
        widths=np.asarray([*WIDTHS, NETWORK[-1].out_units], np.float32),
        analog_fraction=np.full(n, ANALOG, np.float32),
        sparsity=np.full(n, sparsity, np.float32),
        granularity=np.full(n, pruning.GRANULARITIES.index(granularity), np.int32),
    )


ACC = with_tile(get_preset("hybrid-22nm"), 16, 16)


@pytest.mark.parametrize(
    ("granularity", "sparsity", "rel"),
    [
        # Whole rows or columns pruned: both count the same rows, columns and tiles, exactly.
        ("row", 0.5, 1e-5),
        ("column", 0.25, 1e-5),
        # N:M at widths that are whole groups: the kept density is exactly n/M in both.
        ("nm", 0.5, 1e-5),
        # Unstructured: the statistics assume the nominal density spread evenly; the masks
        # prune by magnitude, so the analog/digital halves differ a little in density.
        ("unstructured", 0.5, 0.03),
    ],
)
def test_statistics_energy_matches_mask_energy(granularity, sparsity, rel):
    design = _design(granularity, sparsity)
    stats = layer_counts(NETWORK, design, ACC)
    exact = counts_from_masks(NETWORK, _masks(granularity, sparsity), ANALOG, ACC)
    for field in ("rows", "cols", "n_analog", "row_bands", "tiles", "tiles_active"):
        np.testing.assert_array_equal(
            np.asarray(getattr(stats, field)), np.asarray(getattr(exact, field)), err_msg=field
        )
    from_stats = float(estimate_energy(NETWORK, design, ACC).energy_j)
    from_masks = float(estimate_energy(NETWORK, exact, ACC).energy_j)
    assert from_stats == pytest.approx(from_masks, rel=rel)


def test_evaluator_estimate_is_the_statistics_energy(tmp_path):
    """`Evaluator.estimate` (what the sampler and budgets use) prices a candidate exactly as
    `estimate_energy` on its design statistics does."""
    from codesign.search.evaluate import Evaluator
    from codesign.search.problem import Candidate, Model, Problem

    problem = Problem(model=Model(family="mlp", widths=(48, 40)))
    evaluator = Evaluator(problem, min_tile_rows=16)
    cand = Candidate(
        widths=(24, 20),
        sparsity=(0.5,) * 3,
        granularity=("row",) * 3,
        analog_fraction=(ANALOG,) * 3,
        tile=(16, 16),
        adc_bits=6,
    )
    (result,) = evaluator.estimate([cand])
    acc = evaluator.accelerator(cand)
    design = Design(
        widths=np.asarray([24, 20, evaluator.shapes[-1].out_units], np.float32),
        analog_fraction=np.full(3, ANALOG, np.float32),
        sparsity=np.full(3, 0.5, np.float32),
        granularity=np.full(3, pruning.GRANULARITIES.index("row"), np.int32),
    )
    assert result.energy_j == pytest.approx(
        float(estimate_energy(evaluator.shapes, design, acc).energy_j), rel=1e-5
    )


def test_digital_weights_beyond_the_sram_stream_from_dram():
    """One all-digital 256x256 int8 layer: 65,536 weight bytes per inference (batch 1). With
    SRAM S below that, the overflow 65,536 - S bytes come from DRAM at dram_j_per_64b / 8 per
    byte; with S above it, nothing does."""
    network = chain([256, 256])
    design = Design.dense(network, 0.0)
    base = dataclasses.replace(get_preset("hybrid-22nm"), weight_bits=8.0, batch=1.0)
    weight_bytes = 256 * 256
    per_byte = float(base.energy.dram_j_per_64b) / 8.0
    for sram, expected in ((weight_bytes * 2, 0.0), (weight_bytes / 4, 0.75 * weight_bytes)):
        acc = dataclasses.replace(base, sram_bytes=float(sram))
        dram = float(np.sum(estimate_energy(network, design, acc).components_j["dram"]))
        assert dram == pytest.approx(expected * per_byte, rel=1e-5, abs=1e-18)
    # Fetching weights once per batch of 8 inferences divides the DRAM traffic by 8.
    acc = dataclasses.replace(base, sram_bytes=weight_bytes / 4, batch=8.0)
    dram = float(np.sum(estimate_energy(network, design, acc).components_j["dram"]))
    assert dram == pytest.approx(0.75 * weight_bytes * per_byte / 8, rel=1e-5)


@pytest.mark.parametrize(
    ("family", "dataset", "widths"), [("mlp", "digits", (40, 8)), ("cnn", "mnist1d", (8, 8, 8))]
)
def test_the_estimate_finds_every_layer_the_masks_empty(family, dataset, widths):
    """The estimate decides which candidates are worth training, so it must see every layer the
    real masks will leave without a weight (issue 21: widths 40/8, block sparsity 0.8 and 256-row
    tiles were priced as a whole network, then trained with every layer empty). Checked on 300
    random candidates of two families, at sparsities up to 0.99 and tiles up to whole layers."""
    from codesign.engine.finetune import pruning_masks
    from codesign.search.evaluate import Evaluator
    from codesign.search.problem import Candidate, Model, Problem, Task

    problem = Problem(task=Task(dataset=dataset), model=Model(family=family, widths=widths))
    evaluator = Evaluator(problem, min_tile_rows=4)
    rng = np.random.default_rng(21)
    n, layers = 300, len(evaluator.shapes)
    tiles = [(4, 4), (16, 8), (64, 32), (256, 256)]
    cands = [
        Candidate(
            widths=tuple(int(rng.integers(1, w + 1)) for w in widths),
            sparsity=tuple(rng.choice([0.0, 0.3, 0.5, 0.8, 0.9, 0.95, 0.99], layers).tolist()),
            granularity=tuple(rng.choice(pruning.GRANULARITIES, layers).tolist()),
            analog_fraction=tuple(rng.choice([0.0, 0.5, 1.0], layers).tolist()),
            tile=tiles[rng.integers(len(tiles))],
            adc_bits=6,
        )
        for _ in range(n)
    ]
    population = evaluator.population(cands, [0] * n)
    params = tuple(
        {"w": rng.normal(size=(n, s.rows, s.out_units)).astype(np.float32)}
        for s in evaluator.shapes
    )
    masks = pruning_masks(evaluator.spec, population, params)
    real = sum((np.asarray(m).sum(axis=(1, 2)) == 0).astype(int) for m in masks)
    estimated = evaluator.estimate(cands).empty_layers
    assert real.sum() > 30  # the draw reaches empty layers often
    np.testing.assert_array_equal(estimated, real)


def test_the_case_of_issue_21_is_not_worth_training_and_never_ok():
    from codesign.search.evaluate import Evaluator, Result
    from codesign.search.problem import Candidate, Model, Problem

    problem = Problem(model=Model(family="mlp", widths=(40, 8)))
    evaluator = Evaluator(problem, min_tile_rows=16)
    cand = Candidate(
        widths=(40, 8),
        sparsity=(0.8,) * 3,
        granularity=("block",) * 3,
        analog_fraction=(0.5,) * 3,
        tile=(256, 256),
        adc_bits=6,
    )
    (estimate,) = evaluator.estimate([cand])
    assert estimate.empty_layers == 3 and not problem.worth_training(estimate)
    # Trained anyway (through the API): not ok, and said why, also once read back from a study.
    trained = dataclasses.replace(estimate, accuracy=0.2, test_accuracy=0.2, seed=0)
    assert not trained.ok and "3 layer(s) left without a weight" in trained.fail_reason
    assert not Result.from_attrs(trained.to_attrs()).ok
