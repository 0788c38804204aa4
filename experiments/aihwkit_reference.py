"""IBM aihwkit's accuracy of stored weights under analog settings: the reference for
experiments/validate_analog_model.py, which compares codesign's simulation with it.

This script runs only where aihwkit is installed; it never imports codesign (or JAX) and never
runs in CI. The result it writes, experiments/results/aihwkit_reference.json, is committed.

Steps, on Python 3.11 and a CPU (PyPI has no aihwkit wheel for 3.11; it builds from its source
package in about 20 minutes on 2 cores):

    sudo apt-get install -y libopenblas-dev cmake
    python3.11 -m venv /work/aihwkit-venv && export PATH=/work/aihwkit-venv/bin:$PATH
    pip install torch numpy scipy scikit-build pybind11 cmake ninja setuptools wheel
    USE_CUDA=OFF pip install --no-build-isolation aihwkit==1.2.0
    # the weights: written by codesign (any Python with codesign installed)
    python experiments/validate_analog_model.py --export
    /work/aihwkit-venv/bin/python experiments/aihwkit_reference.py

Each setting builds the stored MLP from `AnalogLinear` layers with an `InferenceRPUConfig` set to
codesign's conventions (`codesign.hardware.analog`'s docstring): per-tile abs-max input scaling
(NoiseManagementType.ABS_MAX, no bound management), per-tile column-wise weight scaling
(mapping.weight_scaling_omega = 1, columnwise), ``max_input_size`` rows per tile, symmetric
b-bit converters (inp_res = out_res = 1 / (2**b - 2)), output noise and bound, digital biases,
and nothing else (no IR drop, input noise or non-linearity). The device:

* ``sram``: a fixed per-chip mismatch (codesign's sram model) written as an aihwkit noise model,
  `FixedMismatch`: N(0, prog_noise) on every non-zero weight of the tile (weights normalised to
  the column's abs-max), drawn when the weights are programmed; no drift.
* ``pcm``: aihwkit's own PCMLikeNoiseModel (g_max 25 uS) with GlobalDriftCompensation and the
  PCM_READ weight noise (w_noise = read_noise) of its StandardHWATrainingPreset, read with
  ``drift_analog_weights(t)`` after ``program_analog_weights()``.
* ``none``: converters and output noise only.

Each seed programs the chip anew (torch.manual_seed(seed)); accuracy is on the stored test set.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
import time

import numpy as np
import torch
from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
from aihwkit.inference.noise.base import BaseNoiseModel
from aihwkit.nn import AnalogLinear, AnalogSequential
from aihwkit.simulator.configs import (
    BoundManagementType,
    InferenceRPUConfig,
    NoiseManagementType,
    WeightNoiseType,
)

HERE = pathlib.Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("_results", HERE / "_results.py")
_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_results)

YEAR = 365.0 * 86400.0


def settings() -> list[dict]:
    """The settings compared: converters alone, the sram mismatch at 1x, 4x, 8x and 16x
    codesign's default, and pcm from right after programming to a year later; 4- and 8-bit
    ADCs; tiles of 32 rows (2-4 tiles per layer) and 128 (one)."""
    out = []
    base = {"dac_bits": 8, "out_noise": 0.04, "prog_noise": 0.0, "read_noise": 0.0, "time_s": 0.0}
    for adc in (4, 8):
        out.append({**base, "device": "none", "adc_bits": adc, "tile_rows": 32})
    devices = [{"device": "sram", "prog_noise": p} for p in (0.0175, 0.07, 0.14, 0.28)]
    devices += [
        {"device": "pcm", "read_noise": 0.0175, "time_s": t} for t in (0.0, 3600.0, 86400.0, YEAR)
    ]
    for device in devices:
        for adc in (4, 8):
            for tile in (32, 128):
                out.append({**base, **device, "adc_bits": adc, "tile_rows": tile})
    for s in out:
        s["out_bound"] = 10.0 if s["adc_bits"] >= 8 else 4.0
        s["name"] = (
            f"{s['device']} adc{s['adc_bits']} tile{s['tile_rows']}"
            + (f" prog{s['prog_noise']:g}" if s["device"] == "sram" else "")
            + (f" t={s['time_s']:g}s" if s["device"] == "pcm" else "")
        )
    return out


class FixedMismatch(BaseNoiseModel):
    """codesign's sram device in aihwkit: N(0, std) on every non-zero normalised weight, drawn
    when programmed; nothing changes after."""

    def __init__(self, std: float):
        super().__init__()
        self.std = std

    @torch.no_grad()
    def apply_programming_noise(self, weights):
        noisy = weights + self.std * torch.randn_like(weights) * (weights != 0)
        return noisy, [None]

    @torch.no_grad()
    def apply_drift_noise(self, weights, drift_noise_parameters, t_inference):
        return weights

    def apply_programming_noise_to_conductance(self, g_target):  # not used
        return g_target

    def apply_drift_noise_to_conductance(self, g_prog, drift_noise_param, t_inference):
        return g_prog

    def generate_drift_coefficients(self, g_target):
        return None


def rpu_config(s: dict) -> InferenceRPUConfig:
    cfg = InferenceRPUConfig()
    cfg.mapping.max_input_size = s["tile_rows"]
    cfg.mapping.max_output_size = 0
    cfg.mapping.weight_scaling_omega = 1.0
    cfg.mapping.weight_scaling_columnwise = True
    cfg.mapping.digital_bias = True
    f = cfg.forward
    f.inp_res = 1.0 / (2 ** s["dac_bits"] - 2)
    f.out_res = 1.0 / (2 ** s["adc_bits"] - 2)
    f.inp_bound = 1.0
    f.out_bound = s["out_bound"]
    f.out_noise = s["out_noise"]
    f.noise_management = NoiseManagementType.ABS_MAX
    f.bound_management = BoundManagementType.NONE
    f.w_noise = s["read_noise"]
    f.w_noise_type = WeightNoiseType.PCM_READ if s["read_noise"] else WeightNoiseType.NONE
    f.ir_drop = 0.0
    f.inp_noise = 0.0
    if s["device"] == "pcm":
        cfg.noise_model = PCMLikeNoiseModel(g_max=25.0)
        cfg.drift_compensation = GlobalDriftCompensation()
    else:
        cfg.noise_model = FixedMismatch(s["prog_noise"])
        cfg.drift_compensation = None
    return cfg


def network(weights: dict, s: dict) -> AnalogSequential:
    layers = []
    n = len([k for k in weights if k.startswith("w")])
    for i in range(n):
        w, b = weights[f"w{i}"], weights[f"b{i}"]  # w: [in, out], codesign's layout
        layer = AnalogLinear(w.shape[0], w.shape[1], bias=True, rpu_config=rpu_config(s))
        layer.set_weights(torch.tensor(w.T.copy()), torch.tensor(b.copy()))
        layers.append(layer)
        if i < n - 1:
            layers.append(torch.nn.ReLU())
    model = AnalogSequential(*layers)
    model.eval()
    return model


def accuracy(model, x, y, s: dict, seed: int) -> float:
    torch.manual_seed(seed)
    with torch.no_grad():
        if s["device"] != "none":
            model.program_analog_weights()
            if s["device"] == "pcm":
                model.drift_analog_weights(s["time_s"])
        logits = model(x)
    return float((logits.argmax(-1) == y).float().mean())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--weights", default=str(_results.RESULTS / "analog_reference_weights.npz"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    stamped = _results.stamp("full")
    data = dict(np.load(args.weights))
    x = torch.tensor(data.pop("x_test"))
    y = torch.tensor(data.pop("y_test")).long()
    weights = {k: v for k, v in data.items() if k[0] in "wb"}
    torch.set_num_threads(2)
    rows = []
    for s in settings():
        start = time.time()
        model = network(weights, s)
        acc = [accuracy(model, x, y, s, seed) for seed in range(args.seeds)]
        rows.append(
            {**s, "accuracies": acc, "mean": float(np.mean(acc)), "std": float(np.std(acc))}
        )
        print(
            f"{s['name']:<40} {100 * np.mean(acc):6.2f} +- {100 * np.std(acc):4.2f}  "
            f"({time.time() - start:.1f} s)",
            flush=True,
        )
    result = {
        **_results.finish(stamped),
        "simulator": "aihwkit",
        "seeds": args.seeds,
        "weights": pathlib.Path(args.weights).name,
        "settings": rows,
    }
    directory = _results.out_dir(args.out, False, "aihwkit_reference")
    _results.write(result, directory, "aihwkit_reference")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
