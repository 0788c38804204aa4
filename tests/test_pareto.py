"""`pareto.hypervolume` and `pareto.front` against values computed by hand."""

import csv
import dataclasses
import io
import math

import optuna
import pytest

from codesign.search import pareto
from codesign.search import study as studies
from codesign.search.evaluate import Result
from codesign.search.problem import Budgets, Problem


def test_hypervolume_of_a_staircase_by_hand():
    # Reference 1 J and accuracy 0. Points at 1e-3 J (0.6), 1e-2 J (0.8), 1e-1 J (0.9):
    # strips in log10 energy of 1 decade each: 0.6 + 0.8 + 0.9.
    points = [(1e-3, 0.6), (1e-2, 0.8), (1e-1, 0.9)]
    assert pareto.hypervolume(points, 1.0) == pytest.approx(2.3)
    # Reference accuracy 0.5 removes a 3-decade x 0.5 strip.
    assert pareto.hypervolume(points, 1.0, 0.5) == pytest.approx(2.3 - 1.5)
    # Order does not matter; a dominated point (more energy, less accuracy) adds nothing.
    assert pareto.hypervolume([*reversed(points), (1e-1, 0.7)], 1.0) == pytest.approx(2.3)


def test_hypervolume_ignores_points_outside_the_reference_box():
    assert pareto.hypervolume([], 1.0) == 0.0
    assert pareto.hypervolume([(2.0, 0.9)], 1.0) == 0.0  # more energy than the reference
    assert pareto.hypervolume([(1e-2, 0.4)], 1.0, 0.5) == 0.0  # below the accuracy floor
    assert pareto.hypervolume([(0.0, 0.9)], 1.0) == 0.0  # zero energy: a degenerate design
    # Half a decade: log10(1 / 10**-0.5) = 0.5.
    assert pareto.hypervolume([(10**-0.5, 0.8)], 1.0, 0.2) == pytest.approx(0.5 * 0.6)


def _result(energy_j, accuracy, test_accuracy=None):
    return Result(
        energy_j=energy_j,
        latency_s=1e-6,
        tiles=1,
        tops_per_w=1.0,
        energy_layers_j={},
        accuracy=accuracy,
        test_accuracy=test_accuracy,
    )


def _study(results, problem=None):
    problem = problem or Problem()
    study = optuna.create_study(directions=problem.directions)
    for result in results:
        studies.tell(study, study.ask(), problem, result)
    return study


def test_front_is_the_feasible_nondominated_set_sorted_by_energy():
    results = [
        _result(3e-9, 0.90),  # 0: front
        _result(1e-9, 0.80),  # 1: front (cheapest)
        _result(2e-9, 0.70),  # 2: dominated by 1
        _result(3e-9, 0.90),  # 3: a tie with 0: kept, as in Optuna's best_trials
        _result(5e-9, 0.95),  # 4: front
        _result(4e-9, 0.85),  # 5: dominated by 0
        # 6: a layer left without a weight computes a constant: never on the front
        dataclasses.replace(_result(1e-10, 0.99), empty_layers=1),
    ]
    study = _study(results)
    front = pareto.front(study)
    assert [t.number for t in front] == [1, 0, 3, 4]
    assert sorted(t.number for t in study.best_trials) == [0, 1, 3, 4]


def test_front_drops_untrained_and_over_budget_trials():
    problem = Problem(budgets=Budgets(max_energy_j=4e-9, min_accuracy=0.75))
    results = [
        _result(1e-9, None),  # 0: never trained (over a budget before training)
        _result(2e-9, 0.70),  # 1: below the accuracy budget
        _result(3e-9, 0.80),  # 2: front
        _result(5e-9, 0.99),  # 3: over the energy budget
    ]
    front = pareto.front(_study(results, problem))
    assert [t.number for t in front] == [2]


def test_report_hypervolume_matches_the_hand_value(tmp_path):
    study = _study([_result(1e-9, 0.8), _result(1e-8, 0.9)])
    study.set_user_attr("baseline", {"label": "dense all-digital", "energy_j": 1e-7})
    text, baseline = pareto.report(study)
    # Two decades: 1 x 0.8 + 1 x 0.9.
    expected = 1.7
    assert baseline.energy_j == 1e-7 and baseline.label == "dense all-digital"
    assert f"{expected:.4g}" in text.splitlines()[-1]
    rows = pareto.front_rows(study)
    assert math.isclose(
        pareto.hypervolume([(r["energy_j"], r["accuracy"]) for r in rows], 1e-7), expected
    )


def test_table_and_csv_cells_are_plain_and_show_every_layer():
    from codesign.search.problem import Candidate

    def with_widths(widths, energy_j):
        cand = Candidate(
            widths=widths,
            sparsity=(0.5, 0.5, 0.0),
            granularity=("block",) * 3,
            analog_fraction=(0.5,) * 3,
            tile=(32, 16),
            adc_bits=6,
        )
        result = _result(energy_j, 0.9 if widths[1] > 8 else 0.8)
        return dataclasses.replace(result, candidate=cand, layer_widths=(*widths, 10))

    study = _study([with_widths((8, 8), 1e-9), with_widths((8, 16), 2e-9)])
    table, _ = pareto.report(study)
    cells = [line.split() for line in table.splitlines()[1:3]]
    for row, widths in zip(cells, ("8/8/10", "8/16/10"), strict=True):
        assert row[-6:] == [widths, "0.5/0.5/0", "block/block/block", "32x16", "0.5/0.5/0.5", "6"]
    rows = list(csv.DictReader(io.StringIO(pareto.report(study, "csv")[0])))
    assert [r["widths"] for r in rows] == ["8/8/10", "8/16/10"] and rows[0]["tile"] == "32x16"
    assert not any("(" in v or "[" in v for r in rows for v in r.values())


@pytest.mark.parametrize(
    ("family", "dataset", "widths"), [("mlp", "digits", (24, 12)), ("cnn", "mnist1d", (8, 6, 4))]
)
def test_every_per_layer_column_has_a_value_per_weight_layer(family, dataset, widths):
    """Widths, sparsity, granularity and analog split each show one value per weight layer, the
    head last (issue 21: the table showed two widths beside three sparsities): widths as the kept
    output units the estimate priced, the head's the target task's classes."""
    from codesign.search.evaluate import Evaluator
    from codesign.search.problem import Candidate, Model, Task

    problem = Problem(task=Task(dataset=dataset), model=Model(family=family, widths=widths))
    evaluator = Evaluator(problem, min_tile_rows=16)
    layers = len(evaluator.shapes)
    cand = Candidate(
        widths=tuple(w // 2 for w in widths),
        sparsity=(0.5,) * layers,
        granularity=("row",) * layers,
        analog_fraction=(1.0,) * layers,
        tile=(32, 32),
        adc_bits=6,
    )
    (estimate,) = evaluator.estimate([cand])
    expected = (*(w // 2 for w in widths), evaluator.target_spec.num_classes)
    assert estimate.layer_widths == expected
    trained = dataclasses.replace(estimate, accuracy=0.9, test_accuracy=0.9)
    study = _study([trained], problem)
    table, csv_text = pareto.report(study)[0], pareto.report(study, "csv")[0]
    for cells in (
        dict(zip(pareto.TABLE_COLUMNS, table.splitlines()[1].split(), strict=True)),
        next(csv.DictReader(io.StringIO(csv_text))),
    ):
        per_layer = [cells[key].split("/") for key in ("widths", "sparsity", "granularity")]
        assert [len(v) for v in per_layer] == [layers] * 3, cells
        assert per_layer[0] == [str(w) for w in expected]
