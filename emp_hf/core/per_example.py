"""Per-example loss and predictive entropy from a batch's model outputs, always in float32.

Every front end scores examples with these functions, so "loss" and "entropy"
mean the same in the Trainer and in the vision loop. Each one reproduces the
per-example term of the loss its model family trains on (tested against the
model's own loss on one example at a time).

Sequence outputs (token classification, seq2seq, causal LM) are reduced in
chunks of positions, so that at most `chunk_elements` float32 values of the
(B, T, V) logits are materialised at once: a float32 copy of a 50k-vocabulary
batch is several GB, and scoring runs beside the training step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Upper bound on float32 logit values materialised at once by the sequence scorers (64 MiB).
CHUNK_ELEMENTS = 1 << 24


def classification_scores(
    logits: Tensor, labels: Tensor, label_smoothing: float = 0.0, ignore_index: int = -100
) -> tuple[Tensor, Tensor]:
    """Cross-entropy and entropy of softmax(logits), one value per example.

    `logits` is (B, C) or (B, T, C) with labels (B, T); for sequences the per-example value is the mean
    over positions whose label is not `ignore_index` (token classification, seq2seq decoder labels).
    """
    if logits.dim() > 2:
        return sequence_scores(logits, labels, shift=False, label_smoothing=label_smoothing, ignore_index=ignore_index)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    losses = F.cross_entropy(
        log_probs, labels.reshape(-1).long(), reduction="none", label_smoothing=label_smoothing,
        ignore_index=ignore_index,
    )
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return losses, entropy


def sequence_scores(
    logits: Tensor,
    labels: Tensor,
    *,
    shift: bool,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Per-example mean token cross-entropy and mean predictive entropy over the positions that count.

    `shift=True` is the causal-LM rule of transformers' `ForCausalLMLoss`: the logits at position t
    predict label t+1. `shift=False` aligns logits and labels (token classification, masked LM,
    encoder-decoder models whose decoder inputs are already shifted). An example with no counted
    position gets loss 0 and entropy 0, as its term in the batch loss is 0.
    """
    if logits.dim() != 3 or labels.dim() != 2 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"sequence scores need logits (B, T, V) and labels (B, T), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}."
        )
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    if logits.shape[1] != labels.shape[1]:
        raise ValueError(
            f"logits have {logits.shape[1]} positions but labels have {labels.shape[1]}"
            f"{' after the causal shift' if shift else ''}."
        )
    batch, length, vocab = logits.shape
    labels = labels.to(logits.device).long()
    loss_sum = torch.zeros(batch, dtype=torch.float32, device=logits.device)
    entropy_sum = torch.zeros_like(loss_sum)
    step = max(1, chunk_elements // max(1, batch * vocab))
    for start in range(0, length, step):
        chunk_logits = logits[:, start : start + step].float()
        chunk_labels = labels[:, start : start + step]
        log_probs = F.log_softmax(chunk_logits, dim=-1)
        del chunk_logits
        valid = chunk_labels != ignore_index
        token_loss = F.cross_entropy(
            log_probs.reshape(-1, vocab), chunk_labels.reshape(-1), reduction="none",
            label_smoothing=label_smoothing, ignore_index=ignore_index,
        ).reshape(chunk_labels.shape)
        token_entropy = -(log_probs.exp() * log_probs).sum(-1)
        del log_probs
        loss_sum += (token_loss * valid).sum(1)
        entropy_sum += (token_entropy * valid).sum(1)
    count = (labels != ignore_index).sum(1).clamp(min=1).float()
    return loss_sum / count, entropy_sum / count


def regression_scores(predictions: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Squared error per example; entropy 0 (a point prediction has no distribution)."""
    predictions = predictions.float().reshape(predictions.shape[0], -1)
    targets = targets.float().reshape(targets.shape[0], -1)
    losses = ((predictions - targets) ** 2).mean(1)
    return losses, torch.zeros_like(losses)


def multilabel_scores(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Mean binary cross-entropy over the labels, and the mean Bernoulli entropy of sigmoid(logits)."""
    logits = logits.float().reshape(logits.shape[0], -1)
    targets = targets.float().reshape(targets.shape[0], -1)
    losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
    # Entropy of Bernoulli(p), p = sigmoid(z): softplus(z) - z * sigmoid(z), stable for large |z|.
    entropy = (F.softplus(logits) - logits * torch.sigmoid(logits)).mean(1)
    return losses, entropy


def token_logprob_scores(log_probs: Tensor, label_mask: Tensor, entropy: Tensor | None) -> tuple[Tensor, Tensor]:
    """From per-token log-probabilities of the labels (zero where not counted), as a fused LM head returns
    them instead of logits: the mean negative log-likelihood and mean entropy per example."""
    mask = label_mask.float()
    count = mask.sum(1).clamp(min=1.0)
    losses = -(log_probs.float() * mask).sum(1) / count
    if entropy is None:
        raise ValueError("the fused LM head returned no per-token `entropy`, which EMP's score needs.")
    return losses, (entropy.float() * mask).sum(1) / count
