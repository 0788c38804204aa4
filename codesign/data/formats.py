"""Standard dataset files, read into `RawData`: CIFAR python archives, IDX (MNIST-format) files and
image folders; standard datasets found in a folder, or downloaded there and checked against the MD5
their publisher gives.

Every reader returns pixels as stored (uint8) with ``scale=255``; `codesign.data.datasets` splits,
then scales. Every failure is a `DataError` of one line naming the file: a truncated or corrupted
archive, a pickle that would run code, an IDX file with the wrong magic number or size, an image
folder with fewer than two classes, images of different sizes.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import hashlib
import io
import os
import pathlib
import pickle
import sys
import tarfile
import tempfile
import urllib.request
import zlib

import numpy as np

from codesign.errors import CodesignError

# Of an official training set, held out as the validation split the search scores candidates on
# (5000 of CIFAR's 50000 images, 6000 of MNIST's 60000); the official test set stays the test split.
OFFICIAL_VAL_FRACTION = 0.1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class DataError(CodesignError):
    """A dataset that cannot be loaded as asked; a ValueError whose message is one line."""


@dataclasses.dataclass(frozen=True, eq=False)
class RawData:
    """A dataset as read, original labels: one pool to split, or official train and test sets."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None  # None: split x three ways (data.SPLIT_FRACTIONS)
    y_test: np.ndarray | None = None
    val_fraction: float = OFFICIAL_VAL_FRACTION  # of x, where an official test set exists
    scale: float = 1.0  # pixels are divided by it after splitting (255 for 8-bit images)
    standardise: bool = False  # per feature, with train-split statistics (user .npz files)


@dataclasses.dataclass(frozen=True)
class _File:
    """One published file of a standard dataset, with the MD5 its publisher gives."""

    name: str
    url: str
    md5: str


@dataclasses.dataclass(frozen=True)
class _Standard:
    """A standard dataset: its format ("cifar" or "idx"), files, and the page publishing them."""

    format: str
    files: tuple[_File, ...]
    page: str
    folder: str = ""  # the extracted form of a CIFAR archive; torchvision's folder for IDX sets


_IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_files(base_url: str, md5s: tuple[str, ...]) -> tuple[_File, ...]:
    return tuple(
        _File(f"{n}.gz", f"{base_url}{n}.gz", md5) for n, md5 in zip(_IDX_NAMES, md5s, strict=True)
    )


STANDARD_DATASETS = {
    # MD5s as published on https://www.cs.toronto.edu/~kriz/cifar.html ("python version").
    "cifar10": _Standard(
        "cifar",
        (
            _File(
                "cifar-10-python.tar.gz",
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a",
            ),
        ),
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        folder="cifar-10-batches-py",
    ),
    "cifar100": _Standard(
        "cifar",
        (
            _File(
                "cifar-100-python.tar.gz",
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                "eb9058c3a382ffc7106e4002c42a8d85",
            ),
        ),
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        folder="cifar-100-python",
    ),
    # LeCun's page publishes no checksums; these MD5s are torchvision's (datasets/mnist.py), and
    # its mirror serves the same files.
    "mnist28": _Standard(
        "idx",
        _idx_files(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
        ),
        "http://yann.lecun.com/exdb/mnist/",
        folder="MNIST/raw",
    ),
    # MD5s as published in https://github.com/zalandoresearch/fashion-mnist (README, "Get the
    # Data").
    "fashion_mnist": _Standard(
        "idx",
        _idx_files(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
        ),
        "https://github.com/zalandoresearch/fashion-mnist",
        folder="FashionMNIST/raw",
    ),
    # Kuzushiji-MNIST (https://github.com/rois-codh/kmnist); MD5s as in torchvision's KMNIST.
    "kmnist": _Standard(
        "idx",
        _idx_files(
            "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            (
                "bdb82020997e1d708af4cf47b453dcf7",
                "e144d726b3acfaa3e44228e80efcd344",
                "5c965bf0a639b31b8f53240b1b52f4d7",
                "7320c461ea6c1c855c0b718fb2a4b134",
            ),
        ),
        "https://github.com/rois-codh/kmnist",
        folder="KMNIST/raw",
    ),
}


def read_files(p: pathlib.Path) -> RawData:
    """A CIFAR archive or folder, a folder of IDX files, or an image folder."""
    if p.is_file():
        if p.name.endswith((".tar.gz", ".tgz", ".tar")):
            return _cached(_read_cifar, p)
        raise DataError(
            f"{p}: unknown kind of file; give an .npz, a CIFAR python archive (.tar.gz), "
            "or a folder (CIFAR batches, IDX files, or one sub-folder of images per class)"
        )
    if (p / "data_batch_1").is_file() or (p / "train").is_file():
        return _cached(_read_cifar, p)
    if any((p / f).is_file() or (p / f"{f}.gz").is_file() for f in _IDX_NAMES):
        return _cached(_read_idx_folder, p)
    return _cached(_read_image_folder, p)


def read_standard(name: str, root: pathlib.Path) -> RawData:
    """A standard dataset from root or root/<name>, downloaded to root/<name> if absent."""
    spec = STANDARD_DATASETS[name]
    folders = [root / name, root]
    if spec.format == "idx":
        folders.append(root / spec.folder)
    for folder in folders:
        if spec.format == "cifar":
            if (folder / spec.folder).is_dir():
                return _cached(_read_cifar, folder / spec.folder)
            if (folder / spec.files[0].name).is_file():
                return _cached(_read_cifar, folder / spec.files[0].name)
        elif all(_idx_path(folder, f) is not None for f in _IDX_NAMES):
            return _cached(_read_idx_folder, folder)
    target = root / name
    _download(name, spec, target)
    if spec.format == "cifar":
        return _cached(_read_cifar, target / spec.files[0].name)
    return _cached(_read_idx_folder, target)


_READ_CACHE: dict = {}  # the last dataset read from files, while its files are unchanged


def _cached(reader, path: pathlib.Path) -> RawData:
    """reader(path), read once per process while the files under path keep their sizes and times
    (so checking a search's data before writing anything, then searching, decodes it once)."""
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = (reader.__name__, str(path.resolve()), stamp)
    if key not in _READ_CACHE:
        raw = reader(path)
        _READ_CACHE.clear()
        _READ_CACHE[key] = raw
    return _READ_CACHE[key]


def _download(name: str, spec: _Standard, folder: pathlib.Path) -> None:
    """Fetch each missing file of a standard dataset into folder, checking its published MD5."""
    missing = [f for f in spec.files if not (folder / f.name).is_file()]
    names = ", ".join(f.name for f in missing)
    it = "it" if len(missing) == 1 else "them"
    where = (
        f"{name}: {names} not found in {folder}; download {it} from {spec.page} "
        f"({', '.join(f'{f.url} md5 {f.md5}' for f in missing)}) into {folder}, "
        f"or set task.data_dir to the folder that holds {it}"
    )
    if os.environ.get("CODESIGN_OFFLINE"):
        raise DataError(f"{where} (downloads are off: CODESIGN_OFFLINE is set)")
    for f in missing:
        print(f"codesign: downloading {f.url} to {folder}", file=sys.stderr)
        tmp = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f.name, suffix=".part")
            digest = hashlib.md5(usedforsecurity=False)
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(f.url, timeout=60) as resp:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != f.md5:
                raise DataError(
                    f"{name}: {f.url} has MD5 {digest.hexdigest()}, the published one is {f.md5}; "
                    f"nothing was kept. {where}"
                )
            os.replace(tmp, folder / f.name)
            tmp = None
        except OSError as exc:  # no network, refused, unwritable folder
            raise DataError(f"{where} (the download failed: {' '.join(str(exc).split())})") from exc
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


try:  # numpy 2 moved the array pickling helpers to numpy._core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

_PICKLE_GLOBALS = {
    "_reconstruct": _multiarray._reconstruct,
    "scalar": _multiarray.scalar,
    "_frombuffer": _numeric._frombuffer,
    "ndarray": np.ndarray,
    "dtype": np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays only: a CIFAR batch runs no code."""

    def find_class(self, module, name):
        if module.split(".")[0] == "numpy" and name in _PICKLE_GLOBALS:
            return _PICKLE_GLOBALS[name]
        if (module, name) == ("_codecs", "encode"):  # how protocol 2 spells bytes in Python 3
            return codecs.encode
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a CIFAR batch")


def _read_cifar(path: pathlib.Path) -> RawData:
    """CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test, fine labels), as a
    .tar.gz archive or its extracted folder; images [N, 32, 32, 3] uint8."""
    try:
        if path.is_dir():
            blobs = {f.name: f.read_bytes() for f in path.iterdir() if f.is_file()}
        else:
            blobs = {}
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    if member.isfile():
                        blobs[os.path.basename(member.name)] = tar.extractfile(member).read()
    except tarfile.ReadError as exc:
        raise DataError(
            f"{path}: truncated or corrupted CIFAR archive (not a readable tar or tar.gz file)"
        ) from exc
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: truncated or corrupted CIFAR archive ({reason})") from exc
    if "data_batch_1" in blobs:
        train, test, key = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"
    elif "train" in blobs:
        train, test, key = ["train"], ["test"], "fine_labels"
    else:
        raise DataError(
            f"{path}: not a CIFAR python archive: it holds neither data_batch_1 (CIFAR-10) "
            "nor train (CIFAR-100)"
        )
    absent = [m for m in train + test if m not in blobs]
    if absent:
        raise DataError(f"{path}: truncated CIFAR archive: missing {', '.join(absent)}")
    x, y = zip(*(_cifar_batch(path, m, blobs[m], key) for m in train), strict=True)
    x_test, y_test = _cifar_batch(path, test[0], blobs[test[0]], key)
    return RawData(np.concatenate(x), np.concatenate(y), x_test, y_test, scale=255.0)


def _cifar_batch(path, member: str, blob: bytes, key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch: rows of 3072 bytes (R, G, B planes of 32x32) and labels."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: corrupted CIFAR batch {member} ({reason})") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path}: corrupted CIFAR batch {member} (not a dict)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or key not in batch:
        raise DataError(f"{path}: CIFAR batch {member} lacks data or {key}")
    data, labels = np.asarray(batch["data"]), np.asarray(batch[key])
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise DataError(
            f"{path}: CIFAR batch {member} holds data {data.shape} and {labels.shape} labels; "
            "expected [N, 3072] and N"
        )
    images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int64)


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _idx_path(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_folder(folder: pathlib.Path) -> RawData:
    """The four MNIST-format IDX files (gzipped or not): images [N, 28, 28, 1] and labels."""
    paths = {stem: _idx_path(folder, stem) for stem in _IDX_NAMES}
    absent = [stem for stem, p in paths.items() if p is None]
    if absent:
        raise DataError(f"{folder}: missing IDX file(s) {', '.join(absent)} (or .gz)")
    x, y, x_test, y_test = (_read_idx(paths[s], 3 if "images" in s else 1) for s in _IDX_NAMES)
    for images, labels, stem in ((x, y, _IDX_NAMES[1]), (x_test, y_test, _IDX_NAMES[3])):
        if len(images) != len(labels):
            raise DataError(f"{paths[stem]}: {len(labels)} labels for {len(images)} images")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return RawData(x[..., None], y.astype(np.int64), x_test[..., None], y_test.astype(np.int64),
                scale=scale)  # fmt: skip


def _read_idx(path: pathlib.Path, ndim: int) -> np.ndarray:
    """An IDX file: magic 0x0000TTDD (TT the element type, DD the number of dimensions)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: truncated or corrupted gzip file ({exc})") from exc
    magic = raw[:4]
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_DTYPES or magic[3] != ndim:
        raise DataError(
            f"{path}: wrong magic number 0x{magic.hex()}, expected 0x000008{ndim:02x} "
            f"(an IDX file of unsigned bytes with {ndim} dimension(s))"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, header needs {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[magic[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != need:
        raise DataError(
            f"{path}: truncated or padded IDX file: shape {shape} needs {need} bytes of data, "
            f"it holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _read_image_folder(folder: pathlib.Path) -> RawData:
    """One sub-folder of images per class, labelled 0..n-1 in sorted name order; all images one
    size; grey if every image is, else RGB."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        found = f" ({classes[0]})" if classes else ""
        raise DataError(
            f"{folder}: an image folder needs one sub-folder per class and at least 2 classes, "
            f"it has {len(classes)}{found}"
        )
    images, labels, grey, first = [], [], True, None
    for label, name in enumerate(classes):
        files = sorted(
            f
            for f in (folder / name).iterdir()
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(f"{folder / name}: no images ({', '.join(IMAGE_SUFFIXES)})")
        for f in files:
            try:
                with Image.open(f) as im:
                    grey &= im.mode in ("1", "L", "LA", "I", "I;16", "F")
                    pixels = np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DataError(f"{f}: not a readable image ({exc})") from exc
            if first is None:
                first = (f, pixels.shape)
            elif pixels.shape != first[1]:
                h, w = pixels.shape[:2]
                raise DataError(
                    f"{f}: image is {w}x{h} but {first[0]} is {first[1][1]}x{first[1][0]}; "
                    "resize them to one size first"
                )
            images.append(pixels)
            labels.append(label)
    x = np.stack(images)
    return RawData(x[..., :1] if grey else x, np.asarray(labels, np.int64), scale=255.0)
