"""Per-example loss and predictive entropy from a batch's logits, always in float32.

Both front ends score examples with these functions, so "loss" and "entropy"
mean the same in the Trainer and in the vision loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def classification_scores(
    logits: Tensor, labels: Tensor, label_smoothing: float = 0.0, ignore_index: int = -100
) -> tuple[Tensor, Tensor]:
    """Cross-entropy and entropy of softmax(logits), one value per example.

    `logits` is (B, C) or (B, ..., C) with labels (B, ...); for sequences the
    per-example value is the mean over positions whose label is not
    `ignore_index`.
    """
    logits = logits.float()
    batch = logits.shape[0]
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_labels = labels.reshape(-1).long()
    losses = F.cross_entropy(
        flat_logits, flat_labels, reduction="none", label_smoothing=label_smoothing, ignore_index=ignore_index
    )
    log_probs = F.log_softmax(flat_logits, dim=-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    if logits.dim() == 2:
        return losses, entropy
    valid = (flat_labels != ignore_index).float().reshape(batch, -1)
    count = valid.sum(1).clamp(min=1.0)
    return (losses.reshape(batch, -1) * valid).sum(1) / count, (entropy.reshape(batch, -1) * valid).sum(1) / count


def regression_scores(predictions: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Squared error per example; entropy 0 (a point prediction has no distribution)."""
    predictions = predictions.float().reshape(predictions.shape[0], -1)
    targets = targets.float().reshape(targets.shape[0], -1)
    losses = ((predictions - targets) ** 2).mean(1)
    return losses, torch.zeros_like(losses)
