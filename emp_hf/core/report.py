"""What pruning did: counts per epoch, the saving against full data, and who got picked.

The always / sometimes / never split is that of the dynamic-data-pruning
paper: over the pruning epochs run, how many examples were selected every
time, some of the time, or not once. Full-data epochs are not counted there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .scores import ScoreStore


@dataclass
class EpochRecord:
    epoch: int
    full: bool
    kept: int
    forwarded: int = 0
    mean_score: float | None = None
    class_kept_fraction: dict[str, float] | None = None
    scored_rows: int = 0  # per-example scores recorded in the epoch (after the gather)
    nonfinite_rows: int = 0  # of which NaN/inf, dropped
    unscored_rows: int = 0  # of which had nothing to score (no labelled position): old score kept


@dataclass
class PruningReport:
    num_examples: int
    method: str
    settings: dict[str, Any]
    planned: list[int]
    exact_plan: bool
    labels: Tensor | None = field(default=None, repr=False)
    #: A budget run: the epochs of full data it is measured against (the run it stands in for), else None.
    reference_epochs: int | None = None
    epochs: dict[int, EpochRecord] = field(default_factory=dict)

    def record_selection(self, epoch: int, kept: Iterable[Tensor] | None, count: int,
                         mean_score: float | None) -> None:
        """`kept`: the indices of a pruning epoch's selection, in pieces; None for a full epoch (every example)."""
        full = kept is None
        per_class = None
        if self.labels is not None and kept is not None:
            totals = torch.bincount(self.labels)
            chosen = torch.zeros_like(totals)
            for part in kept:
                chosen += torch.bincount(self.labels[part], minlength=totals.numel())
            per_class = {
                str(c): round(float(chosen[c]) / float(totals[c]), 6) for c in range(totals.numel()) if totals[c] > 0
            }
        previous = self.epochs.get(epoch)
        self.epochs[epoch] = EpochRecord(
            epoch=epoch,
            full=full,
            kept=int(count),
            forwarded=previous.forwarded if previous else 0,
            scored_rows=previous.scored_rows if previous else 0,
            nonfinite_rows=previous.nonfinite_rows if previous else 0,
            unscored_rows=previous.unscored_rows if previous else 0,
            mean_score=mean_score,
            class_kept_fraction=per_class,
        )

    def add_forwarded(self, epoch: int, count: int) -> None:
        if epoch not in self.epochs:
            raise RuntimeError("`set_epoch` must be called before examples are recorded for that epoch.")
        self.epochs[epoch].forwarded += int(count)

    def add_scored(self, epoch: int, rows: int, nonfinite: int, unscored: int = 0) -> None:
        self.epochs[epoch].scored_rows += int(rows)
        self.epochs[epoch].nonfinite_rows += int(nonfinite)
        self.epochs[epoch].unscored_rows += int(unscored)

    @property
    def forwarded_total(self) -> int:
        return sum(r.forwarded for r in self.epochs.values())

    def summary(self, store: ScoreStore, **extra: Any) -> dict[str, Any]:
        """The JSON-ready report; `extra` adds front-end facts (wall time, world size, ...)."""
        records = [self.epochs[e] for e in sorted(self.epochs)]
        full_data = self.num_examples * (self.reference_epochs or len(records))
        forwarded = self.forwarded_total
        pruned_epochs = sum(1 for r in records if not r.full)
        counts = store.times_selected
        histogram = torch.bincount(counts, minlength=pruned_epochs + 1).tolist()
        if pruned_epochs:
            split = {
                "always": int((counts == pruned_epochs).sum()),
                "sometimes": int(((counts > 0) & (counts < pruned_epochs)).sum()),
                "never": int((counts == 0).sum()),
            }
        else:
            split = {"always": self.num_examples, "sometimes": 0, "never": 0}
        out: dict[str, Any] = {
            "method": self.method,
            "settings": self.settings,
            "num_examples": self.num_examples,
            "epochs_run": len(records),
            "pruning_epochs_run": pruned_epochs,
            "planned_examples_per_epoch": self.planned,
            "plan_is_exact": self.exact_plan,
            "kept_examples": sum(r.kept for r in records),
            "forwarded_examples": forwarded,
            "full_data_examples": full_data,
            "saved_fraction": (1.0 - forwarded / full_data) if full_data else 0.0,
            "nonfinite_scores_dropped": store.nonfinite_count,
            "unscored_rows": sum(r.unscored_rows for r in records),
            "selection_count_histogram": histogram,
            "selection_split": split,
            "per_epoch": [asdict(r) for r in records],
        }
        budget = self.settings.get("budget_examples")
        if budget is not None:
            out["budget_examples"] = budget
        elif self.method != "full":  # the fair question: would a full-data run of this many examples do as well?
            out["budget_matched_twin"] = {"method": "full", "budget_examples": forwarded,
                                          "flags": f"--method full --budget_examples {forwarded}"}
        out.update(extra)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": [asdict(r) for r in self.epochs.values()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs = {int(r["epoch"]): EpochRecord(**r) for r in state["epochs"]}


def save_json(data: dict[str, Any], path: str | Path) -> None:
    """Written atomically (a kill leaves the old file or the new one); a full disk is named as such."""
    from .state_file import write_atomically

    body = (json.dumps(data, indent=2) + "\n").encode()
    write_atomically(path, lambda f: f.write(body))
