"""Datasets, and the source/target split used for transfer learning.

Every dataset comes back as a `Dataset` of numpy arrays split into train, validation and test,
deterministic given a seed. Sources:

- ``"digits"``: scikit-learn's 8x8 handwritten digits (shipped with scikit-learn), as images of
  shape (8, 8, 1) scaled to [0, 1], split 0.7/0.15/0.15 per class.
- ``"mnist1d"``: MNIST-1D (Greydanus, 2020), generated locally by the ``mnist1d`` package with its
  default arguments (5000 signals of length 40, seed 42), shape (40, 1). The package's own 4000/1000
  train/test split is kept, so test accuracies compare with the paper; validation examples are
  carved out of the 4000 training signals. The generated arrays are cached as an .npz file in
  ``$CODESIGN_CACHE`` (default ``~/.cache/codesign``).
- ``"cifar10"``, ``"cifar100"`` (the python pickle archive, 32x32x3), ``"mnist28"`` (MNIST),
  ``"fashion_mnist"``, ``"kmnist"`` (IDX files, gzipped or not, 28x28x1): read from ``data_dir``
  or ``$CODESIGN_CACHE/datasets``; where absent they are downloaded once and checked against their
  published MD5 (unless ``$CODESIGN_OFFLINE`` is set), else the error says where to put them.
  Pixels are scaled to [0, 1]; the official test set is kept and validation examples are carved
  out of the training set (10%, `codesign.data.formats.OFFICIAL_VAL_FRACTION`).
- a path: a user ``.npz`` file holding ``x`` [examples, ...features] and integer labels ``y``
  (split 0.7/0.15/0.15 per class and standardised per feature with train-split statistics); a
  CIFAR archive or its extracted folder; a folder of the four IDX files; or a folder of images with
  one sub-folder per class (labels 0..n-1 in sorted folder-name order, pixels scaled to [0, 1],
  split 0.7/0.15/0.15 per class).

The transfer split: the search scores each candidate network by how well it *adapts*, not by how
well it was trained from scratch. A base network is pretrained once on a source task and each
candidate inherits its weights and is fine-tuned briefly on a target task. Two ways to cut them
from one dataset (`SPLITS`):

- ``"by_class"`` (default): source and target hold disjoint classes (by default digits 0-4 and
  5-9). Each task relabels its classes 0..len(classes)-1 in the order given, so the two tasks have
  their own output heads; examples keep the same train/val/test membership whichever classes are
  requested.
- ``"by_examples"``: both tasks hold the same classes (for datasets with few classes, e.g. two or
  three); each class's training examples are halved between source and target, and both keep the
  one validation and test split, which pretraining never sees.

``target_examples_per_class=N`` makes the target few-shot: its training split keeps N examples per
class, chosen with the seed; its validation and test splits stay whole, so they stay honest.
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

from codesign.data import formats
from codesign.data.formats import DataError, RawData

BUILTIN_DATASETS = ("digits", "mnist1d")
DATASET_NAMES = BUILTIN_DATASETS + tuple(formats.STANDARD_DATASETS)
_PATH_SUFFIXES = (".npz", ".tar.gz", ".tgz", ".tar")
SPLITS = ("by_class", "by_examples")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)  # train, val, test, for data without an official test split
MNIST1D_VAL_FRACTION = 0.15  # of MNIST-1D's 4000 official training signals
SOURCE_SHARE = 0.5  # by_examples: share of each class's training examples given to the source


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
    """Two tasks cut from one dataset: pretrain on source, fine-tune on target."""

    source: Dataset
    target: Dataset


def load_dataset(
    name: str | os.PathLike,
    *,
    seed: int = 0,
    classes: tuple[int, ...] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Load a dataset by name or path (see the module docstring), optionally keeping some classes.

    Args:
        name: a name from `DATASET_NAMES` or a path to an .npz file, a CIFAR archive or folder, a
            folder of IDX files, or an image folder with one sub-folder per class.
        seed: decides the train/val/test membership of each example (official test sets are
            fixed); the same seed always gives the same arrays.
        classes: original labels to keep, relabelled 0..len(classes)-1 in this order.
        data_dir: where standard datasets are looked for (default ``$CODESIGN_CACHE/datasets``).
    """
    name = os.fspath(name)
    return _dataset(name, _load_raw(name, data_dir), classes, seed)


def transfer_split(
    name: str | os.PathLike,
    *,
    source_classes: tuple[int, ...] | None = (0, 1, 2, 3, 4),
    target_classes: tuple[int, ...] | None = (5, 6, 7, 8, 9),
    seed: int = 0,
    split: str = "by_class",
    target_examples_per_class: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> TransferTask:
    """Cut one dataset into a source task (pretraining) and a target task (fine-tune).

    split="by_class" gives the two tasks disjoint classes; split="by_examples" gives both the same
    classes (target_classes, or every class if None) and halves each class's training examples
    between them. target_examples_per_class=N keeps N training examples per target class.
    """
    name = os.fspath(name)
    if split not in SPLITS:
        raise DataError(f"{name}: split={split!r} is not one of {', '.join(SPLITS)}")
    if split == "by_class":
        overlap = sorted(set(source_classes or ()) & set(target_classes or ()))
        if overlap:
            raise DataError(
                f"{name}: source and target classes must be disjoint, both hold {overlap}; "
                "for tasks that share their classes use task.split: by_examples"
            )
    raw = _load_raw(name, data_dir)
    labels = np.unique(raw.y)
    if split == "by_class":
        for side, classes in (("source", source_classes), ("target", target_classes)):
            if classes is None:
                raise DataError(f"{name}: task.{side}_classes: give the classes of the {side} task")
            _check_classes(name, tuple(classes), labels, side=side, suggest_by_examples=True)
        source = _dataset(name, raw, tuple(source_classes), seed)
        target = _dataset(name, raw, tuple(target_classes), seed)
    else:
        shared = _shared_classes(name, source_classes, target_classes)
        if shared is not None:
            _check_classes(name, shared, labels, side="target")
        source, target = _halve_by_examples(_dataset(name, raw, shared, seed), seed)
    if target_examples_per_class is not None:
        target = few_shot(target, target_examples_per_class, seed)
    return TransferTask(source=source, target=target)


def _dataset(name: str, raw: RawData, classes: tuple[int, ...] | None, seed: int) -> Dataset:
    """Keep `classes` of a raw dataset and split it into train/val/test."""
    if raw.x_test is None:
        parts = _split(name, raw.x, raw.y, classes, SPLIT_FRACTIONS, seed)
    else:
        val = raw.val_fraction
        train, valid, _ = _split(name, raw.x, raw.y, classes, (1.0 - val, val, 0.0), seed)
        *_, test = _split(name, raw.x_test, raw.y_test, classes, (0.0, 0.0, 1.0), seed)
        parts = (train, valid, test)
    if raw.scale != 1.0:
        parts = tuple((x / np.float32(raw.scale), y) for x, y in parts)
    if raw.standardise:
        parts = _standardise(parts)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
    num_classes = len(classes) if classes is not None else len(np.unique(raw.y))
    return Dataset(x_tr, y_tr, x_va, y_va, x_te, y_te, num_classes=num_classes, name=name)


def _shared_classes(name: str, source_classes, target_classes) -> tuple[int, ...] | None:
    """by_examples: the one class list both tasks use (None: every class)."""
    both = source_classes is not None and target_classes is not None
    if both and tuple(source_classes) != tuple(target_classes):
        raise DataError(
            f"{name}: task.source_classes: with task.split: by_examples source and target "
            f"share their classes, but source_classes={tuple(source_classes)} and "
            f"target_classes={tuple(target_classes)}; give task.target_classes only"
        )
    classes = target_classes if target_classes is not None else source_classes
    return None if classes is None else tuple(classes)


def _halve_by_examples(full: Dataset, seed: int) -> tuple[Dataset, Dataset]:
    """Split each class's training examples between source and target; val/test are shared."""
    source_index, target_index = [], []
    for label in range(full.num_classes):
        members = np.flatnonzero(full.y_train == label)
        if len(members) < 2:
            raise DataError(
                f"{full.name}: task.split: by_examples needs at least 2 training examples of "
                f"class {label} (one for each task), it has {len(members)}"
            )
        members = np.random.default_rng([seed, label, 2]).permutation(members)
        cut = min(max(1, round(SOURCE_SHARE * len(members))), len(members) - 1)
        source_index.append(members[:cut])
        target_index.append(members[cut:])

    def keep(index):
        index = np.sort(np.concatenate(index))  # keep the split's shuffled order
        return dataclasses.replace(full, x_train=full.x_train[index], y_train=full.y_train[index])

    return keep(source_index), keep(target_index)


def few_shot(target: Dataset, per_class: int, seed: int) -> Dataset:
    """The target task with `per_class` training examples of each class, chosen with the seed."""
    if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
        raise DataError(
            f"{target.name}: task.target_examples_per_class must be an integer >= 1, "
            f"got {per_class!r}"
        )
    kept = []
    for label in range(target.num_classes):
        members = np.flatnonzero(target.y_train == label)
        if len(members) < per_class:
            raise DataError(
                f"{target.name}: task.target_examples_per_class={per_class} but target class "
                f"{label} has only {len(members)} training example(s)"
            )
        rng = np.random.default_rng([seed, label, 3])
        kept.append(rng.choice(members, per_class, replace=False))
    index = np.sort(np.concatenate(kept))
    return dataclasses.replace(target, x_train=target.x_train[index], y_train=target.y_train[index])


# ---------------------------------------------------------------------------------------------
# Sources: raw (x, y) arrays with original labels.


def _load_raw(name: str, data_dir: str | os.PathLike | None) -> RawData:
    """Read a dataset by name or path, labels as in the data."""
    if name == "digits":
        return RawData(*_digits())
    if name == "mnist1d":
        return RawData(*_mnist1d(), val_fraction=MNIST1D_VAL_FRACTION)
    if name in formats.STANDARD_DATASETS:
        root = pathlib.Path(data_dir).expanduser() if data_dir else cache_root() / "datasets"
        return formats.read_standard(name, root)
    if looks_like_path(name):
        return _read_path(name)
    raise DataError(_unknown_name_message(name))


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits, pixel values 0..16 scaled to [0, 1], shape (8, 8, 1).

    Read from the CSV that scikit-learn ships (what `load_digits` reads), without importing
    scikit-learn (about a second: a resumed search starts sooner); `load_digits` if it moved.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    csv = pathlib.Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        table = np.loadtxt(csv, delimiter=",")
        images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images, target = digits.images, digits.target
    return (images / 16.0).astype(np.float32)[..., None], target.astype(np.int64)


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


def looks_like_path(name: str) -> bool:
    """Treat a dataset name as a path if it names a file or folder, or has a path's form."""
    return name.endswith(_PATH_SUFFIXES) or os.sep in name or "/" in name or os.path.exists(name)


def _unknown_name_message(name: str) -> str:
    """One line listing the valid dataset names, with the closest as a suggestion."""
    close = set(difflib.get_close_matches(name, DATASET_NAMES, n=3))
    close = [n for n in DATASET_NAMES if n in close]  # in the listed order
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    valid = ", ".join(repr(n) for n in DATASET_NAMES)
    return (
        f"{name}: unknown dataset; valid names are {valid}, or a path to an .npz file, a CIFAR "
        f"archive or an image folder{hint}"
    )


def _read_path(path: str) -> RawData:
    """A user path: an .npz, a CIFAR archive or folder, a folder of IDX files, an image folder."""
    p = pathlib.Path(path).expanduser()
    if path.endswith(".npz"):
        return RawData(*_read_npz(str(p)), standardise=True)
    if not p.exists():
        raise DataError(f"{path}: no such file or folder")
    return formats.read_files(p)


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


def _check_classes(
    name: str,
    classes: tuple[int, ...],
    labels: np.ndarray,
    side: str | None = None,
    *,
    suggest_by_examples: bool = False,
) -> None:
    """Raise DataError unless `classes` are at least two distinct labels present in the data.

    side ("source" or "target") names the task's key in the message; suggest_by_examples adds a
    hint where the data has too few classes for two class-disjoint tasks.
    """
    valid = ", ".join(str(c) for c in labels)
    if len(labels) < 2:
        raise DataError(f"{name}: needs at least 2 classes, the labels hold only {valid}")
    where, hint = f"{name}:", ""
    if side is not None:
        where = f"{name}: task.{side}_classes:"
    if suggest_by_examples and len(labels) < 4:  # two class-disjoint tasks of 2+ classes need 4
        hint = (
            f"; with {len(labels)} classes use task.split: by_examples (source and target "
            "share their classes and are split by examples)"
        )
    if len(classes) < 2:
        raise DataError(f"{where} classes={tuple(classes)} keeps fewer than 2 classes{hint}")
    if len(set(classes)) != len(classes):
        raise DataError(f"{where} classes={tuple(classes)} lists a class twice")
    unknown = [c for c in classes if c not in set(labels.tolist())]
    if unknown:
        raise DataError(
            f"{where} class(es) {unknown} not in the data; valid classes: {valid}{hint}"
        )


def _standardise(parts):
    """Scale every feature to zero mean, unit variance using train-split statistics only."""
    (x_train, _), *_ = parts
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    return tuple(((x - mean) / std, y) for x, y in parts)
