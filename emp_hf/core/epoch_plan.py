"""The step plan of a run, in one place: epoch sizes -> batches -> optimizer steps -> the LR horizon.

Every front end plans with it: the Trainer counts an epoch's batches by asking its prepared dataloader (its
drop_last, sharding and even_batches rules) for each planned size, the vision loops by their own batching
rule (`sharded_batches`); the plan turns those batches into optimizer steps (gradient accumulation: a last
partial window still steps), gives the LR schedule its horizon (`total`), finds a resumed run's place
(`locate`), and is updated in place when a data-dependent plan (InfoBatch) learns an epoch's real size, so a
schedule holding it follows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class EpochPlan:
    examples: list[int]  # per epoch, over all processes
    batches: list[int]  # per epoch, per process
    accumulation: int = 1
    steps_per_epoch: list[int] = field(init=False)

    def __post_init__(self) -> None:
        if len(self.examples) != len(self.batches):
            raise ValueError(f"a plan needs one batch count per epoch: {len(self.examples)} epochs, "
                             f"{len(self.batches)} counts")
        if self.accumulation < 1:
            raise ValueError(f"gradient accumulation must be >= 1, got {self.accumulation}")
        self.steps_per_epoch = [math.ceil(b / self.accumulation) for b in self.batches]

    @classmethod
    def of(cls, examples: list[int], batches_of: Callable[[int], int], accumulation: int = 1) -> EpochPlan:
        """The plan of epochs of these sizes, each epoch's batches counted by `batches_of(size)`."""
        return cls(list(examples), [int(batches_of(size)) for size in examples], accumulation)

    def update(self, examples: list[int], batches_of: Callable[[int], int]) -> None:
        """New epoch sizes (a data-dependent plan's real ones), in place."""
        self.examples[:] = examples
        self.batches[:] = [int(batches_of(size)) for size in examples]
        self.steps_per_epoch[:] = [math.ceil(b / self.accumulation) for b in self.batches]

    @property
    def total(self) -> int:
        """Optimizer steps of the whole run: the LR schedule's horizon."""
        return sum(self.steps_per_epoch)

    def start_of(self, epoch: int) -> int:
        """The optimizer steps before `epoch`."""
        return sum(self.steps_per_epoch[:epoch])

    def locate(self, step: int) -> tuple[int, int]:
        """(epochs completed, optimizer steps done in the next one) after `step` optimizer steps."""
        epoch = 0
        while epoch < len(self.steps_per_epoch) and step >= self.steps_per_epoch[epoch]:
            step -= self.steps_per_epoch[epoch]
            epoch += 1
        return epoch, step


def sharded_batches(size: int, world: int, batch_size: int) -> int:
    """Batches one process takes from an epoch of `size` examples split over `world` processes (padded to equal
    shares), where a last batch of one example joins the one before it: BatchNorm cannot train on one example,
    and InfoBatch's data-dependent sizes would leave one at random; no example is dropped."""
    share = math.ceil(size / world)
    steps = math.ceil(share / batch_size)
    return steps - 1 if steps > 1 and share % batch_size == 1 else steps
