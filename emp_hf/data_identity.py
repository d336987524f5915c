"""The fingerprint of a Trainer's training data, as the model sees it (`core/fingerprint.py` says why).

A `datasets.Dataset` is read from its Arrow columns a block of rows at a time (its index mapping applied:
`select`, `shuffle` and `train_test_split` change the rows the model sees), every value of every column
hashed: ids, masks, labels, text. Any other map-style dataset is read item by item (`dataset[i]`), each
item's tensors, arrays, numbers and strings hashed; that costs one pass of Python over the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .core.fingerprint import DataFingerprint, bytes_row_hashes, fingerprint, ragged_row_hashes

#: Rows read from Arrow at a time.
_ROWS = 1 << 16


def train_data_fingerprint(dataset: Any) -> DataFingerprint:
    try:
        import datasets

        if isinstance(dataset, datasets.Dataset):
            return _arrow_fingerprint(dataset)
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
    return _items_fingerprint(dataset)


# ------------------------------------------------------------------------------ Arrow
def _arrow_fingerprint(dataset: Any) -> DataFingerprint:
    names = list(dataset.column_names)
    if not names:
        return fingerprint({"(no columns)": torch.zeros(len(dataset), dtype=torch.int64)})
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for table in _arrow_blocks(dataset, names):
        for name in names:
            parts[name].append(_column_hashes(table.column(name)))
    return fingerprint({name: torch.cat(chunks) for name, chunks in parts.items()})


def _arrow_blocks(dataset: Any, names: list[str]) -> Any:
    """The dataset's rows as Arrow tables of up to `_ROWS` rows, in the order the model sees them. The index
    mapping (`select`, `shuffle`) is applied with one Arrow `take` per block where datasets exposes it (its
    row-by-row gather costs seconds per million rows), else through datasets' own query."""
    table = getattr(getattr(dataset, "data", None), "table", None)
    indices = getattr(dataset, "_indices", None)
    if table is not None and (indices is None or hasattr(indices, "column")):
        table = table.select(names)
        mapping = None if indices is None else indices.column(0)
        for start in range(0, len(dataset), _ROWS):
            stop = min(len(dataset), start + _ROWS)
            yield table.slice(start, stop - start) if mapping is None else table.take(mapping.slice(start,
                                                                                                     stop - start))
        return
    view = dataset.with_format("arrow")
    for start in range(0, len(dataset), _ROWS):
        yield view[start : start + _ROWS]


def _column_hashes(column: Any) -> torch.Tensor:
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        return bytes_row_hashes(repr(v).encode() for v in array.to_pylist())
    try:
        leaves, leaves_per_row, shapes = _leaves(array)
        words, words_per_leaf = _leaf_words(leaves)
    except _Unsupported:
        return bytes_row_hashes(repr(v).encode() for v in array.to_pylist())
    hashes = [ragged_row_hashes(torch.from_numpy(words), torch.from_numpy(_segment_sum(words_per_leaf,
                                                                                      leaves_per_row)))]
    # nested lists: the lengths of the inner lists too, so that [[1], [2]] and [[1, 2]] differ
    hashes += [ragged_row_hashes(torch.from_numpy(lengths), torch.from_numpy(per_row)) for lengths, per_row in shapes]
    if len(hashes) == 1:
        return hashes[0]
    return ragged_row_hashes(torch.stack(hashes, 1).reshape(-1), torch.full((len(array),), len(hashes)))


class _Unsupported(Exception):
    pass


def _segment_sum(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Sums of consecutive runs of `values`, run i being `lengths[i]` long."""
    totals = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    ends = np.cumsum(lengths, dtype=np.int64)
    return totals[ends] - totals[ends - lengths]


def _leaves(array: Any) -> tuple[Any, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The innermost values of a (nested) list column, how many belong to each row, and for each inner nesting
    level the lengths of its lists with how many of them belong to each row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
        inner, inner_counts, inner_shapes = _leaves(pc.list_flatten(array))
        shapes = [(values, _segment_sum(per_item, lengths)) for values, per_item in inner_shapes]
        if inner_shapes or inner_counts.size and not np.all(inner_counts == 1):
            shapes.insert(0, (inner_counts, lengths))
        return inner, _segment_sum(inner_counts, lengths), shapes
    return array, np.ones(len(array), dtype=np.int64), []


def _leaf_words(leaves: Any) -> tuple[np.ndarray, np.ndarray]:
    """The leaves as 32-bit words (their bytes; a string's bytes one word each), with the words of each leaf."""
    import pyarrow as pa

    kind = leaves.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind):
        data = [v.encode() if isinstance(v, str) else bytes(v) for v in leaves.to_pylist()]
        joined = np.frombuffer(b"".join(data), dtype=np.uint8).astype(np.int64)
        return joined, np.array([len(v) for v in data], dtype=np.int64)
    if pa.types.is_boolean(kind):
        values = leaves.to_numpy(zero_copy_only=False).astype(np.int64)
        return values, np.ones(len(values), dtype=np.int64)
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        raise _Unsupported
    values = np.ascontiguousarray(leaves.to_numpy(zero_copy_only=False))
    size = values.dtype.itemsize
    if size % 4 == 0:
        words = values.view(np.int32).astype(np.int64)
        return words, np.full(len(values), size // 4, dtype=np.int64)
    return values.astype(np.int64), np.ones(len(values), dtype=np.int64)


# ------------------------------------------------------------------------ item by item
def _items_fingerprint(dataset: Any) -> DataFingerprint:
    hashes = []
    for start in range(0, len(dataset), _ROWS):
        stop = min(len(dataset), start + _ROWS)
        hashes.append(bytes_row_hashes(_canonical(dataset[i]) for i in range(start, stop)))
    return fingerprint({"items": torch.cat(hashes) if hashes else torch.zeros(0, dtype=torch.int64)})


def _canonical(value: Any) -> bytes:
    """Bytes that differ whenever the value does (type, shape, content), for the data types a dataset yields."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous()
        data = value.view(torch.uint8).numpy().tobytes() if value.numel() else b""
        return b"T" + str(value.dtype).encode() + repr(tuple(value.shape)).encode() + data
    if isinstance(value, np.ndarray):
        return b"A" + str(value.dtype).encode() + repr(value.shape).encode() + np.ascontiguousarray(value).tobytes()
    if isinstance(value, dict):
        return b"{" + b"".join(_canonical(k) + b":" + _canonical(value[k]) for k in sorted(value, key=repr)) + b"}"
    if isinstance(value, (list, tuple)):
        inner = b",".join(_canonical(v) for v in value)
        return (b"[" if isinstance(value, list) else b"(") + str(len(value)).encode() + b"|" + inner + b"]"
    if isinstance(value, str):
        return b"S" + str(len(value)).encode() + b"|" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return b"B" + str(len(value)).encode() + b"|" + value
    return b"R" + type(value).__name__.encode() + b"|" + repr(value).encode()
