"""Pruning settings shared by every front end.

One dataclass serves the core, the Trainer (`PruningArguments` is this class)
and the scripts, so a setting means the same thing everywhere and
`HfArgumentParser` can build it from the command line.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool, high_open: bool) -> None:
    ok = math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ValueError(f"`{name}` must be in {left}{low}, {high}{right}, got {value!r}.")


@dataclass
class PruningConfig:
    """How to prune: a method of docs/methods.md and its settings.

    Defaults are those of docs/methods.md; `anneal=None` means the method's own
    default (0.125 for `emp` and `infobatch`, 0 otherwise).
    """

    method: str = field(
        default="emp",
        metadata={"help": "Pruning method: full, random, static_random, emp, infobatch, uncertainty, "
                          "eps_greedy, ucb, elfl, static."},
    )
    prune: float = field(default=0.5, metadata={"help": "Fraction of the data pruned in a pruning epoch, in [0, 1)."})
    beta: float = field(default=5.0, metadata={"help": "EMP: weight of the predictive entropy in the score (>= 0)."})
    anneal: float | None = field(
        default=None,
        metadata={"help": "Fraction of the final epochs trained on the full data, in [0, 1). "
                          "Default: 0.125 for emp and infobatch, 0 for the others."},
    )
    period: int = field(default=1, metadata={"help": "Pruning period T_p: a new selection every `period` epochs."})
    ema_alpha: float = field(default=0.8, metadata={"help": "EMA weight a of the newest loss, in (0, 1]."})
    eps: float = field(default=0.1, metadata={"help": "eps_greedy: fraction of the kept set drawn at random, in [0, 1]."})
    ucb_c: float = field(default=1.0, metadata={"help": "ucb: weight c of the loss variance (>= 0)."})
    pruning_seed: int | None = field(
        default=None,
        metadata={"help": "Seed of the selections; default: the training seed."},
    )
    static_scores_file: str | None = field(
        default=None,
        metadata={"help": "static: file of one score per training example (.pt, .npy, or text, one per line)."},
    )

    static_flip: bool = field(
        default=False,
        metadata={"help": "static: keep the other end of the score (e.g. the easiest examples by EL2N)."},
    )
    budget_examples: int | None = field(
        default=None,
        metadata={"help": "The fair baseline (with method full): train on all the data, without pruning, for exactly "
                          "this many examples (the last epoch cut short), with the LR schedule planned over those "
                          "steps. Give it a pruned run's forwarded_examples (its report names it)."},
    )
    nonfinite_tolerance: int = field(
        default=0,
        metadata={"help": "Examples whose loss may be NaN/inf over the whole run before it stops (they keep their "
                          "last finite score). 0: the first one stops the run, before its next checkpoint or "
                          "selection."},
    )

    def __post_init__(self) -> None:
        from .policies import POLICIES  # local import: policies import this module

        if self.method not in POLICIES:
            raise ValueError(
                f"Unknown pruning `method` {self.method!r}; known methods: {', '.join(sorted(POLICIES))}."
            )
        _check_range("prune", self.prune, 0.0, 1.0, low_open=False, high_open=True)
        _check_range("beta", self.beta, 0.0, math.inf, low_open=False, high_open=True)
        if self.anneal is not None:
            _check_range("anneal", self.anneal, 0.0, 1.0, low_open=False, high_open=True)
        if isinstance(self.period, bool) or not isinstance(self.period, int) or self.period < 1:
            raise ValueError(f"`period` must be an integer >= 1, got {self.period!r}.")
        _check_range("ema_alpha", self.ema_alpha, 0.0, 1.0, low_open=True, high_open=False)
        _check_range("eps", self.eps, 0.0, 1.0, low_open=False, high_open=False)
        _check_range("ucb_c", self.ucb_c, 0.0, math.inf, low_open=False, high_open=True)
        if self.budget_examples is not None:
            budget = self.budget_examples
            if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
                raise ValueError(f"`budget_examples` must be an integer >= 1 (or unset), got {budget!r}.")
            if self.method != "full":
                raise ValueError(f"`budget_examples` is the budget-matched full-data baseline: use it with method "
                                 f"'full', not {self.method!r}.")
        tolerance = self.nonfinite_tolerance
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
            raise ValueError(f"`nonfinite_tolerance` must be an integer >= 0, got {tolerance!r}.")

    @property
    def effective_anneal(self) -> float:
        from .policies import POLICIES

        return POLICIES[self.method].default_anneal if self.anneal is None else self.anneal

    @property
    def effective_prune(self) -> float:
        """The prune ratio in force: `full` trains on everything whatever `prune` says (its default is 0.5), so
        reports, logs, model cards and the resume check say 0 for it rather than a ratio never applied."""
        return 0.0 if self.method == "full" else self.prune

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["anneal"] = self.effective_anneal
        out["prune"] = self.effective_prune
        return out
