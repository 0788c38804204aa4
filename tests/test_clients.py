"""Real Optuna clients agree with codesign about a study's front: `optuna best-trials` and
optuna-dashboard's API list exactly the trials `codesign pareto` does, infeasible ones excluded."""

import json
import pathlib
import subprocess
import sys
import wsgiref.util

import optuna
import pytest
import yaml

from codesign.search import loop as search
from codesign.search import pareto
from codesign.search import study as studies
from codesign.search.space import load_space
from tests.test_search import TINY

# A budget that some trained designs miss and a tile limit some designs break before training:
# both kinds must stay off every client's front.
SPACE = {**TINY, "trials": 10, "budgets": {"min_accuracy": 0.3, "max_tiles": 12}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clients")
    path = tmp / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    study = search.run_search(load_space(path), out_dir=tmp / "run", cache_dir=tmp / "cache")
    return tmp / "run" / studies.JOURNAL_NAME, study


def test_the_study_holds_feasible_and_infeasible_trials(run):
    _, study = run
    states = [t.state.name for t in study.trials]
    assert "COMPLETE" in states and "PRUNED" in states, states
    for t in study.trials:
        if t.state.name == "PRUNED":
            assert t.user_attrs["fail_reason"].startswith("infeasible: ")
            assert any(v > 0 for v in t.constraints.values())


def test_optuna_cli_best_trials_equal_codesign_front(run):
    journal, study = run
    out = subprocess.run(
        [pathlib.Path(sys.executable).parent / "optuna", "best-trials",
         "--study-name", study.study_name,
         "--storage", str(journal), "-f", "json"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    optuna_front = {row["number"] for row in json.loads(out.stdout)}
    assert optuna_front == {t.number for t in pareto.front(study)}
    assert optuna_front == {t.number for t in study.best_trials}


def test_optuna_dashboard_best_trials_equal_codesign_front(run):
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    journal, study = run
    app = optuna_dashboard.wsgi(optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))  # fmt: skip
    storage = studies.storage_for(str(journal), None)
    study_id = storage.get_study_id_from_name(study.study_name)
    environ = {"PATH_INFO": f"/api/studies/{study_id}", "REQUEST_METHOD": "GET"}
    wsgiref.util.setup_testing_defaults(environ)
    statuses = []
    body = b"".join(app(environ, lambda status, headers, *exc: statuses.append(status)))
    assert statuses[0].startswith("200"), statuses
    shown = json.loads(body)
    dashboard_front = {t["number"] for t in shown["best_trials"]}
    assert dashboard_front == {t.number for t in pareto.front(study)}
    assert dashboard_front, "a non-empty front"
    # Every told trial's constraint values are on the dashboard, in the order of their names.
    for row, trial in zip(shown["trials"], study.trials, strict=True):
        names = trial.user_attrs["constraint_names"]
        assert row["constraints"] == [trial.constraints[name] for name in names]
        assert "empty_layers" in names and len(names) >= 2  # a budget and empty layers
