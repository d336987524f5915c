"""Per-example loss and predictive entropy from a batch's model outputs, always in float32.

Every front end scores examples with these functions, so "loss" and "entropy" mean the same in the
Trainer and in the vision loop. Each one reproduces the per-example term of the loss its model family
trains on, and returns it as `LossTerms`: the per-example pieces *and* the way the model's batch loss
is built from them, so that a front end can check the pieces against the loss the model returned.

Sequence outputs are read once, a block of positions at a time (at most `chunk_elements` float32
values in flight), and on the CPU only the positions that carry a label are read at all: a float32
copy of a (B, T, V) batch is several GB, and with prompt masking most positions have no label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: Float32 logit values in flight at once on an accelerator (64 MiB): few kernel launches, bounded memory.
CHUNK_ELEMENTS = 1 << 24
#: The same on the CPU, where a block that stays in cache is what makes the one pass cheap (measured by
#: benchmarks/causal_lm_bench.py).
CPU_CHUNK_ELEMENTS = 1 << 18
#: Smallest label probability read directly as exp(-loss): far above float32's subnormals (~1e-38).
_TINY = 1e-30
#: Below this fraction of labelled positions the CPU path gathers them (a copy per block) instead of reading all.
_SPARSE = 0.75


@dataclass(frozen=True)
class LossTerms:
    """A batch's loss, taken apart per example.

    The model's loss is `sum_c coefs[c] * sum_i sums[c, i] / D_c`: component c (one for most losses; the
    start and the end position for question answering) sums example i's loss items (its tokens, its
    outputs, its one label) into `sums[c, i]`, and `counts[c, i]` says how many items that is. `D_c` is
    the component's total count (a mean over the batch's items), the Trainer's `num_items_in_batch` when
    the model normalises by it, or 1 where the model sums (`summed`: CTC with reduction "sum").
    """

    sums: Tensor  # (C, B) float32
    counts: Tensor  # (C, B) float32
    coefs: tuple[float, ...] = (1.0,)
    entropy_sums: Tensor | None = None  # (C, B) float32, only when asked for
    summed: bool = False
    #: (B,) True for an example that counts in the batch loss without a score of its own (CTC's zeroed infinity)
    unscorable: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.sums.shape[1]

    def per_example(self) -> tuple[Tensor, Tensor | None, Tensor]:
        """Each example's loss (and entropy): the coefficient-weighted mean of its per-item means over the
        components where it has an item; and whether it has any item at all. An example with none has
        nothing to score (loss NaN, `scorable` False): nothing to score is not a score of 0."""
        present = torch.stack([coef * (count > 0) for coef, count in zip(self.coefs, self.counts)])
        total = present.sum(0)
        scorable = total > 0 if self.unscorable is None else (total > 0) & ~self.unscorable
        total = torch.where(scorable, total, torch.full_like(total, math.nan))
        per_item = self.sums / self.counts.clamp(min=1.0)
        loss = (present * per_item).sum(0) / total
        if self.entropy_sums is None:
            return loss, None, scorable
        entropy = (present * (self.entropy_sums / self.counts.clamp(min=1.0))).sum(0) / total
        return loss, entropy, scorable

    def batch_loss(self, normaliser: Tensor | float | None = None) -> Tensor:
        """The batch loss these terms add up to: each component's mean over its items, or over `normaliser`
        items (the Trainer's `num_items_in_batch`), or its sum (`summed`). No host sync: a tensor stays on its
        device."""
        totals = self.sums.sum(1)
        if self.summed:
            divisors: Tensor | float = 1.0
        elif normaliser is None:
            divisors = self.counts.sum(1)
        elif isinstance(normaliser, Tensor):
            divisors = normaliser.to(totals.device, torch.float32)
        else:
            divisors = float(normaliser)
        parts = totals / divisors
        return sum(coef * parts[c] for c, coef in enumerate(self.coefs))  # type: ignore[return-value]


def _one(sums: Tensor, counts: Tensor, entropy: Tensor | None = None, summed: bool = False) -> LossTerms:
    return LossTerms(sums[None], counts[None], (1.0,), None if entropy is None else entropy[None], summed)


def _row_entropy(log_probs: Tensor) -> Tensor:
    """-sum_v p_v log p_v of each row, from float32 log-probabilities, without a (rows, V) product."""
    return -torch.bmm(log_probs.exp().unsqueeze(1), log_probs.unsqueeze(2)).reshape(-1)


def _token_block(logits: Tensor, targets: Tensor, label_smoothing: float, need_entropy: bool,
                 buffer: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Cross-entropy (and entropy) of a block of float32 rows, reading each row's values once from memory.

    With the entropy, one exponential pass serves both: p = softmax(z) gives the loss -log p_y, hence
    log Z = z_y - log p_y, and the entropy log Z - sum_v p_v z_v (a product into `buffer`, then a sum). Where
    p_y underflows (a loss above ~69), log Z comes from max(z) - log max(p) instead (max(p) >= 1/V).
    Without the entropy: log-softmax and the label's entry."""
    rows = targets[:, None]
    if not need_entropy:
        log_probs = F.log_softmax(logits, dim=-1)
        nll = -log_probs.gather(1, rows).squeeze(1)
        if label_smoothing:
            nll = (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(-1)
        return nll, None
    probs = torch.softmax(logits, dim=-1)
    p_label = probs.gather(1, rows).squeeze(1)
    z_label = logits.gather(1, rows).squeeze(1)
    nll = -torch.log(p_label)
    safe = p_label > _TINY
    # On the CPU the rare fallback is taken only when needed (a host check is free there); elsewhere always.
    if logits.device.type != "cpu" or not bool(safe.all()):
        fallback = logits.amax(dim=-1) - torch.log(probs.amax(dim=-1)) - z_label
        nll = torch.where(safe, nll, fallback)
    log_z = z_label + nll
    product = torch.mul(probs, logits, out=buffer[: logits.shape[0]]) if buffer is not None else probs * logits
    entropy = log_z - product.sum(-1)
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll + label_smoothing * (log_z - logits.mean(-1))
    return nll, entropy


def class_terms(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0, need_entropy: bool = False,
                ignore_index: int = -100) -> LossTerms:
    """Cross-entropy of (B, C) logits against integer labels, batch mean over labels that are not
    `ignore_index` (transformers' single-label classification, multiple choice, image classification), with
    the Trainer's label smoothing; entropy of softmax(logits)."""
    log_probs = F.log_softmax(logits.float().reshape(logits.shape[0], -1), dim=-1)
    labels = labels.reshape(-1).to(log_probs.device).long()
    counted = labels != ignore_index
    nll = -log_probs.gather(1, torch.where(counted, labels, 0)[:, None]).squeeze(1)
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(-1)
    entropy = _row_entropy(log_probs) * counted if need_entropy else None
    return _one(nll * counted, counted.float(), entropy)


def squared_error_terms(predictions: Tensor, targets: Tensor) -> LossTerms:
    """MSE over all outputs of the batch (transformers' regression, one output or several): per example the
    sum of its squared errors over its outputs. Entropy 0: a point prediction has no distribution."""
    batch = predictions.shape[0]
    predictions = predictions.float().reshape(batch, -1)
    targets = targets.float().reshape(batch, -1).to(predictions.device)
    if targets.shape != predictions.shape:
        raise ValueError(f"regression needs one target per output: {tuple(predictions.shape)} outputs, "
                         f"{tuple(targets.shape)} targets.")
    sums = ((predictions - targets) ** 2).sum(1)
    counts = torch.full_like(sums, predictions.shape[1])
    return _one(sums, counts, torch.zeros_like(sums))


def binary_terms(logits: Tensor, targets: Tensor, need_entropy: bool = False) -> LossTerms:
    """Binary cross-entropy with logits, mean over all labels of the batch (multi-label classification, one
    logit or several); entropy: the Bernoulli entropy of sigmoid(logits), per label."""
    batch = logits.shape[0]
    logits = logits.float().reshape(batch, -1)
    targets = targets.float().reshape(batch, -1).to(logits.device)
    if targets.shape != logits.shape:
        raise ValueError(f"multi-label needs one target per logit: {tuple(logits.shape)} logits, "
                         f"{tuple(targets.shape)} targets.")
    sums = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)
    counts = torch.full_like(sums, logits.shape[1])
    entropy = None
    if need_entropy:  # entropy of Bernoulli(sigmoid(z)): softplus(z) - z * sigmoid(z), stable for large |z|
        entropy = (F.softplus(logits) - logits * torch.sigmoid(logits)).sum(1)
    return _one(sums, counts, entropy)


def token_terms(logits: Tensor, labels: Tensor, *, shift: bool, label_smoothing: float = 0.0,
                need_entropy: bool = False, ignore_index: int = -100,
                chunk_elements: int | None = None) -> LossTerms:
    """Token cross-entropy over the positions whose label is not `ignore_index`, summed per example.

    `shift=True` is the causal-LM rule of transformers' `ForCausalLMLoss` (the logits at position t predict
    label t+1: labels padded with `ignore_index` and moved one left); `shift=False` aligns logits and labels
    (token classification, masked LM, encoder-decoder decoders, XLNet). One pass over the counted
    positions' logits, in blocks: log-softmax, the label's term, and the entropy only when asked for.
    """
    if logits.dim() != 3 or labels.dim() != 2 or labels.shape != logits.shape[:2]:
        raise ValueError(f"token scores need logits (B, T, V) and labels (B, T) of the same B and T, got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}.")
    batch, length, vocab = logits.shape
    device = logits.device
    labels = labels.to(device)
    targets = (F.pad(labels, (0, 1), value=ignore_index)[:, 1:] if shift else labels).reshape(-1).long()
    rows = logits.reshape(batch * length, vocab)  # a view for an LM head's contiguous output
    owners = torch.arange(batch, device=device).repeat_interleave(length)
    counted = targets != ignore_index
    picked = None
    if device.type == "cpu":
        # Where many positions carry no label (a prompt, padding), only the labelled ones are read. On an
        # accelerator this selection would cost a host sync per step; there every row is read.
        where = counted.nonzero().squeeze(1)
        if where.numel() < _SPARSE * targets.numel():
            picked, targets, owners, counted = where, targets[where], owners[where], counted[where]
    positions = targets.numel()
    token_loss = torch.empty(positions, dtype=torch.float32, device=device)
    token_entropy = torch.empty_like(token_loss) if need_entropy else None
    if chunk_elements is None:
        chunk_elements = CPU_CHUNK_ELEMENTS if device.type == "cpu" else CHUNK_ELEMENTS
    step = max(1, chunk_elements // max(1, vocab))
    buffer = torch.empty(min(step, positions), vocab, device=device) if need_entropy and positions else None
    safe_targets = targets.clamp(min=0)
    for start in range(0, positions, step):
        stop = min(positions, start + step)
        block = rows[start:stop] if picked is None else rows.index_select(0, picked[start:stop])
        nll, entropy = _token_block(block.float(), safe_targets[start:stop], label_smoothing,
                                    token_entropy is not None, buffer)
        token_loss[start:stop] = nll
        if token_entropy is not None:
            token_entropy[start:stop] = entropy
    weight = counted.float()
    sums = torch.zeros(batch, dtype=torch.float32, device=device).index_add_(0, owners, token_loss * weight)
    counts = torch.zeros_like(sums).index_add_(0, owners, weight)
    entropy = None
    if token_entropy is not None:
        entropy = torch.zeros_like(sums).index_add_(0, owners, token_entropy * weight)
    return _one(sums, counts, entropy)


def span_terms(start_logits: Tensor, end_logits: Tensor, start_positions: Tensor, end_positions: Tensor,
               need_entropy: bool = False) -> LossTerms:
    """Extractive question answering as transformers computes it: the mean of the start and the end
    cross-entropies, each a batch mean over the examples whose position lies inside the input (positions are
    clamped to [0, T] and T is ignored)."""
    parts = []
    for logits, positions in ((start_logits, start_positions), (end_logits, end_positions)):
        positions = positions.reshape(positions.shape[0], -1)[:, 0] if positions.dim() > 1 else positions
        outside = logits.shape[-1]
        parts.append(class_terms(logits, positions.to(logits.device).long().clamp(0, outside), 0.0, need_entropy,
                                 ignore_index=outside))
    entropy = None if not need_entropy else torch.cat([p.entropy_sums for p in parts])  # type: ignore[misc]
    return LossTerms(torch.cat([p.sums for p in parts]), torch.cat([p.counts for p in parts]), (0.5, 0.5), entropy)


def ctc_terms(logits: Tensor, labels: Tensor, logit_lengths: Tensor, *, blank: int, reduction: str,
              zero_infinity: bool, need_entropy: bool = False, ignore_index: int = -100) -> LossTerms:
    """CTC as transformers' `ForCTCLoss` computes it: targets are the labels that are neither `ignore_index`
    nor the blank; "mean" divides each example's loss by its target length and averages over the batch,
    "sum" adds them up. An example whose loss is infinite (a target longer than its frames allow) adds 0
    under `zero_infinity` and is not scored. Entropy: the mean frame entropy over its `logit_lengths` frames."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"CTC reduction {reduction!r} is not per-example separable (use 'mean' or 'sum').")
    labels = labels.to(logits.device)
    logit_lengths = logit_lengths.to(logits.device).long()
    targets_mask = (labels != ignore_index) & (labels != blank)
    target_lengths = targets_mask.sum(-1)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    with torch.backends.cudnn.flags(enabled=False):
        losses = F.ctc_loss(log_probs.transpose(0, 1), labels.masked_select(targets_mask), logit_lengths,
                            target_lengths, blank=blank, reduction="none", zero_infinity=False)
    infinite = torch.isinf(losses)
    if zero_infinity:
        losses = torch.where(infinite, torch.zeros_like(losses), losses)
    if reduction == "mean":
        losses = losses / target_lengths.clamp(min=1).float()
    entropy = None
    if need_entropy:
        frames = torch.arange(logits.shape[1], device=logits.device)[None, :] < logit_lengths[:, None]
        frame_entropy = -(log_probs.exp() * log_probs).sum(-1)
        entropy = (frame_entropy * frames).sum(1) / logit_lengths.clamp(min=1).float()
    counts = torch.ones_like(losses)
    return LossTerms(losses[None], counts[None], (1.0,), None if entropy is None else entropy[None],
                     summed=reduction == "sum", unscorable=infinite if zero_infinity else None)


def logprob_terms(log_probs: Tensor, label_mask: Tensor, entropy: Tensor | None,
                  need_entropy: bool = False) -> LossTerms:
    """From per-token log-probabilities of the labels (zero where not counted), as a fused LM head returns them
    instead of logits (TRL): the summed negative log-likelihood and entropy per example."""
    mask = label_mask.float()
    sums = -(log_probs.float() * mask).sum(1)
    entropy_sums = None
    if need_entropy:
        if entropy is None:
            raise ValueError("the fused LM head returned no per-token `entropy`, which EMP's score needs.")
        entropy_sums = (entropy.float() * mask).sum(1)
    return _one(sums, mask.sum(1), entropy_sums)


def classification_scores(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
    """Per-example cross-entropy and entropy of softmax(logits) for (B, C) logits (the vision loop's)."""
    loss, entropy, _ = class_terms(logits, labels, label_smoothing, need_entropy=True).per_example()
    assert entropy is not None
    return loss, entropy


def regression_scores(predictions: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Per-example mean squared error over the outputs; entropy 0."""
    loss, entropy, _ = squared_error_terms(predictions, targets).per_example()
    assert entropy is not None
    return loss, entropy
