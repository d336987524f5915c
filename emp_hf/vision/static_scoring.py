"""Static scores for the vision front end: train scoring models briefly, score every training example once.

The scoring models see exactly the training set the pruned run will see (same dataset, variants and seed:
the same `VisionArguments`), so score i belongs to example i. The cost is counted as the dynamic-data-
pruning paper asks: every example forwarded by the scoring run (training steps, the scoring pass, GraNd's
per-example gradients) and its wall time go into each score file, and from there into the pruned run's
report.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.epoch_plan import EpochPlan, sharded_batches
from ..core.policies import seeded_generator
from ..core.static import KEEP, STATIC_SCORES, ForgettingCounter, ScoreAccumulator, grand
from .augment import normalise, random_crop_flip
from .data import AUGMENTATION, apply_variants, load_image_data
from .engine import StepTerms, train_epoch
from .loop import VisionArguments
from .models import build_model
from .optim import build_optimizer, build_schedule

_SCORING_STREAM = 0x5C0E


@dataclass
class StaticScoreArguments:
    scores: list[str] = field(default_factory=lambda: ["el2n"],
                              metadata={"help": f"Scores to compute (one file each): {', '.join(STATIC_SCORES)}."})
    score_epochs: int = field(default=2, metadata={"help": "Epochs each scoring model trains (EL2N/GraNd: an "
                                                           "early epoch; forgetting: the length of a full run)."})
    score_seeds: int = field(default=1, metadata={"help": "Scoring models, each from its own seed; EL2N, GraNd, "
                                                          "forgetting and the uncertainty scores are averaged."})
    scores_dir: str = field(default="output/static_scores", metadata={"help": "Where <score>.pt files go."})

    def __post_init__(self) -> None:
        unknown = [s for s in self.scores if s not in KEEP]
        if unknown:
            raise ValueError(f"Unknown static `scores` {unknown}; known scores: {', '.join(STATIC_SCORES)}.")
        for name in ("score_epochs", "score_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")


def compute_static_scores(sargs: StaticScoreArguments, vargs: VisionArguments, data=None) -> dict[str, str]:
    """Train `score_seeds` models for `score_epochs` epochs each, compute the requested scores, write one file
    per score; returns {score: path}."""
    start = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() and not vargs.cpu else "cpu")
    raw = data if data is not None else load_image_data(vargs.dataset, vargs.data_dir, seed=vargs.seed)
    data, _ = apply_variants(raw, imbalance=vargs.imbalance, per_class=vargs.per_class,
                             label_noise=vargs.label_noise, max_train=vargs.max_train_samples, seed=vargs.seed)
    mean, std = data.channel_stats()
    data, mean, std = data.to(device), mean.to(device), std.to(device)
    n = int(data.train_labels.numel())
    scores = ScoreAccumulator(sargs.scores)
    forwarded = 0
    for s in range(sargs.score_seeds):
        gen = seeded_generator(vargs.seed, s, _SCORING_STREAM)
        torch.manual_seed(int(gen.initial_seed()) % 2**31)
        model = build_model(vargs.model, data.num_classes, data.in_channels, vargs.width).to(device)
        optimizer = build_optimizer(vargs.optimizer, model.parameters(), vargs.lr, vargs.momentum,
                                    vargs.weight_decay)
        # The training recipe of the pruned run (optimizer and schedule), on the scoring run's short horizon:
        # a constant high LR leaves a model whose eval-mode predictions are near chance after a few epochs.
        plan = EpochPlan.of([n] * sargs.score_epochs, lambda size: sharded_batches(size, 1, vargs.batch_size))
        steps = plan.steps_per_epoch[0]
        scheduler = build_schedule(vargs.schedule, optimizer, plan, sargs.score_epochs)
        forgetting = ForgettingCounter(n)
        objective = _Scoring(model, data, mean, std, vargs, forgetting,
                             torch.Generator(device).manual_seed(int(gen.initial_seed()) % 2**31))
        for _ in range(sargs.score_epochs):
            model.train()
            order = torch.randperm(n, generator=gen).to(device)
            train_epoch(order, steps, vargs.batch_size, objective, optimizer, scheduler, _backward)
            forwarded += n
        probabilities, features = _score_pass(model, data.train_images, mean, std)
        forwarded += n
        grand_norms = None
        if scores.needs_grand:  # every parameter, per example (one forward and backward each)
            grand_norms = functools.partial(grand, model.eval(), normalise(data.train_images, mean, std),
                                            data.train_labels)
            forwarded += n
        scores.add_seed(probabilities, data.train_labels, forgetting, grand_norms, features)
    return scores.save(sargs.scores_dir, seeded_generator(vargs.seed, _SCORING_STREAM), {
        "scoring_forwarded_examples": forwarded, "scoring_wall_time_s": time.time() - start, "num_examples": n,
        "dataset": data.name, "model": vargs.model, "score_epochs": sargs.score_epochs,
        "score_seeds": sargs.score_seeds, "seed": vargs.seed, "grand_parameters": "all"})


class _Scoring:
    """A scoring model's objective: cross-entropy on the augmented view, each step's correctness counted into the
    forgetting events."""

    def __init__(self, model, data, mean, std, vargs: VisionArguments, forgetting: ForgettingCounter,
                 augment_gen: torch.Generator) -> None:
        self.model, self.data, self.mean, self.std, self.vargs = model, data, mean, std, vargs
        self.forgetting, self.augment_gen = forgetting, augment_gen
        self.pad, self.flip = AUGMENTATION.get(data.name, (4, True))

    def begin_epoch(self, epoch: int) -> None:
        pass

    def __call__(self, idx: torch.Tensor) -> StepTerms:
        images, labels = self.data.train_images[idx], self.data.train_labels[idx]
        if self.vargs.augment:
            images = random_crop_flip(images, self.augment_gen, pad=self.pad, flip=self.flip)
        logits = self.model(normalise(images, self.mean, self.std))
        self.forgetting.update(idx, logits.detach().argmax(-1) == labels)
        return StepTerms(nn.functional.cross_entropy(logits, labels, reduction="none"))


def _backward(loss: torch.Tensor) -> None:
    loss.backward()


@torch.no_grad()
def _score_pass(model: nn.Module, images: torch.Tensor, mean, std, batch_size: int = 512):
    """Softmax probabilities and penultimate features of every training image (eval mode, no augmentation)."""
    model.eval()
    captured: list[torch.Tensor] = []
    head = model.head
    hook = head.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    try:
        probs = torch.cat([model(normalise(images[s:s + batch_size], mean, std)).float().softmax(-1)
                           for s in range(0, images.shape[0], batch_size)])
    finally:
        hook.remove()
    return probs, torch.cat(captured).float()
