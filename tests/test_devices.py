"""A population over every local device (`codesign.engine.core.Placement`), checked with two forced
host devices in a subprocess (the device count is fixed when JAX starts)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    cache = tmp_path_factory.mktemp("devices")
    out = subprocess.run(
        [sys.executable, "-m", "tests.devices_check", str(cache)],
        env=env, capture_output=True, text=True, timeout=1200, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_population_is_split_across_both_devices(found):
    assert found["devices"] == 2
    for how in ("sequential", "vmap"):
        calls = found[how]["calls"]  # each device trains half of the six candidates
        assert sorted(calls) == [["cpu:0", 3], ["cpu:1", 3]], calls


def test_the_space_is_traced_once_on_two_devices(found):
    # init, train and score: traced once each, whatever the device count.
    assert found["sequential"]["traces"] == found["vmap"]["traces"] == 3


def test_results_on_two_devices_are_bit_identical_to_one_device(found):
    # One candidate at a time (`population_map: sequential`): a candidate's numbers depend on
    # nothing else, so two devices give exactly the one-device run of the whole population,
    # also through early stopping (rungs, stops, survivors repacked).
    assert found["sequential"]["differs_from_one_device"] == []
    assert found["sequential"]["early_stop_differs"] == []
    assert found["sequential"]["early_stopped"] >= 1
    # Vmapped, each device runs the one-device program of its three candidates, bit for bit; a
    # vmapped program of six rounds differently from one of three (as it does on one device).
    assert found["vmap"]["differs_from_one_device_per_slice"] == []


def test_pretraining_splits_each_batch_over_both_devices(found):
    # Data-parallel: one program partitioned by XLA, each device a half batch, the gradients
    # summed across devices; the same network as one device up to the order of the sums.
    for name, case in found["pretraining"].items():
        assert case["sums_gradients_across_devices"], name
        assert case["each_device_a_half_batch"], name
        assert case["repeatable"], name
        assert case["losses_fall"], name
        assert case["loss_max_abs_difference"] < 1e-4, (name, case)
        assert case["weights_max_relative_difference"] < 1e-4, (name, case)


def test_pretraining_uses_the_most_devices_that_split_its_batch_evenly():
    from codesign.engine.core import data_parallel

    devices = ["d0", "d1", "d2", "d3"]
    assert data_parallel(64, devices) == devices
    assert data_parallel(66, devices) == devices[:3]  # 66 = 3 x 22, not 4 x 16.5
    assert data_parallel(62, devices) == devices[:2]
    assert data_parallel(7, devices) == devices[:1]
    assert data_parallel(64, devices[:1]) == devices[:1]
