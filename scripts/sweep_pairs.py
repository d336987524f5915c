"""Each pruned run against the budget-matched full-data run that trained on as many examples, seed by seed.

A budget-matched run (`--budget_match METHOD`) trains on all the data, cut to the examples one pruned run
forwarded, with its own complete schedule. Every pruned run of the same cell (task or label noise, prune
ratio) and seed that forwarded exactly that many examples is compared with it, whatever its method: at
prune 0.7 random, eps-greedy and UCB all forward the same count, so one `budget_random` answers "does this
method beat simply training less?" for all three. A budget run laid over the matched run's epochs (vision's
`--budget_schedule_examples`: the same LR at every step) pairs only with runs whose epochs had those sizes,
since only for them is the LR the same at every step. Shared by glue_table.py and vision_sweep.py.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PairableRun:
    label: str  # the method as the tables name it; budget runs "budget_<method>"
    cell: Hashable  # what must match besides the seed, e.g. (task, prune) or (label noise, prune)
    seed: int | None
    metric: float
    trained: int  # examples forwarded in training (a static run's scoring pass not included)
    budget: int | None = None  # budget-matched runs: the example budget they were cut to
    #: pruned runs: examples per epoch; budget runs: the epoch sizes their LR schedule was laid over (None:
    #: their own schedule, which pairs with any run of their count)
    epochs: tuple[int, ...] | None = None


def budget_pairs(runs: Iterable[PairableRun]) -> dict[tuple[str, str, Hashable], list[float]]:
    """(method label, budget label, cell) -> metric differences, method minus budget run, one per seed."""
    runs = list(runs)
    budgets: dict[tuple, list[PairableRun]] = {}
    for run in runs:
        if run.budget is not None:
            budgets.setdefault((run.cell, run.seed, run.budget), []).append(run)
    pairs: dict[tuple[str, str, Hashable], list[float]] = {}
    for run in runs:
        if run.budget is None:
            for matched in budgets.get((run.cell, run.seed, run.trained), []):
                if matched.epochs is not None and matched.epochs != run.epochs:
                    continue  # its LR at each step was another epoch plan's
                pairs.setdefault((run.label, matched.label, run.cell), []).append(run.metric - matched.metric)
    return pairs
