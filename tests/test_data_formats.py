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
from PIL import Image

from codesign import data
from codesign.data import DataError, load_dataset


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test may download, and each sees an empty private cache."""
    monkeypatch.setenv("CODESIGN_OFFLINE", "1")
    monkeypatch.setenv("CODESIGN_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_network)


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
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(blob))
    spec = data.STANDARD_DATASETS["cifar10"]
    good = data._File(spec.files[0].name, spec.files[0].url, hashlib.md5(blob).hexdigest())
    monkeypatch.setitem(data.STANDARD_DATASETS, "cifar10", data._Standard(
        "cifar", (good,), spec.page, spec.folder))  # fmt: skip
    d = load_dataset("cifar10", data_dir=tmp_path / "dl")
    assert d.num_classes == 10
    assert os.listdir(tmp_path / "dl" / "cifar10") == ["cifar-10-python.tar.gz"]

    monkeypatch.setitem(data.STANDARD_DATASETS, "cifar10", spec)  # the real MD5: a mismatch
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
