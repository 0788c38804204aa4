"""The gradient sampler (`codesign.search.gradient`): design variables learned with the weights in
one compiled population program, then snapped onto the space's grid and scored exactly."""

import dataclasses
import pathlib

import numpy as np
import optuna
import pytest

from codesign.cli import main
from codesign.errors import CodesignError
from codesign.search import gradient, proposers
from codesign.search import loop as search
from codesign.search import study as studies
from codesign.search.space import load_space, parse_space
from tests.test_search import TINY

ROOT = pathlib.Path(__file__).resolve().parents[1]

GRADIENT = {**TINY, "name": "grad", "sampler": {"name": "gradient", "seed": 0, "steps": 30}}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One gradient search of 6 trials (two populations of 3) and its space and evaluator."""
    tmp = tmp_path_factory.mktemp("gradient")
    space = parse_space(GRADIENT, str(tmp / "space.yaml"))
    study = search.run_search(space, out_dir=tmp / "run", cache_dir=tmp / "cache")
    return space, space.evaluator(cache_dir=tmp / "cache"), study, tmp


@pytest.mark.slow  # the relaxed program's compile, once for the module
def test_a_larger_trade_off_weight_learns_a_design_of_less_energy(searched):
    space, evaluator, _, _ = searched
    start = space.candidate(space.sample_params(np.random.default_rng(3), 1)[0])
    lambdas = np.asarray([1e-4, 0.1, 3.0], np.float32)
    learned, run = evaluator.codesign(
        [start] * 3, np.asarray([5, 5, 5]), lambdas, space.bounds(), space.sampler.gradient
    )
    energy = run.relaxed_energy_j
    assert energy[2] < energy[0] and sum(learned[2].widths) < sum(learned[0].widths)
    assert learned[2].adc_bits < learned[0].adc_bits  # fewer bits: cheaper, noisier
    macs = sum(s.rows * s.out_units * s.positions for s in evaluator.shapes)
    assert run.flops[0] == 6.0 * macs * TINY["finetune"]["batch_size"] * 30
    for cand in learned:  # on the ranges, before snapping
        assert all(4 <= w <= 16 for w in cand.widths) and 4 <= cand.adc_bits <= 8


@pytest.mark.slow
def test_at_zero_design_step_the_program_returns_its_starts_and_their_exact_scores(searched):
    """The relaxed program steps the weights and the design through the engine's one loop; at a
    design step size of zero the learned designs snap back onto their starting candidates, so
    what the study stores for them is the plain fine-tune's score of the same candidate and seed,
    bit for bit."""
    space, evaluator, _, _ = searched
    starts = [space.candidate(p) for p in space.sample_params(np.random.default_rng(4), 3)]
    config = dataclasses.replace(space.sampler.gradient, design_learning_rate=0.0)
    seeds = np.asarray([11, 12, 13])
    lambdas = np.asarray([1e-3, 0.1, 1.0], np.float32)
    learned, run = evaluator.codesign(starts, seeds, lambdas, space.bounds(), config)
    assert np.isfinite(run.loss).all()  # the weights did train
    snapped = [space.candidate(space.params_of(cand)) for cand in learned]
    assert snapped == starts
    scored, plain = (
        evaluator.evaluate(snapped, list(seeds)),
        evaluator.evaluate(starts, list(seeds)),
    )
    assert [r.to_attrs() for r in scored] == [r.to_attrs() for r in plain]


@pytest.mark.slow
def test_the_study_stores_the_exact_energy_not_the_relaxed_one(searched):
    space, evaluator, study, tmp = searched
    learned = [t for t in study.trials if "gradient_lambda" in t.user_attrs]
    assert learned and len(study.trials) == GRADIENT["trials"]
    for trial in learned[:2]:
        attrs = trial.user_attrs
        assert attrs["proposal_flops"] > 0 and space.candidate(trial.params) is not None
        if trial.state.name != "COMPLETE":
            continue
        (exact,) = evaluator.evaluate([space.candidate(trial.params)], [attrs["seed"]])
        assert attrs["energy_j"] == pytest.approx(exact.energy_j, rel=1e-6)
        assert attrs["energy_j"] != pytest.approx(attrs["relaxed_energy_j"], rel=1e-3)
    # Fronts and export read it like any study.
    out = tmp / "run"
    assert main(["pareto", "--study", "grad", "--out", str(out)]) == 0
    best = min((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.values[0])
    export = ["export", "--study", "grad", "--out", str(out), "--trial", str(best.number)]
    assert main([*export, "-o", str(tmp / "d.json")]) == 0


@pytest.mark.slow
def test_later_populations_start_half_from_the_front_so_far(searched):
    space, _, study, _ = searched
    batch = GRADIENT["batch"]
    starts = {t.number: t.user_attrs.get("gradient_start") for t in study.trials}
    # The first population has no front to start from; the next refines one of its designs.
    assert all(starts[n] in ("random", None) for n in range(batch))
    later = [starts[n] for n in range(batch, len(starts))]
    assert later.count("front") <= batch // 2
    trained = studies.history(study.get_trials()[:batch], space.param_dims()).trained
    if proposers.front_params(trained):
        assert later.count("front") >= 1 or None in later  # a duplicate is dropped, random fills


def test_front_params_are_the_non_dominated_designs_cheapest_first():
    trained = [
        ({"a": 1}, 2.0, 0.5),
        ({"a": 2}, 1.0, 0.6),  # cheaper and better than a=1
        ({"a": 3}, 3.0, 0.9),
        ({"a": 4}, 1.0, 0.4),  # as cheap as a=2, worse
        ({"a": 5}, 0.5, 0.1),
        ({"a": 6}, 3.0, 0.9),  # a tie with a=3: the first one stays
    ]
    assert proposers.front_params(trained) == [{"a": 5}, {"a": 2}, {"a": 3}]
    assert proposers.front_params([]) == []


@pytest.mark.parametrize("name", ["digits_mlp", "mnist1d_cnn", "mnist1d_resnet"])
def test_params_of_snaps_a_relaxed_candidate_onto_the_grid(name):
    space = load_space(ROOT / "search_spaces" / f"{name}.yaml")
    for params in space.sample_params(np.random.default_rng(0), 20):
        cand = space.candidate(params)
        assert space.candidate(space.params_of(cand)) == cand
    b = space.bounds()
    relaxed = space.candidate(params)
    relaxed = relaxed.__class__(
        widths=tuple(hi - 0.4 for _, hi in b.widths),
        sparsity=(b.sparsity[1] + 5,) * len(relaxed.sparsity),  # off the range: clipped
        granularity=relaxed.granularity,
        analog_fraction=(0.13,) * len(relaxed.analog_fraction),
        tile=relaxed.tile,
        adc_bits=b.adc_bits[0] + 0.6,
    )
    snapped = space.candidate(space.params_of(relaxed))
    space.check(snapped, "snapped")  # a point of the space
    assert snapped.sparsity[0] == b.sparsity[1] and snapped.adc_bits == b.adc_bits[0] + 1


def test_lambdas_are_stratified_over_the_log_range():
    config = gradient.GradientConfig(lambda_low=0.01, lambda_high=1.0)
    values = gradient.lambdas(8, config, np.random.default_rng(0))
    slices = np.floor(8 * np.log(values / 0.01) / np.log(100.0))
    assert list(slices) == list(range(8))


@pytest.mark.parametrize(
    "sampler, says",
    [
        ({"name": "random", "steps": 5}, "sampler: steps: sampler gradient only"),
        ({"name": "gradient", "lambdas": [1.0]}, "sampler.lambdas: must be [low, high]"),
        ({"name": "gradient", "lambdas": [1.0, 0.1]}, "sampler.lambdas: low 1.0 > high 0.1"),
        ({"name": "gradient", "lambdas": [0, 1]}, "sampler.lambdas.0: must lie in"),
        ({"name": "gradient", "steps": 0}, "sampler.steps: must lie in [1, 100000]"),
        ({"name": "gradiant"}, "did you mean 'gradient'?"),
    ],
)
def test_gradient_sampler_errors_are_one_line(sampler, says):
    with pytest.raises(CodesignError) as err:
        parse_space({**TINY, "sampler": sampler}, "s.yaml")
    assert str(err.value).startswith("s.yaml: ") and says in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_gradient_sampler_fills_gaps_randomly_in_optuna():
    space = parse_space(GRADIENT, "s.yaml")
    assert isinstance(proposers.optuna_sampler(space, 0), optuna.samplers.RandomSampler)
