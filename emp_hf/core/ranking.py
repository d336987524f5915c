"""Ranking scores and drawing subsets, exactly, at any number of examples: what the policies select with.

The size switches live here, together: below `_RADIX_MIN` the k-th largest score is torch's `kthvalue`, above it
one radix pass; from `_CHUNKED_SCORES_MIN` examples on a policy's scores are computed a chunk at a time in
every pass (no N-sized float vector beside the store). The draws (`exact_random_subset`, `draw_unmasked`) give
uniform subsets of exact sizes in int32 where positions fit. Pinned orders in the tests hold every path to the
same selections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import torch
from torch import Tensor

from .scores import ScoreStore
from .selection import _CHUNK, index_dtype

#: Below this size `torch.kthvalue` is as fast as the radix pass of `kth_largest`.
_RADIX_MIN = 1 << 20

#: From this many examples on, a policy's scores are computed a chunk at a time in every pass instead of once
#: as a vector: at 10^8 examples that vector would be 400 MB beside the store, while recomputing a chunk of
#: `loss + beta * entropy` costs each pass a few percent. Below it (64 MB) the vector is the faster choice.
_CHUNKED_SCORES_MIN = 1 << 24

#: The whole store, as a `part`.
ALL = slice(None)


class Scores:
    """Per-example scores that the selection reads in passes over chunks, however they are held.

    Either a vector (`Scores.of`), or a function of a slice that computes the scores of that part of the
    store when a pass reaches it (`SelectionPolicy.scores` above `_CHUNKED_SCORES_MIN`): the threshold, the
    mask and the mean never need all N values at once, so at 10^8 examples no N-sized float vector is built.
    """

    def __init__(self, num_examples: int, part: Callable[[slice], Tensor]) -> None:
        self.num_examples = num_examples
        self.part = part

    @classmethod
    def of(cls, values: Tensor) -> Scores:
        return cls(values.numel(), values.__getitem__)

    @property
    def dtype(self) -> torch.dtype:
        return self.part(slice(0, 0)).dtype

    def chunks(self) -> Iterator[tuple[int, Tensor]]:
        """(start, scores of examples start .. start + len - 1), `_CHUNK` at a time, in order."""
        for start in range(0, self.num_examples, _CHUNK):
            yield start, self.part(slice(start, min(self.num_examples, start + _CHUNK)))

    def full(self) -> Tensor:
        return self.part(ALL)


def as_scores(scores: Tensor | Scores) -> Scores:
    return scores if isinstance(scores, Scores) else Scores.of(scores)


def unseen_first(value: Tensor, store: ScoreStore, part: slice = ALL) -> Tensor:
    """`value` (the fresh scores of `part`, modified in place) with +inf for examples never scored, so they
    rank first. After the first full epoch every example has been scored, and the pass is skipped.
    """
    if store.all_seen:
        return value
    return value.masked_fill_(store.times_trained[part] == 0, float("inf"))


def ranked(field: Tensor, store: ScoreStore, part: slice = ALL) -> Tensor:
    """A store field as a score, unseen examples first: the field itself (no copy) once all are seen."""
    return field[part] if store.all_seen else unseen_first(field[part].clone(), store, part)


def kth_largest(scores: Tensor | Scores, k: int) -> Tensor:
    """The k-th largest value of a float32 vector (1 <= k <= N), exactly, in a few linear passes."""
    return _threshold(as_scores(scores), k)[0]


def _top_bits(bits: Tensor) -> Tensor:
    """The top 16 bits of float32 bit patterns as integers in 0 .. 65535 (sign bit set: 0 .. 32767)."""
    top = bits >> 16
    top += 32768
    return top


def _threshold(scores: Scores, k: int) -> tuple[Tensor, Tensor | None]:
    """The k-th largest value and, when the radix pass ran, the positions of the values in its bucket.

    One radix pass: a histogram (`bincount`) of the top 16 bits of the float32 bit patterns finds the bucket
    that holds the k-th largest, and `kthvalue` finishes inside that bucket only: about three times as fast as
    `kthvalue` over everything at 10^7 values. The histogram is of the raw bits, and only its 65,536 counts are
    put in value order: non-negative floats order as their bits do, negative ones (sign bit set) in reverse. So
    one pass over the scores serves any sign, which matters above `_CHUNKED_SCORES_MIN`, where every pass
    recomputes the scores. The bucket's positions let the caller find ties at the threshold without another
    pass over all N.
    """
    n = scores.num_examples
    if n < _RADIX_MIN or scores.dtype != torch.float32:
        return torch.kthvalue(scores.full(), n - k + 1).values, None
    by_bits = torch.zeros(65536, dtype=torch.int64)
    for _, part in scores.chunks():
        by_bits += torch.bincount(_top_bits(part.view(torch.int32)), minlength=65536)
    # in value order: sign set (negative, -0.0 included) first, larger magnitudes (higher bits) lower
    counts = torch.cat([by_bits[:32768].flip(0), by_bits[32768:]])
    from_top = counts.flip(0).cumsum(0)
    position = int(torch.searchsorted(from_top, torch.tensor(k)))
    bucket = 65535 - position
    above = int(from_top[position]) - int(counts[bucket])  # values in higher buckets
    top = bucket if bucket >= 32768 else 32767 - bucket  # the bucket's top 16 bits
    # The bucket's size is known: filling preallocated vectors keeps the kept entries out of the heap between
    # the chunks' temporaries (lists of small pieces fragmented it: 0.5 GB more peak memory at 10^8).
    size = int(counts[bucket])
    in_bucket = torch.empty(size, dtype=index_dtype(n))
    candidates = torch.empty(size, dtype=torch.float32)
    filled = 0
    for start, part in scores.chunks():
        found = torch.nonzero(_top_bits(part.view(torch.int32)) == top).squeeze(1)
        end = filled + found.numel()
        torch.index_select(part, 0, found, out=candidates[filled:end])
        in_bucket[filled:end] = found
        in_bucket[filled:end] += start
        filled = end
    threshold = torch.kthvalue(candidates, candidates.numel() - (k - above) + 1).values
    return threshold, in_bucket[candidates == threshold]


def top_k_mask(scores: Tensor | Scores, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Boolean mask of the k largest scores; ties at the threshold drawn at random with `generator`.

    `kth_largest` finds the threshold in O(N) (no full sort). Ties (unseen examples, constant scores) are
    drawn by the seeded generator, not taken by index, so a degenerate store never selects a prefix of
    the dataset; the draw is a function of the seed, so every machine and a resumed run agree.
    Without a generator (tests, callers that want it) the lower indices win ties.
    """
    scores = as_scores(scores)
    n = scores.num_examples
    if k >= n:
        return torch.ones(n, dtype=torch.bool)
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool)
    threshold, ties = _threshold(scores, k)
    mask = torch.empty(n, dtype=torch.bool)
    for start, part in scores.chunks():
        torch.gt(part, threshold, out=mask[start : start + part.numel()])
    missing = k - int(torch.count_nonzero(mask))
    if missing > 0:
        if ties is None:  # the small path: the scores are one vector
            ties = torch.nonzero(scores.full() == threshold).squeeze(1)
        mask[ties[:missing] if generator is None else random_subset(ties, missing, generator)] = True
    return mask


def random_subset(candidates: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """`count` entries of `candidates` drawn uniformly without replacement."""
    order = torch.randperm(candidates.numel(), generator=generator, dtype=index_dtype(candidates.numel()))[:count]
    return candidates[order]


def random_subset_mask(candidates: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Mask of `count` entries drawn uniformly without replacement among the True entries of `candidates`.

    The `count` largest of i.i.d. uniform keys, candidates' keys lifted to [1, 2) so that no other entry can
    be drawn: a uniform subset, found by the same linear-time threshold as the top-k, with no N-sized
    permutation (a `randperm` of millions of entries is cache-bound: about 90 ms for 6.5 million, one thread).
    """
    if count > int(torch.count_nonzero(candidates)):
        raise ValueError(f"cannot draw {count} of {int(torch.count_nonzero(candidates))} candidates")
    keys = torch.rand(candidates.numel(), generator=generator).add_(candidates)
    return top_k_mask(keys, count, generator)


def draw_unmasked(mask: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """`mask` (modified in place) with `count` more of its False entries set, drawn uniformly without replacement.

    Rejection sampling (`_draw_rounds`): where the unset entries are plentiful (eps-greedy: eps k of
    N - (1 - eps) k) a round draws barely more than `count` positions, instead of N keys and a threshold over
    them. Dense requests (more than half of the unset entries) fall back to `random_subset_mask`.
    """
    n = mask.numel()
    free = n - int(torch.count_nonzero(mask))
    if count > free:
        raise ValueError(f"cannot draw {count} of {free} unset entries")
    if count == 0:
        return mask
    if 2 * count > free:
        return mask.logical_or_(random_subset_mask(~mask, count, generator))
    _draw_rounds(n, count, free, lambda draw: ~mask[draw], partial(_set, mask, True), generator)
    return mask


def _set(mask: Tensor, value: bool, positions: Tensor) -> None:
    mask[positions] = value


def _draw_rounds(n: int, count: int, free: int, eligible: Callable[[Tensor], Tensor],
                 take: Callable[[Tensor], object], generator: torch.Generator) -> None:
    """Take `count` of the `free` eligible positions in [0, n), drawn uniformly without replacement.

    Uniform positions are drawn in rounds, those not eligible (`eligible(draw)` False: already taken, or never
    candidates) are dropped, and the first `count` distinct survivors in draw order are taken (`take` must make
    them ineligible for the next round): the sequential draw without replacement, so a uniform subset.
    """
    dtype = index_dtype(n)  # positions and draw numbers in int32 where they fit: half the temporaries at 10^8
    while count > 0:
        # expected survivors of a round: draws x (free / n), fewer the repeats; 10% and 64 spare
        size = int(count * n / free * 1.1) + 64
        draw = torch.randint(n, (size,), generator=generator, dtype=dtype)
        draw = draw[eligible(draw)]
        unique, inverse = torch.unique(draw, sorted=True, return_inverse=True)
        num_unique = unique.numel()
        del unique
        first = torch.full((num_unique,), draw.numel(), dtype=dtype)
        first.scatter_reduce_(0, inverse, torch.arange(draw.numel(), dtype=dtype), "amin")  # first draw of each
        del inverse
        taken = draw[first.sort().values[:count]]
        take(taken)
        count -= taken.numel()
        free -= taken.numel()


#: Bits of the uniform integer each candidate draws in `exact_random_subset`: its inclusion probability is
#: the requested fraction to within 2^-16, and the count is then made exact.
_LANE_BITS = 15


def exact_random_subset(candidates: Tensor, count: int, generator: torch.Generator, total: int | None = None) -> Tensor:
    """A new mask of `count` of the True entries of `candidates`, drawn uniformly without replacement.

    Each candidate is first included on its own with probability about count / candidates, from 15 random bits
    (four candidates per 64-bit draw: no float keys, no threshold search over them), and the few surplus
    (or missing) entries are then removed (added) by `_draw_rounds`. Both steps are exchangeable, so every
    subset of `count` candidates is equally likely. About a fifth of the time of `random_subset_mask`'s
    uniform keys and top-k at 10^7 examples. `total`: the number of candidates, where the caller knows it.
    """
    n = candidates.numel()
    total = int(torch.count_nonzero(candidates)) if total is None else total
    if not 0 <= count <= total:
        raise ValueError(f"cannot draw {count} of {total} candidates")
    if count == total:
        return candidates.clone()
    chosen = torch.zeros(n, dtype=torch.bool)
    if count == 0:
        return chosen
    below = round(count / total * (1 << _LANE_BITS))  # a lane value below this includes its candidate
    for start in range(0, n, _CHUNK):
        end = min(n, start + _CHUNK)
        lanes = torch.empty(-(-(end - start) // 4), dtype=torch.int64).random_(generator=generator)
        lanes = lanes.view(torch.int16)[: end - start] & ((1 << _LANE_BITS) - 1)  # int64 random_ fills 63 bits
        torch.lt(lanes, below, out=chosen[start:end]).logical_and_(candidates[start:end])
    have = int(torch.count_nonzero(chosen))
    if have > count:  # drop the surplus: uniform among the chosen
        _draw_fitting(n, have - count, have, lambda d: chosen[d], partial(_set, chosen, False),
                      lambda: chosen, generator)
    elif have < count:  # add the missing: uniform among the candidates not chosen
        _draw_fitting(n, count - have, total - have, lambda d: candidates[d] & ~chosen[d],
                      partial(_set, chosen, True), lambda: candidates & ~chosen, generator)
    return chosen


def _draw_fitting(n: int, count: int, free: int, eligible: Callable[[Tensor], Tensor],
                  take: Callable[[Tensor], object], eligible_mask: Callable[[], Tensor],
                  generator: torch.Generator) -> None:
    """`_draw_rounds`, or, where the eligible entries are too few for rejection to pay (under 1/64 of n, or
    fewer than twice `count`), an exact draw among their positions."""
    if 64 * free >= n and 2 * count <= free:
        _draw_rounds(n, count, free, eligible, take, generator)
        return
    positions = torch.nonzero(eligible_mask()).squeeze(1)
    take(random_subset(positions, count, generator))
