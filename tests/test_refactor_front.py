"""A seeded search gives the same trials and front as the recorded fixture, and resuming it
changes nothing.

`tests/fixtures/seeded_fronts.json` was written by `python tests/fixtures/make_front_fixture.py`;
its `made_at_commit` says where. A refactor must reproduce it exactly (params, energies to float
rounding, accuracies); a deliberate change of results regenerates it in the same commit.
"""

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent / "fixtures"))
import make_front_fixture  # noqa: E402

FIXTURE = json.loads((pathlib.Path(__file__).parent / "fixtures/seeded_fronts.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("sampler", make_front_fixture.SAMPLERS)
def test_seeded_search_reproduces_recorded_front(sampler, tmp_path, tmp_path_factory):
    assert FIXTURE["space"] == make_front_fixture.SPACE
    cache = tmp_path_factory.getbasetemp() / "front-cache"
    got = make_front_fixture.run(sampler, tmp_path / "run", cache)
    want = FIXTURE["runs"][sampler]
    assert len(got["trials"]) == len(want["trials"])
    for g, w in zip(got["trials"], want["trials"], strict=True):
        assert (g["number"], g["state"], g["params"]) == (w["number"], w["state"], w["params"])
        assert g["energy_j"] == pytest.approx(w["energy_j"], rel=1e-9)
        assert g["accuracy"] == pytest.approx(w["accuracy"], abs=1e-6)
    assert got["front"] == want["front"]
    # Resuming the finished study changes nothing: no trial added, asked again or altered.
    assert make_front_fixture.run(sampler, tmp_path / "run", cache) == got
