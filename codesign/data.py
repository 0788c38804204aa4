"""Datasets, and the source/target class split used for transfer learning.

Every dataset comes back as a `Dataset` of numpy arrays split into train, validation and test,
deterministic given a seed. Three sources are built in, none of them downloaded:

- ``"digits"``: scikit-learn's 8x8 handwritten digits (shipped with scikit-learn), as images of
  shape (8, 8, 1) scaled to [0, 1], split 0.7/0.15/0.15 per class.
- ``"mnist1d"``: MNIST-1D (Greydanus, 2020), generated locally by the ``mnist1d`` package with its
  default arguments (5000 signals of length 40, seed 42), shape (40, 1). The package's own 4000/1000
  train/test split is kept, so test accuracies compare with the paper; validation examples are
  carved out of the 4000 training signals. The generated arrays are cached as an .npz file in
  ``$CODESIGN_CACHE`` (default ``~/.cache/codesign``).
- a path to a user ``.npz`` file holding ``x`` [examples, ...features] and integer labels ``y``,
  split 0.7/0.15/0.15 per class and standardised per feature with train-split statistics.

The transfer split: the search scores each candidate network by how well it *adapts*, not by how
well it was trained from scratch. So one dataset is cut by class into two disjoint tasks: a base
network is pretrained once on the source classes (by default digits 0-4), and each candidate
inherits its weights and is fine-tuned briefly on the target classes (digits 5-9). Each task
relabels its classes 0..len(classes)-1 in the order given, so the two tasks have their own output
heads; examples keep the same train/val/test membership whichever classes are requested.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import pathlib
import random
import tempfile
import warnings
import zipfile

import numpy as np

from codesign.errors import CodesignError

BUILTIN_DATASETS = ("digits", "mnist1d")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)  # train, val, test, for data without an official test split
MNIST1D_VAL_FRACTION = 0.15  # of MNIST-1D's 4000 official training signals


class DataError(CodesignError):
    """A dataset that cannot be loaded as asked; a ValueError whose message is one line."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset split into train/val/test: x float32, y int32 in 0..classes-1."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str

    def __post_init__(self):
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != np.float32 or y.dtype != np.int32 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(f"{self.name}: malformed {split} split {x.shape} / {y.shape}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. (40, 1) for MNIST-1D or (8, 8, 1) for digits."""
        return tuple(self.x_train.shape[1:])


@dataclasses.dataclass(frozen=True, eq=False)
class TransferTask:
    """Two class-disjoint tasks cut from one dataset: pretrain on source, fine-tune on target."""

    source: Dataset
    target: Dataset


def load_dataset(
    name: str | os.PathLike, *, seed: int = 0, classes: tuple[int, ...] | None = None
) -> Dataset:
    """Load "digits", "mnist1d" or a user .npz file, optionally keeping only some classes.

    Args:
        name: a built-in name or a path to an .npz file with arrays ``x`` and ``y``.
        seed: decides the train/val/test membership of each example (MNIST-1D's test set is
            fixed); the same seed always gives the same arrays.
        classes: original labels to keep, relabelled 0..len(classes)-1 in this order.
    """
    name = os.fspath(name)
    if name == "digits":
        x, y = _digits()
        parts = _split(name, x, y, classes, SPLIT_FRACTIONS, seed)
    elif name == "mnist1d":
        x, y, x_test, y_test = _mnist1d()
        val = MNIST1D_VAL_FRACTION
        train, valid, _ = _split(name, x, y, classes, (1.0 - val, val, 0.0), seed)
        *_, test = _split(name, x_test, y_test, classes, (0.0, 0.0, 1.0), seed)
        parts = (train, valid, test)
    elif _looks_like_path(name):
        x, y = _read_npz(name)
        parts = _split(name, x, y, classes, SPLIT_FRACTIONS, seed)
        parts = _standardise(parts)
    else:
        raise DataError(_unknown_name_message(name))
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
    num_classes = len(classes) if classes is not None else len(np.unique(y))
    return Dataset(x_tr, y_tr, x_va, y_va, x_te, y_te, num_classes=num_classes, name=name)


def transfer_split(
    name: str | os.PathLike,
    *,
    source_classes: tuple[int, ...] = (0, 1, 2, 3, 4),
    target_classes: tuple[int, ...] = (5, 6, 7, 8, 9),
    seed: int = 0,
) -> TransferTask:
    """Cut one dataset by class into a source task (pretraining) and a target task (fine-tune)."""
    overlap = sorted(set(source_classes) & set(target_classes))
    if overlap:
        raise DataError(
            f"{os.fspath(name)}: source and target classes must be disjoint, both hold {overlap}"
        )
    return TransferTask(
        source=load_dataset(name, seed=seed, classes=tuple(source_classes)),
        target=load_dataset(name, seed=seed, classes=tuple(target_classes)),
    )


# ---------------------------------------------------------------------------------------------
# Sources: raw (x, y) arrays with original labels.


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits, pixel values 0..16 scaled to [0, 1], shape (8, 8, 1)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    return x, digits.target.astype(np.int64)


def _mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D from the package's generator with its default arguments, cached on disk."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # where the reference pickle lives; we never download it
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_root() / f"mnist1d-{key}.npz"
    try:
        with np.load(path) as cached:
            arrays = {k: cached[k] for k in ("x", "y", "x_test", "y_test")}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):  # absent or corrupt: regenerate
        arrays = _generate_mnist1d(args)
        _save_atomically(path, arrays)
    x, x_test = (arrays[k].astype(np.float32)[..., None] for k in ("x", "x_test"))
    return x, arrays["y"].astype(np.int64), x_test, arrays["y_test"].astype(np.int64)


def _generate_mnist1d(args: dict) -> dict[str, np.ndarray]:
    """Run the mnist1d generator, restoring the global RNG state it reseeds."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        made = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(made[k]) for k in ("x", "y", "x_test", "y_test")}


def cache_root() -> pathlib.Path:
    """Where generated data, pretrained bases and compiled programs are kept: $CODESIGN_CACHE,
    else ~/.cache/codesign."""
    return pathlib.Path(os.environ.get("CODESIGN_CACHE") or "~/.cache/codesign").expanduser()


def _save_atomically(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz so that readers see the old file or the whole new one, never a part."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared cache should be readable
        os.replace(tmp, path)
    except OSError as exc:  # an unwritable cache only costs regenerating next time
        warnings.warn(f"{path}: could not cache generated data ({exc})", stacklevel=3)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _looks_like_path(name: str) -> bool:
    """Treat a name as a file path if it names a file, a folder or an .npz."""
    return name.endswith(".npz") or os.sep in name or os.path.exists(name)


def _unknown_name_message(name: str) -> str:
    """One line listing the valid dataset names, with the closest as a suggestion."""
    close = difflib.get_close_matches(name, BUILTIN_DATASETS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    valid = ", ".join(repr(n) for n in BUILTIN_DATASETS)
    return f"{name}: unknown dataset; valid names are {valid} or a path to an .npz file{hint}"


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and check a user .npz: x [examples, ...] numeric, y [examples] integer labels."""
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, not an .npz file")
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a valid .npz file (not a zip archive of arrays)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x", "y") if k not in npz.files]
            if missing:
                held = ", ".join(sorted(npz.files)) or "no arrays"
                raise DataError(f"{path}: missing array(s) {', '.join(missing)}; it holds {held}")
            x, y = npz["x"], npz["y"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"{path}: not a valid .npz file ({reason})") from exc
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: x must be numeric [examples, ...], got {x.dtype}{x.shape}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y must be integer labels [examples], got {y.dtype}{y.shape}")
    if len(x) != len(y):
        raise DataError(f"{path}: x has {len(x)} examples but y has {len(y)}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: x holds NaN or infinite values")
    return x, y


# ---------------------------------------------------------------------------------------------
# Class selection and splitting.


def _split(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    classes: tuple[int, ...] | None,
    fractions: tuple[float, float, float],
    seed: int,
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Keep `classes`, relabel them 0..n-1, and split each class by `fractions` (train/val/test).

    An example's split depends only on the seed and its class, never on which other classes are
    requested, so source and target tasks of a transfer split share one consistent split.
    """
    labels = np.unique(y)
    if classes is None:
        classes = tuple(int(c) for c in labels)
    _check_classes(name, classes, labels)
    needed = sum(f > 0 for f in fractions)
    parts = [[] for _ in fractions]
    for new_label, label in enumerate(classes):
        members = np.flatnonzero(y == label)
        if len(members) < needed:
            raise DataError(
                f"{name}: class {label} has {len(members)} example(s), too few for the "
                f"train/val/test fractions {'/'.join(f'{f:g}' for f in fractions)}; "
                f"each class needs at least {needed}"
            )
        rng = np.random.default_rng([seed, int(np.searchsorted(labels, label))])
        members = rng.permutation(members)
        for part, chunk in zip(parts, _chunks(len(members), fractions), strict=True):
            part.append((members[chunk], new_label))
    rng = np.random.default_rng([seed, len(labels)])
    out = []
    for part in parts:
        index = np.concatenate([m for m, _ in part]).astype(np.int64)
        new_y = np.concatenate([np.full(len(m), c, np.int32) for m, c in part])
        order = rng.permutation(len(index))
        out.append((x[index[order]].astype(np.float32), new_y[order]))
    return tuple(out)


def _chunks(n: int, fractions: tuple[float, float, float]) -> list[slice]:
    """Cut n items by fractions; every nonzero fraction gets at least one, train the rest."""
    sizes = [max(1, round(f * n)) if f > 0 else 0 for f in fractions[1:]]
    bounds = np.cumsum([n - sum(sizes), *sizes])
    return [slice(int(a), int(b)) for a, b in zip([0, *bounds[:-1]], bounds, strict=True)]


def _check_classes(name: str, classes: tuple[int, ...], labels: np.ndarray) -> None:
    """Raise DataError unless `classes` are at least two distinct labels present in the data."""
    valid = ", ".join(str(c) for c in labels)
    if len(labels) < 2:
        raise DataError(f"{name}: needs at least 2 classes, the labels hold only {valid}")
    if len(classes) < 2:
        raise DataError(f"{name}: classes={tuple(classes)} keeps fewer than 2 classes")
    if len(set(classes)) != len(classes):
        raise DataError(f"{name}: classes={tuple(classes)} lists a class twice")
    unknown = [c for c in classes if c not in set(labels.tolist())]
    if unknown:
        raise DataError(f"{name}: class(es) {unknown} not in the data; valid classes: {valid}")


def _standardise(parts):
    """Scale every feature to zero mean, unit variance using train-split statistics only."""
    (x_train, _), *_ = parts
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    return tuple(((x - mean) / std, y) for x, y in parts)
