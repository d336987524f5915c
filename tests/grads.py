"""The independent computation that InfoBatch's weighted gradients are checked against."""

from __future__ import annotations

import pytest
import torch


def weighted_reference(model, per_example, weights, denominator, plain_grads, accumulation=2):
    """Gradients of sum(w_i l_i) / D, times the plain Trainer's own extra scale.

    Some transformers releases (5.3) also divide the backward pass by the accumulation steps; that factor
    is measured on the unweighted loss against the plain Trainer's gradients and pinned to 1 or 1/GA.
    """
    params = [p for _, p in model.named_parameters()]
    names = [n for n, _ in model.named_parameters()]
    unit = dict(zip(names, torch.autograd.grad(per_example.sum() / denominator, params, retain_graph=True,
                                               allow_unused=True)))
    key = next(n for n in names if n in plain_grads and unit[n] is not None)
    scale = float(plain_grads[key].norm() / unit[key].norm())
    assert scale == pytest.approx(1.0, rel=1e-5) or scale == pytest.approx(1 / accumulation, rel=1e-5)
    target = torch.autograd.grad((per_example * weights).sum() / denominator, params, allow_unused=True)
    return {n: g * scale for n, g in zip(names, target) if g is not None}
