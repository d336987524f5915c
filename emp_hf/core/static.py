"""Static data-pruning scores: computed once, before the pruned run, from a briefly trained model.

Pure functions of model outputs (probabilities, features, correctness histories); the front ends train the
scoring models (`emp_hf/static_scoring.py`). Definitions and sources: docs/static_scores.md. Every score is
"higher = keep" unless its `KEEP` entry says "low" (margin: a small margin is an uncertain example); a
static run keeps the top k after applying that direction, so the papers' choice (keep the hardest) is the
default, and `flip` keeps the other end.

The file a scoring run writes is a `.pt` dict read with `weights_only=True`: the scores, the direction, and
the cost of computing them (examples forwarded and wall time), which the pruned run adds to its report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .state_file import load_state_file, save_state_file

#: Which end of each score the papers keep.
KEEP = {"el2n": "high", "grand": "high", "forgetting": "high", "least_confidence": "high", "margin": "low",
        "entropy": "high", "kcenter": "high", "herding": "high"}
STATIC_SCORES = tuple(KEEP)


def el2n(probabilities: Tensor, labels: Tensor) -> Tensor:
    """Error L2-norm (Paul et al. 2021): ||softmax(z) - onehot(y)||_2."""
    onehot = torch.nn.functional.one_hot(labels.long(), probabilities.shape[1]).to(probabilities.dtype)
    return torch.linalg.vector_norm(probabilities - onehot, dim=1)


def least_confidence(probabilities: Tensor) -> Tensor:
    """1 - max_c p_c (DeepCore's "uncertainty", least confidence)."""
    return 1.0 - probabilities.max(dim=1).values


def margin(probabilities: Tensor) -> Tensor:
    """p_top1 - p_top2 (DeepCore's "uncertainty", margin): small = uncertain, so `KEEP` is "low"."""
    top2 = probabilities.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def entropy(probabilities: Tensor) -> Tensor:
    """-sum_c p_c log p_c (DeepCore's "uncertainty", entropy)."""
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)


class ForgettingCounter:
    """Forgetting events (Toneva et al. 2019): per example, how often a presentation during training found it
    misclassified after the previous presentation had it right. Examples never classified correctly are
    ranked as the most forgotten: they score `presentations + 1`, above any possible count."""

    def __init__(self, num_examples: int) -> None:
        self.previous = torch.zeros(num_examples, dtype=torch.bool)
        self.learned = torch.zeros(num_examples, dtype=torch.bool)
        self.events = torch.zeros(num_examples, dtype=torch.int64)
        self.presentations = torch.zeros(num_examples, dtype=torch.int64)

    def update(self, indices: Tensor, correct: Tensor) -> None:
        indices, correct = indices.detach().cpu().long(), correct.detach().cpu().bool()
        self.events[indices] += (self.previous[indices] & ~correct).long()
        self.previous[indices] = correct
        self.learned[indices] |= correct
        self.presentations[indices] += 1

    def scores(self) -> Tensor:
        never = (self.presentations + 1).to(torch.float32)
        return torch.where(self.learned, self.events.to(torch.float32), never)


def grand(module: torch.nn.Module, inputs: Tensor, labels: Tensor, chunk: int = 64) -> Tensor:
    """Gradient norm (Paul et al. 2021): ||grad_theta CE(module(x_i), y_i)||_2 over every parameter of
    `module`, per example, with `torch.func` (vmap of grad), in chunks of `chunk` examples.
    The module must not mix examples in its forward pass (BatchNorm in eval mode, not train mode)."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in module.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in module.named_buffers()}

    def loss(p, x, y):
        logits = functional_call(module, (p, buffers), (x.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(logits, y.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    norms = []
    for start in range(0, inputs.shape[0], chunk):
        grads = per_example(params, inputs[start:start + chunk], labels[start:start + chunk])
        squared = sum(g.flatten(1).pow(2).sum(1) for g in grads.values())
        norms.append(squared.sqrt())
    return torch.cat(norms)


def k_center_greedy_rank(features: Tensor, generator: torch.Generator) -> Tensor:
    """k-center greedy (Sener and Savarese 2018) over all N examples: a score N, N-1, ..., 1 in the order the
    greedy picks them (start: a seeded random example; then the example farthest from everything picked),
    so the top k of the score is the greedy k-center subset for every k."""
    x = features.float()
    n = x.shape[0]
    order = torch.empty(n, dtype=torch.int64)
    first = int(torch.randint(n, (1,), generator=generator))
    nearest = torch.full((n,), math.inf)
    squared = (x * x).sum(1)
    pick = first
    for step in range(n):
        order[step] = pick
        distance = squared - 2 * (x @ x[pick]) + squared[pick]
        nearest = torch.minimum(nearest, distance)
        nearest[pick] = -math.inf  # never picked again
        pick = int(nearest.argmax())
    return _rank_score(order)


def herding_rank(features: Tensor) -> Tensor:
    """Herding (Welling 2009; DeepCore): greedily add the example that brings the mean of the picked features
    closest to the mean of all features; a score N, ..., 1 in pick order (top k = the herding subset)."""
    x = features.float()
    n = x.shape[0]
    target = x.mean(0)
    total = torch.zeros_like(target)
    available = torch.ones(n, dtype=torch.bool)
    order = torch.empty(n, dtype=torch.int64)
    for step in range(n):
        gap = torch.linalg.vector_norm(target - (total + x) / (step + 1), dim=1)
        gap[~available] = math.inf
        pick = int(gap.argmin())
        order[step] = pick
        available[pick] = False
        total += x[pick]
    return _rank_score(order)


def _rank_score(order: Tensor) -> Tensor:
    n = order.numel()
    score = torch.empty(n, dtype=torch.float32)
    score[order] = torch.arange(n, 0, -1, dtype=torch.float32)
    return score


def save_static_scores(path: str | Path, scores: Tensor, score: str, metadata: dict[str, Any]) -> None:
    if score not in KEEP:
        raise ValueError(f"Unknown static `score` {score!r}; known scores: {', '.join(STATIC_SCORES)}.")
    scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"static score {score!r} has NaN or inf entries: the scoring run diverged.")
    save_state_file({"scores": scores, "score": score, "keep": KEEP[score], **metadata}, Path(path))


def load_static_file(path: str | Path) -> dict[str, Any]:
    """A scoring run's file: {"scores", "score", "keep", "scoring_forwarded_examples", "scoring_wall_time_s",
    ...}, loaded without executing anything."""
    return check_static_file(load_state_file(Path(path)), path)


def check_static_file(data: Any, path: str | Path) -> dict[str, Any]:
    """`data`, loaded from `path`, if it is a scoring run's file; a ValueError naming the file otherwise."""
    if not isinstance(data, dict) or "scores" not in data or data.get("keep") not in ("high", "low"):
        raise ValueError(f"`static_scores_file` {str(path)!r} is a .pt file but not one written by "
                         "scripts/static_scores.py (it needs 'scores' and 'keep').")
    return data


class ScoreAccumulator:
    """The scores of several scoring models (seeds), averaged; the subset rankings from the last model's
    features. One place for both front ends, so a score means the same for images and text."""

    def __init__(self, wanted: list[str]) -> None:
        unknown = [w for w in wanted if w not in KEEP]
        if unknown:
            raise ValueError(f"Unknown static `scores` {unknown}; known scores: {', '.join(STATIC_SCORES)}.")
        self.wanted = list(dict.fromkeys(wanted))
        self.sums: dict[str, Tensor] = {}
        self.seeds = 0
        self.features: Tensor | None = None

    @property
    def needs_grand(self) -> bool:
        return "grand" in self.wanted

    def add_seed(self, probabilities: Tensor, labels: Tensor, forgetting: ForgettingCounter,
                 grand_norms: Callable[[], Tensor] | None, features: Tensor) -> None:
        per_seed: dict[str, Callable[[], Tensor]] = {
            "el2n": lambda: el2n(probabilities, labels),
            "least_confidence": lambda: least_confidence(probabilities),
            "margin": lambda: margin(probabilities),
            "entropy": lambda: entropy(probabilities),
            "forgetting": forgetting.scores,
        }
        if grand_norms is not None:
            per_seed["grand"] = grand_norms
        for name in self.wanted:
            if name in per_seed:
                value = per_seed[name]().detach().float().cpu()
                self.sums[name] = value if name not in self.sums else self.sums[name] + value
        self.seeds += 1
        self.features = features.detach().float().cpu()

    def results(self, generator: torch.Generator) -> dict[str, Tensor]:
        out = {name: value / self.seeds for name, value in self.sums.items()}
        if "kcenter" in self.wanted:
            out["kcenter"] = k_center_greedy_rank(self.features, generator)
        if "herding" in self.wanted:
            out["herding"] = herding_rank(self.features)
        return out

    def save(self, folder: str | Path, generator: torch.Generator, metadata: dict[str, Any]) -> dict[str, str]:
        """One `<score>.pt` per wanted score, each with the whole scoring run's metadata and cost."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        results = self.results(generator)
        paths = {}
        for name in self.wanted:
            path = Path(folder) / f"{name}.pt"
            save_static_scores(path, results[name], name, {**metadata, "scores_computed_together": self.wanted})
            paths[name] = str(path)
        return paths


def scoring_cost_note(facts: dict[str, Any]) -> str:
    """A static run's scoring cost for its summary line (from the report, or a front end's final facts), and
    a plain statement when computing the scores forwarded more examples than pruning saved."""
    if "scoring_forwarded_examples" not in facts:
        return ""
    note = (f" scoring_forwarded={facts['scoring_forwarded_examples']:,} "
            f"saved_including_scoring={facts['saved_fraction_including_scoring']:.3f}")
    if facts["scoring_cost_exceeds_saving"]:
        note += " NOTE: computing the static scores forwarded more examples than pruning saved"
    return note


def load_scores_file(path: str | Path) -> tuple[Tensor, dict[str, Any]]:
    """One float per example, and what the file says about them: from a scoring run's .pt file
    (scripts/static_scores.py: the scores with their direction and cost), or from a plain .pt tensor, .npy
    or text file (one value per line) the user brings (higher = keep, cost unknown)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"`static_scores_file` {str(path)!r} does not exist.")
    if path.suffix == ".pt":
        data = load_state_file(path)
        if isinstance(data, dict):
            meta = dict(check_static_file(data, path))
            return torch.as_tensor(meta.pop("scores"), dtype=torch.float32).reshape(-1), meta
    elif path.suffix == ".npy":
        import numpy as np

        data = torch.from_numpy(np.load(path))
    else:
        data = torch.tensor([float(line) for line in path.read_text().split()])
    return torch.as_tensor(data, dtype=torch.float32).reshape(-1), {"keep": "high"}
