"""Packed selections (`Selection.packed`, from `_PACKED_MIN` examples on), their shuffle, and InfoBatch's draw,
each against an independent computation: bytes built bit by bit, exact counts, and frequencies over many seeds
against the uniform distribution."""

import itertools
import math
from collections import Counter

import pytest
import torch
from tiny import set_core_size

from emp_hf.core import DataPruner, PruningConfig
from emp_hf.core.packed import PackedMask
from emp_hf.core.policies import exact_random_subset, shuffled_members
from emp_hf.core.state_file import load_state_file, save_state_file

METHODS = ["emp", "eps_greedy", "infobatch", "random", "static_random", "ucb", "uncertainty", "elfl", "full"]


def chi_square_ok(counts: Counter, outcomes: list, trials: int) -> bool:
    """Pearson's test against the uniform distribution at the 0.1% level (Wilson-Hilferty approximation)."""
    expected = trials / len(outcomes)
    stat = sum((counts.get(o, 0) - expected) ** 2 / expected for o in outcomes)
    assert sum(counts.values()) == trials and set(counts) <= set(outcomes)
    k = len(outcomes) - 1
    critical = k * (1 - 2 / (9 * k) + 3.09 * math.sqrt(2 / (9 * k))) ** 3
    return stat < critical


@pytest.mark.parametrize("size", [1, 7, 8, 13, 64, 1000])
def test_packed_mask_bytes_parts_lookup_and_count_against_bit_by_bit(size):
    g = torch.Generator().manual_seed(size)
    mask = torch.rand(size, generator=g) < 0.4
    packed = PackedMask.pack(mask)
    expected = [0] * ((size + 7) // 8)
    for i in torch.nonzero(mask).squeeze(1).tolist():
        expected[i // 8] |= 1 << (i % 8)
    assert packed.data.tolist() == expected
    for start, end in [(0, size), (size // 3, size), (min(5, size), size), (size // 2, size // 2 + 1)]:
        assert torch.equal(packed.part(start, end), mask[start:end])
    idx = torch.randint(0, size, (40,), generator=g)
    assert torch.equal(packed.lookup(idx), mask[idx])
    assert packed.count() == int(mask.sum())


def test_packed_mask_refuses_bytes_of_another_size():
    with pytest.raises(ValueError, match="2 uint8 bytes"):
        PackedMask(torch.zeros(3, dtype=torch.uint8), 16)


def test_exact_random_subset_draws_exactly_count_and_every_subset_equally_often():
    candidates = torch.zeros(12, dtype=torch.bool)
    candidates[[1, 4, 5, 8, 11]] = True
    for count in range(6):
        drawn = exact_random_subset(candidates, count, torch.Generator().manual_seed(count))
        assert int(drawn.sum()) == count and not bool((drawn & ~candidates).any())
    # 2 of 5: ten subsets; both the surplus-removing and the missing-adding step occur among the seeds
    trials = 5000
    counts = Counter(tuple(torch.nonzero(exact_random_subset(candidates, 2, torch.Generator().manual_seed(s)))
                           .squeeze(1).tolist()) for s in range(trials))
    assert chi_square_ok(counts, list(itertools.combinations([1, 4, 5, 8, 11], 2)), trials)
    with pytest.raises(ValueError, match="cannot draw 6 of 5"):
        exact_random_subset(candidates, 6, torch.Generator())


def test_exact_random_subset_is_uniform_where_the_correction_has_too_few_entries_to_reject():
    # 4 candidates among 1,000 entries: the correction draws among their positions (fewer than 1/64 of n)
    candidates = torch.zeros(1000, dtype=torch.bool)
    candidates[[3, 500, 501, 998]] = True
    trials = 3000
    counts = Counter(tuple(torch.nonzero(exact_random_subset(candidates, 3, torch.Generator().manual_seed(s)))
                           .squeeze(1).tolist()) for s in range(trials))
    assert chi_square_ok(counts, list(itertools.combinations([3, 500, 501, 998], 3)), trials)


def test_exact_random_subset_includes_each_candidate_with_the_requested_fraction_at_size():
    g = torch.Generator().manual_seed(1)
    candidates = torch.rand(300_000, generator=g) < 0.5
    total = int(candidates.sum())
    drawn = exact_random_subset(candidates, round(0.3 * total), torch.Generator().manual_seed(2))
    assert int(drawn.sum()) == round(0.3 * total) and not bool((drawn & ~candidates).any())
    halves = [int(drawn[:150_000].sum()), int(drawn[150_000:].sum())]  # no drift along the index
    assert abs(halves[0] - halves[1]) < 0.02 * sum(halves)


def test_shuffled_members_gives_each_order_of_the_members_equally_often(monkeypatch, core_sizes):
    core_sizes("_CHUNK", 8)  # members in three different chunks
    core_sizes("_ORDER_BUCKETS", 4)  # any power of two is uniform; 4 keeps 4,800 draws quick
    mask = torch.zeros(24, dtype=torch.bool)
    mask[[2, 9, 10, 20]] = True
    packed = PackedMask.pack(mask)
    trials = 4800
    counts = Counter(tuple(shuffled_members(packed, 4, torch.Generator().manual_seed(s)).tolist())
                     for s in range(trials))
    assert chi_square_ok(counts, list(itertools.permutations([2, 9, 10, 20])), trials)
    order = shuffled_members(packed, 4, torch.Generator().manual_seed(7))
    assert torch.equal(order, shuffled_members(packed, 4, torch.Generator().manual_seed(7)))  # a function of the seed
    with pytest.raises(ValueError, match="has 4 members, not 5"):
        shuffled_members(packed, 5, torch.Generator())


def test_shuffled_members_at_size_is_a_permutation_of_the_set_with_no_position_drift(monkeypatch, core_sizes):
    core_sizes("_CHUNK", 8192)  # 25 chunks
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(200_000, generator=g) < 0.65
    order = shuffled_members(PackedMask.pack(mask), int(mask.sum()), torch.Generator().manual_seed(1))
    assert torch.equal(order.sort().values.long(), torch.nonzero(mask).squeeze(1))
    for piece in (order[:500], order[:13_000]):  # the head of the first bucket, the first 13 buckets: from anywhere
        assert abs(piece.float().mean().item() - 100_000) < 4 * 57_735 / piece.numel() ** 0.5


def run(method, packed_min, monkeypatch, n=3000, epochs=5, seed=2, labels=True, stop=None, state=None):
    """Epoch orders and selections of a pruner fed deterministic losses (optionally resumed from `state`)."""
    set_core_size(monkeypatch, "_PACKED_MIN", packed_min)
    config = PruningConfig(method=method, prune=0.6, anneal=0.2)
    p = DataPruner(n, epochs, config, seed=seed, labels=torch.arange(n) % 3 if labels else None)
    if state is not None:
        p.load_state_dict(state)
    out = []
    start = 0 if state is None else p.epoch + 1
    for epoch in range(start, epochs):
        p.set_epoch(epoch)
        order = p.epoch_order()
        out.append((epoch, order.clone(), p.selection, p.dense_loss_weights()))
        losses = torch.sin(order.double() * (epoch + 1)).float().abs()
        p.update(order, losses, torch.cos(order.double() * 0.37).float().abs())  # functions of the example
        if stop == epoch:
            return out, p
    return out, p


@pytest.mark.parametrize("method", METHODS)
def test_packed_selections_keep_the_same_examples_and_weights_as_indices(method, monkeypatch):
    """Only the order's draw differs between the forms: sets, weights, counts and the report are the same."""
    by_indices, a = run(method, 1 << 40, monkeypatch)
    assert a.plan_settings()["selection_rules"].startswith("1.")
    by_mask, b = run(method, 1000, monkeypatch)
    assert b.plan_settings()["selection_rules"].startswith("2.")
    for (epoch, order_a, sel_a, w_a), (_, order_b, sel_b, w_b) in zip(by_indices, by_mask):
        assert torch.equal(order_a.sort().values, order_b.sort().values), epoch
        assert torch.equal(sel_a.indices, sel_b.indices)
        assert (w_a is None) == (w_b is None) and (w_a is None or torch.equal(w_a, w_b))
        assert sel_b.is_every or sel_b.mask is not None
    assert torch.equal(a.store.times_selected, b.store.times_selected)
    assert a.summary() == b.summary()


@pytest.mark.parametrize("method", ["infobatch", "emp"])
def test_a_packed_selection_saves_as_bytes_and_resumes_to_the_same_orders(method, monkeypatch, tmp_path):
    whole, _ = run(method, 1000, monkeypatch)
    _, interrupted = run(method, 1000, monkeypatch, stop=2)
    state = interrupted.state_dict()
    assert state["selection"]["packed"].dtype == torch.uint8 and state["selection"]["packed"].numel() == 375
    assert (state["selection"]["upweighted"] is not None) == (method == "infobatch")
    save_state_file(state, tmp_path / "state.pt")
    rest, _ = run(method, 1000, monkeypatch, state=load_state_file(tmp_path / "state.pt"))  # weights_only load
    assert [e for e, *_ in rest] == [3, 4]
    for (epoch, order, _, weights), (epoch_b, order_b, _, weights_b) in zip(whole[3:], rest):
        assert epoch == epoch_b and torch.equal(order, order_b)
        assert (weights is None) == (weights_b is None) and (weights is None or torch.equal(weights, weights_b))


def test_a_damaged_packed_selection_is_named_damaged(monkeypatch):
    from emp_hf.core.state_file import DamagedStateError

    _, p = run("emp", 1000, monkeypatch, stop=1)
    state = p.state_dict()
    state["selection"]["size"] += 1
    q = DataPruner(3000, 5, PruningConfig(method="emp", prune=0.6, anneal=0.2), seed=2, labels=torch.arange(3000) % 3)
    with pytest.raises(DamagedStateError, match="saved as"):
        q.load_state_dict(state)


def test_infobatch_keeps_what_is_not_well_learned_and_upweights_exactly_the_drawn_rest(monkeypatch, core_sizes):
    for packed_min in (1 << 40, 1000):
        core_sizes("_PACKED_MIN", packed_min)
        n = 5000
        p = DataPruner(n, 4, PruningConfig(method="infobatch", prune=0.7, anneal=0.0), seed=4)
        p.set_epoch(0)
        losses = torch.rand(n, generator=torch.Generator().manual_seed(5))
        p.update(torch.arange(n), losses)
        p.set_epoch(1)
        well = losses < losses.mean()
        kept = torch.zeros(n, dtype=torch.bool)
        kept[p.selection.indices.long()] = True
        assert bool(kept[~well].all()) and len(p.selection) == int(kept.sum())
        assert int((kept & well).sum()) == round((1.0 - 0.7) * int(well.sum()))  # as METHODS.md: (1 - s) of them
        weights = p.loss_weights(torch.arange(n))
        assert torch.equal(weights, torch.where(kept & well, torch.tensor(1 / (1.0 - 0.7)), torch.tensor(1.0)))
        assert torch.equal(p.dense_loss_weights(), weights)


def test_a_selection_refuses_per_example_float_weights_with_the_way_to_build_its_up_weighted_mask():
    from emp_hf.core import Selection

    with pytest.raises(TypeError, match="mask_to_selection"):
        Selection(torch.arange(3), torch.ones(3))
    with pytest.raises(TypeError, match="weights"):
        Selection(torch.arange(3), weights=torch.ones(3))


@pytest.mark.parametrize("packed_min", [1 << 40, 16])
def test_a_user_policy_with_loss_weights_through_mask_to_selection(packed_min, monkeypatch, core_sizes):
    """The way a user-written policy returns a weighted selection works in both forms."""
    from emp_hf.core import POLICIES, SelectionPolicy, mask_to_selection

    class EvenUpweightFours(SelectionPolicy):
        name = "even_up4"

        def select(self, ctx):
            n = ctx.store.num_examples
            keep = torch.arange(n) % 2 == 0
            return mask_to_selection(keep, upweighted=torch.arange(n) % 4 == 0, weight=3.0)

    monkeypatch.setitem(POLICIES, "even_up4", EvenUpweightFours)
    core_sizes("_PACKED_MIN", packed_min)
    p = DataPruner(40, 3, PruningConfig(method="even_up4", prune=0.5, anneal=0.0), seed=0)
    p.set_epoch(0)
    p.update(torch.arange(40), torch.rand(40))
    p.set_epoch(1)
    assert (p.selection.mask is not None) == (packed_min == 16)
    assert sorted(p.epoch_order().tolist()) == list(range(0, 40, 2))
    expected = torch.where(torch.arange(40) % 4 == 0, 3.0, 1.0)
    assert torch.equal(p.loss_weights(torch.arange(40)), expected)
    assert torch.equal(p.dense_loss_weights(), expected)


def test_loss_weights_on_the_cpu_read_the_packed_mask_and_hold_no_dense_vector():
    p = DataPruner(200, 4, PruningConfig(method="infobatch", prune=0.5, anneal=0.0), seed=1)
    p.set_epoch(0)
    assert p.prepare_loss_weights("cpu") is False  # a full epoch: no weights
    losses = torch.rand(200, generator=torch.Generator().manual_seed(3))
    p.update(torch.arange(200), losses)
    p.set_epoch(1)
    assert p.prepare_loss_weights("cpu") is True and p._dense_weights is None
    idx = torch.tensor([5, 17, 199, 0, 17])
    kept_well = torch.zeros(200, dtype=torch.bool)
    kept_well[p.selection.indices.long()] = True
    kept_well &= losses < losses.mean()
    assert torch.equal(p.loss_weights(idx), torch.where(kept_well[idx], 2.0, 1.0))
    assert p._dense_weights is None  # still none: looked up in the packed mask
    assert torch.equal(p.dense_loss_weights("cpu")[idx], p.loss_weights(idx))


def test_an_old_infobatch_state_is_refused_by_its_rules_and_its_float_weights_as_damaged():
    from emp_hf.core.state_file import DamagedStateError

    config = PruningConfig(method="infobatch", prune=0.5, anneal=0.0)
    p = DataPruner(60, 3, config, seed=0)
    p.set_epoch(0)
    p.update(torch.arange(60), torch.rand(60, generator=torch.Generator().manual_seed(0)))
    p.set_epoch(1)
    state = p.state_dict()
    kept = p.selection.indices
    old = dict(state, selection={"indices": kept, "weights": torch.ones(kept.numel())},
               plan=dict(state["plan"], selection_rules="1.1"))
    with pytest.raises(ValueError, match="selection_rules: checkpoint '1.1', now '1.2'"):
        DataPruner(60, 3, config, seed=0).load_state_dict(old)
    forged = dict(old, plan=state["plan"])  # rules made to match: the float weights are still refused
    with pytest.raises(DamagedStateError, match="InfoBatch loss weights of an earlier emp-hf"):
        DataPruner(60, 3, config, seed=0).load_state_dict(forged)


@pytest.mark.parametrize("packed_min", [1 << 40, 16])
def test_a_wrong_count_given_to_mask_to_selection_is_refused(packed_min, monkeypatch, core_sizes):
    from emp_hf.core import mask_to_selection

    core_sizes("_CHUNK", 16)  # the index form's chunked route too
    core_sizes("_PACKED_MIN", packed_min)
    mask = torch.arange(100) % 3 == 0
    assert len(mask_to_selection(mask, count=34)) == 34
    with pytest.raises(RuntimeError, match="has 34 True entries, not 35"):
        mask_to_selection(mask, count=35)
