"""The pruning state of one run: scores, the epoch's selection, and the report.

This is the one object a front end holds. Its three-call use (InfoBatch's
API, without patching torch):

    pruner = DataPruner(len(dataset), num_epochs, PruningConfig(method="emp", prune=0.7))
    loader = DataLoader(dataset, batch_size=..., sampler=PruningSampler(pruner))
    ...  # per batch, after the forward pass:
    pruner.update(indices, per_example_loss, per_example_entropy)
    loss = (per_example_loss * pruner.loss_weights(indices)).mean()

Every selection is a function of (seed, epoch, scores) only, so identical
stores on all ranks give identical selections, and a restored state gives the
selection the uninterrupted run would have made.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import torch
from torch import Tensor

from . import selection as selection_module
from .config import PruningConfig
from .fingerprint import DataFingerprint
from .policies import (
    Scores,
    Selection,
    SelectionContext,
    build_policy,
    gather_in_place,
    index_dtype,
    mask_to_selection,
    seeded_generator,
    shuffled_members,
)
from .pruner_state import check_restored, check_state_fields, pack_selection, unpack_selection
from .report import PruningReport
from .schedule import PruningSchedule, kept_count
from .scores import ScoreStore
from .state_file import DamagedStateError
from .static import load_scores_file

logger = logging.getLogger("emp_hf")

#: The version of the draws every method shares (ties at the threshold, the epoch order): with the policy's own
#: `rules_version` it goes into `plan_settings`, so a checkpoint written by code that would select or order
#: differently refuses to resume. Raise it whenever the same state, seed and epoch would give another order.
SELECTION_RULES = 1
#: The same from `_PACKED_MIN` examples on, where the order of a pruning epoch is `shuffled_members`' (version 2;
#: version 1 gathered the sorted indices in `randperm` order there too).
PACKED_SELECTION_RULES = 2
_SELECT_STREAM = 0x5E1EC7
_ORDER_STREAM = 0x0DE5
_BUDGET_STREAM = 0xB0D6E7
_ONE = torch.ones(1, dtype=torch.int32)


def _same_device(held: torch.device, asked: torch.device) -> bool:
    """`asked` may name no index ("cuda"); a tensor's device always has one ("cuda:0")."""
    return held == asked or (asked.index is None and held.type == asked.type)


class DataPruner:
    def __init__(
        self,
        num_examples: int,
        num_epochs: int,
        config: PruningConfig | None = None,
        *,
        seed: int = 0,
        labels: Tensor | None = None,
        static_scores: Tensor | None = None,
        shuffle: bool = True,
        run_facts: dict[str, Any] | None = None,
        data_fingerprint: DataFingerprint | None = None,
    ) -> None:
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples <= 0:
            raise ValueError(f"`num_examples` must be a positive integer (the dataset size), got {num_examples!r}.")
        self.config = config if config is not None else PruningConfig()
        self.num_examples = num_examples
        self.seed = int(self.config.pruning_seed if self.config.pruning_seed is not None else seed)
        self.shuffle = shuffle
        if self.config.method != "static" and (static_scores is not None or self.config.static_scores_file):
            logger.warning("`static_scores_file` is ignored: method %r does not read static scores.",
                           self.config.method)
            static_scores = None
        #: What a scoring run's file says: the score's name, the end to keep, and the scoring cost.
        self.static_facts: dict[str, Any] = {}
        if self.config.method == "static" and static_scores is None and self.config.static_scores_file is not None:
            static_scores, self.static_facts = load_scores_file(self.config.static_scores_file)
        # The policy keeps the top: negate a "keep low" score, and negate again when the user flips it.
        if static_scores is not None and (self.static_facts.get("keep", "high") == "low") != self.config.static_flip:
            static_scores = -torch.as_tensor(static_scores, dtype=torch.float32)
        if static_scores is not None and torch.as_tensor(static_scores).numel() != num_examples:
            raise ValueError(
                f"`static_scores` has {torch.as_tensor(static_scores).numel()} entries but the dataset has "
                f"{num_examples} examples; one score per training example is required."
            )
        self.static_digest = (
            None if static_scores is None
            else hashlib.sha256(torch.as_tensor(static_scores, dtype=torch.float32).numpy().tobytes()).hexdigest()
        )
        #: Facts of the front end that shape the step plan (world size, batch, accumulation, what a score means):
        #: saved with the state and compared on resume.
        self.run_facts: dict[str, Any] = dict(run_facts or {})
        #: What the run trains on (`core/fingerprint.py`): a checkpoint made on other data (other rows, another
        #: order, other labels or tokens) is refused.
        self.data_fingerprint = data_fingerprint
        self.policy = build_policy(self.config, static_scores)
        #: The epochs the run is compared with: a budget run stands in for a run of this many epochs.
        self.reference_epochs = num_epochs
        budget = self.config.budget_examples
        if budget is not None:
            if budget > num_examples * num_epochs:
                raise ValueError(f"`budget_examples` {budget:,} is more than {num_epochs} full epochs of "
                                 f"{num_examples:,} examples: raise the number of epochs, or lower the budget.")
            num_epochs = -(-budget // num_examples)  # the full epochs the budget buys, the last one cut
        self.schedule = PruningSchedule(num_epochs, self.config.prune, self.config.effective_anneal, self.config.period)
        self.store = ScoreStore(num_examples, self.config.ema_alpha)
        self.keep = kept_count(num_examples, self.config.prune)
        if labels is not None:
            labels = torch.as_tensor(labels).reshape(-1)
            if labels.numel() != num_examples:
                raise ValueError(f"`labels` has {labels.numel()} entries for {num_examples} examples.")
            labels = labels.to(torch.int64) if not labels.is_floating_point() else None
            if labels is not None and int(labels.min()) < 0:
                labels = None  # ignore-index style labels: no per-class report
        self.report = PruningReport(
            num_examples=num_examples,
            method=self.config.method,
            settings=self.config.to_dict() | {"pruning_seed": self.seed},
            planned=self.plan(),
            exact_plan=self.policy.exact_plan,
            labels=labels,
            reference_epochs=self.reference_epochs if budget is not None else None,
        )
        self.epoch: int | None = None
        self.selection: Selection | None = None
        self._pruned: Selection | None = None  # last pruning selection, reused within a period
        self._pruned_epoch: int | None = None
        self._order: Tensor | None = None
        self._dense_weights: tuple[Selection, Tensor] | None = None
        self._closed: set[int] = set()  # epochs whose scores `close_epoch` has checked

    # ------------------------------------------------------------------ plan
    def plan(self) -> list[int]:
        """Examples each epoch will train on (an estimate for infobatch, see `exact_plan`); a budget run's last
        epoch is cut to what is left of the budget."""
        sizes = self.schedule.plan(self.num_examples, self.policy.planned_size(self.num_examples, self.keep))
        if self.config.budget_examples is not None:
            sizes[-1] = self.config.budget_examples - self.num_examples * (len(sizes) - 1)
        return sizes

    def _budget_cut(self, epoch: int) -> int | None:
        """The examples of a budget run's cut last epoch (None for every other epoch)."""
        budget = self.config.budget_examples
        if budget is None or epoch != self.schedule.num_epochs - 1:
            return None
        left = budget - self.num_examples * epoch
        return left if left < self.num_examples else None

    def current_plan(self) -> list[int]:
        """The plan updated with what is known: real sizes of the epochs selected so far, and for later
        pruning epochs the latest real pruning size. Equals `plan()` for fixed-ratio methods; for infobatch
        it is the best estimate of the rest of the run, and a restored state gives the same answer."""
        sizes = self.plan()
        latest_pruned = None
        for epoch in sorted(self.report.epochs):
            record = self.report.epochs[epoch]
            sizes[epoch] = record.kept
            if not record.full:
                latest_pruned = record.kept
        if latest_pruned is not None:
            for epoch in range(len(sizes)):
                if epoch not in self.report.epochs and not self.schedule.is_full(epoch):
                    sizes[epoch] = latest_pruned
        last = len(sizes) - 1
        if self._budget_cut(last) is not None and last not in self.report.epochs:
            sizes[last] = self._budget_cut(last)  # type: ignore[assignment]
        return sizes

    def little_saved_warning(self) -> str | None:
        """What to say where the plan saves less than half of the prune ratio (a short run: epoch 0 and the
        annealing epochs train on everything), for every front end to log once; None where it saves enough."""
        prune = self.config.prune
        if prune == 0 or self.config.method == "full":
            return None
        plan = self.plan()
        saved = 1 - sum(plan) / (self.num_examples * len(plan))
        if saved >= prune / 2:
            return None
        pruning_epochs = sum(size < self.num_examples for size in plan)
        return (f"Data pruning will save only {100 * saved:.1f}% of the examples (prune {prune}): {pruning_epochs} "
                f"of {len(plan)} epochs prune; epoch 0 is always full and anneal={self.config.effective_anneal} keeps "
                f"the last {self.schedule.num_anneal_epochs} epoch(s) full. Train more epochs, or lower `anneal` (0 "
                "turns the annealing off).")

    @property
    def exact_plan(self) -> bool:
        return self.policy.exact_plan or self.config.prune == 0.0

    # ------------------------------------------------------------- selection
    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's examples. Idempotent: a second call for the same epoch changes nothing."""
        epoch = int(epoch)
        if epoch == self.epoch and self.selection is not None:
            return
        if epoch < 0 or epoch >= self.schedule.num_epochs:
            raise ValueError(f"`epoch` must be in [0, {self.schedule.num_epochs}), got {epoch}.")
        if self.epoch is not None and self.epoch != epoch:
            self.close_epoch(self.epoch)
        full = self.schedule.is_full(epoch)
        chosen_at = None if full else self.schedule.selection_epoch(epoch)
        # Release the vectors of the previous epoch before building new ones: at 10^8 examples each is
        # 400 MB, and a selection then needs no more than the scores and a mask beside the store.
        self.selection = self._order = self._dense_weights = None
        if chosen_at != self._pruned_epoch:
            self._pruned = None
        scores = self.policy.scores(self.store) if self.policy.uses_scores else None  # once per epoch
        mean_score = self.mean_score(scores)
        cut = self._budget_cut(epoch)
        if cut is not None:  # a budget run's last epoch: a uniform subset, as a run stopped mid-epoch would see
            mask = torch.zeros(self.num_examples, dtype=torch.bool)
            mask[torch.randperm(self.num_examples, generator=seeded_generator(self.seed, epoch, _BUDGET_STREAM))[:cut]] \
                = True
            selection = mask_to_selection(mask)
            self.epoch, self.selection = epoch, selection
            self.report.record_selection(epoch, selection.index_chunks(), len(selection), mean_score)
            return
        if full:
            scores = None
            selection = Selection.every(self.num_examples)
        else:
            if self._pruned is None:
                ctx = SelectionContext(
                    store=self.store,
                    keep=self.keep,
                    prune=self.config.prune,
                    generator=seeded_generator(self.seed, chosen_at, _SELECT_STREAM),
                    seed=self.seed,
                    round_index=self.schedule.round_index(epoch),
                    scores=scores,
                )
                scores = None  # the policy takes the only reference (see `SelectionPolicy.scores_of`)
                self._pruned = self.policy.select(ctx)
                self._pruned_epoch = chosen_at
            selection = self._pruned
            if selection.is_every:
                self.store.times_selected.add_(1)
            else:
                for part in selection.index_chunks():
                    self.store.times_selected.index_add_(0, part, _ONE.expand(part.numel()))
        self.epoch, self.selection = epoch, selection
        self.report.record_selection(epoch, None if full else selection.index_chunks(), len(selection), mean_score)

    def _ensure_epoch(self) -> Selection:
        if self.selection is None:
            self.set_epoch(0)
        assert self.selection is not None
        return self.selection

    def epoch_order(self) -> Tensor:
        """The epoch's global training order: the selection shuffled by (seed, epoch)."""
        selection = self._ensure_epoch()
        if self._order is None:
            if not self.shuffle:
                self._order = selection.indices
            elif selection.mask is not None:  # from `_PACKED_MIN` examples on: no sorted indices beside the order
                generator = seeded_generator(self.seed, self.epoch, _ORDER_STREAM)
                self._order = shuffled_members(selection.mask, len(selection), generator)
            else:
                size = len(selection)
                perm = torch.randperm(size, generator=seeded_generator(self.seed, self.epoch, _ORDER_STREAM),
                                      dtype=index_dtype(size))
                # A full epoch's indices are 0..N-1, so the permutation is the order; otherwise the permutation
                # becomes the indices it points to, in its own memory.
                self._order = perm if selection.is_every else gather_in_place(perm, selection.indices)
        return self._order

    def epoch_size(self) -> int:
        return len(self._ensure_epoch())

    def mean_score(self, scores: Scores | None = None) -> float | None:
        """Mean of the policy's score over the examples scored so far (None before any)."""
        if not self.policy.uses_scores:
            return None
        count = self.store.num_seen
        if count == 0:
            return None
        scores = self.policy.scores(self.store) if scores is None else scores
        total = 0.0
        for _, part in scores.chunks():
            # Unseen examples score +inf (they rank first) and seen ones are finite (non-finite are never
            # stored): zeroing the infinities sums exactly the seen scores, in one pass.
            total += float(part.sum() if count == self.num_examples else torch.nan_to_num(part, posinf=0.0).sum())
        return total / count

    # ---------------------------------------------------------------- scores
    def update(self, indices: Tensor, losses: Tensor, entropies: Tensor | None = None,
               scorable: Tensor | None = None) -> None:
        """Record the training forward pass of a batch (already gathered across ranks). Rows where `scorable` is
        False had nothing to score (no labelled position): they count as forwarded and keep their old score."""
        self._ensure_epoch()
        indices = torch.as_tensor(indices).reshape(-1)
        rows = indices.numel()
        unscored = 0
        if scorable is not None:
            scorable = torch.as_tensor(scorable, dtype=torch.bool).reshape(-1).cpu()
            unscored = int((~scorable).sum())
            if unscored:
                keep = scorable.to(indices.device)
                indices, losses = indices[keep], torch.as_tensor(losses).reshape(-1)[keep]
                entropies = None if entropies is None else torch.as_tensor(entropies).reshape(-1)[keep]
        dropped_before = self.store.nonfinite_count
        self.store.update(indices, losses, entropies, epoch=self.epoch or 0)
        self.report.add_scored(self.epoch or 0, rows, self.store.nonfinite_count - dropped_before, unscored)
        self.count_forwarded(rows)

    def close_epoch(self, epoch: int) -> None:
        """Check an epoch's scores once it is over: an error when more NaN/inf losses were seen in the run than
        `nonfinite_tolerance` allows (training has diverged: selecting on what is left would be selecting on
        noise), else a WARNING with the count; and an error when no example could be scored at all."""
        record = self.report.epochs.get(epoch)
        if record is None or epoch in self._closed:
            return
        self._closed.add(epoch)
        if record.unscored_rows and self.policy.uses_scores:
            if self.store.num_seen == 0:
                raise RuntimeError(
                    f"No training example could be scored: in epoch {epoch} none of the {record.scored_rows} examples "
                    "forwarded had a labelled position (every label is the ignore index -100?), so pruning has "
                    "nothing to rank them by. Check the labels the collator builds, or use a method that reads no "
                    "scores (random, static_random, full)."
                )
            logger.info("Epoch %d: %d of %d examples had nothing to score (no labelled position) and keep their "
                        "previous score.", epoch, record.unscored_rows, record.scored_rows)
        if not record.nonfinite_rows:
            return
        rows, bad = record.scored_rows - record.unscored_rows, record.nonfinite_rows
        tolerance = self.config.nonfinite_tolerance
        if self.store.nonfinite_count > tolerance:
            raise RuntimeError(
                f"Epoch {epoch}: {bad} of {rows} per-example losses were NaN or inf ({self.store.nonfinite_count} in "
                f"the run, more than nonfinite_tolerance={tolerance}), so training has diverged. Likely causes: a "
                "learning rate too high, fp16 overflow (use bf16, or a loss scale), or bad inputs. Fix the run and "
                "restart it from a checkpoint before the divergence."
            )
        logger.warning("Epoch %d: %d of %d per-example losses were NaN or inf and were dropped from the scores (they "
                       "keep their last finite score; %d of nonfinite_tolerance=%d used).", epoch, bad, rows,
                       self.store.nonfinite_count, tolerance)

    def count_forwarded(self, count: int) -> None:
        """Count examples forwarded without scores (methods that never read them, unlabelled data)."""
        self._ensure_epoch()
        self.report.add_forwarded(self.epoch or 0, count)

    @property
    def weighted(self) -> bool:
        """True when this epoch's selection carries loss weights (infobatch's pruning epochs)."""
        return self._ensure_epoch().weighted

    def prepare_loss_weights(self, device: torch.device | str) -> bool:
        """Get this epoch's loss weights ready for `loss_weights` on `device`, before its first step; True when the
        epoch has weights (InfoBatch's pruning epochs). On an accelerator they are one (N,) float32 tensor built
        on the device (a step indexes it there: no host round trip); on the CPU the selection's packed mask is
        read directly, so no N-sized float vector is held (0.37 GiB at 10^8 examples)."""
        if not self.weighted:
            return False
        device = torch.device(device)
        if device.type != "cpu":
            self.dense_loss_weights(device)
        return True

    def dense_loss_weights(self, device: torch.device | str | None = None) -> Tensor | None:
        """This epoch's loss weight of every example as one (N,) float32 tensor on `device` (None when the
        epoch has no weights), built on the device a chunk at a time and kept for the epoch."""
        selection = self._ensure_epoch()
        if selection.upweighted is None:
            return None
        device = torch.device(device) if device is not None else torch.device("cpu")
        cached = self._dense_weights
        if cached is None or cached[0] is not selection or not _same_device(cached[1].device, device):
            self._dense_weights = None
            dense = torch.ones(self.num_examples, dtype=torch.float32, device=device)
            for start, upweighted in selection.upweighted.parts():
                dense[start : start + upweighted.numel()].masked_fill_(upweighted.to(device), selection.weight)
            self._dense_weights = (selection, dense)
        return self._dense_weights[1]  # type: ignore[index]

    def loss_weights(self, indices: Tensor) -> Tensor:
        """Per-example loss weights of a batch, float32 on the batch's device (1 except for InfoBatch's kept
        well-learned examples). Inside a step on an accelerator call `prepare_loss_weights` first, at the epoch
        start: then this is one indexing on the device."""
        indices = torch.as_tensor(indices).reshape(-1)
        selection = self._ensure_epoch()
        if selection.upweighted is None:
            return torch.ones(indices.numel(), dtype=torch.float32, device=indices.device)
        if indices.device.type != "cpu":
            return self.dense_loss_weights(indices.device)[indices]  # type: ignore[index]
        upweighted = selection.upweighted.lookup(indices.to(torch.int64))
        return torch.where(upweighted, selection.weight, 1.0).to(torch.float32)

    # ------------------------------------------------------------ reporting
    def summary(self, **extra: Any) -> dict[str, Any]:
        out = self.report.summary(self.store, **extra)
        if self.static_facts:
            out["static_scores"] = {k: v for k, v in self.static_facts.items() if k != "scores"}
        cost = self.static_facts.get("scoring_forwarded_examples")
        if cost is not None:
            # The dynamic-data-pruning paper's point: static scores are paid for before the run. Count them.
            out["scoring_forwarded_examples"] = int(cost)
            out["scoring_wall_time_s"] = float(self.static_facts.get("scoring_wall_time_s", 0.0))
            full = out["full_data_examples"]
            out["saved_fraction_including_scoring"] = 1.0 - (out["forwarded_examples"] + cost) / full if full else 0.0
            out["scoring_cost_exceeds_saving"] = cost > full - out["forwarded_examples"]
        return out

    # ----------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan_settings(),
            "config": self.config.to_dict(),
            "seed": self.seed,
            "num_examples": self.num_examples,
            "epoch": self.epoch,
            "selection": pack_selection(self.selection),
            "pruned": pack_selection(self._pruned),
            "pruned_epoch": self._pruned_epoch,
            "store": self.store.state_dict(),
            "report": self.report.state_dict(),
            "data": None if self.data_fingerprint is None else self.data_fingerprint.to_dict(),
        }

    def plan_settings(self) -> dict[str, Any]:
        """Everything that shapes the selections and the step plan; a resumed run must match all of it."""
        settings = {k: v for k, v in self.config.to_dict().items()
                    if k not in ("static_scores_file", "pruning_seed", "nonfinite_tolerance")}
        return {**settings, "pruning_seed": self.seed, "num_epochs": self.schedule.num_epochs,
                "num_examples": self.num_examples, "static_scores": self.static_digest,
                "selection_rules": f"{self.shared_rules}.{self.policy.rules_version}", **self.run_facts}

    @property
    def shared_rules(self) -> int:
        return PACKED_SELECTION_RULES if self.num_examples >= selection_module._PACKED_MIN else SELECTION_RULES

    def load_state_dict(self, state: dict[str, Any], source: str = "pruning state") -> None:
        """Restore a checkpointed state; refused, naming each setting with its old and new value, if it was
        made for another plan, and as damaged (naming `source`) if fields are missing."""
        missing = [k for k in ("plan", "epoch", "selection", "pruned", "pruned_epoch", "store", "report", "seed")
                   if k not in state]
        if missing:
            raise DamagedStateError(f"{source} is damaged or from an older emp-hf: it lacks {missing}.")
        saved, current = state["plan"], self.plan_settings()
        changed = [f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}"
                   for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
        if changed:
            fix = ("Its selections were made by another version of emp-hf's selection rules (a checkpoint without "
                   "them predates their versioning): resume with the emp-hf that wrote it, or start a new run in a "
                   "new output folder." if saved.get("selection_rules") != current["selection_rules"] else
                   "Resume with the checkpoint's settings, or start a new run in a new output folder.")
            raise ValueError(
                f"Cannot resume from {source}: it was made for another pruning plan, and resuming would train a "
                f"plan that is neither the old one nor the new one. Changed: {'; '.join(changed)}. {fix}"
            )
        self._check_same_data(state.get("data"), source)
        try:
            self._restore(state)
        except (KeyError, TypeError, AttributeError, RuntimeError, ValueError) as error:
            raise DamagedStateError(f"{source} is damaged: {type(error).__name__}: {error}") from None

    def _check_same_data(self, saved: Any, source: str) -> None:
        """Refuse a checkpoint made on other training data than this run's, naming what changed."""
        if self.data_fingerprint is None:
            return
        if saved is None:
            logger.warning("%s records no fingerprint of its training data (an emp-hf before 0.1.0's data check "
                           "wrote it): resuming without checking that the data is the same.", source)
            return
        try:
            before = DataFingerprint.from_dict(saved)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise DamagedStateError(f"{source} is damaged: field 'data' is not a data fingerprint.") from None
        changed = before.difference(self.data_fingerprint)
        if changed is not None:
            raise ValueError(
                f"Cannot resume from {source}: the training data differs from the data it was trained on, in "
                f"{changed}. Its scores and selection are indexed by row, so they would land on other rows. Resume "
                "with the same data (same files, subset, order, labels and tokenisation), or start a new run in a "
                "new output folder."
            )

    def _restore(self, state: dict[str, Any]) -> None:
        check_state_fields(state, self)
        self.seed = int(state["seed"])
        self.epoch = state["epoch"]
        self.selection = unpack_selection(state["selection"], self.num_examples)
        self._pruned = unpack_selection(state["pruned"], self.num_examples)
        self._pruned_epoch = state["pruned_epoch"]
        self._order = None
        self.store.load_state_dict(state["store"])
        self.report.load_state_dict(state["report"])
        check_restored(self)
