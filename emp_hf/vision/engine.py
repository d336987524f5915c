"""The one training loop of the vision front end, with a pluggable per-example objective.

The supervised loop (`loop.py`, cross-entropy), SimCLR pre-training (`simclr.py`, NT-Xent and the memory term)
and the static-scoring runs (`static_scoring.py`, cross-entropy with forgetting counts) differ only in what a
batch of example indices turns into: per-example loss terms (the loss is their mean, InfoBatch's weights
applied), what the score buffer records, and the sums an epoch reports. That is the `Objective`; the rest
(batches of the epoch's order, backward, optimizer and schedule steps, the scores buffered on the device and
flushed once per epoch, the pruner's plan updated as real sizes arrive) is here, once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core import DataPruner, PruningSampler, ScoreBuffer
from ..core.epoch_plan import EpochPlan, sharded_batches

logger = logging.getLogger("emp_hf")


@dataclass
class StepTerms:
    """What one batch gives: per-example loss terms, the two score fields to record (loss, second field), and
    per-batch sums for the epoch's record."""

    terms: Tensor
    scores: tuple[Tensor, Tensor] | None = None
    sums: dict[str, Tensor] = field(default_factory=dict)


class Objective(Protocol):
    def begin_epoch(self, epoch: int) -> None: ...

    def __call__(self, idx: Tensor) -> StepTerms: ...


def batch_of(order: Tensor, b: int, steps: int, batch_size: int) -> Tensor:
    """Batch `b` of the `steps` of an epoch's `order` (`sharded_batches`: the last may take one example more)."""
    end = (b + 1) * batch_size
    if b == steps - 1 and order.numel() - end == 1:
        end += 1
    return order[b * batch_size : end]


def train_epoch(order: Tensor, steps: int, batch_size: int, objective: Objective, optimizer, scheduler,
                backward: Callable[[Tensor], None], *, weights_of: Callable[[Tensor], Tensor] | None = None,
                scores: ScoreBuffer | None = None, progress: bool = False, desc: str = "") -> dict[str, Tensor]:
    """One epoch of steps over `order`: the objective's terms, (weighted) mean, backward, optimizer and schedule
    steps, the scores buffered on the device. Returns the epoch's sums (on the device), "examples" included."""
    device = order.device
    sums: dict[str, Tensor] = {"examples": torch.zeros((), device=device)}
    for b in tqdm(range(steps), desc=desc, leave=False, disable=not progress):
        idx = batch_of(order, b, steps, batch_size)
        out = objective(idx)
        weights = weights_of(idx) if weights_of is not None else 1.0  # on the device
        loss = (out.terms * weights).mean()
        backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if scores is not None and out.scores is not None:
            scores.add(idx, *out.scores)
        sums["examples"] += idx.numel()
        for key, value in out.sums.items():
            sums[key] = sums[key] + value if key in sums else value
    return sums


def plan_of(pruner: DataPruner, world: int, batch_size: int) -> EpochPlan:
    """The run's step plan: each epoch of the pruner's current plan (a budget run's last epoch cut there) in a
    rank's batches (`sharded_batches`)."""
    return EpochPlan.of(pruner.current_plan(), lambda size: sharded_batches(size, world, batch_size))


def log_plan(pruner: DataPruner, plan: EpochPlan) -> None:
    """The run's plan at INFO, and the warning where it saves little (a short run), as the Trainer logs them."""
    sizes = pruner.plan()
    full = pruner.num_examples * len(sizes)
    logger.info("Data pruning: method %s, prune %s; examples per epoch %s; %d of %d examples (%.1f%% saved%s); "
                "optimizer steps %d", pruner.config.method, pruner.config.effective_prune, sizes, sum(sizes), full,
                100 * (1 - sum(sizes) / full), "" if pruner.exact_plan else ", estimated", plan.total)
    warning = pruner.little_saved_warning()
    if warning is not None:
        logger.warning(warning)


def pruned_epochs(pruner: DataPruner, sampler: PruningSampler, scores: ScoreBuffer, plan: EpochPlan,
                  epochs: range, *, world: int, batch_size: int, device: torch.device, model, objective: Objective,
                  optimizer, scheduler, backward: Callable[[Tensor], None], progress: bool = False,
                  desc: str = "epochs") -> Iterator[tuple[int, dict[str, Tensor], float]]:
    """The epochs of a pruning run: each epoch's selection and order, the plan updated to the real sizes (the
    schedule reads it), `train_epoch` with InfoBatch's weights where the epoch has them, and one flush of the
    epoch's scores into every rank's store. Yields (epoch, the epoch's sums, its training seconds); the caller
    records, evaluates and checkpoints, then the next epoch begins."""
    for epoch in tqdm(epochs, desc=desc, disable=not progress):
        start = time.time()
        sampler.set_epoch(epoch)
        order = sampler.indices().to(device)
        plan.update(pruner.current_plan(), lambda size: sharded_batches(size, world, batch_size))
        weighted = pruner.prepare_loss_weights(device)  # False but in InfoBatch's pruning epochs
        objective.begin_epoch(epoch)
        model.train()
        sums = train_epoch(order, plan.steps_per_epoch[epoch], batch_size, objective, optimizer, scheduler, backward,
                           weights_of=pruner.loss_weights if weighted else None, scores=scores, progress=progress,
                           desc=f"epoch {epoch}")
        scores.flush()  # its host copy also waits for the device's queued work
        yield epoch, sums, time.time() - start
