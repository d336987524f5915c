"""Per-example scores of the current epoch, kept where they were computed until they are needed.

Selections happen only at epoch boundaries, so the per-step scores need to reach the (CPU) score store
only then. A training step appends its indices, losses and entropies to preallocated tensors on its own
device: no collective, no host copy, nothing that stalls a CUDA queue. `flush` gathers every rank's rows
(two collectives, `gather_updates`) and applies them to the pruner once: at the end of each epoch, and
before every checkpoint save so that a resumed run continues from the same store. Both front ends (the
Trainer and the vision loop) use this one class.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .distributed import gather_updates
from .pruner import DataPruner


class ScoreBuffer:
    def __init__(self, pruner: DataPruner, capacity: int = 1024, scored: bool | None = None) -> None:
        self.pruner = pruner
        # By default methods that read no scores only count what was forwarded; a front end that computes the
        # scores anyway (the vision loop's loss is built from them) may keep them for the report.
        self.scored = pruner.policy.uses_scores if scored is None else scored
        self._capacity = max(1, int(capacity))
        self._indices: Tensor | None = None
        self._values: Tensor | None = None  # (3, capacity) float32: loss, entropy, 1 where the example was scorable
        self._rows = 0  # a host-side count: shapes are known without a device sync

    def __len__(self) -> int:
        return self._rows

    def add(self, indices: Tensor, losses: Tensor | None = None, entropies: Tensor | None = None,
            scorable: Tensor | None = None) -> None:
        """Append one batch (tensors on the training device); `losses`/`entropies` only for scored methods, and
        `scorable` False where an example had nothing to score (no labelled position): it keeps its old score."""
        indices = indices.detach().reshape(-1)
        n = indices.numel()
        if self.scored and (losses is None or entropies is None):
            raise ValueError(f"method {self.pruner.config.method!r} reads scores: pass losses and entropies.")
        self._reserve(self._rows + n, indices.device)
        assert self._indices is not None and self._values is not None
        self._indices[self._rows : self._rows + n] = indices
        if self.scored:
            self._values[0, self._rows : self._rows + n] = losses.detach().reshape(-1)  # type: ignore[union-attr]
            self._values[1, self._rows : self._rows + n] = entropies.detach().reshape(-1)  # type: ignore[union-attr]
            self._values[2, self._rows : self._rows + n] = 1.0 if scorable is None else scorable.reshape(-1)
        self._rows += n

    def _reserve(self, rows: int, device: torch.device) -> None:
        if self._indices is not None and self._indices.device != device:
            raise ValueError(f"scores arrive on {device} but the buffer holds {self._indices.device}.")
        if self._indices is not None and rows <= self._indices.numel():
            return
        capacity = max(rows, self._capacity, 2 * (0 if self._indices is None else self._indices.numel()))
        indices = torch.empty(capacity, dtype=torch.int64, device=device)
        values = torch.empty(3 if self.scored else 0, capacity, dtype=torch.float32, device=device)
        if self._indices is not None and self._values is not None and self._rows:
            indices[: self._rows] = self._indices[: self._rows]
            values[:, : self._rows] = self._values[:, : self._rows]
        self._indices, self._values = indices, values

    def flush(self, rows: int | None = None) -> None:
        """Gather every rank's rows and apply them to the pruner (every rank must call this together). `rows`:
        only the first that many (a checkpoint inside a gradient-accumulation window leaves out the window's
        batches); the rest stay buffered, in order."""
        held = self._rows
        rows = held if rows is None else min(int(rows), held)
        empty = torch.empty(0, dtype=torch.int64)
        indices = self._indices[:rows] if self._indices is not None else empty
        if self.scored:
            values = self._values if self._values is not None else torch.empty(3, 0)
            all_idx, all_loss, all_ent, all_ok = gather_updates(indices, *values[:, :rows])
            if all_idx.numel():
                self.pruner.update(all_idx, all_loss, all_ent, scorable=all_ok > 0.5)
        else:
            (all_idx,) = gather_updates(indices)
            if all_idx.numel():
                self.pruner.count_forwarded(all_idx.numel())
        if rows < held and self._indices is not None and self._values is not None:
            self._indices[: held - rows] = self._indices[rows:held].clone()
            self._values[:, : held - rows] = self._values[:, rows:held].clone()
        self._rows = held - rows
