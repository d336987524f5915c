"""Scoring each training step: the forward hook that scores the examples from the training forward pass, and the
check of those scores against the loss the step trained on (`loss_check.py`), around the Trainer's own step."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.distributed import max_across_ranks
from ..core.state_file import (
    newest_complete,
)
from ..loss_check import LossMismatchError, Reference
from ..scorers import (
    Scorer,
    ScorerChoiceError,
    base_model,
    choose_scorers,
    describe,
    output_field,
    per_example,
)
from .checkpoints import TrainingDiverged, _rng_states, checkpoint_pruning_state
from .data import INDEX_KEY

logger = logging.getLogger("emp_hf")


@dataclass
class _Step:
    """What one training step's forward hook and `compute_loss` leave behind."""

    indices: Tensor
    inputs: Mapping[str, Any]
    num_items: Tensor | int | None = None
    forwards: int = 0
    scored: list[tuple[Scorer, Any]] | None = None  # (scorer, LossTerms) per candidate scorer
    model_loss: tuple[Tensor, ...] | None = None  # the loss the model returned (and less its auxiliary term)
    trained_loss: Tensor | None = None  # the loss compute_loss returned


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Scores in float32 whatever the step's mixed precision: autocast would run their products in bf16/fp16."""
    try:
        return torch.autocast(device.type, enabled=False)
    except RuntimeError:  # a device type without autocast
        return contextlib.nullcontext()


class ScoringSteps:
    """PruningMixin's training step: the examples' indices out of the batch, their scores from the forward hook, checked."""

    def _record_trained_loss(self) -> None:
        """Keep the loss `compute_loss` returns in a training step: the reference for the scores where the labels
        never reach the model (label smoothing, `compute_loss_func`, a `compute_loss` override, TRL). Wrapped on
        this instance, so that a subclass's own `compute_loss` is the one recorded."""
        own = self.compute_loss

        @functools.wraps(own)
        def compute_loss(*args: Any, **kwargs: Any) -> Any:
            result = own(*args, **kwargs)
            step = self._step
            if step is not None and torch.is_grad_enabled():
                loss = result[0] if isinstance(result, tuple) else result
                if isinstance(loss, Tensor) and loss.numel() == 1:
                    step.trained_loss = loss.detach()
            return result

        self.compute_loss = compute_loss  # type: ignore[method-assign]

    def training_step(self, model, inputs, num_items_in_batch=None):
        """The Trainer's own step, with the example indices taken out of the batch first, the examples scored
        from the training forward pass (a forward hook), whatever `compute_loss` does, and the scores checked
        against the loss the step trained on."""
        if not isinstance(inputs, MutableMapping) or INDEX_KEY not in inputs:
            raise RuntimeError(
                "The training batch carries no example index, so pruning cannot tell which examples were trained. "
                "Cause: a `get_train_dataloader` override replaced PruningMixin's dataloader. Build the dataloader "
                "with `super().get_train_dataloader()`."
            )
        assert self.pruner is not None and self._scores is not None
        indices = inputs.pop(INDEX_KEY)
        if self._window_step != self.state.global_step:  # the first batch of an optimizer step's window
            self._window_step, self._committed_rows = self.state.global_step, len(self._scores)
            self._window_rng = _rng_states()
        self._step = _Step(indices=indices, inputs=dict(inputs), num_items=num_items_in_batch)
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
            step = self._step
        finally:
            self._step = None
        if step.forwards == 0:
            raise RuntimeError(
                "No forward pass of the model was seen in this training step, so nothing was scored. Cause: a "
                "`compute_loss` or `training_step` override that calls another module than `trainer.model`. Call "
                "`model(**inputs)` on the model the Trainer passes, or use a method that reads no scores."
            )
        if step.forwards > 1 and self.pruner.policy.uses_scores:
            raise RuntimeError(
                f"The model ran {step.forwards} forward passes with gradients in one training step; the scores of "
                "the first would be taken for the whole step. Pass a `scorer=` that fits your loss, or use a method "
                "that reads no scores (random, static_random, full)."
            )
        assert self._scores is not None
        # On the device until the epoch ends or a checkpoint is saved (`_flush_scores`): no per-step collective
        # or host copy.
        scored = None if step.scored is None else self._checked_scores(step)
        self._scores.add(indices, *(scored or ()))
        if isinstance(loss, Tensor):  # on the device: read where the scores are flushed (`_check_finite`)
            bad = ~torch.isfinite(loss.detach()).all()
            if scored is not None:  # a batch with nothing to score has a 0/0 loss: that is not divergence
                bad = bad & (scored[2] > 0).any()
            self._nonfinite_rows = self._nonfinite_rows + bad * indices.numel()
        return loss

    def _checked_scores(self, step: _Step) -> tuple[Tensor, Tensor, Tensor]:
        """The step's per-example loss, entropy and scorable flags (0 where an example had nothing to score),
        from terms checked against the step's loss: on the host at the first step (where the model's loss picks
        among candidate scorers), on the device after it."""
        assert step.scored is not None
        reference = self._reference(step)
        if not self._scorer_checked:
            chosen = self._first_check(step, reference)
            if chosen is None:  # the step's loss is not finite: nothing to decide on, and no finite score from it
                scorer, terms = step.scored[0]
                _, _, scorable = per_example(terms, step.indices.numel(), scorer)
                nan = torch.full(scorable.shape, math.nan, device=scorable.device)
                return nan, nan, scorable.float()
            scorer, terms = chosen
        else:
            scorer, terms = step.scored[0]
            if self._verify_scores and reference is not None:
                self._loss_check.record(terms, reference, self.state.global_step + 1)
        loss, entropy, scorable = per_example(terms, step.indices.numel(), scorer)
        return loss, torch.zeros_like(loss) if entropy is None else entropy, scorable.float()

    def _reference(self, step: _Step) -> Reference | None:
        """What this step trained on: the model's loss, else what `compute_loss` returned; with the normalisers
        a token mean may have used (its own count, the Trainer's `num_items_in_batch`, that per process)."""
        normalisers: tuple[Any, ...] = (None,)
        if step.num_items is not None:
            normalisers += (step.num_items,)
            if self.args.world_size > 1:
                normalisers += (step.num_items / self.args.world_size,)
        if step.model_loss is not None:
            return Reference(step.model_loss, "the loss the model returned", normalisers)
        if step.trained_loss is not None:
            return Reference((step.trained_loss,), "the loss compute_loss returned", normalisers)
        return None

    def _first_check(self, step: _Step, reference: Reference | None) -> tuple[Scorer, Any] | None:
        """The first scored step: pick the candidate whose terms reproduce the step's loss, or refuse before
        any optimizer step. None while the loss says nothing (no loss item in the batch)."""
        assert step.scored is not None
        prefix = f"PruningTrainer (method {self.pruning_args.method!r})"
        named = self._user_scorer is not None or self._requested_scorer is not None
        if not self._verify_scores or reference is None:
            if not named:
                raise ValueError(
                    f"{prefix}: this training step exposes no loss to check the scores against (the model returned "
                    "none and `compute_loss` returned no scalar), so the automatic scorer cannot be verified. Pass "
                    "`scorer=` (a built-in name or a callable) to use it unverified."
                )
            self._scorer, self._scorer_checked = step.scored[0][0], True
            logger.warning("Data pruning scores each example by the %s, UNVERIFIED: %s.", describe(self._scorer),
                           "`verify_scores=False`" if not self._verify_scores else "the step exposes no loss")
            return step.scored[0]
        finite = all(bool(torch.isfinite(v.detach()).all()) for v in reference.values)
        if float(max_across_ranks(torch.tensor([0.0 if finite else 1.0]))) > 0:  # every rank waits together
            return None
        batch = step.indices.numel()
        losses = [per_example(terms, batch, scorer)[0] for scorer, terms in step.scored]  # checks the batch size
        fix = ("Pass `scorer=` (a built-in name, or a callable (outputs, inputs) -> (loss, entropy[, items])) that "
               "reproduces your loss per example" + (", or `verify_scores=False` to rank by it unverified."
                                                       if named else "."))
        try:
            index = self._loss_check.decide([(sc, t, loss) for (sc, t), loss in zip(step.scored, losses)],
                                            reference, describe, fix)
        except LossMismatchError as error:
            raise ValueError(f"{prefix}: {error}") from None
        self._scorer, self._scorer_checked = step.scored[index][0], True
        logger.info(
            "Data pruning scores each example by the %s (%s); checked against %s on every step. Override with "
            "`scorer=`.", describe(self._scorer), self._choice.reason if self._choice else "named by `scorer=`",
            reference.source)
        return step.scored[index]

    def _end_epoch_scores(self, epoch: int) -> None:
        """The epoch's one flush once its steps are all taken: from `PruningCallback.on_epoch_end`, or where
        `_run_epoch` ends if that callback was removed (every rank takes the same path: no extra collective)."""
        if self._epoch_flushed != epoch:
            self._flush_scores()
            self._epoch_flushed = epoch

    def _flush_scores(self, committed_only: bool = False) -> None:
        """All ranks' buffered scores into the store (at each epoch's end and before each checkpoint save), once
        the steps since the last flush are known to have reproduced their loss. `committed_only`: leave out the
        batches of an optimizer step not yet taken (a save inside a gradient-accumulation window)."""
        if self._scores is None:
            return
        if self.pruner is not None and self.pruner.policy.uses_scores and self._verify_scores:
            failed = self._loss_check.failure()
            if failed is not None:
                step, predicted, actual = failed
                at = f"at step {step} the scores added up to {predicted:.6g} where the loss was {actual:.6g}" \
                    if step >= 0 else "on another process"
                raise RuntimeError(
                    f"Data pruning stopped: the per-example scores no longer reproduce the loss the model trains on "
                    f"({at}; scorer {describe(self._scorer) if self._scorer else '?'}). These scores were not used: "
                    "no selection has read them. Pass a `scorer=` that reproduces your loss per example (or "
                    "`verify_scores=False` to rank by a user scorer unverified), and resume from the last checkpoint."
                )
        in_window = committed_only and self._window_step == self.state.global_step
        self._scores.flush(self._committed_rows if in_window else None)
        self._committed_rows = 0

    def _check_finite(self, when: str) -> None:
        """Stop a run whose loss or weights went NaN/inf (beyond `nonfinite_tolerance` examples), before its
        state is saved or its scores select anything; every rank reaches the same verdict."""
        assert self.pruner is not None
        rows = self._nonfinite_rows if isinstance(self._nonfinite_rows, Tensor) else torch.tensor(0)
        params = [p.detach() for p in self.model.parameters()]
        weights_bad = torch.stack([~torch.isfinite(p).all() for p in params]).any() if params else torch.tensor(False)
        verdict = max_across_ranks(torch.stack([rows.float().cpu().reshape(()),
                                                weights_bad.float().cpu().reshape(())]))
        bad_rows = max(int(verdict[0]), self.pruner.store.nonfinite_count)
        tolerance = self.pruning_args.nonfinite_tolerance
        if not bool(verdict[1]) and bad_rows <= tolerance:
            return
        what = ("the model's weights hold NaN or inf" if bool(verdict[1]) else
                f"the loss of {bad_rows} example(s) was NaN or inf (nonfinite_tolerance={tolerance})")
        found = newest_complete(self.args.output_dir, "checkpoint-", checkpoint_pruning_state)
        last = (f"The last good checkpoint is {found[0]}: resume from it" if found is not None else
                "No checkpoint was saved before it: start again")
        raise TrainingDiverged(
            f"Training diverged: {what}, found {when} (step {self.state.global_step}). Nothing was saved as if the "
            f"run had finished. {last} with a lower learning rate, gradient clipping (max_grad_norm), or bf16 "
            "instead of fp16. To let a few non-finite examples pass (they keep their last finite score), set "
            "PruningArguments(nonfinite_tolerance=N)."
        )

    def _hook_model(self) -> None:
        """Put the scoring hook on the user's model, before Accelerate wraps it (DDP, FSDP and DeepSpeed call
        the wrapped module, so the hook fires inside them); once per model."""
        if self._hooked is self.model:
            return
        if self._hook_handle is not None:
            self._hook_handle.remove()
        self._hook_handle = self.model.register_forward_hook(self._on_forward, with_kwargs=True)
        self._hooked = self.model

    def _on_forward(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any], outputs: Any) -> None:
        if INDEX_KEY in kwargs:
            raise RuntimeError(
                f"The example index ({INDEX_KEY!r}) reached the model's forward: a `training_step` override did "
                "not call PruningMixin's, so the examples are not being scored. Call `super().training_step(...)`."
            )
        step = self._step
        if step is None or not torch.is_grad_enabled():
            return  # evaluation, or a no-grad forward for metrics (TRL)
        step.forwards += 1
        if step.forwards > 1:
            return
        assert self.pruner is not None
        step.model_loss = self._model_loss(module, outputs)
        candidates = self._candidates(outputs, step) if self.pruner.policy.uses_scores else ()
        if candidates:
            need_entropy = self.pruner.policy.uses_entropy
            with torch.no_grad(), _autocast_off(self.args.device):
                step.scored = [(scorer, scorer(outputs, step.inputs, need_entropy)) for scorer in candidates]
        if self.pruner.weighted:
            self._weight_gradients(candidates[0] if candidates else None, outputs, step.indices)

    @staticmethod
    def _model_loss(module: torch.nn.Module, outputs: Any) -> tuple[Tensor, ...] | None:
        """The loss the model returned, and that loss less its router auxiliary term (mixture-of-experts models
        add `router_aux_loss_coef * aux_loss`, which no example owns)."""
        loss = output_field(outputs, "loss")
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            return None
        loss = loss.detach()
        aux = output_field(outputs, "aux_loss")
        config = getattr(base_model(module), "config", None)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        coef = getattr(text, "router_aux_loss_coef", None)
        if isinstance(aux, Tensor) and aux.numel() == 1 and isinstance(coef, (int, float)):
            return loss, loss - coef * aux.detach().to(loss.device)
        return (loss,)

    def _candidates(self, outputs: Any, step: _Step) -> tuple[Scorer, ...]:
        if self._scorer is not None:
            return (self._scorer,)
        if self._choice is None:
            smoothing = 0.0
            if self.label_smoother is not None and step.model_loss is None and "labels" in step.inputs:
                smoothing = self.args.label_smoothing_factor  # the Trainer's label smoother computes the loss
            try:
                self._choice = choose_scorers(self._hooked, outputs, step.inputs, self.label_names,
                                              label_smoothing=smoothing, requested=self._requested_scorer)
            except ScorerChoiceError as error:
                raise ValueError(f"PruningTrainer (method {self.pruning_args.method!r}): {error}") from None
        return self._choice.candidates

    def _weight_gradients(self, scorer: Scorer | None, outputs: Any, indices: Tensor) -> None:
        """InfoBatch's loss weights w_i, applied to the gradient of each example's output rows.

        For a loss that is a sum of per-example terms over a normaliser D (every Trainer loss: batch mean,
        token mean with `num_items_in_batch`, label smoothing, a custom per-example loss), scaling row i of
        the gradient at the outputs by w_i gives exactly the gradient of sum_i w_i l_i / D, with the
        Trainer's own D and without touching its loss (tested against that sum)."""
        assert self.pruner is not None
        rows = scorer.grad_rows(outputs) if scorer is not None else (output_field(outputs, "logits"),)
        if not all(isinstance(r, Tensor) and r.shape[:1] == indices.shape[:1] and r.requires_grad for r in rows):
            raise RuntimeError(
                f"Method {self.pruning_args.method!r} weights each kept example's loss, which needs an output tensor "
                "with one row per example in the autograd graph (`logits`, or TRL's `log_probs`); this model's "
                "training output has none. Use a method without loss weights (emp, random, ucb, ...)."
            )
        weights = self.pruner.loss_weights(indices.to(rows[0].device))  # on the device: no host sync
        for row in rows:
            shape = (-1,) + (1,) * (row.dim() - 1)
            scale = weights.to(row.dtype).view(shape)
            row.register_hook(lambda grad, scale=scale: grad * scale)
