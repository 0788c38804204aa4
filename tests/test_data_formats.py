"""Standard dataset formats (CIFAR pickles, IDX, image folders), their errors, few-shot targets and
the by_examples split. Every file here is tiny and synthetic, written in the real format; nothing
is ever downloaded (CODESIGN_OFFLINE is set and urlopen is replaced where a download is tested)."""

import gzip
import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import yaml
from PIL import Image

from codesign.cli import main
from codesign.data import formats
from codesign.data.datasets import DataError, few_shot, load_dataset, transfer_split
from codesign.errors import CodesignError
from codesign.search.space import parse_space


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test may download, and each sees an empty private cache."""
    monkeypatch.setenv("CODESIGN_OFFLINE", "1")
    monkeypatch.setenv("CODESIGN_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(formats.urllib.request, "urlopen", no_network)


# --- writers of the real formats ---


def _image(label: int, index: int) -> np.ndarray:
    """A 32x32x3 uint8 image whose pixels encode its label, row, column and channel."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([(rows * 7 + cols + 50 * ch + label + index) % 256 for ch in range(3)], -1)


def _cifar_batch(labels, key="labels", offset=0) -> bytes:
    """A pickled CIFAR batch: rows of R, G, B planes (1024 bytes each) as the archive holds."""
    images = np.stack([_image(c, offset + i) for i, c in enumerate(labels)]).astype(np.uint8)
    rows = images.transpose(0, 3, 1, 2).reshape(len(labels), 3072)
    batch = {b"batch_label": b"synthetic", key.encode(): list(labels), b"data": rows}
    return pickle.dumps(batch, protocol=2)


def _cifar_members(classes=10, per_class=2, hundred=False) -> dict[str, bytes]:
    labels = [c for c in range(classes) for _ in range(per_class)]
    if hundred:
        return {
            "cifar-100-python/train": _cifar_batch(labels * 5, "fine_labels"),
            "cifar-100-python/test": _cifar_batch(labels, "fine_labels", offset=1000),
            "cifar-100-python/meta": pickle.dumps({b"fine_label_names": []}),
        }
    members = {f"cifar-10-batches-py/data_batch_{i}": _cifar_batch(labels, offset=100 * i)
               for i in range(1, 6)}  # fmt: skip
    members["cifar-10-batches-py/test_batch"] = _cifar_batch(labels, offset=1000)
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": []})
    return members


def _write_tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def _write_folder(root, members: dict[str, bytes]):
    for name, blob in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)
    return root / next(iter(members)).split("/")[0]


def _idx(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x000008NN, big-endian dimensions, then the data."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write_idx(folder, n_train=30, n_test=10, shape=(6, 5), gz=True):
    """The four MNIST files; labels cycle over 3 classes; pixel = 10 * label + row."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 3
        x = 10 * y[:, None, None] + np.arange(shape[0])[None, :, None] + np.zeros(shape, int)
        for kind, array, ndim in (("images", x, 3), ("labels", y, 1)):
            name = f"{prefix}-{kind}-idx{ndim}-ubyte"
            blob = _idx(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)
    return folder


def _write_images(root, classes=("cat", "dog"), per_class=10, size=(6, 4), mode="L"):
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            value = 20 * label + i
            pixels = np.full((size[1], size[0], 3 if mode == "RGB" else 1), value, np.uint8)
            if mode == "RGB":
                pixels[..., 2] = 200  # blue everywhere: the colour must survive
            Image.fromarray(pixels.squeeze(), mode).save(root / name / f"{i:03d}.png")
    (root / "README.txt").write_text("loose files beside the class folders are ignored")
    return root


def _rows(x):
    return {row.tobytes() for row in x.reshape(len(x), -1)}


# --- the formats load ---


def test_cifar10_archive_and_its_folder_load_the_same_images(tmp_path):
    """RGB planes become [32, 32, 3] in [0, 1]; the official test batch stays the test set."""
    members = _cifar_members()
    archive = load_dataset(_write_tar(tmp_path / "cifar-10-python.tar.gz", members), seed=1)
    folder = load_dataset(_write_folder(tmp_path / "x", members), seed=1)
    assert archive.input_shape == (32, 32, 3) and archive.num_classes == 10
    assert len(archive.x_train) + len(archive.x_val) == 100 and len(archive.x_test) == 20
    assert len(archive.x_val) == 10  # OFFICIAL_VAL_FRACTION of each class's 10 training images
    for split in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(archive, split), getattr(folder, split))
    # Every test image is one _image of its label, pixel for pixel (channel order, row-major).
    expected = {(_image(c, 1000 + i) / np.float32(255)).astype(np.float32).tobytes()
                for i, c in enumerate(c for c in range(10) for _ in range(2))}  # fmt: skip
    assert _rows(archive.x_test) == expected


def test_cifar100_uses_the_fine_labels(tmp_path):
    members = _cifar_members(classes=4, per_class=3, hundred=True)
    d = load_dataset(_write_tar(tmp_path / "cifar-100-python.tar.gz", members))
    assert d.num_classes == 4 and d.input_shape == (32, 32, 3) and len(d.y_test) == 12


def test_standard_names_are_found_in_data_dir_or_the_cache(tmp_path, monkeypatch):
    """task.data_dir, then $CODESIGN_CACHE/datasets/<name>, and torchvision's MNIST/raw layout."""
    mine = tmp_path / "mine"
    mine.mkdir()
    _write_tar(mine / "cifar-10-python.tar.gz", _cifar_members())
    assert load_dataset("cifar10", data_dir=mine).num_classes == 10
    cache = tmp_path / "cache" / "datasets"
    _write_folder(cache / "cifar100", _cifar_members(classes=3, per_class=2, hundred=True))
    assert load_dataset("cifar100").num_classes == 3
    _write_idx(tmp_path / "tv" / "MNIST" / "raw")
    assert load_dataset("mnist28", data_dir=tmp_path / "tv").input_shape == (6, 5, 1)
    _write_idx(cache / "fashion_mnist", gz=False)
    assert load_dataset("fashion_mnist").num_classes == 3


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_load_gzipped_or_not(tmp_path, gz):
    d = load_dataset(str(_write_idx(tmp_path / "idx", gz=gz)), seed=0)
    assert d.input_shape == (6, 5, 1) and d.num_classes == 3
    assert len(d.x_train) + len(d.x_val) == 30 and len(d.x_test) == 10
    # pixel = 10 * label + row, scaled by 1/255: rows and labels survive the reshape
    rows = np.arange(6, dtype=np.float32)[:, None, None]
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        want = (10 * y[:, None, None, None] + rows[None] + np.zeros((1, 6, 5, 1))) / 255
        np.testing.assert_allclose(x, want, rtol=1e-6)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_image_folder_is_one_class_per_sub_folder(tmp_path, mode):
    """Classes in sorted folder order; grey images keep one channel, colour ones three."""
    root = _write_images(tmp_path / "pets", classes=("dog", "cat", "owl"), mode=mode)
    d = load_dataset(str(root), seed=0)
    assert d.input_shape == (4, 6, 1 if mode == "L" else 3) and d.num_classes == 3
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (18, 6, 6)  # 0.7/0.15/0.15 of 10
    # Written as dog (values 0..9), cat (20..29), owl (40..49); sorted: cat 0, dog 1, owl 2.
    for label, base in enumerate((20, 0, 40)):
        values = np.round(d.x_train[d.y_train == label][..., 0] * 255)
        assert values.min() >= base and values.max() <= base + 9, (label, values)
    if mode == "RGB":
        np.testing.assert_allclose(d.x_train[..., 2], 200 / 255, rtol=1e-6)


def test_absent_dataset_says_in_one_line_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path / "data")
    message = str(info.value)
    assert "\n" not in message
    for part in (
        f"cifar10: cifar-10-python.tar.gz not found in {tmp_path / 'data' / 'cifar10'}",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5 c58f30108f718f92721af3b95e74349a",
        "or set task.data_dir",
        "CODESIGN_OFFLINE",
    ):
        assert part in message, (part, message)


def test_download_is_checked_against_the_published_md5(tmp_path, monkeypatch):
    """A served file with the right MD5 is kept and loaded; a wrong one is refused, none kept."""
    monkeypatch.delenv("CODESIGN_OFFLINE")
    blob = _write_tar(tmp_path / "served.tar.gz", _cifar_members()).read_bytes()
    monkeypatch.setattr(formats.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(blob))
    spec = formats.STANDARD_DATASETS["cifar10"]
    good = formats._File(spec.files[0].name, spec.files[0].url, hashlib.md5(blob).hexdigest())
    monkeypatch.setitem(formats.STANDARD_DATASETS, "cifar10", formats._Standard(
        "cifar", (good,), spec.page, spec.folder))  # fmt: skip
    d = load_dataset("cifar10", data_dir=tmp_path / "dl")
    assert d.num_classes == 10
    assert os.listdir(tmp_path / "dl" / "cifar10") == ["cifar-10-python.tar.gz"]

    monkeypatch.setitem(formats.STANDARD_DATASETS, "cifar10", spec)  # the real MD5: a mismatch
    with pytest.raises(DataError, match="the published one is c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", data_dir=tmp_path / "bad")
    assert os.listdir(tmp_path / "bad" / "cifar10") == []


# --- bad input: one line naming the file ---


def _truncated_archive(tmp_path):
    path = _write_tar(tmp_path / "cut.tar.gz", _cifar_members())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _garbage_archive(tmp_path):
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    return tmp_path / "junk.tar.gz"


def _bad_pickle(tmp_path):
    members = _cifar_members()
    members["cifar-10-batches-py/data_batch_3"] = b"\x80\x02}q\x00(garbage"
    return _write_tar(tmp_path / "badpickle.tar.gz", members)


def _code_in_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    members = _cifar_members()
    members["cifar-10-batches-py/test_batch"] = pickle.dumps({b"data": Evil()})
    return _write_tar(tmp_path / "evil.tar.gz", members)


def _missing_batch(tmp_path):
    members = _cifar_members()
    del members["cifar-10-batches-py/data_batch_5"]
    return _write_tar(tmp_path / "four.tar.gz", members)


def _wrong_magic(tmp_path):
    folder = _write_idx(tmp_path / "idx")
    (folder / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x08\x01" + bytes(40))
    )
    return folder


def _truncated_idx(tmp_path):
    folder = _write_idx(tmp_path / "idx", gz=False)
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    return folder


def _one_class(tmp_path):
    return _write_images(tmp_path / "imgs", classes=("cat",))


def _two_sizes(tmp_path):
    root = _write_images(tmp_path / "imgs")
    Image.new("L", (9, 9)).save(root / "dog" / "big.png")
    return root


def _not_an_image(tmp_path):
    root = _write_images(tmp_path / "imgs")
    (root / "cat" / "broken.png").write_bytes(b"not a png")
    return root


BAD = {  # case: (make(tmp_path) -> path, the file the message names, what it says)
    "path absent": (lambda p: p / "nowhere", "nowhere", "no such file or folder"),
    "truncated archive": (_truncated_archive, "cut.tar.gz", "truncated or corrupted CIFAR archive"),
    "corrupted archive": (_garbage_archive, "junk.tar.gz", "truncated or corrupted CIFAR archive"),
    "corrupted batch": (_bad_pickle, "badpickle.tar.gz", "corrupted CIFAR batch data_batch_3"),
    "code in a batch": (_code_in_pickle, "evil.tar.gz", "refusing to load posix.system"),
    "missing batch": (
        _missing_batch,
        "four.tar.gz",
        "truncated CIFAR archive: missing data_batch_5",
    ),
    "wrong magic": (
        _wrong_magic,
        "train-images-idx3-ubyte.gz",
        "wrong magic number 0x00000801, expected 0x00000803",
    ),
    "truncated idx": (_truncated_idx, "t10k-images-idx3-ubyte", "truncated or padded IDX file"),
    "one class": (_one_class, "imgs", "at least 2 classes, it has 1 (cat)"),
    "two sizes": (_two_sizes, "big.png", "image is 9x9 but"),
    "not an image": (_not_an_image, "broken.png", "not a readable image"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_naming_the_file(case, tmp_path):
    make, file, says = BAD[case]
    with pytest.raises(DataError) as info:
        load_dataset(str(make(tmp_path)))
    message = str(info.value)
    assert "\n" not in message and file in message and says in message, message


def _space_file(tmp_path, task: dict, **top) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"task": task, "trials": 2, **top}))
    return str(path)


BAD_SEARCH = {  # a bad dataset stops `codesign search` with exit 2 before it writes anything
    "path absent": lambda p: str(p / "absent.tar.gz"),
    "truncated archive": lambda p: str(_truncated_archive(p)),
    "wrong magic": lambda p: str(_wrong_magic(p)),
    "one class": lambda p: str(_one_class(p)),
    "absent standard dataset": lambda p: "kmnist",
}


@pytest.mark.parametrize("case", BAD_SEARCH)
def test_cli_search_on_bad_data_exits_2_and_writes_nothing(case, tmp_path, capsys):
    dataset = BAD_SEARCH[case](tmp_path)
    space = _space_file(tmp_path, {"dataset": dataset})
    assert main(["search", space, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("codesign: error: "), err
    assert not (tmp_path / "run").exists()


# --- few-shot targets and the by_examples split ---


def test_few_shot_target_keeps_n_per_class_and_whole_val_and_test():
    full = transfer_split("digits", seed=4)
    few = transfer_split("digits", seed=4, target_examples_per_class=3)
    assert np.bincount(few.target.y_train).tolist() == [3] * 5
    assert _rows(few.target.x_train) <= _rows(full.target.x_train)
    for split in ("x_val", "y_val", "x_test", "y_test"):  # honest: the same held-out examples
        np.testing.assert_array_equal(getattr(few.target, split), getattr(full.target, split))
    np.testing.assert_array_equal(few.source.x_train, full.source.x_train)  # source untouched
    again = transfer_split("digits", seed=4, target_examples_per_class=3)
    np.testing.assert_array_equal(again.target.x_train, few.target.x_train)
    other = transfer_split("digits", seed=5, target_examples_per_class=3)
    assert _rows(other.target.x_train) != _rows(few.target.x_train)


def test_few_shot_asking_for_more_than_there_is_names_the_key():
    with pytest.raises(DataError, match=r"digits: task.target_examples_per_class=500 but target"):
        transfer_split("digits", target_examples_per_class=500)


def _npz(tmp_path, name, loader):
    x, y = loader(return_X_y=True)
    path = tmp_path / f"{name}.npz"
    np.savez(path, x=x, y=y)
    return str(path)


def test_by_examples_shares_classes_and_halves_the_training_examples(tmp_path):
    from sklearn.datasets import load_wine

    path = _npz(tmp_path, "wine", load_wine)
    task = transfer_split(path, source_classes=None, target_classes=None, split="by_examples")
    whole = load_dataset(path)
    assert task.source.num_classes == task.target.num_classes == 3
    src, tgt = _rows(task.source.x_train), _rows(task.target.x_train)
    assert not src & tgt and src | tgt == _rows(whole.x_train)
    assert abs(len(src) - len(tgt)) <= 3  # half of each class, give or take one
    for split in ("x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(task.source, split), getattr(whole, split))
        np.testing.assert_array_equal(getattr(task.target, split), getattr(whole, split))
    assert set(task.source.y_train) == set(task.target.y_train) == {0, 1, 2}
    picked = transfer_split(path, source_classes=None, target_classes=(2, 0), split="by_examples")
    assert picked.source.num_classes == picked.target.num_classes == 2


def _wine(tmp_path):
    from sklearn.datasets import load_wine

    return _npz(tmp_path, "wine", load_wine)


CLASS_ERRORS = {  # kwargs of transfer_split on wine (3 classes): what the one line says
    "defaults": (
        {},
        "wine.npz: task.source_classes: class(es) [3, 4] not in the data; valid classes: 0, 1, "
        "2; with 3 classes use task.split: by_examples",
    ),
    "target side": (
        {"source_classes": (0, 1)},
        "wine.npz: task.target_classes: class(es) [5, 6, 7, 8, 9] not in the data; valid "
        "classes: 0, 1, 2; with 3 classes use task.split: by_examples",
    ),
    "one source class": (
        {"source_classes": (0,), "target_classes": (1, 2)},
        "wine.npz: task.source_classes: classes=(0,) keeps fewer than 2 classes; with 3 classes "
        "use task.split: by_examples",
    ),
    "overlap": (
        {"source_classes": (0, 1), "target_classes": (1, 2)},
        "both hold [1]; for tasks that share their classes use task.split: by_examples",
    ),
    "by_examples, two lists": (
        {"source_classes": (0, 1), "target_classes": (1, 2), "split": "by_examples"},
        "task.source_classes: with task.split: by_examples source and target share their classes",
    ),
    "by_examples, unknown class": (  # already by_examples: no hint to use it
        {"source_classes": None, "target_classes": (0, 4), "split": "by_examples"},
        "wine.npz: task.target_classes: class(es) [4] not in the data; valid classes: 0, 1, 2\0",
    ),
}


@pytest.mark.parametrize("case", CLASS_ERRORS)
def test_class_errors_name_the_side_and_the_way_out(case, tmp_path):
    kwargs, says = CLASS_ERRORS[case]
    with pytest.raises(DataError) as info:
        transfer_split(_wine(tmp_path), **kwargs)
    message = str(info.value) + "\0"  # \0 marks where a message must end
    assert "\n" not in message and says in message, message


def test_space_task_keys_parse_into_the_task(tmp_path):
    wine = _wine(tmp_path)
    task = parse_space({"task": {"dataset": wine, "split": "by_examples"}}).problem.task
    assert (task.split, task.source_classes, task.target_classes) == ("by_examples", None, None)
    task = parse_space(
        {"task": {"dataset": "cifar10", "data_dir": "/data", "target_examples_per_class": 10}}
    ).problem.task
    assert task.data_dir == "/data" and task.target_examples_per_class == 10
    assert task.split == "by_class" and task.target_classes == (5, 6, 7, 8, 9)


BAD_TASKS = [
    (
        {"split": "by_exemples"},
        "task.split: unknown value 'by_exemples' (did you mean 'by_examples'?)",
    ),
    (
        {"split": "by_examples", "source_classes": [0, 1], "target_classes": [1, 2]},
        "task.source_classes: with task.split: by_examples source and target share their classes",
    ),
    ({"target_examples_per_class": 0}, "task.target_examples_per_class: must be an integer >= 1"),
    ({"data_dir": 3}, "task.data_dir: must be str, got 3"),
    ({"dataset": "cifar"}, "did you mean 'cifar10'"),
    ({"dataset": "pics/"}, "task.dataset: no such file or folder 'pics/'"),
]


@pytest.mark.parametrize(("task", "says"), BAD_TASKS)
def test_bad_task_keys_are_one_line(task, says):
    with pytest.raises(CodesignError) as info:
        parse_space({"task": task}, "s.yaml")
    assert str(info.value).startswith("s.yaml: ") and says in str(info.value), str(info.value)


@pytest.mark.slow  # ~15 s: pretraining and one compile of both runs
def test_claim_transfer_few_shot_mode(tmp_path, monkeypatch):
    """experiments/claim_transfer.py --examples-per-class: each seed trains on its own draw of N
    examples per target class; validation and test stay whole; its own JSON name."""
    import importlib.util
    import pathlib

    from tests.test_experiments_a import run_quick

    script = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "claim_transfer.py"
    spec = importlib.util.spec_from_file_location("claim_transfer", script)
    claim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(claim)
    full = transfer_split("digits").target
    name = "claim_transfer_few_shot"
    report = run_quick(claim.main, name, tmp_path, monkeypatch, ["--examples-per-class", "4"])
    assert report["claim"] == name and report["examples_per_class"] == 4
    assert report["train_examples"] == 20 and report["val_examples"] == len(full.y_val)
    # different draws and initialisations per seed: the seeds' test accuracies differ
    for method in report["methods"].values():
        assert len(set(method["final_test_accuracy_per_seed"])) == len(report["seeds"]) == 2
    draws = [few_shot(full, 4, s).x_train for s in report["seeds"]]
    assert not np.array_equal(draws[0], draws[1])


# --- acceptance: few-class datasets search, export and train end to end ---


@pytest.mark.slow  # 30-60 s each on 2 shared cores: the engine compiles for search and train
@pytest.mark.parametrize("dataset", ["breast_cancer", "wine"])
def test_few_class_dataset_searches_exports_and_trains(dataset, tmp_path):
    """scikit-learn's breast-cancer (2 classes) and wine (3), written as .npz by the test."""
    from sklearn import datasets

    from codesign import export_design, run_search, train_design

    path = _npz(tmp_path, dataset, getattr(datasets, f"load_{dataset}"))
    space = parse_space(
        {
            "task": {"dataset": path, "split": "by_examples"},
            "model": {"family": "mlp", "widths": [16, 16]},
            "pretrain": {"steps": 60, "batch_size": 32},
            "finetune": {"steps": 30, "batch_size": 32, "eval_draws": 1},
            "search": {"widths": {"low": 4, "high": 16, "step": 4}, "tile": 64},
            "sampler": {"name": "random"},
            "trials": 4,
            "batch": 4,
        },
        str(tmp_path / f"{dataset}.yaml"),
    )
    study = run_search(space, out_dir=tmp_path / "run")
    assert len(study.trials) == 4
    design = export_design(study, pick="accuracy>=0:max-accuracy")
    report = train_design(design, steps=30, out_dir=tmp_path / "trained")
    assert (tmp_path / "trained" / "weights.npz").is_file()
    classes = 2 if dataset == "breast_cancer" else 3
    # Both are easy tabular tasks: far above chance (1/classes) after a short fine-tune.
    assert report["test_accuracy_digital"] > 1.0 / classes + 0.2, report
