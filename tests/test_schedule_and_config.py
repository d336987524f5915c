import pytest
import torch

from emp_hf.core import POLICIES, DataPruner, PruningConfig, PruningSchedule, ScoreStore


@pytest.mark.parametrize(
    "n,epochs,prune,anneal,period,expected",
    [
        (100, 4, 0.5, 0.0, 1, [100, 50, 50, 50]),
        (100, 8, 0.7, 0.125, 1, [100, 30, 30, 30, 30, 30, 30, 100]),  # ceil(.125*8) = 1 annealing epoch
        (100, 10, 0.7, 0.125, 1, [100] + [30] * 7 + [100, 100]),  # ceil(1.25) = 2
        (7, 3, 0.3, 0.0, 2, [7, 5, 5]),  # k = round(.7*7) = 5
        (10, 5, 0.0, 0.5, 1, [10] * 5),
        (3, 2, 0.99, 0.0, 1, [3, 1]),  # at least one example
    ],
)
def test_plan(n, epochs, prune, anneal, period, expected):
    p = DataPruner(n, epochs, PruningConfig(method="random", prune=prune, anneal=anneal, period=period))
    assert p.plan() == expected
    for epoch, size in enumerate(expected):  # the real sizes equal the plan for fixed-ratio methods
        p.set_epoch(epoch)
        assert len(p.selection) == size


def test_period_reuses_selection_between_selection_epochs():
    s = PruningSchedule(num_epochs=10, prune=0.5, period=3)
    assert [s.selection_epoch(e) for e in range(1, 8)] == [1, 1, 1, 4, 4, 4, 7]
    p = DataPruner(40, 10, PruningConfig(method="random", prune=0.5, period=3))
    sets = []
    for e in range(1, 5):
        p.set_epoch(e)
        sets.append(set(p.selection.indices.tolist()))
    assert sets[0] == sets[1] == sets[2] != sets[3]


def test_method_defaults_match_methods_md():
    cfg = PruningConfig()
    assert (cfg.method, cfg.prune, cfg.beta, cfg.ema_alpha, cfg.eps, cfg.ucb_c, cfg.period) == (
        "emp", 0.5, 5.0, 0.8, 0.1, 1.0, 1)
    assert PruningConfig(method="emp").effective_anneal == 0.125
    assert PruningConfig(method="infobatch").effective_anneal == 0.125
    for name in ("random", "uncertainty", "eps_greedy", "ucb", "elfl", "full", "static_random"):
        assert PruningConfig(method=name).effective_anneal == 0.0
    assert set(POLICIES) == {"full", "random", "static_random", "emp", "infobatch", "uncertainty",
                             "eps_greedy", "ucb", "elfl", "static"}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"prune": 1.0}, r"`prune` must be in \[0.0, 1.0\)"),
        ({"prune": -0.1}, "`prune`"),
        ({"prune": float("nan")}, "`prune`"),
        ({"method": "emb"}, "Unknown pruning `method` 'emb'; known methods: elfl, emp, eps_greedy"),
        ({"beta": -1.0}, "`beta`"),
        ({"eps": 1.5}, "`eps`"),
        ({"ucb_c": -0.1}, "`ucb_c`"),
        ({"ema_alpha": 0.0}, "`ema_alpha`"),
        ({"anneal": 1.0}, "`anneal`"),
        ({"period": 0}, "`period`"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruningConfig(**kwargs)


def test_bad_sizes_and_indices():
    with pytest.raises(ValueError, match="`num_examples` must be a positive integer"):
        DataPruner(0, 3)
    with pytest.raises(ValueError, match="`num_epochs`"):
        DataPruner(5, 0)
    store = ScoreStore(5)
    with pytest.raises(ValueError, match=r"`indices` must lie in \[0, 5\)"):
        store.update(torch.tensor([0, 5]), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="same length"):
        store.update(torch.tensor([0, 1]), torch.tensor([1.0]))
    p = DataPruner(5, 3)
    with pytest.raises(ValueError, match=r"`epoch` must be in \[0, 3\)"):
        p.set_epoch(3)


def test_current_plan_replaces_estimates_with_real_sizes():
    p = DataPruner(40, 5, PruningConfig(method="infobatch", prune=0.5, anneal=0.2))
    assert p.current_plan() == p.plan() == [40, 30, 30, 30, 40]  # estimate: half below the mean
    p.set_epoch(0)
    p.update(torch.arange(40), torch.tensor([0.0] * 36 + [10.0] * 4))  # 36 below the mean
    p.set_epoch(1)  # keeps 4 + round(.5 * 36) = 22
    assert p.current_plan() == [40, 22, 22, 22, 40]
    restored = DataPruner(40, 5, PruningConfig(method="infobatch", prune=0.5, anneal=0.2))
    restored.load_state_dict(p.state_dict())
    assert restored.current_plan() == [40, 22, 22, 22, 40]
    fixed = DataPruner(40, 5, PruningConfig(method="emp", prune=0.5))
    fixed.set_epoch(0)
    fixed.set_epoch(1)
    assert fixed.current_plan() == fixed.plan()


def test_the_epoch_plan_counts_steps_and_finds_a_resumed_runs_place():
    from emp_hf.core.epoch_plan import EpochPlan, sharded_batches

    plan = EpochPlan.of([30, 9, 9, 30], lambda size: -(-size // 4), accumulation=3)
    assert plan.batches == [8, 3, 3, 8] and plan.steps_per_epoch == [3, 1, 1, 3] and plan.total == 8
    assert plan.start_of(2) == 4 and plan.locate(0) == (0, 0) and plan.locate(4) == (2, 0) and plan.locate(5) == (3, 0)
    assert plan.locate(6) == (3, 1) and plan.locate(8) == (4, 0)
    plan.update([30, 5, 9, 30], lambda size: -(-size // 4))  # a data-dependent epoch's real size, in place
    assert plan.batches == [8, 2, 3, 8] and plan.total == 8
    assert sharded_batches(33, 2, 8) == 2  # 17 per rank: 8 + 9, the last single example joins its batch
    assert sharded_batches(36, 2, 8) == 3 and sharded_batches(1, 1, 8) == 1
