"""Energy-aware batch proposals: valid, deterministic, in budget, and better than random search.

Most tests run on a synthetic problem with the shape of the real one: energy a known function of
the params (as the energy model is), accuracy a hidden one that collapses to chance for some
choices (as block-pruned networks do), so no training is needed.
"""

import importlib.util
import json
import math
import pathlib
import time
import warnings

import numpy as np
import optuna
import pytest

from codesign.search import pareto, screening
from codesign.search import study as studies
from codesign.search.space import parse_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

SEARCH = {
    "widths": {"low": 8, "high": 128, "step": 8, "per_layer": True},
    "sparsity": {"low": 0.0, "high": 0.8, "step": 0.1},
    "granularity": {"choices": ["unstructured", "row", "block", "nm"]},
    "tile": {"choices": [32, 64, 128, 256]},
    "analog_fraction": {"low": 0.0, "high": 1.0, "step": 0.25},
    "adc_bits": {"low": 3, "high": 8},
}
SPACE = parse_space(
    {"model": {"widths": [128, 128]}, "search": SEARCH, "budgets": {"min_accuracy": 0.5}},
    "synthetic.yaml",
)
NAMES = set(SPACE.param_dims())


def energy_j(c) -> float:
    """Fewer MACs, structured sparsity, analog tiles and cheap ADCs all save energy."""
    w0, w1 = c.widths
    macs = 64 * w0 + w0 * w1 + 10 * w1
    saving = {"unstructured": 0.3, "row": 0.9, "block": 0.8, "nm": 0.6}[c.granularity[0]]
    a = c.analog_fraction[0]
    analog = a * (0.05 + 0.02 * 2.0 ** (c.adc_bits - 3)) * (1.0 + c.tile[0] / 256)
    return 1e-12 * macs * (1.0 - saving * c.sparsity[0]) * (1.0 - a + analog)


def accuracy(c) -> float:
    """Capacity helps; sparsity, analog with few ADC bits and big tiles hurt; some collapse."""
    s, a = c.sparsity[0], c.analog_fraction[0]
    if c.granularity[0] == "block" and s >= 0.7:
        return 0.2  # every block pruned: chance accuracy
    harm = {"unstructured": 0.5, "row": 1.5, "block": 1.0, "nm": 0.8}[c.granularity[0]]
    capacity = 0.98 - 0.3 * math.exp(-c.widths[0] / 12) - 0.2 * math.exp(-c.widths[1] / 10)
    adc = a * 0.6 * math.exp(-(c.adc_bits - 3) / 0.8) + 0.03 * a * c.tile[0] / 256
    return max(0.2, capacity - harm * s**3 - adc)


def energy_fn(cands):
    return np.asarray([energy_j(c) for c in cands])


DENSE = {"widths_0": 128, "widths_1": 128, "sparsity": 0.0, "granularity": "unstructured"}
REFERENCE_J = energy_j(
    SPACE.candidate({**DENSE, "tile": 256, "analog_fraction": 0.0, "adc_bits": 8})
)


def propose(space, trials, energies, n, rng, **kwargs):
    """`screening.propose` on an Optuna study's trials, as `search.run_search` calls it."""
    dims = space.param_dims()
    past = studies.history(trials, dims)
    trained, pending, tried = past.trained, past.pending, past.tried
    return screening.propose(
        dims, trained, pending, tried,
        lambda params: energies([space.candidate(p) for p in params]), n, rng,
        min_accuracy=space.problem.budgets.accuracy_floor, **kwargs,
    )  # fmt: skip


def _study(seed=0):
    sampler = optuna.samplers.RandomSampler(seed)
    return optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)


def _evaluate(study, trial, space=SPACE):
    cand = space.suggest(trial)
    trial.set_user_attr("energy_j", energy_j(cand))
    trial.set_user_attr("accuracy", accuracy(cand))
    study.tell(trial, [energy_j(cand), accuracy(cand)])


def _search(seed: int, trials: int, screen: bool, batch: int = 8, energies=energy_fn):
    """The search loop of `search.run_search`, proposals enqueued before each batch."""
    study, rng = _study(seed), np.random.default_rng(seed)
    while len(study.trials) < trials:
        if screen:
            past = study.get_trials(deepcopy=False)
            for params in propose(SPACE, past, energies, batch, rng):
                studies.enqueue(study, params)
        for _ in range(batch):
            _evaluate(study, study.ask())
    return study


def _hypervolume(study, n: int) -> float:
    points = [(t.user_attrs["energy_j"], t.user_attrs["accuracy"]) for t in study.trials[:n]]
    return pareto.hypervolume([p for p in points if p[1] >= 0.5], REFERENCE_J)


@pytest.fixture(scope="module")
def trials():
    """24 evaluated trials: past the startup phase, so proposals come from the model."""
    return _search(0, 24, screen=True).get_trials()


@pytest.mark.parametrize("phase", ["startup", "model"])
def test_proposals_are_valid_params_of_the_space(phase, trials):
    past = [] if phase == "startup" else trials
    proposals = propose(SPACE, past, energy_fn, 8, 0)
    assert len(proposals) == 8
    study = _study()
    for params in proposals:
        assert set(params) == NAMES
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Optuna warns about values off the space's grid
            SPACE.candidate(params)
        studies.enqueue(study, params)
        trial = study.ask()
        SPACE.suggest(trial)
        assert trial.params == params  # what run_search will ask and train


def test_first_batch_spans_the_energy_axis():
    def log_energy(params):
        return np.log10(energy_fn([SPACE.candidate(p) for p in params]))

    for seed in range(5):
        first = log_energy(propose(SPACE, [], energy_fn, 8, seed))
        draws = log_energy(SPACE.sample_params(np.random.default_rng(seed), 512))
        # A stratified sample of the log-energy range: its ends lie in the tails of random draws
        # (measured over 12 seeds: cheapest below >= 98.6 %, dearest above >= 89 % of them).
        assert np.mean(first.min() < draws) > 0.95
        assert np.mean(first.max() > draws) > 0.8


def test_proposals_are_deterministic_for_a_seed(trials):
    def run(seed):
        return propose(SPACE, trials, energy_fn, 8, seed)

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_never_proposes_over_budget_tried_or_pending_params(trials):
    cap = np.median([t.user_attrs["energy_j"] for t in trials])

    def capped(cands):  # the contract: np.inf marks a candidate over budget
        e = energy_fn(cands)
        return np.where(e > cap, np.inf, e)

    study = _study()
    study.add_trials(trials)
    for params in propose(SPACE, trials, capped, 2, 0):
        studies.enqueue(study, params)
    SPACE.suggest(study.ask())  # one RUNNING, one still WAITING
    past = study.get_trials(deepcopy=False)
    assert {t.state.name for t in past[-2:]} == {"RUNNING", "WAITING"}
    tried = [t.user_attrs.get("proposed", t.params) for t in past]
    for seed in range(3):
        proposals = propose(SPACE, past, capped, 16, seed)
        energies = energy_fn([SPACE.candidate(p) for p in proposals])
        assert len(proposals) == 16 and np.all(energies <= cap)
        assert not any(p in tried for p in proposals)
        assert len({tuple(sorted(p.items())) for p in proposals}) == len(proposals)


def test_returns_fewer_when_the_space_is_used_up():
    only_tile = {"widths": 64, "tile": {"choices": [32, 64, 128, 256]}}
    tiny = parse_space({"search": only_tile}, "tiny.yaml")
    study = _study()
    for params in propose(tiny, [], energy_fn, 3, 0):
        studies.enqueue(study, params)
        _evaluate(study, study.ask(), tiny)  # only the tile is searched: 4 points in all
    left = propose(tiny, study.get_trials(), energy_fn, 3, 0, startup=2)
    assert len(left) == 1 and left[0]["tile"] not in {t.params["tile"] for t in study.trials}


def test_gaussian_process_learns_a_smooth_function():
    rng = np.random.default_rng(0)

    def f(x):
        return np.sin(3.0 * x[:, 0]) + x[:, 1] ** 2 - 0.5 * x[:, 2] * x[:, 3]

    x_train, x_test = rng.random((80, 5)), rng.random((400, 5))
    gp = screening.GaussianProcess(x_train, f(x_train))
    mean, std = gp.predict(x_test)
    # 80 points in 5-D pin a function this smooth down to ~10 % of its spread (a constant: 100 %).
    rmse = np.sqrt(np.mean((mean - f(x_test)) ** 2))
    assert rmse < 0.15 * f(x_test).std()
    # The uncertainty is honest: errors are mostly within 3 standard deviations.
    assert np.mean(np.abs(mean - f(x_test)) < 3 * std + 1e-3) > 0.9


def _smooth(x):
    """Varies along the first two features only; the third is irrelevant."""
    return np.sin(4.0 * x[:, 0]) + x[:, 1] ** 2


def test_gaussian_process_fits_a_length_scale_per_feature():
    x = np.random.default_rng(0).random((30, 3))
    gp = screening.GaussianProcess(x, _smooth(x))
    relevant, irrelevant = gp.length_scales[:2], gp.length_scales[2]
    # ARD: the irrelevant feature's length-scale grows far past the axis (measured: 100, the
    # upper bound, against 2.0 and 5.0), so distances along it barely matter.
    assert irrelevant > 10 * relevant.max(), gp.length_scales
    # Where the data are, the process reproduces them (noise-free data: the fitted noise is
    # tiny) and is sure of it: errors and std under 1 % of the data's spread (measured ~1e-4).
    mean, std = gp.predict(x)
    spread = _smooth(x).std()
    assert np.abs(mean - _smooth(x)).max() < 0.01 * spread and std.max() < 0.01 * spread


def test_believing_keeps_the_hyperparameters_and_pins_the_believed_points():
    rng = np.random.default_rng(1)
    x, new = rng.random((30, 3)), 1.0 + 0.5 * rng.random((3, 3))  # new: outside the data
    gp = screening.GaussianProcess(x, _smooth(x))
    before = gp.predict(new)
    believed = gp.believe(new, _smooth(new))
    assert believed.kernel.get_params() == gp.kernel.get_params()
    assert believed.noise == gp.noise and len(believed.x) == 33 and len(gp.x) == 30
    mean, std = believed.predict(new)
    # Believed points are (nearly) known: their std shrinks from the unobserved one, and the
    # mean moves onto the believed value. The process it came from is unchanged.
    assert np.all(std < 0.1 * before[1]), (std, before[1])
    np.testing.assert_allclose(mean, _smooth(new), atol=0.01 * _smooth(x).std())
    np.testing.assert_array_equal(gp.predict(new)[0], before[0])


def test_gaussian_process_fit_is_deterministic():
    x = np.random.default_rng(2).random((20, 4))
    y = _smooth(x) + 0.05 * np.random.default_rng(3).standard_normal(20)  # noisy: restarts matter
    points = np.random.default_rng(4).random((50, 4))
    first, second = screening.GaussianProcess(x, y), screening.GaussianProcess(x, y)
    np.testing.assert_array_equal(first.predict(points), second.predict(points))


def test_expected_improvement_matches_monte_carlo():
    rng = np.random.default_rng(1)
    front_log_e, front_acc = np.array([-9.0, -8.5, -8.0]), np.array([0.6, 0.8, 0.9])
    ref_log_e, min_accuracy = -7.0, 0.5
    log_e = np.array([-9.5, -8.7, -8.2, -7.5, -6.5])
    mean, std = np.array([0.55, 0.7, 0.95, 0.85, 0.99]), np.array([0.1, 0.2, 0.05, 0.1, 0.1])
    closed = screening.expected_hv_improvement(
        log_e, mean, std, front_log_e, front_acc, ref_log_e, min_accuracy
    )
    front = [(10**x, y) for x, y in zip(front_log_e, front_acc, strict=True)]
    base = pareto.hypervolume(front, 10**ref_log_e)
    samples = mean + std * rng.standard_normal((4000, len(mean)))
    gains = np.array(
        [
            [
                pareto.hypervolume(front + [(10**x, y)] * bool(y >= min_accuracy), 10**ref_log_e)
                - base
                for x, y in zip(log_e, row, strict=True)
            ]
            for row in samples
        ]
    )
    # Within 4 Monte Carlo standard errors (and exactly 0 above the reference energy).
    tolerance = 4 * gains.std(0) / math.sqrt(len(samples)) + 1e-9
    assert np.all(np.abs(closed - gains.mean(0)) < tolerance)
    assert closed[-1] == 0.0


def test_reaches_a_higher_hypervolume_than_random_search():
    seeds, n = range(4), 40
    ours = np.mean([_hypervolume(_search(s, n, screen=True), n) for s in seeds])
    rand = np.mean([_hypervolume(_search(s, 2 * n, screen=False), 2 * n) for s in seeds])
    # The project's goal in miniature: with n trials, beat random search given twice as many, by
    # a clear margin (measured: 2.20 against 1.60, 2.12 with the former hand-written GP;
    # seed-to-seed spread of the means ~0.03).
    assert ours > rand + 0.2, (ours, rand)


def test_propose_takes_under_30_ms_per_candidate(trials):
    """A guard against pathological slowness, not a benchmark (bench_search measures overhead):
    the scikit-learn GP costs about 50-80 ms per batch of 8 on an idle 2-core machine, and CPU
    time itself inflates several-fold when the cores are oversubscribed."""
    propose(SPACE, trials, energy_fn, 8, 0)  # warm up
    times = []
    for seed in range(3):
        start = time.process_time()  # this process's CPU time: fairer on a loaded machine
        propose(SPACE, trials, energy_fn, 8, seed)
        times.append(time.process_time() - start)
    assert min(times) / 8 < 0.030, times


def test_budget_energies_match_the_evaluator():
    space = parse_space(
        {
            "model": {"widths": [32, 32]},
            "search": {**SEARCH, "widths": {"low": 8, "high": 32, "step": 8, "per_layer": True}},
            "budgets": {"max_tiles": 3},
        },
        "energy.yaml",
    )
    evaluator = space.evaluator()
    cands = [space.candidate(p) for p in space.sample_params(np.random.default_rng(0), 40)]
    expected = [
        r.energy_j if r.tiles <= 3 and r.empty_layers == 0 else np.inf
        for r in evaluator.estimate(cands)
    ]
    got = evaluator.budget_energies(cands, chunk=16)  # 3 chunks, 1 padded
    assert np.isinf(expected).any() and np.isfinite(expected).any()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_feature_columns_are_the_features_of_each_value():
    """The surrogate's inputs made column-wise (a choice table, one array op per range) equal
    the per-value definition on every kind of dimension, tiles outside the table included."""
    space = parse_space(
        {
            "model": {"widths": [128, 128]},
            "search": {
                **SEARCH,
                "tile": {"choices": [32, "64x16", 128]},
                "adc_bits": {"choices": [4, 6, 8]},
            },
        },
        "features.yaml",
    )
    rng = np.random.default_rng(3)
    for name, dim in space.param_dims().items():
        values = dim.sample(rng, 50)
        if dim.is_tile:
            values += ["32x32", "128x128"]  # spelled otherwise, or not a choice
        expected = [dim.features(v) for v in values]
        np.testing.assert_allclose(dim.feature_columns(values), expected, err_msg=name)


@pytest.mark.slow
def test_compare_gp_quick_mode_reports_both_variants(tmp_path, capsys):
    """The side-by-side GP benchmark, one seed and 10 trials of digits_mlp (~45 s)."""
    bench = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"
    spec = importlib.util.spec_from_file_location("compare_gp", bench / "compare_gp.py")
    compare_gp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_gp)
    result = compare_gp.main(["--quick", "--out", str(tmp_path / "gp.json")])
    assert json.loads((tmp_path / "gp.json").read_text()) == result
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["seeds"] == [0] and result["trials"] == 10 and result["git_sha"]
    assert result["mode"] == "quick" and result["machine"]["cpu_count"] >= 1
    assert set(result["versions"]) >= {"numpy", "scipy", "scikit-learn"}
    assert set(result["variants"]) == {"hand-written", "scikit-learn"}
    for variant in result["variants"].values():
        hv = variant["hv_mean"]["10"]
        assert math.isfinite(hv) and hv > result["empty_front_hv"], result
        assert variant["hv_sd"] == {"10": 0.0} and variant["gp_batches"] == 1
        assert variant["gp_ms_per_batch"] > 0
    assert screening.GaussianProcess is compare_gp.VARIANTS["scikit-learn"]  # patch undone
