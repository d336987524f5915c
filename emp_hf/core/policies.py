"""Selection policies: one class per method of docs/methods.md, found by name.

A policy turns the score store into the set of examples to train on in one
pruning epoch. It never orders the set (the sampler does, so that every
method shares one seeded shuffle) and never decides *when* to prune (the
schedule does). Adding a method is one small subclass with `@register_policy`.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import torch
from torch import Tensor

from .ranking import (  # noqa: F401 - re-exported: the policies' building blocks
    _CHUNKED_SCORES_MIN,
    _RADIX_MIN,
    ALL,
    Scores,
    as_scores,
    draw_unmasked,
    exact_random_subset,
    kth_largest,
    random_subset,
    random_subset_mask,
    ranked,
    top_k_mask,
    unseen_first,
)
from .scores import ScoreStore
from .selection import (  # noqa: F401 - re-exported: what a policy returns
    _CHUNK,
    _PACKED_MIN,
    Selection,
    SelectionContext,
    all_indices,
    gather_in_place,
    index_dtype,
    mask_to_selection,
    nonzero_indices,
    seeded_generator,
    shuffled_members,
)


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
