"""How each training example travels with its position: the dataset wrapper, the outermost collate function, and
the sampler whose length can be set to a planned epoch size."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, MutableMapping
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..core import PruningSampler

logger = logging.getLogger("emp_hf")


INDEX_KEY = "emp_example_index"
_LABEL_COLUMNS = ("label", "labels", "label_ids")


class IndexedExample(NamedTuple):
    """A training example and its position in the train dataset (a tuple, so that the Trainer's
    column-removing collator passes it through untouched)."""

    index: int
    example: Any


class IndexedDataset(Dataset):
    """Yields `IndexedExample(position, item)`; the item itself is untouched (dict, tuple, anything)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> IndexedExample:
        return IndexedExample(int(index), self.dataset[index])

    def __getitems__(self, indices: list[int]) -> list[IndexedExample]:
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]
        return [IndexedExample(int(i), item) for i, item in zip(indices, items)]


class IndexingCollator:
    """The outermost collate function: the user's collator sees the examples alone, the batch gets the indices."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, features: list[IndexedExample]) -> MutableMapping[str, Any]:
        indices = torch.tensor([f.index for f in features], dtype=torch.int64)
        batch = self.collator([f.example for f in features])
        if not isinstance(batch, MutableMapping):
            raise TypeError(
                f"The data collator returned a {type(batch).__name__}; the Trainer calls `model(**batch)`, so it "
                "must return a dict of tensors (PruningTrainer adds the example index to it)."
            )
        if INDEX_KEY in batch:
            raise ValueError(f"The collated batch already has a key {INDEX_KEY!r}, which PruningTrainer uses.")
        batch[INDEX_KEY] = indices
        return batch


class PlannedSampler(PruningSampler):
    """A PruningSampler whose length can be set to a planned epoch size, to ask the
    prepared dataloader (with its drop_last, sharding and even_batches rules)
    how many batches that epoch will have."""

    _assumed: int | None = None

    @contextlib.contextmanager
    def assume_size(self, size: int) -> Iterator[None]:
        self._assumed = size
        try:
            yield
        finally:
            self._assumed = None

    def __len__(self) -> int:
        return self._assumed if self._assumed is not None else super().__len__()


def label_column(dataset: Any, label_names: list[str] | None) -> Tensor | None:
    """1-D integer class labels of a `datasets.Dataset`, for the report's per-class section only.

    Best effort: any other label form (token labels, multi-label vectors, floats, no labels, a torch
    Dataset) skips that section of the report, never the run."""
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        return None
    key = next((k for k in [*(label_names or []), *_LABEL_COLUMNS] if k in columns), None)
    if key is None:
        return None
    try:
        # `[:]`: datasets >= 4 returns a lazy column, which torch would read one row at a time (seconds at 10^5 rows)
        labels = torch.as_tensor(dataset[key][:])
    except (TypeError, ValueError, RuntimeError):
        return None
    if labels.dim() != 1 or labels.is_floating_point() or labels.numel() != len(dataset) or labels.numel() == 0:
        return None
    return labels if int(labels.min()) >= 0 else None
