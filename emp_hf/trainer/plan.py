"""The step plan: every epoch its own number of batches and optimizer steps, the LR horizon their sum, a resumed
run's epoch found from those counts (transformers fixes one epoch length from `len(train_dataloader)`)."""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from typing import Any

from .. import _compat
from ..core.epoch_plan import EpochPlan
from .checkpoints import STATE_FILE, checkpoint_pruning_state

logger = logging.getLogger("emp_hf")


class StepPlanning:
    """PruningMixin's per-epoch step plan, and the per-epoch pruning log."""

    def set_initial_training_values(self, args, dataloader):
        values = _compat.initial_training_values(super().set_initial_training_values(args, dataloader))
        num_train_epochs, num_examples = values["num_train_epochs"], values["num_examples"]
        total_train_batch_size = values["total_train_batch_size"]
        assert self.pruner is not None and self._pruning_sampler is not None
        self._planning_dataloader = dataloader  # the prepared loader, before any skip-wrapping on resume
        self._plan_steps(dataloader)
        max_steps = self._epoch_plan.total
        plan = self.pruner.plan()
        planned_examples = sum(plan)
        full = num_examples * num_train_epochs
        saved = 1 - planned_examples / full
        logger.info(
            "Data pruning: method %s, prune %s; examples per epoch %s; %d of %d examples (%.1f%% saved%s); "
            "optimizer steps per epoch %s, %d in all (transformers' banner below gives epoch 0's steps as every "
            "epoch's; its total is this one)",
            self.pruning_args.method, self.pruning_args.effective_prune, plan, planned_examples, full,
            100 * saved, "" if self.pruner.exact_plan else ", estimated", self._epoch_plan.steps_per_epoch, max_steps,
        )
        warning = self.pruner.little_saved_warning()
        if warning is not None:
            logger.warning(warning)
        return (
            len(self._epoch_plan.examples),  # the plan's epochs: fewer than num_train_epochs for a budget run
            self._epoch_plan.steps_per_epoch[0],
            num_examples,
            planned_examples,
            total_train_batch_size,
            self._epoch_plan.batches[0],
            max_steps,
        )

    def _plan_steps(self, dataloader) -> None:
        """The run's `EpochPlan`: each planned epoch's batches asked of the prepared dataloader (its drop_last,
        sharding and even_batches rules) under that epoch's size, in optimizer steps."""
        assert self.pruner is not None and self._pruning_sampler is not None

        def batches_of(size: int) -> int:
            with self._pruning_sampler.assume_size(size):
                return len(dataloader)

        self._epoch_plan = EpochPlan.of(self.pruner.current_plan(), batches_of, self.args.gradient_accumulation_steps)

    def _init_training_state(
        self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
    ):
        epochs_trained, steps_in_epoch_done = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        if resume_from_checkpoint is None or self.state.global_step == 0:
            return epochs_trained, steps_in_epoch_done
        state_path = os.path.join(resume_from_checkpoint, STATE_FILE)
        if not os.path.isfile(state_path):
            raise ValueError(
                f"Checkpoint {resume_from_checkpoint!r} has no {STATE_FILE}: it was not written by PruningTrainer, "
                "so the pruning scores and selection cannot be restored."
            )
        assert self.pruner is not None
        state = checkpoint_pruning_state(resume_from_checkpoint, self.state.global_step)
        self.pruner.load_state_dict(state, source=state_path)
        # The restored state knows the real sizes of the epochs already run (infobatch's differ from the plan).
        self._plan_steps(self._planning_dataloader)
        self.state.max_steps = self._epoch_plan.total
        # Locate the epoch from the per-epoch step counts (the parent assumes equal epochs).
        epochs_trained, done = self._epoch_plan.locate(self.state.global_step)
        steps_in_epoch_done = 0 if self.args.ignore_data_skip else done * self.args.gradient_accumulation_steps
        return epochs_trained, steps_in_epoch_done

    def _run_epoch(self, model, epoch, train_dataloader, steps_in_epoch, num_update_steps_per_epoch, *args, **kwargs):
        assert self.pruner is not None and self._pruning_sampler is not None
        if self._train_start is None:
            self._train_start = time.time()
        self._pruning_sampler.set_epoch(epoch)
        self._epoch_flushed = None  # this epoch's end has not flushed yet (a resumed run may repeat an epoch)
        self.pruner.prepare_loss_weights(self.args.device)  # here, once, not inside a training step
        steps_in_epoch = len(train_dataloader)
        num_update_steps_per_epoch = math.ceil(steps_in_epoch / self.args.gradient_accumulation_steps)
        if self.pruner.exact_plan and steps_in_epoch != self._epoch_plan.batches[epoch]:
            raise RuntimeError(
                f"Epoch {epoch} has {steps_in_epoch} batches but {self._epoch_plan.batches[epoch]} were planned."
            )
        if not self.pruner.exact_plan:
            self._retarget_horizon(self._planning_dataloader)
        result = super()._run_epoch(
            model, epoch, train_dataloader, steps_in_epoch, num_update_steps_per_epoch, *args, **kwargs
        )
        self._end_epoch_scores(epoch)  # the next epoch's selection needs this epoch's scores
        self._check_finite(f"at the end of epoch {epoch}")
        return result

    def _log_pruning(self, logs: dict[str, Any]) -> None:
        """Through the Trainer's own `log` (so `report_to` integrations get it), unless logging is off."""
        if self.args.logging_strategy != "no":
            self.log(logs)

    def _retarget_horizon(self, dataloader) -> None:
        """For a data-dependent plan (infobatch), once the epoch's real size is known, re-plan the steps
        and move `max_steps` and the LR schedule's horizon there (always: after a resume the scheduler
        is rebuilt with the initial estimate)."""
        self._plan_steps(dataloader)
        total = self._epoch_plan.total
        self.state.max_steps = total
        scheduler = self.lr_scheduler
        lambdas = getattr(scheduler, "lr_lambdas", None)
        retargeted = False
        for i, fn in enumerate(lambdas or []):
            if isinstance(fn, functools.partial) and _compat.LR_LAMBDA_HORIZON in fn.keywords:
                lambdas[i] = functools.partial(fn.func, *fn.args, **{**fn.keywords, _compat.LR_LAMBDA_HORIZON: total})
                retargeted = True
        if not retargeted:
            logger.warning("Could not move the LR scheduler's horizon to the re-estimated %d steps.", total)
