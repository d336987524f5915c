"""The papers' optimisers and LR schedules, with the horizon set by the pruned plan.

Schedules are functions of the optimizer step and the core's `EpochPlan` (the
planned steps of every epoch), so step decay happens at the right epoch boundaries
even when epochs differ in length, and OneCycle ends at its final LR after
exactly the pruned run's steps. (InfoBatch's own example sizes OneCycle to the
full-data step count and crashes when the pruned run steps past it the other way.)
A plan that is only an estimate (infobatch) is updated as real sizes arrive.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ..core.epoch_plan import EpochPlan


class LARS(Optimizer):
    """SGD with momentum and layer-wise trust ratios (You et al.); biases and norm weights (1-D) are exempt."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        if lr <= 0:
            raise ValueError(f"`lr` must be > 0, got {lr}.")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = torch.where((p_norm > 0) & (g_norm > 0), group["eta"] * p_norm / g_norm,
                                        torch.ones_like(p_norm))
                    grad = grad.mul(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = grad.clone()
                else:
                    buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])
        return loss


def one_cycle(plan: EpochPlan, pct_start: float = 0.3, div_factor: float = 25.0, final_div: float = 1e4):
    """torch's OneCycleLR shape (cosine up from max/div, cosine down to max/(div*final_div)), as a multiplier."""

    def factor(step: int) -> float:
        total = max(plan.total, 1)
        up = max(1.0, pct_start * total)
        start, end = 1.0 / div_factor, 1.0 / (div_factor * final_div)
        if step <= up:
            t = step / up
            return start + (1.0 - start) * (1 - math.cos(math.pi * t)) / 2
        t = min(1.0, (step - up) / max(total - up, 1.0))
        return end + (1.0 - end) * (1 + math.cos(math.pi * t)) / 2

    return factor


def step_decay(plan: EpochPlan, milestones: list[int], gamma: float):
    """Multiply by `gamma` at the start of each milestone epoch (counted in the plan's steps)."""

    def factor(step: int) -> float:
        passed = sum(1 for m in milestones if step >= plan.start_of(m))
        return gamma**passed

    return factor


OPTIMIZERS = ("sgd", "lars", "adam")
SCHEDULES = ("step", "imagenet_step", "onecycle", "linear", "constant", "exponential")


def exponential(plan: EpochPlan, gamma: float):
    """LR x gamma per epoch, smoothly within each epoch, on the planned steps (SimCLR, EMP B.5): the factor at
    the end of epoch e is gamma^(e+1) whatever the epoch's length, so a pruned run decays as the full one."""

    def factor(step: int) -> float:
        epoch, start = 0, 0
        while epoch < len(plan.steps_per_epoch) - 1 and step >= start + plan.steps_per_epoch[epoch]:
            start += plan.steps_per_epoch[epoch]
            epoch += 1
        return gamma ** (epoch + min(1.0, (step - start) / max(1, plan.steps_per_epoch[epoch])))

    return factor


def build_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float) -> Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    if name == "lars":
        return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"Unknown `optimizer` {name!r}; known optimizers: {', '.join(OPTIMIZERS)}.")


def build_schedule(name: str, optimizer: Optimizer, plan: EpochPlan, epochs: int, gamma: float = 0.98) -> LambdaLR:
    if name == "onecycle":
        fn = one_cycle(plan)
    elif name == "step":  # dynamic-data-pruning CIFAR: x0.2 at epochs 60/120/160 of 200
        fn = step_decay(plan, [round(epochs * f) for f in (0.3, 0.6, 0.8)], 0.2)
    elif name == "imagenet_step":  # EMP ImageNet: x0.1 every 30 of 90 epochs
        fn = step_decay(plan, [round(epochs * f) for f in (1 / 3, 2 / 3)], 0.1)
    elif name == "exponential":
        fn = exponential(plan, gamma)
    elif name == "linear":  # decayed linearly to 0 over the plan's steps: the schedule planned for a budget
        def fn(step: int) -> float:
            return max(0.0, 1.0 - step / max(1, plan.total))
    elif name == "constant":
        def fn(step: int) -> float:
            return 1.0
    else:
        raise ValueError(f"Unknown `schedule` {name!r}; known schedules: {', '.join(SCHEDULES)}.")
    return LambdaLR(optimizer, fn)
