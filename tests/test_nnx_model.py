"""Your own Flax NNX model: discovered layers and width groups, one compile per population size,
and a trained design that a plain instance of the module reproduces."""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx

from codesign.errors import CodesignError
from codesign.nn import networks, nnx_model
from codesign.search.space import parse_space


class ResidualNet(nnx.Module):
    """A user's 1-D residual CNN: a stem, one residual block, a strided conv, a flattening head."""

    def __init__(self, channels: int = 6, hidden: int = 4, classes: int = 5, *, rngs: nnx.Rngs):
        self.stem = nnx.Conv(1, channels, (3,), rngs=rngs)
        self.inner = nnx.Conv(channels, hidden, (3,), rngs=rngs)
        self.outer = nnx.Conv(hidden, channels, (3,), rngs=rngs)
        self.down = nnx.Conv(channels, 8, (3,), strides=2, rngs=rngs)
        self.head = nnx.Linear(8 * 20, classes, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.stem(x))
        h = nnx.relu(h + self.outer(nnx.relu(self.inner(h))))  # the residual add
        h = nnx.relu(self.down(h))
        return self.head(h.reshape(h.shape[0], -1))  # NWC flatten: position-major features


class NoLayers(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.scale = nnx.Param(jnp.ones(()))

    def __call__(self, x):
        return x * self.scale


class NormNet(nnx.Module):
    """A user's CNN with BatchNorm and Dropout: layers with state that codesign runs in inference
    mode (statistics as built, Dropout off)."""

    def __init__(self, channels: int = 8, classes: int = 5, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, channels, (3,), rngs=rngs)
        self.norm = nnx.BatchNorm(channels, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.head = nnx.Linear(channels * 40, classes, rngs=rngs)

    def __call__(self, x):
        h = self.drop(nnx.relu(self.norm(self.conv(x))))
        return self.head(h.reshape(h.shape[0], -1))


MODULE = f"{__name__}:ResidualNet"


def test_layers_shapes_and_groups_come_from_one_trace():
    """Hand-computed: K = c_in * kernel, N, positions; the residual add ties the stem and the
    block's second conv into one width group; the head reads 20 positions of 8 channels."""
    net = nnx_model.trace_module(ResidualNet, {}, (40, 1))
    got = [
        (layer.name, layer.in_units * layer.kernel_area, layer.out_units, layer.positions, groups)
        for layer, groups in zip(net.layers, net.groups, strict=True)
    ]
    assert got == [
        ("stem", 1 * 3, 6, 40, (-1, 0)),
        ("inner", 6 * 3, 4, 40, (0, 1)),
        ("outer", 4 * 3, 6, 40, (1, 0)),  # writes the stem's stream
        ("down", 6 * 3, 8, 20, (0, 2)),  # 'SAME' padding, stride 2: 40 -> 20 positions
        ("head", 8 * 20, 5, 1, (2, -1)),
    ]
    assert net.widths == (6, 4, 8)
    assert net.layers[-1].position_major  # rows reordered unit-major inside codesign

    spec = networks.NetworkSpec("module", (40, 1), 5, net.widths, network=net)
    shapes = networks.layer_shapes(spec)
    assert [(s.rows, s.out_units, s.positions, s.source) for s in shapes] == [
        (3, 6, 40, -1),
        (18, 4, 40, 0),
        (12, 6, 40, 1),
        (18, 8, 20, 0),
        (160, 5, 1, 3),
    ]


def test_user_groups_join_widths():
    """Layers the trace cannot tie (no add between them) are tied where the user says so."""
    net = nnx_model.trace_module(ResidualNet, {"hidden": 6}, (40, 1), groups=(("inner", "stem"),))
    assert net.widths == (6, 8)
    assert net.groups[1] == (0, 0)
    with pytest.raises(CodesignError, match="model.groups: no layer 'nope'"):
        nnx_model.trace_module(ResidualNet, {}, (40, 1), groups=(("nope", "stem"),))


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 50)
    x = rng.normal(size=(10, 40, 1))[y] + 0.7 * rng.normal(size=(len(y), 40, 1))
    path = tmp_path_factory.mktemp("data") / "signals.npz"
    np.savez(path, x=x.astype(np.float32), y=y)
    return path


def _space(npz, tmp_path, **model):
    raw = {
        "task": {"dataset": str(npz)},
        "model": {"module": MODULE, **model},
        "pretrain": {"steps": 40, "batch_size": 32},
        "finetune": {"steps": 30, "batch_size": 32, "eval_draws": 1},
        "search": {
            "widths": {"low": 2, "high": 8, "per_layer": True},
            "sparsity": {"low": 0.0, "high": 0.5, "step": 0.25},
            "granularity": {"choices": ["unstructured", "block", "row"]},
            "tile": {"choices": [16, 32]},
            "analog_fraction": {"choices": [0.0, 0.5, 1.0]},
        },
        "trials": 6,
        "batch": 3,
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return parse_space(raw, str(path))


def test_search_one_compile_then_plain_flax_reproduces_the_design(npz, tmp_path):
    """A handful of candidates in two populations of one size: one compiled program. The design
    trained longer, written into a plain instance of the module, scores its digital accuracy."""
    space = _space(npz, tmp_path)
    assert space.problem.model.num_layers == 5 and space.problem.model.widths == (6, 4, 8)
    evaluator = space.evaluator(cache_dir=tmp_path / "bases")
    rng = np.random.default_rng(0)
    cands = [space.candidate(p) for p in space.sample_params(rng, 6)]
    first = evaluator.evaluate(cands[:3], seeds=[0, 1, 2])
    second = evaluator.evaluate(cands[3:], seeds=[3, 4, 5])
    assert evaluator.engine.traces == 3  # one population size: its init, train, score programs
    assert all(r.ok and r.energy_j > 0 for r in first + second)

    cand = cands[0]
    result, params, masks = evaluator.train(cand, seed=7)
    module = evaluator.engine.spec.network.to_module(params)
    assert isinstance(module, ResidualNet)  # plain Flax: no codesign code runs below
    target = evaluator.task.target
    logits = module(jnp.asarray(target.x_test))
    accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == target.y_test))
    assert accuracy == pytest.approx(result.digital_test_accuracy, abs=1.5 / len(target.y_test))
    assert result.digital_test_accuracy > 0.4  # 5 classes: well above chance (0.2)


def test_a_module_with_batchnorm_and_dropout_searches_in_inference_mode(npz, tmp_path):
    """BatchNorm and Dropout keep state that training mode would update inside codesign's traced
    programs; in inference mode both are pure, so the module traces, fine-tunes and scores, and
    two scorings of one candidate agree (no Dropout draw)."""
    space = _space(npz, tmp_path, module=f"{__name__}:NormNet")
    assert space.problem.model.num_layers == 2
    evaluator = space.evaluator(cache_dir=tmp_path / "bases")
    cands = [space.candidate(p) for p in space.sample_params(np.random.default_rng(1), 2)]
    first = evaluator.evaluate(cands, seeds=[0, 1])
    assert all(r.ok for r in first)
    assert [r.to_attrs() for r in evaluator.evaluate(cands, seeds=[0, 1])] == [
        r.to_attrs() for r in first
    ]


@pytest.mark.parametrize(
    "source, says",
    [
        ("raise RuntimeError('no GPU here')", "RuntimeError: no GPU here"),
        ("def broken(:\n    pass", "SyntaxError"),
        ("import numpy\nnumpy.zeros(-1)", "ValueError"),
    ],
)
def test_a_module_whose_import_fails_is_one_line(source, says, npz, tmp_path, monkeypatch):
    (tmp_path / "user_model.py").write_text(source + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CodesignError, match="model.module: cannot import 'user_model:Net'") as err:
        _space(npz, tmp_path, module="user_model:Net")
    assert says in str(err.value) and "\n" not in str(err.value)


def test_module_errors_are_one_line(npz, tmp_path):
    with pytest.raises(CodesignError, match=r"model\.module: cannot import 'nowhere\.at_all:Net'"):
        _space(npz, tmp_path, module="nowhere.at_all:Net")
    with pytest.raises(CodesignError, match="has no nnx.Linear or nnx.Conv layer") as err:
        _space(npz, tmp_path, module=f"{__name__}:NoLayers")
    assert "\n" not in str(err.value) and str(tmp_path / "space.yaml") in str(err.value)
    with pytest.raises(CodesignError, match=r"model\.widths: a module's widths are its own"):
        _space(npz, tmp_path, widths=[4, 4, 4])
    assert pathlib.Path(npz).is_file()
