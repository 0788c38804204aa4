"""The data: built-in and user datasets (`datasets`), the file formats they are read from
(`formats`), and the source/target split of transfer learning."""

from codesign.data.datasets import (
    DATASET_NAMES,
    SPLITS,
    Dataset,
    TransferTask,
    cache_root,
    few_shot,
    load_dataset,
    transfer_split,
)
from codesign.data.formats import DataError, RawData

__all__ = [
    "DATASET_NAMES",
    "SPLITS",
    "DataError",
    "Dataset",
    "RawData",
    "TransferTask",
    "cache_root",
    "few_shot",
    "load_dataset",
    "transfer_split",
]
