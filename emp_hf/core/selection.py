"""What one epoch trains on: a `Selection` (indices, a packed mask, or every example) and its seeded order.

Every selection is a function of (seed, epoch, scores): `seeded_generator` derives each draw's generator from
its keys, so identical stores on all ranks select identically, and a restored state selects as the
uninterrupted run would have. From `_PACKED_MIN` examples on a selection is a packed mask and its epoch order
is drawn from the mask (`shuffled_members`), with no sorted index vector beside the order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .packed import PackedMask
from .scores import ScoreStore

if TYPE_CHECKING:  # ranking builds on this module
    from .ranking import Scores

#: Radix passes and mask conversions work through the data this many values at a time: the temporaries stay
#: in cache, and at 10^8 examples a selection needs no N-sized integer vector beside the scores.
_CHUNK = 1 << 20

class Selection:
    """The examples of one epoch, and which of them carry a loss weight (InfoBatch's up-weighted ones).

    Held in one of three forms, each chosen for memory at 10^8 examples:
    - `Selection(indices)`: ascending indices, below `_PACKED_MIN` examples (there the faster form);
    - `Selection.packed(mask)`: a packed mask from `_PACKED_MIN` examples on (12.5 MB at 10^8 whatever the
      kept fraction, where indices of 65% kept would be 260 MB beside the shuffled order's 260 MB);
    - `Selection.every(n)`: all n examples with no vector at all (full epochs: the first, the annealing ones).
    `indices` are built on access in the last two forms, for the callers that need them; `index_chunks`
    gives them a piece at a time. `upweighted` marks the examples whose loss is multiplied by `weight`.
    """

    __slots__ = ("_indices", "_mask", "_size", "upweighted", "weight")

    def __init__(self, indices: Tensor | None, upweighted: PackedMask | None = None, weight: float = 1.0, *,
                 mask: PackedMask | None = None, size: int | None = None) -> None:
        if indices is not None:
            size = indices.numel()
        elif size is None:
            raise ValueError("a selection held without indices needs its `size`")
        if upweighted is not None and not isinstance(upweighted, PackedMask):
            raise TypeError(
                f"`Selection(upweighted=...)` takes a PackedMask over all examples, got {type(upweighted).__name__}. "
                "A policy returns `mask_to_selection(keep_mask, upweighted=upweighted_mask, weight=w)` with bool "
                "masks over all examples (it packs them and picks the form for the size); per-example float weights "
                "were replaced by this in emp-hf's InfoBatch rules 1.2.")
        self._indices, self._mask, self._size = indices, mask, int(size)
        self.upweighted = upweighted
        self.weight = float(weight)

    @classmethod
    def every(cls, num_examples: int) -> Selection:
        return cls(None, size=num_examples)

    @classmethod
    def packed(cls, mask: PackedMask, size: int, upweighted: PackedMask | None = None,
               weight: float = 1.0) -> Selection:
        return cls(None, upweighted, weight, mask=mask, size=size)

    @property
    def is_every(self) -> bool:
        return self._indices is None and self._mask is None

    @property
    def mask(self) -> PackedMask | None:
        """The packed mask of a `Selection.packed`; None in the other forms."""
        return self._mask

    @property
    def indices(self) -> Tensor:
        if self._indices is not None:
            return self._indices
        if self._mask is None:
            return all_indices(self._size)
        return torch.cat(list(self.index_chunks()))

    def index_chunks(self) -> Iterator[Tensor]:
        """The ascending indices in pieces of at most `_CHUNK` (one piece for `Selection(indices)`)."""
        if self._indices is not None:
            yield self._indices
            return
        n = self._mask.size if self._mask is not None else self._size
        dtype = index_dtype(n)
        for start in range(0, n, _CHUNK):
            end = min(n, start + _CHUNK)
            if self._mask is None:
                yield torch.arange(start, end, dtype=dtype)
            else:
                yield self._mask.positions(start, end, dtype)

    @property
    def weighted(self) -> bool:
        return self.upweighted is not None

    def __len__(self) -> int:
        return self._size


@dataclass
class SelectionContext:
    """Everything a policy may use to choose; built by the pruner."""

    store: ScoreStore
    keep: int  # k = round((1 - s) N)
    prune: float  # s
    generator: torch.Generator  # seeded by (seed, epoch): the only source of randomness
    seed: int
    round_index: int  # how many pruning selections were made before this one
    scores: Scores | None = None  # the policy's scores of the store, as the pruner obtained them


#: From this many examples on, a selection is held as a packed mask (`Selection.packed`) and its epoch order is
#: drawn from that mask by `shuffled_members`, with no sorted index vector beside the order. Just above 2^24 it is
#: a little slower than the indices' `randperm` and gather (EMP 0.39 against 0.32 s at 1.7 x 10^7), at 10^8 faster
#: (its shuffles are cache-sized), and there it keeps InfoBatch's selection within the store plus one float32
#: vector (BENCHMARKS.md). Below it the indices are the faster form.
_PACKED_MIN = 1 << 24

def nonzero_indices(mask: Tensor, count: int | None = None) -> Tensor:
    """Ascending positions of the True entries of a 1-D mask, as `index_dtype` integers.

    int32 below 2^31 entries halves the memory of a selection and of its shuffled order, and the chunks keep
    the int64 positions `nonzero` produces small (at 10^8 examples a full int64 copy would be 240 MB more).
    """
    n = mask.numel()
    if index_dtype(n) == torch.int64 or n <= _CHUNK:
        return torch.nonzero(mask).squeeze(1).to(index_dtype(n))
    out = torch.empty(int(torch.count_nonzero(mask)) if count is None else count, dtype=torch.int32)
    filled = 0
    for start in range(0, n, _CHUNK):
        part = torch.nonzero(mask[start : start + _CHUNK]).squeeze(1)
        out[filled : filled + part.numel()] = part
        out[filled : filled + part.numel()] += start
        filled += part.numel()
    if filled != out.numel():
        raise RuntimeError(f"the mask has {filled} True entries, not {out.numel()}")
    return out


def gather_in_place(positions: Tensor, values: Tensor) -> Tensor:
    """`positions` overwritten with `values[positions]`, `_CHUNK` at a time: the result takes the positions'
    memory instead of a new vector of their size (the epoch order at 10^8 examples: 110 MB for EMP)."""
    for start in range(0, positions.numel(), _CHUNK):
        part = positions[start : start + _CHUNK]
        part.copy_(values.index_select(0, part))
    return positions


#: Buckets of `shuffled_members` (a power of two, at most 128: labels are 7 random bits): a bucket is 1/128 of
#: the order (a few MB at 10^8 examples, so its shuffle runs in cache).
_ORDER_BUCKETS = 128


def shuffled_members(mask: PackedMask, count: int, generator: torch.Generator) -> Tensor:
    """The `count` members of a packed set in uniformly random order, built in the order's own memory.

    The shuffle of Rao and Sandelius: every member falls into one of `_ORDER_BUCKETS` buckets independently and
    uniformly, the buckets are laid out one after another, and each is shuffled on its own. Every permutation
    is equally likely (for a given order, the bucket sizes that fit it and the shuffles inside them have the
    same total probability). The members of one mask chunk are sent to the buckets by drawing the chunk's
    bucket counts (the bincount of i.i.d. labels: multinomial) and cutting a shuffle of the chunk into pieces
    of those sizes, which is the same distribution as labelling each member. At no point is there a sorted
    index vector beside the order, and every shuffle is of a cache-sized piece (a `randperm` of millions of
    entries is cache-bound: about three times slower per entry).
    """
    dtype = index_dtype(mask.size)
    starts = range(0, mask.size, _CHUNK)
    counts = torch.empty(len(starts), _ORDER_BUCKETS, dtype=torch.int64)
    for row, start in enumerate(starts):
        members = mask.count(start, min(mask.size, start + _CHUNK))
        bits = torch.empty(-(-members // 8), dtype=torch.int64).random_(generator=generator)  # 63 random bits
        labels = bits.view(torch.uint8)[:members] & (_ORDER_BUCKETS - 1)  # each byte has 7 or 8 of them
        counts[row] = torch.bincount(labels, minlength=_ORDER_BUCKETS)
    sizes = counts.sum(0)
    if int(sizes.sum()) != count:
        raise ValueError(f"the mask has {int(sizes.sum())} members, not {count}")
    order = torch.empty(count, dtype=dtype)
    bounds = [0, *torch.cumsum(sizes, 0).tolist()]
    cursors = bounds[:-1]
    for row, start in enumerate(starts):
        positions = mask.positions(start, min(mask.size, start + _CHUNK), dtype)
        shuffled = gather_in_place(torch.randperm(positions.numel(), generator=generator, dtype=dtype), positions)
        taken = 0
        for bucket, members in enumerate(counts[row].tolist()):
            order[cursors[bucket] : cursors[bucket] + members] = shuffled[taken : taken + members]
            cursors[bucket] += members
            taken += members
    for begin, end in zip(bounds[:-1], bounds[1:]):
        bucket = order[begin:end]
        bucket.copy_(gather_in_place(torch.randperm(end - begin, generator=generator, dtype=dtype), bucket))
    return order


def mask_to_selection(mask: Tensor, upweighted: Tensor | None = None, weight: float = 1.0,
                      count: int | None = None) -> Selection:
    """The selection of the True entries of `mask` (`count` of them, where the caller knows) and the up-weighted
    ones of `upweighted`, in the form `Selection` prescribes for its size."""
    up = PackedMask.pack(upweighted) if upweighted is not None else None
    if mask.numel() >= _PACKED_MIN:
        packed = PackedMask.pack(mask)
        members = packed.count()  # a table look-up per byte: the size is checked, not trusted
        if count is not None and count != members:
            raise RuntimeError(f"the mask has {members} True entries, not {count}")
        return Selection.packed(packed, members, up, weight)
    return Selection(nonzero_indices(mask, count), up, weight)


def index_dtype(n: int) -> torch.dtype:
    """The dtype of selections and orders: int32 permutations are about twice as fast to draw and to apply as
    int64 ones, take half the memory, and are exact below 2^31."""
    return torch.int32 if n < 2**31 else torch.int64


def all_indices(n: int) -> Tensor:
    return torch.arange(n, dtype=index_dtype(n))


def seeded_generator(*keys: int) -> torch.Generator:
    """A generator determined by integer keys only (seed, epoch, stream tag)."""
    value = 0
    for key in keys:
        value = (value * 1_000_003 + int(key)) % (2**63 - 1)
    return torch.Generator().manual_seed(value)
