"""Every training step's per-example scores, checked against the loss the step trained on.

A score is only worth ranking examples by if it is each example's own term in the training loss. The
model tells us that loss: the scorer's per-example terms, reduced the way the model reduces them (a batch
mean, a mean over labelled tokens or over the Trainer's `num_items_in_batch`, a sum), must reproduce it.
The reference is the loss the model returned (less its router auxiliary term, for mixture-of-experts
models), or, where the labels never reach the model (the Trainer's label smoothing, `compute_loss_func`, a
`compute_loss` override, TRL's fused head), the loss `compute_loss` returned.

The first scored step is checked at once, before any optimizer step, and decides between candidate
scorers where the model declares no loss type. Later steps keep their worst mismatch on the device (no
host sync per step); it is read where the scores are flushed into the store (each epoch's end, each
checkpoint), so a mismatch stops the run before those scores reach a selection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .core.distributed import max_across_ranks
from .core.per_example import LossTerms

_HALF = (torch.float16, torch.bfloat16)


class LossMismatchError(ValueError):
    """The scores do not reproduce the loss the model trained on."""


def tolerance(*dtypes: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing a float32 reduction with a loss computed from tensors of `dtypes`: a loss
    rounded to bf16/fp16 carries about 2^-8 of relative error; one computed in float32 from the same logits
    differs from ours only in the order of summation."""
    if any(d in _HALF for d in dtypes):
        return 2e-2, 1e-3
    return 1e-4, 1e-6


@dataclass(frozen=True)
class Reference:
    """What one step's loss was: candidate values (the model's loss, and that loss less an auxiliary term
    where the model adds one), where they came from, and how they may be normalised."""

    values: tuple[Tensor, ...]
    source: str
    normalisers: tuple[Tensor | float | None, ...] = (None,)

    @property
    def dtype(self) -> torch.dtype:
        return self.values[0].dtype


def predicted_losses(terms: LossTerms, reference: Reference) -> Tensor:
    """The batch loss the terms add up to, under each of the reference's normalisers (K,)."""
    return torch.stack([terms.batch_loss(n) for n in reference.normalisers])


def loss_error(terms: LossTerms, reference: Reference, rtol: float, atol: float) -> Tensor:
    """min over readings of |predicted - reference| / (rtol |reference| + atol), on the terms' device: at most
    1 passes. 0 where the reference is not finite (a diverged step is the divergence check's business); a
    NaN prediction against a finite loss is a mismatch."""
    device = terms.sums.device
    refs = torch.stack([v.detach().float().reshape(()).to(device) for v in reference.values])
    predicted = predicted_losses(terms, reference)
    error = (predicted[None, :] - refs[:, None]).abs() / (rtol * refs.abs()[:, None] + atol)
    best = torch.nan_to_num(error, nan=math.inf).min()
    return torch.where(torch.isfinite(refs).all(), best, torch.zeros_like(best))


def closest(terms: LossTerms, reference: Reference) -> tuple[float, float]:
    """(predicted, reference) of the reading nearest the reference, as host floats: for error messages."""
    refs = [float(v.detach().float()) for v in reference.values]
    predicted = [float(p) for p in predicted_losses(terms, reference)]
    pairs = [(p, r) for r in refs for p in predicted]
    return min(pairs, key=lambda pr: abs(pr[0] - pr[1]) if math.isfinite(pr[0] - pr[1]) else math.inf)


class LossCheck:
    """The running check of one training run."""

    def __init__(self) -> None:
        self._worst: Tensor | None = None  # device scalar: the largest error since the last flush
        self._first_bad: Tensor | None = None  # device: (step, predicted, reference) of the first failing step
        self.checked_steps = 0

    def decide(self, scored: Sequence[tuple[object, LossTerms, Tensor]], reference: Reference,
               describe, fix: str) -> int:
        """At the first scored step, on the host: the index of the one candidate whose terms reproduce the
        reference (the first where several do and agree per example); a `LossMismatchError` otherwise.
        `scored`: (scorer, terms, per-example loss) per candidate."""
        rtol, atol = tolerance(reference.dtype, *(t.sums.dtype for _, t, _ in scored))
        errors = [float(max_across_ranks(loss_error(terms, reference, rtol, atol))) for _, terms, _ in scored]
        passing = [i for i, e in enumerate(errors) if e <= 1.0]
        if len(passing) > 1:
            first = scored[passing[0]][2]
            agree = all(torch.allclose(scored[i][2], first, rtol=rtol, atol=atol, equal_nan=True) for i in passing)
            if not agree:
                names = ", ".join(describe(scored[i][0]) for i in passing)
                raise LossMismatchError(
                    f"The first training batch cannot tell which loss the model trains on: {names} all reproduce "
                    f"{reference.source} but give different per-example scores. {fix}")
        if passing:
            self.checked_steps += 1
            return passing[0]
        lines = []
        for scorer, terms, _ in scored:
            predicted, _ = closest(terms, reference)
            lines.append(f"{describe(scorer)} adds up to {predicted:.6g}")
        raise LossMismatchError(
            f"The per-example scores do not reproduce the loss this training step trained on ({reference.source}: "
            f"{closest(scored[0][1], reference)[1]:.6g}; tolerance rtol={rtol:g}): " + "; ".join(lines) +
            f". Ranking examples by them would prune by a number that is not their loss. {fix}")

    def record(self, terms: LossTerms, reference: Reference, step: int) -> None:
        """A later step: the error stays on the device, folded into the running worst (no host sync)."""
        rtol, atol = tolerance(reference.dtype, terms.sums.dtype)
        error = loss_error(terms, reference, rtol, atol)
        bad = error > 1.0
        predicted = predicted_losses(terms, reference)[0]
        actual = reference.values[0].detach().float().reshape(()).to(error.device)
        facts = torch.stack([torch.full((), float(step), device=error.device), predicted, actual])
        if self._worst is None or self._first_bad is None:
            self._worst = error
            self._first_bad = torch.where(bad, facts, torch.full_like(facts, -1.0))
        else:
            self._first_bad = torch.where(bad & (self._first_bad[0] < 0), facts, self._first_bad)
            self._worst = torch.maximum(self._worst, error)
        self.checked_steps += 1

    def failure(self) -> tuple[int, float, float] | None:
        """Read the running check (one host sync, every rank together): the first failing step since the last
        call, with its predicted and actual loss, or None. Resets the running worst."""
        if self._worst is None or self._first_bad is None:
            worst = torch.zeros(())
            first = torch.full((3,), -1.0)
        else:
            worst, first = self._worst, self._first_bad
        worst = max_across_ranks(worst.float().reshape(1))
        self._worst = self._first_bad = None
        if float(worst) <= 1.0:
            return None
        step, predicted, actual = (float(v) for v in first.cpu())
        if step < 0:  # another rank failed: its numbers stay there
            return -1, math.nan, math.nan
        return int(step), predicted, actual
