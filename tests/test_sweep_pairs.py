"""Pruned runs are paired with the budget-matched run of their seed that was cut to their own example count."""


import pytest

from emp_hf.compare import PairableRun, budget_pairs


def test_each_run_meets_the_budget_run_of_its_seed_and_count():
    cell = ("sst2", 0.7)
    runs = [
        PairableRun("emp", cell, 1, 0.83, 5200), PairableRun("emp", cell, 2, 0.81, 5200),
        PairableRun("budget_emp", cell, 1, 0.80, 5210, budget=5200),
        PairableRun("budget_emp", cell, 2, 0.82, 5205, budget=5200),
        # random and ucb forward the same count at this ratio: one budget run serves both
        PairableRun("random", cell, 1, 0.79, 3800), PairableRun("ucb", cell, 1, 0.78, 3800),
        PairableRun("budget_random", cell, 1, 0.77, 3808, budget=3800),
        # infobatch's count depends on the data: each seed has its own budget
        PairableRun("infobatch", cell, 1, 0.84, 6100), PairableRun("infobatch", cell, 2, 0.85, 6050),
        PairableRun("budget_infobatch", cell, 1, 0.80, 6100, budget=6100),
        PairableRun("budget_infobatch", cell, 2, 0.86, 6050, budget=6050),
        # no budget run for this seed, and one for another cell: neither pairs
        PairableRun("random", cell, 2, 0.70, 3800),
        PairableRun("budget_random", ("sst2", 0.5), 2, 0.60, 5000, budget=3800),
        PairableRun("full", ("sst2", 0.0), 1, 0.83, 8000),
    ]
    pairs = budget_pairs(runs)
    assert set(pairs) == {("emp", "budget_emp", cell), ("random", "budget_random", cell),
                          ("ucb", "budget_random", cell), ("infobatch", "budget_infobatch", cell)}
    assert pairs[("emp", "budget_emp", cell)] == pytest.approx([0.03, -0.01])
    assert pairs[("random", "budget_random", cell)] == pytest.approx([0.02])
    assert pairs[("ucb", "budget_random", cell)] == pytest.approx([0.01])
    assert pairs[("infobatch", "budget_infobatch", cell)] == pytest.approx([0.04, -0.01])


def test_a_budget_run_on_the_matched_runs_lr_pairs_only_with_runs_of_those_epoch_sizes():
    """Same count, other epoch sizes: the LR at each step differed, so the pair would not isolate the data."""
    cell = (0.0, 0.7)
    runs = [
        PairableRun("budget_random", cell, 0, 0.870, 114_000, budget=114_000, epochs=(60_000, 18_000, 18_000, 18_000)),
        PairableRun("budget_random [own LR schedule]", cell, 0, 0.876, 114_000, budget=114_000),
        PairableRun("eps_greedy", cell, 0, 0.885, 114_000, epochs=(60_000, 18_000, 18_000, 18_000)),
        PairableRun("odd", cell, 0, 0.880, 114_000, epochs=(60_000, 27_000, 27_000)),
    ]
    pairs = budget_pairs(runs)
    assert set(pairs) == {("eps_greedy", "budget_random", cell), ("eps_greedy", "budget_random [own LR schedule]", cell),
                          ("odd", "budget_random [own LR schedule]", cell)}
    assert pairs[("eps_greedy", "budget_random", cell)] == pytest.approx([0.015])


def test_the_plot_keeps_each_kind_of_budget_schedule_on_its_own_curve():
    """Budget runs on the matched run's LR, on their own step schedule and on one planned for the budget are
    three different baselines: never joined into one line."""
    from emp_hf.compare import OWN_SCHEDULE, PLANNED_SCHEDULE, plot_series

    points = {
        "full": [(240.0, 89.5, 0.1)],
        "emp": [(156.0, 88.8, 0.2)],
        "budget_emp": [(156.0, 88.1, 0.2)],
        "budget_random": [(114.0, 88.0, 0.2)],
        f"budget_emp {OWN_SCHEDULE}": [(156.0, 89.1, 0.2)],
        f"budget_emp {PLANNED_SCHEDULE}": [(156.0, 89.9, 0.4)],
    }
    series = plot_series(points)
    assert series["budget"] == [(114.0, 88.0, 0.2), (156.0, 88.1, 0.2)]
    assert series["budget own"] == [(156.0, 89.1, 0.2)]
    assert series["budget planned"] == [(156.0, 89.9, 0.4)]
    assert series["emp"] == points["emp"] and series["full"] == points["full"]
    assert not any(name.startswith("budget_") for name in series)
