"""Per-example training statistics, kept as flat tensors on the CPU.

Every rank of a distributed run holds an identical copy (updates are gathered
first, see `distributed.py`), so selections computed from it agree everywhere.

Memory: 4 float32 fields (loss, entropy, ema, ema_var) and 3 int32 fields
(times_trained, times_selected, last_epoch) = 28 bytes per example; 10^8
examples take 2.8 GB.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

FLOAT_FIELDS = ("loss", "entropy", "ema", "ema_var")
INT_FIELDS = ("times_trained", "times_selected", "last_epoch")
BYTES_PER_EXAMPLE = 4 * len(FLOAT_FIELDS) + 4 * len(INT_FIELDS)


def last_occurrence(indices: Tensor) -> tuple[Tensor, Tensor]:
    """Unique indices and, for each, the position of its last occurrence.

    Padding in distributed loaders repeats examples within one update; keeping
    the last write makes the result independent of how scatter orders
    duplicate writes (which is unspecified on GPUs).
    """
    unique, inverse = torch.unique(indices, sorted=True, return_inverse=True)
    positions = torch.arange(indices.numel(), dtype=torch.int64)
    last = torch.full((unique.numel(),), -1, dtype=torch.int64)
    last.scatter_reduce_(0, inverse, positions, reduce="amax")
    return unique, last


class ScoreStore:
    """Last loss/entropy, loss EMA and EMA-variance, and counters, for N examples."""

    def __init__(self, num_examples: int, ema_alpha: float = 0.8) -> None:
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples <= 0:
            raise ValueError(f"`num_examples` must be a positive integer (the dataset size), got {num_examples!r}.")
        if not 0.0 < ema_alpha <= 1.0:
            raise ValueError(f"`ema_alpha` must be in (0, 1], got {ema_alpha!r}.")
        self.num_examples = num_examples
        self.ema_alpha = float(ema_alpha)
        self.loss = torch.zeros(num_examples, dtype=torch.float32)
        self.entropy = torch.zeros(num_examples, dtype=torch.float32)
        self.ema = torch.zeros(num_examples, dtype=torch.float32)
        self.ema_var = torch.zeros(num_examples, dtype=torch.float32)
        self.times_trained = torch.zeros(num_examples, dtype=torch.int32)
        self.times_selected = torch.zeros(num_examples, dtype=torch.int32)
        self.last_epoch = torch.full((num_examples,), -1, dtype=torch.int32)
        self.nonfinite_count = 0
        self.rows_seen = 0
        #: Examples with at least one finite observation, counted as they arrive, so that a selection after
        #: the first full epoch (every example seen) can skip the unseen-example passes over the store.
        self.num_seen = 0

    @property
    def seen(self) -> Tensor:
        """Mask of examples with at least one finite observation."""
        return self.times_trained > 0

    @property
    def all_seen(self) -> bool:
        return self.num_seen == self.num_examples

    def update(self, indices: Tensor, losses: Tensor, entropies: Tensor | None = None, epoch: int = 0) -> int:
        """Record one batch of observations; returns the number of rows written.

        Rows whose loss or entropy is NaN/inf are dropped and counted in
        `nonfinite_count`, so an fp16 overflow never reaches a selection.
        """
        indices = torch.as_tensor(indices).detach().reshape(-1).to("cpu", torch.int64)
        losses = torch.as_tensor(losses).detach().reshape(-1).to("cpu", torch.float32)
        entropies = (
            torch.zeros_like(losses)
            if entropies is None
            else torch.as_tensor(entropies).detach().reshape(-1).to("cpu", torch.float32)
        )
        if not (indices.numel() == losses.numel() == entropies.numel()):
            raise ValueError(
                f"`indices`, `losses` and `entropies` must have the same length, got "
                f"{indices.numel()}, {losses.numel()} and {entropies.numel()}."
            )
        if indices.numel() == 0:
            return 0
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= self.num_examples:
            raise ValueError(
                f"`indices` must lie in [0, {self.num_examples}), got values from {low} to {high}."
            )
        self.rows_seen += indices.numel()
        finite = torch.isfinite(losses) & torch.isfinite(entropies)
        n_bad = int((~finite).sum())
        if n_bad:
            self.nonfinite_count += n_bad
            indices, losses, entropies = indices[finite], losses[finite], entropies[finite]
            if indices.numel() == 0:
                return 0
        unique, last = last_occurrence(indices)
        loss, entropy = losses[last], entropies[last]

        first = self.times_trained[unique] == 0
        self.num_seen += int(torch.count_nonzero(first))
        ema_prev = torch.where(first, loss, self.ema[unique])
        var_prev = self.ema_var[unique]
        a = self.ema_alpha
        # docs/methods.md: var <- (1-a) var + a (loss - ema_prev)^2; ema <- a loss + (1-a) ema_prev;
        # both start from the first observed loss (variance 0).
        new_var = torch.where(first, torch.zeros_like(loss), (1 - a) * var_prev + a * (loss - ema_prev) ** 2)
        new_ema = torch.where(first, loss, a * loss + (1 - a) * ema_prev)

        self.loss[unique] = loss
        self.entropy[unique] = entropy
        self.ema[unique] = new_ema
        self.ema_var[unique] = new_var
        self.times_trained[unique] += 1
        self.last_epoch[unique] = int(epoch)
        return unique.numel()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name).clone() for name in FLOAT_FIELDS + INT_FIELDS}
        state.update(
            num_examples=self.num_examples,
            ema_alpha=self.ema_alpha,
            nonfinite_count=self.nonfinite_count,
            rows_seen=self.rows_seen,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["num_examples"]) != self.num_examples:
            raise ValueError(
                f"Score state is for {state['num_examples']} examples but this dataset has {self.num_examples}."
            )
        for name in FLOAT_FIELDS + INT_FIELDS:
            value = state[name]
            if not isinstance(value, torch.Tensor) or value.shape != (self.num_examples,):
                raise ValueError(f"score field {name!r} is not a tensor of {self.num_examples} values.")
            setattr(self, name, value.clone().to("cpu"))
        self.ema_alpha = float(state["ema_alpha"])
        self.nonfinite_count = int(state["nonfinite_count"])
        self.rows_seen = int(state["rows_seen"])
        self.num_seen = int(torch.count_nonzero(self.times_trained))
