"""Static scores for text classification (the GLUE front end): fine-tune scoring models briefly, score once.

The same scores and files as the vision front end (`emp_hf/core/static.py`), from a Transformers
sequence-classification model. Features for k-center greedy and herding are what the classification head
receives (BERT: the pooled [CLS] output). GraNd is the per-example gradient norm over the head's
parameters only (`grand_parameters: "head"` in the file): per-example gradients of all 22 million MiniLM
(110 million BERT-base) parameters cost one backward pass per example, on a CPU far more than the
pruning could save; the vision front end uses every parameter.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
from torch import nn

from .core.policies import seeded_generator
from .core.static import ForgettingCounter, ScoreAccumulator, grand

_SCORING_STREAM = 0x7E57


def classification_head(model: nn.Module) -> nn.Module:
    """The module that maps features to logits (`classifier` in BERT-style models, `score` in decoder ones)."""
    for name in ("classifier", "score"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    raise ValueError(f"{type(model).__name__} has no `classifier` or `score` head: static text scores need a "
                     "sequence-classification model.")


def compute_text_static_scores(scores_dir: str, wanted: list[str], score_epochs: int, score_seeds: int,
                               make_model: Callable[[], nn.Module], train_dataset, collator, *, learning_rate: float,
                               batch_size: int, seed: int, device: torch.device,
                               metadata: dict[str, Any]) -> dict[str, str]:
    """Fine-tune `score_seeds` models from `make_model()` for `score_epochs` epochs (AdamW, LR decaying linearly
    to 0), then score every training row; writes `<scores_dir>/<score>.pt` files with the scoring run's cost."""
    start = time.time()
    n = len(train_dataset)
    labels = torch.as_tensor(train_dataset["label"])
    if labels.is_floating_point():
        raise ValueError("Static scores need a classification task; this one has real-valued labels (regression).")
    accumulator = ScoreAccumulator(wanted)
    forwarded = 0
    for s in range(score_seeds):
        gen = seeded_generator(seed, s, _SCORING_STREAM)
        torch.manual_seed(int(gen.initial_seed()) % 2**31)
        model = make_model().to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
        total = score_epochs * math.ceil(n / batch_size)  # linear decay to 0 over the scoring steps (GLUE's)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total))
        forgetting = ForgettingCounter(n)
        for _ in range(score_epochs):
            model.train()
            order = torch.randperm(n, generator=gen)
            for b in range(0, n, batch_size):
                idx = order[b:b + batch_size]
                batch = _batch(train_dataset, idx, collator, device)
                out = model(**batch)
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
                scheduler.step()
                forgetting.update(idx, out.logits.detach().argmax(-1).cpu() == labels[idx])
            forwarded += n
        probabilities, features = _score_pass(model, train_dataset, collator, device)
        forwarded += n
        grand_norms = None
        if accumulator.needs_grand:
            head = classification_head(model).eval()
            grand_norms = lambda: grand(head, features.to(device), labels.to(device))  # noqa: E731
            forwarded += n
        accumulator.add_seed(probabilities, labels, forgetting, grand_norms, features)
    return accumulator.save(scores_dir, seeded_generator(seed, _SCORING_STREAM), {
        **metadata, "scoring_forwarded_examples": forwarded, "scoring_wall_time_s": time.time() - start,
        "num_examples": n, "score_epochs": score_epochs, "score_seeds": score_seeds, "seed": seed,
        "grand_parameters": "head"})


def _batch(dataset, idx: torch.Tensor, collator, device) -> dict[str, torch.Tensor]:
    rows = [dataset[int(i)] for i in idx]
    batch = collator(rows)
    if "label" in batch:
        batch["labels"] = batch.pop("label")
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def _score_pass(model: nn.Module, dataset, collator, device, batch_size: int = 64):
    """Softmax probabilities and head inputs (features) of every training row, in dataset order, eval mode."""
    model.eval()
    captured: list[torch.Tensor] = []

    def keep_features(module, args):
        x = args[0].detach()
        captured.append(x[:, 0] if x.dim() == 3 else x)  # a head that reads the sequence: its first position

    hook = classification_head(model).register_forward_pre_hook(keep_features)
    try:
        probs = []
        for b in range(0, len(dataset), batch_size):
            batch = _batch(dataset, torch.arange(b, min(len(dataset), b + batch_size)), collator, device)
            batch.pop("labels", None)
            probs.append(model(**batch).logits.float().softmax(-1).cpu())
    finally:
        hook.remove()
    return torch.cat(probs), torch.cat(captured).float().cpu()
