"""Model families: layer shapes, the [K, N] weight convention, masks, permutations, vmap."""

import functools
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codesign.nn.model import Model
from codesign.nn.networks import (
    NetworkSpec,
    apply,
    default_spec,
    init_params,
    layer_input,
    layer_shapes,
    permute_units,
    sort_units,
    unit_importance,
    width_masks,
)
from codesign.search.space import parse_space

SMALL_SPECS = {
    "mlp": NetworkSpec("mlp", (12, 1), 3, widths=(7, 5)),
    "cnn1d": NetworkSpec("cnn", (12, 2), 3, (4, 5, 6), (3, 3, 2), (1, 2, 1), (1, 0, 1)),
    "cnn2d": NetworkSpec("cnn", (6, 5, 2), 3, (4, 3), (3, 2), (1, 2), (1, 0)),
}


# Jitted once per spec and input structure: op-by-op dispatch would compile every small op.
_apply = jax.jit(apply, static_argnums=0, static_argnames="matmul")
ONE_CONV = dict(widths=(3,), kernel_sizes=(3,), strides=(1,), paddings=(0,))
SPECS = {**SMALL_SPECS, "mnist1d_cnn": default_spec("cnn", (40, 1), 10)}


@functools.cache
def _params(name, seed=0):
    """Parameters of SPECS[name], made once: compiling the random draws costs about a second."""
    return init_params(SPECS[name], jax.random.key(seed))


def _normal(*shape, seed=1):
    """Test data from numpy: jax.random would compile afresh for every shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _inputs(spec, batch=4):
    return _normal(batch, *spec.input_shape)


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    """Implicit rank promotion hides shape bugs; the models must not rely on it."""
    with jax.numpy_rank_promotion("raise"):
        yield


def test_paper_cnn_layer_shapes_match_reference_code():
    """The MNIST-1D paper's CNN: 40 -> 19 -> 10 -> 5 positions, head reads 25 * 5 = 125 inputs."""
    spec = NetworkSpec("cnn", (40, 1), 10, (25, 25, 25), (5, 3, 3), (2, 2, 2), (1, 1, 1))
    shapes = layer_shapes(spec)
    assert [s.positions for s in shapes] == [19, 10, 5, 1]
    assert [(s.in_units, s.kernel_area, s.out_units) for s in shapes] == [
        (1, 5, 25),
        (25, 3, 25),
        (25, 3, 25),
        (25, 5, 10),
    ]
    assert shapes[-1].rows == 125  # linear_in=125 in greydanus/mnist1d notebooks/models.py
    assert sum(s.macs for s in shapes) == 19 * 5 * 25 + 10 * 75 * 25 + 5 * 75 * 25 + 125 * 10


def test_default_specs_for_both_datasets():
    """Defaults: MLP 128-128 on flattened inputs (the family's one default, also a space's and a
    `Model`'s), 1-D conv for MNIST-1D, 2-D conv for digits."""
    mlp = layer_shapes(default_spec("mlp", (8, 8, 1), 10))
    assert [(s.rows, s.out_units) for s in mlp] == [(64, 128), (128, 128), (128, 10)]
    assert Model().widths == parse_space({}, "s.yaml").problem.model.widths == (128, 128)
    cnn1d = layer_shapes(default_spec("cnn", (40, 1), 10))
    assert [s.kernel_area for s in cnn1d[:-1]] == [5, 3, 3]
    cnn2d = layer_shapes(default_spec("cnn", (8, 8, 1), 10))
    assert [s.kernel_area for s in cnn2d[:-1]] == [9, 9, 9]
    assert [s.positions for s in cnn2d] == [64, 16, 4, 1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(family="rnn", input_shape=(4, 1), num_classes=2, widths=(3,)), "family"),
        (dict(family="cnn", input_shape=(4, 1), num_classes=2, widths=(3,)), "kernel size"),
        (dict(family="cnn", input_shape=(8,), num_classes=2, **ONE_CONV), "input_shape"),
        (dict(family="cnn", input_shape=(2, 1), num_classes=2, **ONE_CONV), "no output positions"),
        (dict(family="mlp", input_shape=(4, 1), num_classes=1, widths=(3,)), "num_classes"),
        (dict(family="mlp", input_shape=(4, 1), num_classes=2, **ONE_CONV), "an mlp takes no"),
    ],
)
def test_invalid_specs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NetworkSpec(**kwargs)


@pytest.mark.parametrize("name", SMALL_SPECS)
def test_params_follow_layer_shapes(name):
    """Every layer stores w as the [K, N] hardware matrix and b as [N]."""
    spec = SMALL_SPECS[name]
    params = _params(name)
    shapes = layer_shapes(spec)
    assert [p["w"].shape for p in params] == [(s.rows, s.out_units) for s in shapes]
    assert [p["b"].shape for p in params] == [(s.out_units,) for s in shapes]
    assert _apply(spec, params, _inputs(spec)).shape == (4, spec.num_classes)


@pytest.mark.parametrize(
    "input_shape, kernel, stride, padding",
    [((11, 3), 4, 2, 1), ((11, 3), 3, 1, 0), ((7, 6, 3), 3, 1, 1), ((7, 6, 3), 2, 2, 0)],
)
def test_patches_rows_are_channel_major(input_shape, kernel, stride, padding):
    """patches @ W equals lax's conv when W's row index is c_in * kernel_area + kernel_offset."""
    c_in, c_out, dims = input_shape[-1], 5, len(input_shape) - 1
    spec = NetworkSpec("cnn", input_shape, 2, (c_out,), (kernel,), (stride,), (padding,))
    kernel_io = _normal(*(kernel,) * dims, c_in, c_out, seed=2)
    x = _normal(2, *input_shape, seed=3)
    matrix = np.moveaxis(kernel_io, -2, 0).reshape(-1, c_out)  # [c_in, k.., c_out] -> [K, N]
    got = layer_input(spec, 0, x) @ matrix
    dn = ("NWC", "WIO", "NWC") if dims == 1 else ("NHWC", "HWIO", "NHWC")
    expected = jax.lax.conv_general_dilated(
        x, kernel_io, (stride,) * dims, ((padding, padding),) * dims, dimension_numbers=dn
    )
    assert got.shape == (2 * layer_shapes(spec)[0].positions, c_out)
    np.testing.assert_allclose(got, expected.reshape(-1, c_out), rtol=1e-5, atol=1e-5)


def test_matmul_hook_sees_every_layer_as_patches_times_matrix():
    """A hardware model plugged in as `matmul` gets [B*P, K] @ [K, N] for each layer, in order."""
    spec = SMALL_SPECS["cnn2d"]
    params = _params("cnn2d")
    seen = []

    def recording_matmul(i, a, w):
        seen.append((i, a.shape, w.shape))
        return 2.0 * (a @ w) if i == len(params) - 1 else a @ w

    x = _inputs(spec, batch=3)
    logits = _apply(spec, params, x, matmul=recording_matmul)
    shapes = layer_shapes(spec)
    expected = [(i, (3 * s.positions, s.rows), (s.rows, s.out_units)) for i, s in enumerate(shapes)]
    assert seen == expected
    head_bias = params[-1]["b"][None, :]
    np.testing.assert_allclose(
        logits - head_bias, 2.0 * (_apply(spec, params, x) - head_bias), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", SMALL_SPECS)
def test_masked_unit_is_removed(name):
    """Masking unit j gives the same logits as deleting it: its incoming weights stop mattering."""
    spec = SMALL_SPECS[name]
    params = _params(name)
    x = _inputs(spec)
    masks = width_masks(spec, [n - 2 for n in spec.widths])  # drop the last two of each layer
    masked = _apply(spec, params, x, unit_masks=masks)
    # Changing the dropped units' incoming weights and biases changes nothing.
    scrambled = [dict(p) for p in params]
    for l, n in enumerate(spec.widths):
        scrambled[l]["w"] = scrambled[l]["w"].at[:, n - 2 :].set(9.0)
        scrambled[l]["b"] = scrambled[l]["b"].at[n - 2 :].set(9.0)
    np.testing.assert_allclose(_apply(spec, scrambled, x, unit_masks=masks), masked, atol=1e-5)
    assert not np.allclose(_apply(spec, params, x), masked, atol=1e-3)


def test_width_masks_keep_a_prefix():
    spec = SMALL_SPECS["mlp"]
    masks = width_masks(spec, (3, 5))
    np.testing.assert_array_equal(masks[0], [1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(masks[1], [1, 1, 1, 1, 1])


@pytest.mark.parametrize("name", SPECS)
def test_permuting_units_preserves_the_function(name):
    """Reordering hidden units (conv blocks, the flattened head included) changes no logit."""
    spec = SPECS[name]
    params = _params(name)
    x = _inputs(spec)
    rng = np.random.default_rng(0)
    orders = [rng.permutation(n) for n in spec.widths]
    permuted = permute_units(spec, params, orders)
    np.testing.assert_allclose(_apply(spec, permuted, x), _apply(spec, params, x), atol=1e-5)
    assert not np.allclose(permuted[0]["w"], params[0]["w"])
    # Importance travels with its unit.
    for before, after, order in zip(
        unit_importance(spec, params), unit_importance(spec, permuted), orders, strict=True
    ):
        np.testing.assert_allclose(after, before[order], rtol=1e-6)


def test_permute_units_rejects_a_non_permutation():
    spec = SMALL_SPECS["mlp"]
    params = _params("mlp")
    with pytest.raises(ValueError, match="not a permutation"):
        permute_units(spec, params, [np.array([0, 0, 1, 2, 3, 4, 5]), np.arange(5)])


@pytest.mark.parametrize("name", SMALL_SPECS)
def test_sort_units_puts_important_units_first(name):
    """After sorting, a width mask keeps the most important units; a dead unit sorts last."""
    spec = SMALL_SPECS[name]
    params = [dict(p) for p in _params(name)]
    params[0]["w"] = params[0]["w"].at[:, 1].set(0.0)  # unit 1 of hidden layer 0: no weights
    params[0]["b"] = params[0]["b"].at[1].set(0.0)
    shape = layer_shapes(spec)[1]
    rows = params[1]["w"].reshape(shape.in_units, shape.kernel_area, -1).at[1].set(0.0)
    params[1]["w"] = rows.reshape(shape.rows, -1)
    assert unit_importance(spec, params)[0][1] == 0.0
    ordered = sort_units(spec, params)
    for importance in unit_importance(spec, ordered):
        assert np.all(np.diff(np.asarray(importance)) <= 1e-7)
    assert unit_importance(spec, ordered)[0][-1] == 0.0
    np.testing.assert_allclose(
        _apply(spec, ordered, _inputs(spec)), _apply(spec, params, _inputs(spec)), atol=1e-5
    )


@pytest.mark.parametrize("name", SMALL_SPECS)
def test_vmap_over_params_and_masks_compiles_once(name):
    """A population of 3 candidates runs as one jitted vmap, equal to running each alone."""
    spec = SMALL_SPECS[name]
    widths = jnp.array([[min(c, n) for n in spec.widths] for c in (1, 2, 3)])
    traces = []

    @jax.jit
    def run(params, widths, x):
        traces.append(1)
        masks = jax.vmap(lambda w: width_masks(spec, tuple(w[i] for i in range(spec.num_hidden))))(
            widths
        )
        return jax.vmap(lambda p, m: apply(spec, p, x, unit_masks=m), in_axes=(0, 0))(params, masks)

    params = jax.tree.map(lambda *a: jnp.stack(a), *(_params(name, seed) for seed in range(3)))
    x = _inputs(spec)
    logits = run(params, widths, x)
    run(jax.tree.map(lambda a: a + 0.1, params), widths[::-1], x)
    assert len(traces) == 1
    assert logits.shape == (3, 4, spec.num_classes)
    for c in range(3):
        single = jax.tree.map(lambda a, c=c: a[c], params)
        masks = width_masks(spec, [int(w) for w in widths[c]])
        np.testing.assert_allclose(
            logits[c], _apply(spec, single, x, unit_masks=masks), rtol=1e-5, atol=1e-5
        )


def test_mnist1d_baselines_quick(capsys):
    """The CI baseline trains both paper models briefly, far above the 10% chance level."""
    path = pathlib.Path(__file__).parents[1] / "experiments" / "mnist1d_baselines.py"
    module_spec = importlib.util.spec_from_file_location("mnist1d_baselines", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    with jax.numpy_rank_promotion("allow"):
        summary = module.main(["--quick"])
    keys = {"bench", "mlp_test_acc", "cnn_test_acc", "paper_mlp", "paper_cnn", "mode"}
    assert keys <= summary.keys()
    assert summary["bench"] == "mnist1d_baselines" and summary["mode"] == "quick"
    # --quick (400 steps) reaches about 0.61 (MLP) and 0.85 (CNN) with seed 0.
    assert summary["mlp_test_acc"] > 0.45
    assert summary["cnn_test_acc"] > 0.65
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.startswith('{"bench": "mnist1d_baselines"')
