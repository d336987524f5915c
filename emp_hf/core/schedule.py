"""When to prune: full epoch 0, full annealing tail, a new selection every T_p epochs.

The plan (examples per epoch) is known before training so that a front end
can size its LR schedule to the pruned run instead of the full-data one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def kept_count(num_examples: int, prune: float) -> int:
    """k = round((1 - s) N), at least 1 so that a pruning epoch is never empty."""
    return max(1, round((1.0 - prune) * num_examples))


@dataclass(frozen=True)
class PruningSchedule:
    num_epochs: int
    prune: float
    anneal: float = 0.0
    period: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.num_epochs, bool) or not isinstance(self.num_epochs, int) or self.num_epochs < 1:
            raise ValueError(f"`num_epochs` must be an integer >= 1, got {self.num_epochs!r}.")
        if not 0.0 <= self.prune < 1.0:
            raise ValueError(f"`prune` must be in [0, 1), got {self.prune!r}.")
        if not 0.0 <= self.anneal < 1.0:
            raise ValueError(f"`anneal` must be in [0, 1), got {self.anneal!r}.")
        if self.period < 1:
            raise ValueError(f"`period` must be >= 1, got {self.period!r}.")

    @property
    def num_anneal_epochs(self) -> int:
        # round() first so that 0.125 * 8 = 1.0000000001 does not become 2
        return math.ceil(round(self.anneal * self.num_epochs, 9))

    @property
    def first_anneal_epoch(self) -> int:
        return self.num_epochs - self.num_anneal_epochs

    def is_full(self, epoch: int) -> bool:
        """True for epochs that train on all data: epoch 0, the annealing tail, and any epoch at prune 0."""
        return self.prune == 0.0 or epoch <= 0 or epoch >= self.first_anneal_epoch

    def selection_epoch(self, epoch: int) -> int:
        """The epoch whose selection is in force at `epoch` (1, 1 + T_p, 1 + 2 T_p, ...)."""
        return 1 + ((epoch - 1) // self.period) * self.period

    def round_index(self, epoch: int) -> int:
        """How many pruning selections precede the one in force at `epoch`."""
        return (epoch - 1) // self.period

    def plan(self, num_examples: int, pruned_size: int) -> list[int]:
        """Examples trained in each epoch, given the size of a pruning epoch."""
        return [num_examples if self.is_full(e) else pruned_size for e in range(self.num_epochs)]
