"""The residual CNN family: shapes the energy model reads, residual streams that stay consistent
when a candidate narrows or prunes them, and one compiled population program per search space."""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import yaml

from codesign import design
from codesign.cli import main
from codesign.data import datasets as data
from codesign.engine import finetune as transfer
from codesign.errors import CodesignError
from codesign.nn import networks, pruning
from codesign.search.evaluate import Candidate
from codesign.search.space import load_space, parse_space

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC_1D = networks.NetworkSpec("resnet", (40, 1), 5, (4, 6, 8), depth=8)
SPEC_2D = networks.NetworkSpec("resnet", (8, 8, 3), 5, (3, 4, 5), depth=14)
# Jitted once per spec: op-by-op dispatch compiles hundreds of tiny programs.
apply = jax.jit(networks.apply, static_argnums=0)


def _random_params(spec, seed=0):
    """Parameters with every weight nonzero (a fresh ResNet's second convs start at zero):
    N(0, 0.3) draws in the shapes `init_params` gives (NumPy: no program to compile)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: networks.init_params(spec, jax.random.PRNGKey(0)))
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.3, s.shape), s.dtype), shapes)


def test_resnet8_layer_shapes_match_hand_computed_ones():
    """K = c_in * kernel, N, positions of every conv, the shortcut projections and the head."""
    shapes = networks.layer_shapes(SPEC_1D)
    got = [(s.name, s.rows, s.out_units, s.positions, s.source) for s in shapes]
    assert got == [
        ("stem", 1 * 3, 4, 40, -1),
        ("stage0.block0.conv1", 4 * 3, 4, 40, 0),
        ("stage0.block0.conv2", 4 * 3, 4, 40, 0),
        ("stage1.block0.conv1", 4 * 3, 6, 20, 0),  # stride 2: 40 -> 20 positions
        ("stage1.block0.conv2", 6 * 3, 6, 20, 3),
        ("stage1.block0.shortcut", 4 * 1, 6, 20, 0),  # 1x1 projection, stride 2
        ("stage2.block0.conv1", 6 * 3, 8, 10, 3),
        ("stage2.block0.conv2", 8 * 3, 8, 10, 6),
        ("stage2.block0.shortcut", 6 * 1, 8, 10, 3),
        ("head", 8, 5, 1, 6),  # global average pool, then dense
    ]
    resnet20 = networks.layer_shapes(
        networks.NetworkSpec("resnet", (32, 32, 3), 10, (16, 32, 64), depth=20)
    )
    assert len(resnet20) == 22  # stem + 18 convs + 2 projections + head
    assert (resnet20[0].rows, resnet20[0].positions) == (27, 1024)
    assert (resnet20[-2].rows, resnet20[-2].positions) == (64 * 9, 64)
    # 40.5 M MACs for ResNet-20 on CIFAR-10 (~41 M, He et al. 2016 quote 41 M FLOPs, i.e. MACs)
    assert sum(s.macs for s in resnet20) == pytest.approx(40.55e6, rel=0.01)


def _compact(spec, params, widths):
    """The physically smaller ResNet that a candidate of these group widths is, as export
    (`codesign.design`) writes it: removed units gone from every conv, projection and head."""
    ins, outs = networks.layer_widths(spec, np.asarray(widths))
    shapes = networks.layer_shapes(spec)
    masks = [
        pruning.kept_mask((s.rows, s.out_units), k * s.kernel_area, n)
        for s, k, n in zip(shapes, ins, outs, strict=True)
    ]
    params = [
        {"w": p["w"], "b": p["b"] * m.any(axis=0)} for p, m in zip(params, masks, strict=True)
    ]
    compact = design._compact(params, masks, spec, shapes)
    kept = [len(layer["kept_units"]) for layer in compact if layer["kept_units"] is not None]
    small = dataclasses.replace(spec, widths=tuple(widths))
    assert tuple(sorted(set(kept))) == tuple(sorted(set(widths)))
    return small, tuple({"w": layer["w"], "b": layer["b"]} for layer in compact)


@pytest.mark.parametrize("spec", [SPEC_1D, SPEC_2D], ids=["1d", "2d"])
def test_a_narrowed_resnet_is_the_smaller_resnet(spec):
    """Width masks on the maximum network compute exactly what the exported compact network
    computes: the residual adds keep every stream at its stage's width (nothing leaks past the
    mask), and export removes each stage's units from every layer that touches the stream."""
    params = networks.sort_units(spec, _random_params(spec))
    x = jax.random.normal(jax.random.PRNGKey(3), (4, *spec.input_shape))
    widths = tuple(n // 2 + g for g, n in enumerate(spec.widths))  # (2, 4, 6) and (1, 3, 4)
    masked = apply(spec, params, x, unit_masks=networks.width_masks(spec, widths))
    small, compact = _compact(spec, params, widths)
    np.testing.assert_allclose(apply(small, compact, x), masked, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spec", [SPEC_1D, SPEC_2D], ids=["1d", "2d"])
def test_sorting_a_resnet_keeps_its_function(spec):
    """Sorting permutes each stage's stream in every conv, projection and head that touches it."""
    params = _random_params(spec)
    x = jax.random.normal(jax.random.PRNGKey(4), (4, *spec.input_shape))
    sorted_params = networks.sort_units(spec, params)
    np.testing.assert_allclose(apply(spec, sorted_params, x), apply(spec, params, x), atol=1e-4)
    for importance in networks.unit_importance(spec, sorted_params):
        assert np.all(np.diff(np.asarray(importance)) <= 1e-6)


@pytest.fixture(scope="module")
def npz_1d(tmp_path_factory):
    """A synthetic MNIST-1D-shaped task: 10 classes of (40, 1) signals with a class template."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 60)
    templates = rng.normal(size=(10, 40, 1))
    x = templates[y] + 0.5 * rng.normal(size=(len(y), 40, 1))
    path = tmp_path_factory.mktemp("data") / "signals.npz"
    np.savez(path, x=x.astype(np.float32), y=y)
    return path


def _space(path, npz, pretrain=None, **model):
    return parse_space(_raw(path, npz, pretrain, **model), str(path))


def _raw(path, npz, pretrain=None, **model):
    raw = yaml.safe_load(pathlib.Path(path).read_text())
    raw["task"]["dataset"] = str(npz)
    raw["model"].update(model)
    if "widths" in model:
        raw["search"]["widths"] = {"low": 1, "high": max(model["widths"]), "per_layer": True}
    raw["pretrain"] = pretrain or {"steps": 30, "batch_size": 32}
    raw["finetune"] = {"steps": 6, "batch_size": 16, "eval_draws": 1}
    return raw


def test_mnist1d_resnet_space_loads():
    space = load_space(ROOT / "search_spaces" / "mnist1d_resnet.yaml")
    model = space.problem.model
    assert (model.family, model.depth, model.widths, model.num_layers) == (
        "resnet",
        8,
        (16, 32, 64),
        10,
    )
    params = space.sample_params(np.random.default_rng(0), 1)[0]
    cand = space.candidate({**params, "widths_0": 64, "widths_1": 24})
    assert cand.widths[:2] == (16, 24)  # a stage keeps at most its maximum width


def test_resnet_population_one_compile_and_block_pruning_saves_energy(npz_1d, tmp_path):
    """Candidates of different widths, pruning and tiles share one compiled program; block
    pruning of a narrowed ResNet frees whole analog tiles, so the trained design's energy (from
    its real masks) drops below the unpruned one's at the same widths."""
    space = _space(ROOT / "search_spaces" / "mnist1d_resnet.yaml", npz_1d, widths=[8, 16, 16])
    evaluator = space.evaluator(cache_dir=tmp_path)

    def cand(widths, sparsity, granularity, tile=32):
        n = space.problem.model.num_layers
        return Candidate(widths, (sparsity,) * n, (granularity,) * n, (1.0,) * n, (tile, tile), 6)

    cands = [
        cand((8, 16, 16), 0.0, "block"),
        cand((8, 16, 16), 0.5, "block"),
        cand((4, 8, 16), 0.3, "row", 64),
        cand((8, 12, 8), 0.5, "nm", 128),
    ]
    results = evaluator.evaluate(cands, seeds=[0, 1, 2, 3])
    assert evaluator.engine.traces == 3  # a population size's programs: init, train, score
    evaluator.evaluate(cands[::-1], seeds=[4, 5, 6, 7])
    assert evaluator.engine.traces == 3  # a second population of the same size: no recompile
    dense, pruned = results[0], results[1]
    assert all(r.ok for r in results)
    # Each result names the kept output units of every weight layer (shortcuts and head
    # included), one per sparsity value, so a front's per-layer columns line up.
    group_widths = np.asarray([c.widths for c in cands])
    kept = networks.layer_widths(evaluator.target_spec, group_widths)[1].tolist()
    assert [list(r.layer_widths) for r in results] == kept
    assert {len(r.layer_widths) for r in results} == {len(cands[0].sparsity)}
    assert pruned.energy_j < 0.9 * dense.energy_j
    estimated = evaluator.estimate(cands[:2])  # the statistics path agrees on the direction
    assert estimated[1].energy_j < estimated[0].energy_j

    # Residual shapes stay consistent: every mask is zero outside its groups' kept units, on the
    # rows (inputs) and the columns (outputs) of every layer.
    out = evaluator.engine.evaluate_population(
        evaluator.population(cands, [0, 1, 2, 3]), keep_params=True
    )
    assert evaluator.engine.traces == 3
    ins, outs = networks.layer_widths(evaluator.target_spec, np.asarray([c.widths for c in cands]))
    for i in range(len(cands)):
        for l, shape in enumerate(evaluator.shapes):
            mask = np.asarray(out.masks[l][i])
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            assert rows.max() < ins[i, l] * shape.kernel_area, shape.name
            assert cols.max() < outs[i, l], shape.name


@pytest.mark.slow
def test_cifar10_resnet20_space_runs_on_cifar_shaped_data(tmp_path):
    """The CIFAR-10 ResNet-20 space, on a synthetic (32, 32, 3) file: one candidate trains."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 12)
    x = rng.normal(size=(len(y), 32, 32, 3)).astype(np.float32) + y[:, None, None, None] / 5
    npz = tmp_path / "cifar_like.npz"
    np.savez(npz, x=x, y=y)
    space = _space(ROOT / "search_spaces" / "cifar10_resnet20.yaml", npz)
    space = dataclasses.replace(
        space,
        problem=dataclasses.replace(
            space.problem,
            pretrain=dataclasses.replace(space.problem.pretrain, steps=2, batch_size=4),
            finetune=dataclasses.replace(space.problem.finetune, steps=1, batch_size=4),
        ),
    )
    evaluator = space.evaluator(cache_dir=tmp_path)
    assert len(evaluator.shapes) == 22
    n = space.problem.model.num_layers
    c = Candidate((8, 16, 32), (0.5,) * n, ("block",) * n, (1.0,) * n, (64, 64), 6)
    (result,) = evaluator.evaluate([c], seeds=[0])
    assert result.ok and result.energy_j > 0


def test_resnet_space_errors_are_one_line():
    raw = {"model": {"family": "resnet", "depth": 9}}
    with pytest.raises(Exception, match=r"model\.depth: a resnet's depth is 6n \+ 2"):
        parse_space(raw, "s.yaml")
    with pytest.raises(Exception, match=r"model\.widths: a resnet has 3 stages"):
        parse_space({"model": {"family": "resnet", "widths": [8, 8]}}, "s.yaml")
    with pytest.raises(Exception, match=r"model\.depth: only a resnet"):
        parse_space({"model": {"family": "cnn", "depth": 8}}, "s.yaml")


def test_pretrained_resnet_base_is_cached_per_depth(npz_1d):
    """Two depths never share a cached base (depth is part of the key)."""
    task = data.transfer_split(str(npz_1d))
    config = transfer.PretrainConfig(steps=1)
    keys = {
        transfer.base_key(dataclasses.replace(SPEC_1D, depth=d), task.source, config)
        for d in (8, 14)
    }
    assert len(keys) == 2


def test_pretrained_checkpoint_replaces_pretraining(npz_1d, tmp_path, capsys):
    """`pretrain: {checkpoint}` loads your own base (here an .npz of codesign's [K, N] layers),
    sorts its units and pretrains nothing; a file whose shapes do not match is one line."""
    spec = networks.NetworkSpec("resnet", (40, 1), 5, (8, 16, 16), depth=8)
    params = _random_params(spec, seed=5)
    good = tmp_path / "base.npz"
    arrays = {f"layer{i}_{k}": np.asarray(p[k]) for i, p in enumerate(params) for k in "wb"}
    np.savez(good, **arrays)
    space_file = ROOT / "search_spaces" / "mnist1d_resnet.yaml"
    space = _space(space_file, npz_1d, {"checkpoint": str(good)}, widths=[8, 16, 16])
    evaluator = space.evaluator(cache_dir=tmp_path / "bases")
    engine = evaluator.engine
    assert engine.base_cached and not (tmp_path / "bases").exists()  # nothing pretrained
    expected = networks.sort_units(spec, params)[:-1]
    for got, want in zip(engine.base, expected, strict=True):
        np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)

    # An orbax checkpoint of the same layers (what `codesign train` writes) loads the same.
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "orbax", {"params": params, "masks": []})
    checkpointer.wait_until_finished()
    from_orbax = transfer.load_checkpoint(spec, tmp_path / "orbax")
    np.testing.assert_allclose(from_orbax[3]["w"], expected[3]["w"], rtol=1e-6)

    bad = tmp_path / "bad.npz"
    np.savez(bad, **{**arrays, "layer3_w": np.zeros((5, 16), np.float32)})
    raw = _raw(space_file, npz_1d, {"checkpoint": str(bad)}, widths=[8, 16, 16])
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(raw))
    # From the command line: one line naming the file, key and shapes; no study written.
    code = main(["search", str(tmp_path / "space.yaml"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"{tmp_path / 'space.yaml'}: pretrain.checkpoint: {bad}: layer3_w " in err
    assert "(stage1.block0.conv1) has shape (5, 16), the model needs (24, 16)" in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(CodesignError, match="pretrain.checkpoint: no such file"):
        _space(space_file, npz_1d, {"checkpoint": str(tmp_path / "none.npz")})
