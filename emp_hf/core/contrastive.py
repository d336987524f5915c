"""Per-example scores of contrastive (SimCLR) pre-training: the score source of self-supervised EMP.

The NT-Xent loss of a batch is a mean of one term per example, so the training forward pass already
holds every example's loss; its memory term (EMP section 3.4) is the distance between the two views'
features. Both are recorded in the score store's two fields: the NT-Xent term as the loss, and the
*negated* distance as the second term, so that EMP's `loss + beta * second` is the paper's
`NT-Xent_i - beta * ||f(x_a) - f(x_b)||_2` with no change to the core, and every other method (InfoBatch,
UCB, eps-greedy, ...) ranks by the NT-Xent term alone, as in the paper's Table 4.

In a multi-process run the negatives come from the global batch (SimCLR): every rank's projections are
gathered with a gather that carries gradients back to the rank that made them, so the data-parallel mean
of the ranks' gradients is the gradient of the one-process loss over the combined batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .distributed import world_size

SSL_SCORES = ("loss_f", "loss_g")


def gather_with_grad(rows: Tensor) -> tuple[Tensor, int]:
    """Every rank's rows, in rank order, and where this rank's rows start; gradients flow back to their rank.

    `torch.distributed.nn.functional.all_gather` sums, in its backward, the gradients every rank computed for
    this rank's rows. Every rank must pass the same number of rows (the pruning sampler pads to that).
    """
    if world_size() == 1:
        return rows, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(rows.contiguous())
    return torch.cat(parts), dist.get_rank() * rows.shape[0]


def nt_xent_terms(z_a: Tensor, z_b: Tensor, temperature: float = 0.5) -> Tensor:
    """Per-example NT-Xent (SimCLR) over the global batch: (l(a_i, b_i) + l(b_i, a_i)) / 2 for each local i.

    l(u, v) = -log( exp(sim(u, v) / t) / sum_{w != u} exp(sim(u, w) / t) ), sim = cosine similarity, w over
    both views of every example of the global batch. The batch loss (SimCLR's mean over its 2B anchors)
    is the mean of these terms.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        raise ValueError(f"`z_a` and `z_b` must be (batch, dim) of one shape, got {tuple(z_a.shape)} and "
                         f"{tuple(z_b.shape)}.")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    local = z_a.shape[0]
    z_a, z_b = F.normalize(z_a.float(), dim=1), F.normalize(z_b.float(), dim=1)
    all_a, offset = gather_with_grad(z_a)
    all_b, _ = gather_with_grad(z_b)
    total = all_a.shape[0]
    candidates = torch.cat([all_a, all_b])  # (2 B_global, dim): view a of every example, then view b
    anchors = torch.cat([z_a, z_b])  # (2 B_local, dim)
    logits = anchors @ candidates.T / temperature
    rows = torch.arange(local, device=z_a.device) + offset
    own = torch.cat([rows, rows + total])  # each anchor's own column, excluded from its denominator
    positive = torch.cat([rows + total, rows])  # a_i's partner is b_i and the other way round
    logits[torch.arange(2 * local, device=z_a.device), own] = float("-inf")
    per_anchor = F.cross_entropy(logits, positive, reduction="none")
    return (per_anchor[:local] + per_anchor[local:]) / 2


def view_distance(a: Tensor, b: Tensor) -> Tensor:
    """||a_i - b_i||_2 per example, in float32: EMP's memory term for self-supervised learning."""
    return torch.linalg.vector_norm(a.float() - b.float(), dim=1)
