"""What a run trains on, in a few digests: resume only onto the same rows, in the same order.

A checkpoint's scores and selection are indexed by row position. Resumed onto other data of the same
length (the rows shuffled, another subset, other labels, another tokenisation) they would land on other
rows without a word. So the pruning state records a fingerprint of the training data as the model sees
it, and a resume compares it: a difference is refused, naming what changed.

Each row gets a 64-bit hash of its values (each value mixed with its position in the row by SplitMix64's
finaliser, summed per row, vectorised over all rows a block at a time); the fingerprint keeps, per column
and over all columns, a SHA-256 of those hashes in order, and one of them sorted (the same rows in any
order). It holds no per-row vector: a handful of strings, whatever the number of rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

#: Values (words) hashed at once: the int64 temporaries of a block stay around 100 MB.
_BLOCK = 1 << 16
_LABEL_COLUMNS = ("label", "labels", "label_ids", "start_positions", "end_positions")


@dataclass(frozen=True)
class DataFingerprint:
    rows: int
    ordered: str
    unordered: str
    columns: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataFingerprint:
        return cls(int(data["rows"]), str(data["ordered"]), str(data["unordered"]),
                   {str(k): str(v) for k, v in dict(data.get("columns", {})).items()})

    def difference(self, now: DataFingerprint) -> str | None:
        """What changed from this (the checkpoint's) data to `now`, in words; None when nothing did."""
        if self.rows != now.rows:
            return f"the number of rows (checkpoint {self.rows:,}, now {now.rows:,})"
        if self.ordered == now.ordered:
            return None
        if self.unordered == now.unordered:
            return "the order of the rows (the same rows, shuffled or re-sorted)"
        if set(self.columns) != set(now.columns):
            return f"the columns (checkpoint {sorted(self.columns)}, now {sorted(now.columns)})"
        changed = [c for c in self.columns if self.columns[c] != now.columns[c]]
        labels = [c for c in changed if c in _LABEL_COLUMNS]
        inputs = [c for c in changed if c not in _LABEL_COLUMNS]
        parts = []
        if labels:
            parts.append(f"the labels (column{'s' if len(labels) > 1 else ''} {', '.join(map(repr, labels))})")
        if inputs:
            parts.append(f"the inputs (column{'s' if len(inputs) > 1 else ''} {', '.join(map(repr, inputs))}: other "
                         "rows, other text, or another tokenisation such as max_seq_length or the tokenizer)")
        return " and ".join(parts) or "the rows' content"


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)
_POSITION = _signed(0xD6E8FEB86659FD93)
_LENGTH = _signed(0xA0761D6478BD642F)


def _mix(x: Tensor) -> Tensor:
    """SplitMix64's finaliser on int64 tensors: products wrap modulo 2^64 (two's complement, as on every platform
    torch runs on), and each shift is made logical by masking the sign-extended bits."""
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * _MIX1
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * _MIX2
    return x ^ ((x >> 31) & ((1 << 33) - 1))


def _light_mix(x: Tensor) -> Tensor:
    """One multiply and one xor-shift: enough to spread a value and its position over 64 bits before the per-row
    sum (the sum is mixed fully afterwards)."""
    x = x * _MIX1
    return x ^ ((x >> 29) & ((1 << 35) - 1))


def _row_groups(lengths: Tensor) -> Iterable[tuple[int, int, int, int]]:
    """(first row, end row, first word, end word) of consecutive rows holding at most `_BLOCK` words (or one row)."""
    ends = torch.cumsum(lengths, 0)
    rows, row, word = lengths.numel(), 0, 0
    while row < rows:
        stop = int(torch.searchsorted(ends, torch.tensor(word + _BLOCK), right=True))
        stop = max(stop, row + 1)
        end_word = int(ends[stop - 1])
        yield row, stop, word, end_word
        row, word = stop, end_word


def ragged_row_hashes(words: Tensor, lengths: Tensor) -> Tensor:
    """Per-row hashes of rows of different lengths: `words` (M,) integer values of all rows back to back (any
    integer dtype), `lengths` (N,) the values per row. Each value is mixed with its position in its row, the
    mixes are summed per row (a cumulative sum, differenced at the row ends) and the sum mixed with the
    length. (N,) int64, on the CPU."""
    words = words.reshape(-1).to("cpu", torch.int64)
    lengths = lengths.reshape(-1).to("cpu", torch.int64)
    out = torch.empty(lengths.numel(), dtype=torch.int64)
    for row, stop, begin, end in _row_groups(lengths):
        part = lengths[row:stop]
        starts = torch.cumsum(part, 0) - part
        position = torch.arange(end - begin) - torch.repeat_interleave(starts, part)
        mixed = _light_mix(words[begin:end] * _GOLDEN + position * _POSITION)
        totals = torch.cat([mixed.new_zeros(1), torch.cumsum(mixed, 0)])
        out[row:stop] = _mix(totals[starts + part] - totals[starts] + part * _LENGTH)
    return out


def tensor_row_hashes(values: Tensor) -> Tensor:
    """Per-row hashes of a tensor whose first dimension is the rows (any dtype: the rows' bytes are hashed)."""
    rows = values.shape[0]
    flat = values.detach().reshape(rows, -1).contiguous()
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    data = flat.view(torch.uint8).reshape(rows, -1) if flat.numel() else flat.reshape(rows, 0).to(torch.uint8)
    width = data.shape[1]
    if width % 4:
        data = torch.cat([data, data.new_zeros(rows, 4 - width % 4)], 1)
    words = data.view(torch.int32).reshape(-1)
    return ragged_row_hashes(words, torch.full((rows,), words.numel() // max(1, rows), dtype=torch.int64))


def bytes_row_hashes(items: Iterable[bytes]) -> Tensor:
    """Per-row hashes of byte strings (one per row), through the same ragged hash."""
    items = list(items)
    data = b"".join(items)
    words = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    return ragged_row_hashes(words, torch.tensor([len(b) for b in items], dtype=torch.int64))


def fingerprint(columns: Mapping[str, Tensor]) -> DataFingerprint:
    """The fingerprint of rows given as per-row hashes of each column ((N,) int64 each)."""
    names = sorted(columns)
    if not names:
        raise ValueError("a fingerprint needs at least one column")
    hashes = [columns[name].reshape(-1).to("cpu", torch.int64) for name in names]
    rows = hashes[0].numel()
    if any(h.numel() != rows for h in hashes):
        raise ValueError("every column needs one hash per row")
    per_column = {name: hashlib.sha256(h.numpy().tobytes()).hexdigest() for name, h in zip(names, hashes,
                                                                                         strict=True)}
    # each row's column hashes, in column order, hashed again: one hash per row
    combined = ragged_row_hashes(torch.stack(hashes, 1).reshape(-1), torch.full((rows,), len(hashes)))
    ordered = hashlib.sha256(combined.numpy().tobytes()).hexdigest()
    unordered = hashlib.sha256(torch.sort(combined).values.numpy().tobytes()).hexdigest()
    return DataFingerprint(rows, ordered, unordered, per_column)


def tensors_fingerprint(columns: Mapping[str, Tensor]) -> DataFingerprint:
    """The fingerprint of data held as tensors whose first dimension is the rows (the vision loops)."""
    return fingerprint({name: tensor_row_hashes(t) for name, t in columns.items()})
