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


def _round_trip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_a_full_epoch_holds_and_saves_no_index_vector_and_older_states_still_resume():
    """Full epochs are `Selection.every(N)`: no 0 .. N-1 vector beside the order, none in the checkpoint. A state
    written before (its full epoch saved as that vector) resumes to the same orders and selections."""
    cfg = PruningConfig(method="emp", prune=0.6, anneal=0.25)
    a = DataPruner(50, 4, cfg, seed=5)
    a.set_epoch(0)
    assert a.selection.is_every and len(a.selection) == 50
    feed(a, a.epoch_order().tolist()[:20], 0)  # mid-epoch checkpoint of a full epoch
    state = a.state_dict()
    assert state["selection"] == {"every": 50}
    older = dict(state, selection={"indices": torch.arange(50, dtype=torch.int32), "weights": None})
    resumed = []
    for saved in (state, older):
        b = DataPruner(50, 4, cfg, seed=5)
        b.load_state_dict(_round_trip(saved))
        b.set_epoch(0)
        assert b.selection.is_every and torch.equal(b.epoch_order(), a.epoch_order())
        resumed.append(b)
    feed(a, a.epoch_order().tolist()[20:], 0)
    for b in resumed:
        feed(b, b.epoch_order().tolist()[20:], 0)
    expected_counts = torch.zeros(50, dtype=torch.int32)
    for epoch in range(1, 4):  # pruning epochs, then the annealing (full) epoch
        for p in (a, *resumed):
            p.set_epoch(epoch)
            feed(p, p.epoch_order().tolist(), epoch)
        if not a.selection.is_every:
            expected_counts[a.selection.indices.long()] += 1
        for b in resumed:
            assert torch.equal(b.epoch_order(), a.epoch_order())
            assert torch.equal(b.selection.indices, a.selection.indices)
    assert a.selection.is_every  # the annealing epoch
    for b in resumed:
        assert b.summary() == a.summary()
    assert 0 < expected_counts.sum() < 100 and torch.equal(a.store.times_selected, expected_counts)


def test_a_pruning_epoch_that_keeps_everything_counts_each_example_once():
    """InfoBatch with no scores yet keeps every example (`Selection.every`): each is counted as selected once, as
    the index vector did, and a resumed run agrees."""
    p = DataPruner(30, 3, PruningConfig(method="infobatch", prune=0.5, anneal=0.0), seed=1)
    p.set_epoch(0)
    p.set_epoch(1)  # no scores recorded in epoch 0
    assert p.selection.is_every and p.epoch_size() == 30
    assert torch.equal(p.store.times_selected, torch.ones(30, dtype=torch.int32))
    assert p.report.epochs[1].kept == 30 and not p.report.epochs[1].full
    q = DataPruner(30, 3, PruningConfig(method="infobatch", prune=0.5, anneal=0.0), seed=1)
    q.load_state_dict(_round_trip(p.state_dict()))
    assert q.selection.is_every and q._pruned.is_every and torch.equal(q.epoch_order(), p.epoch_order())
