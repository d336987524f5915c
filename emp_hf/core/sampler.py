"""A torch Sampler over the pruner's current selection.

By default it yields the GLOBAL order, identical on every process: Accelerate
(and the Trainer) shard the batches themselves. A plain DDP loop passes
`num_replicas`/`rank` instead and gets this rank's share, padded like
`DistributedSampler` so all ranks run the same number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from .pruner import DataPruner


class PruningSampler(Sampler[int]):
    def __init__(self, pruner: DataPruner, num_replicas: int | None = None, rank: int | None = None) -> None:
        if (num_replicas is None) != (rank is None):
            raise ValueError("Pass both `num_replicas` and `rank`, or neither (global order for Accelerate).")
        if num_replicas is not None:
            if num_replicas < 1:
                raise ValueError(f"`num_replicas` must be >= 1, got {num_replicas}.")
            if not 0 <= rank < num_replicas:  # type: ignore[operator]
                raise ValueError(f"`rank` must be in [0, {num_replicas}), got {rank}.")
        self.pruner = pruner
        self.num_replicas = num_replicas
        self.rank = rank

    def set_epoch(self, epoch: int) -> None:
        self.pruner.set_epoch(epoch)

    def indices(self) -> torch.Tensor:
        """What iteration yields, as one tensor: the epoch's global order, or this rank's padded share."""
        order = self.pruner.epoch_order()
        if self.num_replicas is None:
            return order
        total = -(-order.numel() // self.num_replicas) * self.num_replicas
        if total > order.numel():
            order = torch.cat([order, order[: total - order.numel()]])
        return order[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        size = self.pruner.epoch_size()
        if self.num_replicas is None:
            return size
        return -(-size // self.num_replicas)
