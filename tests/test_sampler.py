"""Sampler invariants that every front end relies on."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emp_hf.core import POLICIES, DataPruner, PruningConfig, PruningSampler

methods = st.sampled_from(sorted(set(POLICIES) - {"static"}))
runs = st.fixed_dictionaries(
    {
        "method": methods,
        "n": st.integers(1, 200),
        "epochs": st.integers(1, 6),
        "prune": st.floats(0.0, 0.95),
        "period": st.integers(1, 3),
        "seed": st.integers(0, 2**31),
    }
)


def make(run):
    cfg = PruningConfig(method=run["method"], prune=run["prune"], period=run["period"])
    return DataPruner(run["n"], run["epochs"], cfg, seed=run["seed"])


def feed(pruner, order, seed):
    g = torch.Generator().manual_seed(seed)
    losses = torch.rand(len(order), generator=g)
    pruner.update(torch.tensor(order), losses, torch.rand(len(order), generator=g))


@settings(max_examples=60, deadline=None)
@given(runs)
def test_each_epoch_yields_the_planned_number_of_distinct_in_range_indices(run):
    pruner = make(run)
    sampler = PruningSampler(pruner)
    plan = pruner.plan()
    for epoch in range(run["epochs"]):
        sampler.set_epoch(epoch)
        sampler.set_epoch(epoch)  # the Trainer and accelerate both call it
        order = list(sampler)
        assert len(order) == len(sampler) == len(set(order))
        assert all(0 <= i < run["n"] for i in order)
        if pruner.exact_plan:
            assert len(order) == plan[epoch]
        feed(pruner, order, epoch)


@settings(max_examples=40, deadline=None)
@given(runs)
def test_two_samplers_fed_the_same_updates_agree(run):
    a, b = make(run), make(run)
    sa, sb = PruningSampler(a), PruningSampler(b)
    for epoch in range(run["epochs"]):
        sa.set_epoch(epoch)
        sb.set_epoch(epoch)
        order_a, order_b = list(sa), list(sb)
        assert order_a == order_b
        feed(a, order_a, epoch)
        feed(b, order_b, epoch)


def test_set_epoch_twice_keeps_the_selection_and_counts_once():
    p = DataPruner(30, 3, PruningConfig(method="random", prune=0.5))
    s = PruningSampler(p)
    s.set_epoch(0)
    feed(p, list(s), 0)
    s.set_epoch(1)
    first = list(s)
    s.set_epoch(1)
    assert list(s) == first
    assert int(p.store.times_selected.sum()) == 15


def test_same_seed_same_order_other_seed_other_order():
    def order(seed, epoch):
        p = DataPruner(50, 3, PruningConfig(method="full"), seed=seed)
        p.set_epoch(epoch)
        return list(PruningSampler(p))

    assert order(1, 2) == order(1, 2)
    assert order(1, 2) != order(2, 2)
    assert order(1, 1) != order(1, 2)


def test_sampler_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    p = DataPruner(50, 3, PruningConfig(method="random", prune=0.5))
    s = PruningSampler(p)
    for e in range(3):
        s.set_epoch(e)
        list(s)
    assert torch.equal(torch.rand(3), expected)


def test_explicit_ddp_mode_covers_the_selection_evenly():
    p = DataPruner(11, 2, PruningConfig(method="full"))
    shards = [list(PruningSampler(p, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert set(sum(shards, [])) == set(range(11))
    assert len(PruningSampler(p, num_replicas=3, rank=0)) == 4


def test_shuffle_off_gives_ascending_order():
    p = DataPruner(5, 2, PruningConfig(method="full"), shuffle=False)
    assert list(PruningSampler(p)) == [0, 1, 2, 3, 4]


def test_restored_state_continues_like_the_original():
    cfg = PruningConfig(method="ucb", prune=0.6)
    a = DataPruner(40, 6, cfg, seed=7)
    for epoch in range(3):
        a.set_epoch(epoch)
        feed(a, a.epoch_order().tolist(), epoch)
    b = DataPruner(40, 6, cfg, seed=7)
    b.load_state_dict(a.state_dict())
    b.set_epoch(2)  # the resumed epoch: must not select again or recount
    assert torch.equal(a.store.times_selected, b.store.times_selected)
    for epoch in range(3, 6):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert torch.equal(a.epoch_order(), b.epoch_order())
        feed(a, a.epoch_order().tolist(), epoch)
        feed(b, b.epoch_order().tolist(), epoch)
    assert a.summary() == b.summary()
