"""Selection policies: one class per method of docs/methods.md, found by name.

A policy turns the score store into the set of examples to train on in one
pruning epoch. It never orders the set (the sampler does, so that every
method shares one seeded shuffle) and never decides *when* to prune (the
schedule does). Adding a method is one small subclass with `@register_policy`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
from torch import Tensor

from .packed import PackedMask
from .scores import ScoreStore


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


#: Below this size `torch.kthvalue` is as fast as the radix pass of `kth_largest`.
_RADIX_MIN = 1 << 20

#: Radix passes and mask conversions work through the data this many values at a time: the temporaries stay
#: in cache, and at 10^8 examples a selection needs no N-sized integer vector beside the scores.
_CHUNK = 1 << 20

#: From this many examples on, a policy's scores are computed a chunk at a time in every pass instead of once
#: as a vector: at 10^8 examples that vector would be 400 MB beside the store, while recomputing a chunk of
#: `loss + beta * entropy` costs each pass a few percent. Below it (64 MB) the vector is the faster choice.
_CHUNKED_SCORES_MIN = 1 << 24

#: From this many examples on, a selection is held as a packed mask (`Selection.packed`) and its epoch order is
#: drawn from that mask by `shuffled_members`, with no sorted index vector beside the order. Just above 2^24 it is
#: a little slower than the indices' `randperm` and gather (EMP 0.39 against 0.32 s at 1.7 x 10^7), at 10^8 faster
#: (its shuffles are cache-sized), and there it keeps InfoBatch's selection within the store plus one float32
#: vector (BENCHMARKS.md). Below it the indices are the faster form.
_PACKED_MIN = 1 << 24

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


class SelectionPolicy:
    """Base class. Subclasses set `name` and override `score` or `select`."""

    name: ClassVar[str]
    default_anneal: ClassVar[float] = 0.0
    #: False where the kept count depends on the data (infobatch): the plan is then an estimate.
    exact_plan: ClassVar[bool] = True
    #: True where the policy reads the training scores (a front end may skip scoring otherwise).
    uses_scores: ClassVar[bool] = True
    #: The version of this policy's selection rules, draws included: raise it whenever the same store, seed and
    #: epoch would select another subset, so that a checkpoint written under the old rules refuses to resume
    #: (`DataPruner.plan_settings`) instead of going on with selections the interrupted run would not have made.
    rules_version: ClassVar[int] = 1

    def __init__(self, config) -> None:  # config: PruningConfig
        self.config = config

    @property
    def uses_entropy(self) -> bool:
        """True where the policy reads the predictive entropy: a front end computes it only then (it is a second
        pass over a language model's vocabulary)."""
        return False

    def score(self, store: ScoreStore, part: slice = ALL) -> Tensor:
        """Per-example priority (higher = more worth training) of the examples in `part`; unseen examples rank
        first. Read-only: it may be a view of the store's own tensor."""
        return ranked(store.loss, store, part)

    def scores(self, store: ScoreStore) -> Scores:
        """The scores of the whole store as the selection reads them: one vector, or computed a chunk at a
        time from `_CHUNKED_SCORES_MIN` examples on (the same values either way)."""
        if store.num_examples < _CHUNKED_SCORES_MIN:
            return Scores.of(self.score(store))
        return Scores(store.num_examples, partial(self.score, store))

    def scores_of(self, ctx: SelectionContext) -> Scores:
        """The context's scores, handed over once: the context lets go of them, so a score vector is freed as
        soon as the policy has its mask."""
        scores = ctx.scores if ctx.scores is not None else self.scores(ctx.store)
        ctx.scores = None
        return scores

    def select(self, ctx: SelectionContext) -> Selection:
        return mask_to_selection(top_k_mask(self.scores_of(ctx), ctx.keep, ctx.generator))

    def planned_size(self, num_examples: int, keep: int) -> int:
        """Examples per pruning epoch, known before training (an estimate where `exact_plan` is False)."""
        return keep


POLICIES: dict[str, type[SelectionPolicy]] = {}


def register_policy(cls: type[SelectionPolicy]) -> type[SelectionPolicy]:
    POLICIES[cls.name] = cls
    return cls


def build_policy(config, static_scores: Tensor | None = None) -> SelectionPolicy:
    if config.method not in POLICIES:
        raise ValueError(f"Unknown pruning `method` {config.method!r}; known methods: {', '.join(sorted(POLICIES))}.")
    cls = POLICIES[config.method]
    if cls is StaticScorePolicy:
        return StaticScorePolicy(config, static_scores)
    return cls(config)


@register_policy
class FullPolicy(SelectionPolicy):
    name = "full"
    uses_scores = False

    def select(self, ctx: SelectionContext) -> Selection:
        return Selection.every(ctx.store.num_examples)

    def planned_size(self, num_examples: int, keep: int) -> int:
        return num_examples


@register_policy
class RandomPolicy(SelectionPolicy):
    """Random*: a new uniform subset at each selection."""

    name = "random"
    uses_scores = False

    def select(self, ctx: SelectionContext) -> Selection:
        n = ctx.store.num_examples
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=ctx.generator)[: ctx.keep]] = True
        return mask_to_selection(mask)


@register_policy
class StaticRandomPolicy(SelectionPolicy):
    """One uniform subset, a function of the seed alone, so it is the same every epoch."""

    name = "static_random"
    uses_scores = False

    def select(self, ctx: SelectionContext) -> Selection:
        n = ctx.store.num_examples
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=seeded_generator(ctx.seed, 0x5747))[: ctx.keep]] = True
        return mask_to_selection(mask)


@register_policy
class EMPPolicy(SelectionPolicy):
    """EMP: top-k of loss + beta * predictive entropy (entropy is 0 for regression)."""

    name = "emp"
    default_anneal = 0.125

    @property
    def uses_entropy(self) -> bool:
        return self.config.beta > 0

    def score(self, store: ScoreStore, part: slice = ALL) -> Tensor:
        return unseen_first(torch.add(store.loss[part], store.entropy[part], alpha=self.config.beta), store, part)


@register_policy
class InfoBatchPolicy(SelectionPolicy):
    """InfoBatch: drop a fraction s of the below-mean ("well learned") examples, upweight the rest of them.

    Unseen examples are never "well learned". The mean is over seen examples.
    """

    name = "infobatch"
    default_anneal = 0.125
    exact_plan = False
    rules_version = 2  # 1: the kept well-learned examples were the top of N uniform keys; 2: `exact_random_subset`
    #: Planning assumption: half of the examples score below the mean.
    assumed_well_learned_fraction: ClassVar[float] = 0.5

    def select(self, ctx: SelectionContext) -> Selection:
        store = ctx.store
        if store.num_seen == 0:
            return Selection.every(store.num_examples)
        if store.all_seen:
            well_learned = store.loss < store.loss.mean()
        else:
            seen = store.seen
            mean = store.loss.masked_fill(~seen, 0.0).sum() / store.num_seen
            well_learned = seen & (store.loss < mean)
        well_count = int(torch.count_nonzero(well_learned))
        kept_count = round((1.0 - ctx.prune) * well_count)
        kept_well = exact_random_subset(well_learned, kept_count, ctx.generator, total=well_count)
        keep_mask = well_learned.logical_not_().logical_or_(kept_well)  # the rest, and the drawn well-learned
        return mask_to_selection(keep_mask, upweighted=kept_well, weight=1.0 / (1.0 - ctx.prune),
                                 count=store.num_examples - well_count + kept_count)

    def planned_size(self, num_examples: int, keep: int) -> int:
        prune = 1.0 - keep / num_examples
        return num_examples - round(prune * self.assumed_well_learned_fraction * num_examples)


@register_policy
class UncertaintyPolicy(SelectionPolicy):
    """Uncertainty with EMA: top-k of the loss EMA."""

    name = "uncertainty"

    def score(self, store: ScoreStore, part: slice = ALL) -> Tensor:
        return ranked(store.ema, store, part)


@register_policy
class EpsGreedyPolicy(UncertaintyPolicy):
    """(1 - eps) k examples by loss EMA, eps k uniformly from the rest."""

    name = "eps_greedy"
    rules_version = 2  # 1: the explored examples were the top of N uniform keys; 2: `draw_unmasked`

    def select(self, ctx: SelectionContext) -> Selection:
        explore = round(self.config.eps * ctx.keep)
        mask = top_k_mask(self.scores_of(ctx), ctx.keep - explore, ctx.generator)
        return mask_to_selection(draw_unmasked(mask, explore, ctx.generator))


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


@register_policy
class UCBPolicy(SelectionPolicy):
    """Upper confidence bound: top-k of ema + c * ema_var."""

    name = "ucb"

    def score(self, store: ScoreStore, part: slice = ALL) -> Tensor:
        return unseen_first(torch.add(store.ema[part], store.ema_var[part], alpha=self.config.ucb_c), store, part)


@register_policy
class ExtremeLowFrequencyPolicy(SelectionPolicy):
    """ELFL: cycle k at a time through one fixed permutation, so all examples train equally often."""

    name = "elfl"
    uses_scores = False

    def select(self, ctx: SelectionContext) -> Selection:
        n = ctx.store.num_examples
        order = torch.randperm(n, generator=seeded_generator(ctx.seed, 0xE1F1))
        start = (ctx.round_index * ctx.keep) % n
        chosen = torch.roll(order, -start)[: ctx.keep]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[chosen] = True
        return mask_to_selection(mask)


@register_policy
class StaticScorePolicy(SelectionPolicy):
    """Top-k once by a score array given before training (EL2N, forgetting, ...)."""

    name = "static"
    uses_scores = False

    def __init__(self, config, static_scores: Tensor | None = None) -> None:
        super().__init__(config)
        if static_scores is None:
            raise ValueError(
                "Method 'static' needs per-example scores: set `static_scores_file` "
                "(or pass `static_scores`)."
            )
        scores = torch.as_tensor(static_scores, dtype=torch.float32).reshape(-1)
        if not bool(torch.isfinite(scores).all()):
            raise ValueError("`static_scores` must be finite; found NaN or inf.")
        self.static_scores = scores

    def score(self, store: ScoreStore, part: slice = ALL) -> Tensor:
        if self.static_scores.numel() != store.num_examples:
            raise ValueError(
                f"`static_scores` has {self.static_scores.numel()} entries but the dataset has "
                f"{store.num_examples} examples; one score per training example is required."
            )
        return self.static_scores[part]
