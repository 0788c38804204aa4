"""Datasets: shapes, determinism, class selection, the transfer split, caching, error messages."""

import os

import numpy as np
import pytest

from codesign.data import datasets as data
from codesign.data.datasets import DataError, load_dataset, transfer_split


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A private MNIST-1D cache, generated once for this module."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODESIGN_CACHE", str(path))
        load_dataset("mnist1d")
        yield path


def _rows(x):
    """The examples of x as a set of byte strings, to compare splits irrespective of order."""
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _user_data(n_per_class=20, labels=(10, 20, 30), features=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(labels), n_per_class)
    x = rng.normal(3.0, 5.0, (len(y), features)) + y[:, None]
    return x, y


def test_digits_are_8x8_images_in_unit_range():
    d = load_dataset("digits")
    assert d.input_shape == (8, 8, 1) and d.num_classes == 10 and d.name == "digits"
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 1797
    assert abs(len(d.x_test) / 1797 - 0.15) < 0.01


def test_mnist1d_keeps_the_papers_test_set_and_is_cached(cache_dir, monkeypatch):
    """4000 training signals (train + val) and the package's 1000 test signals, read from disk."""
    monkeypatch.setenv("CODESIGN_CACHE", str(cache_dir))
    files = os.listdir(cache_dir)
    assert len(files) == 1 and files[0].startswith("mnist1d-") and files[0].endswith(".npz")

    def no_generation(args):
        raise AssertionError("regenerated although the cache holds the data")

    monkeypatch.setattr(data, "_generate_mnist1d", no_generation)
    d = load_dataset("mnist1d")
    assert d.input_shape == (40, 1) and d.num_classes == 10
    assert len(d.x_train) + len(d.x_val) == 4000 and len(d.x_test) == 1000
    assert abs(float(d.x_train.mean())) < 0.05 and abs(float(d.x_train.std()) - 1.0) < 0.05


def test_corrupt_mnist1d_cache_is_regenerated(cache_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("CODESIGN_CACHE", str(tmp_path))
    (name,) = os.listdir(cache_dir)
    (tmp_path / name).write_bytes(b"truncated")
    fresh = load_dataset("mnist1d")
    monkeypatch.setenv("CODESIGN_CACHE", str(cache_dir))
    np.testing.assert_array_equal(fresh.x_test, load_dataset("mnist1d").x_test)
    assert os.listdir(tmp_path) == [name]  # rewritten in place, no temporary file left behind
    assert (tmp_path / name).stat().st_size > 1000


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    for split in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, split), getattr(b, split))
    assert _rows(a.x_test) != _rows(c.x_test)


def test_every_split_holds_every_class():
    d = load_dataset("digits", seed=3)
    for y in (d.y_train, d.y_val, d.y_test):
        assert set(np.unique(y)) == set(range(10))


def test_classes_are_relabelled_in_the_given_order():
    """classes=(7, 3): digit 7 becomes label 0, digit 3 label 1, each keeping its split."""
    full = load_dataset("digits", seed=0)
    picked = load_dataset("digits", seed=0, classes=(7, 3))
    assert picked.num_classes == 2
    for split in ("train", "val", "test"):
        x_full, y_full = getattr(full, f"x_{split}"), getattr(full, f"y_{split}")
        x, y = getattr(picked, f"x_{split}"), getattr(picked, f"y_{split}")
        assert _rows(x[y == 0]) == _rows(x_full[y_full == 7])
        assert _rows(x[y == 1]) == _rows(x_full[y_full == 3])


def test_transfer_split_cuts_disjoint_tasks():
    task = transfer_split("digits", seed=2)
    full = load_dataset("digits", seed=2)
    assert task.source.num_classes == task.target.num_classes == 5
    assert not _rows(task.source.x_train) & _rows(task.target.x_train)
    # Together the two tasks are the whole dataset, with unchanged test membership.
    assert _rows(task.source.x_test) | _rows(task.target.x_test) == _rows(full.x_test)
    source_digits = full.y_test[np.isin(full.y_test, [0, 1, 2, 3, 4])]
    np.testing.assert_array_equal(np.bincount(task.source.y_test), np.bincount(source_digits))


def test_transfer_split_rejects_overlapping_classes():
    with pytest.raises(DataError, match=r"digits: source and target .* both hold \[4\]"):
        transfer_split("digits", source_classes=(0, 1, 4), target_classes=(4, 5))


def test_user_npz_is_split_by_class_and_standardised(tmp_path):
    x, y = _user_data(n_per_class=40)
    path = _write_npz(tmp_path / "mine.npz", x=x, y=y)
    d = load_dataset(path, seed=5)
    assert d.name == path and d.input_shape == (5,) and d.num_classes == 3
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (84, 18, 18)  # 0.7/0.15/0.15 of 120
    np.testing.assert_allclose(d.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(d.x_train.std(axis=0), 1.0, atol=1e-5)
    # Labels 10, 20, 30 become 0, 1, 2; classes=(30, 10) makes 30 -> 0 and 10 -> 1.
    assert set(d.y_test) == {0, 1, 2}
    picked = load_dataset(path, seed=5, classes=(30, 10))
    assert picked.x_train[picked.y_train == 0].mean() > picked.x_train[picked.y_train == 1].mean()


def _npz(filename, **arrays):
    """A case maker writing x, y of _user_data, replaced or (if None) dropped by `arrays`."""

    def make(tmp_path):
        x, y = _user_data()
        written = {k: v for k, v in {"x": x, "y": y, **arrays}.items() if v is not None}
        return _write_npz(tmp_path / filename, **written), None

    return make


def _folder(tmp_path):
    (tmp_path / "folder.npz").mkdir()
    return str(tmp_path / "folder.npz"), None


def _text(tmp_path):
    (tmp_path / "notes.npz").write_text("not an archive")
    return str(tmp_path / "notes.npz"), None


X, Y = _user_data()
ERROR_CASES = {  # case: (make(tmp_path) -> (name, classes), substrings of the one-line message)
    "unknown name": (
        lambda _: ("mnist", None),
        ["mnist: unknown dataset", "'digits', 'mnist1d'", "did you mean 'mnist1d'"],
    ),
    "typo": (lambda _: ("digts", None), ["did you mean 'digits'"]),
    "missing file": (
        lambda p: (str(p / "absent.npz"), None),
        ["absent.npz: file not found"],
    ),
    "not a zip": (_text, ["notes.npz: not a valid .npz file"]),
    "folder": (_folder, ["folder.npz: is a folder"]),
    "missing key": (
        _npz("keys.npz", y=None, labels=Y),
        ["keys.npz: missing array(s) y", "it holds labels, x"],
    ),
    "lengths": (_npz("lengths.npz", y=Y[:-1]), ["lengths.npz: x has 60 examples but y has 59"]),
    "float labels": (_npz("float.npz", y=Y.astype(float)), ["float.npz: y must be integer"]),
    "object array": (
        _npz("objects.npz", x=np.array([None] * 60)),
        ["objects.npz: not a valid .npz file"],
    ),
    "one class": (
        _npz("oneclass.npz", y=np.zeros_like(Y)),
        ["oneclass.npz: needs at least 2 classes"],
    ),
    "one class kept": (
        lambda _: ("digits", (3,)),
        ["digits: classes=(3,) keeps fewer than 2 classes"],
    ),
    "class twice": (lambda _: ("digits", (3, 3)), ["lists a class twice"]),
    "unknown class": (
        lambda _: ("digits", (0, 12)),
        ["digits: class(es) [12] not in the data", "valid classes: 0, 1, 2"],
    ),
    "too few": (
        _npz("small.npz", y=np.r_[np.full(38, 10), 20, 20, np.full(20, 30)]),
        ["small.npz: class 20 has 2 example(s), too few", "needs at least 3"],
    ),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_each_failure_is_one_line_naming_the_file_and_cause(case, tmp_path):
    make, expected = ERROR_CASES[case]
    name, classes = make(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset(name, classes=classes)
    message = str(info.value)
    assert "\n" not in message, message
    for part in expected:
        assert part in message, (part, message)
    assert isinstance(info.value, ValueError)  # and a CodesignError, which the CLI prints
