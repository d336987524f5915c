"""Each policy against a case computed by hand from METHODS.md."""

import pytest
import torch

from emp_hf.core import DataPruner, PruningConfig, ScoreStore, top_k_mask


def pruner_with(method, losses, entropies=None, prune=0.5, epochs=4, **cfg):
    n = len(losses)
    p = DataPruner(n, epochs, PruningConfig(method=method, prune=prune, anneal=0.0, **cfg), seed=3)
    p.set_epoch(0)
    p.update(torch.arange(n), torch.tensor(losses), None if entropies is None else torch.tensor(entropies))
    return p


def selected(p, epoch=1):
    p.set_epoch(epoch)
    return set(p.selection.indices.tolist())


def test_emp_ranks_by_loss_plus_five_entropy_not_by_loss():
    # scores = loss + 5 * entropy = [3.5, 2.0, 3.0, 3.5]; by loss alone the top 2 would be {1, 2}
    p = pruner_with("emp", [1.0, 2.0, 3.0, 0.5], [0.5, 0.0, 0.0, 0.6])
    assert selected(p) == {0, 3}


def test_emp_beta_zero_is_loss_ranking():
    p = pruner_with("emp", [1.0, 2.0, 3.0, 0.5], [0.5, 0.0, 0.0, 0.6], beta=0.0)
    assert selected(p) == {1, 2}


def test_infobatch_keeps_above_mean_and_reweights_kept_well_learned():
    # mean = 11/6 ~ 1.83: well learned = {0, 4, 5}; s = 1/3 keeps round(2/3 * 3) = 2 of them, weight 1.5
    p = pruner_with("infobatch", [1.0, 2.0, 3.0, 4.0, 0.5, 0.5], prune=1 / 3)
    chosen = selected(p)
    assert {1, 2, 3} <= chosen and len(chosen) == 5
    weights = p.loss_weights(torch.arange(6))
    for i in range(6):
        expected = 1.5 if i in chosen - {1, 2, 3} else 1.0
        assert weights[i].item() == pytest.approx(expected)


def test_infobatch_weights_reset_in_annealing():
    p = DataPruner(6, 4, PruningConfig(method="infobatch", prune=0.5, anneal=0.25))
    p.set_epoch(0)
    p.update(torch.arange(6), torch.tensor([1.0, 2.0, 3.0, 4.0, 0.5, 0.5]))
    p.set_epoch(1)
    assert p.loss_weights(torch.arange(6)).max() == 2.0
    p.set_epoch(3)  # the annealing epoch: full data, weights 1
    assert len(p.selection) == 6 and torch.equal(p.loss_weights(torch.arange(6)), torch.ones(6))


def test_ema_and_variance_follow_methods_md():
    store = ScoreStore(1, ema_alpha=0.8)
    store.update(torch.tensor([0]), torch.tensor([1.0]))
    assert (store.ema.item(), store.ema_var.item()) == (1.0, 0.0)  # start from first loss, variance 0
    store.update(torch.tensor([0]), torch.tensor([2.0]))
    # ema = .8*2 + .2*1 = 1.8 ; var = .2*0 + .8*(2-1)^2 = .8
    assert store.ema.item() == pytest.approx(1.8) and store.ema_var.item() == pytest.approx(0.8)
    store.update(torch.tensor([0]), torch.tensor([0.0]))
    # ema = .2*1.8 = .36 ; var = .2*.8 + .8*(0-1.8)^2 = 2.752
    assert store.ema.item() == pytest.approx(0.36) and store.ema_var.item() == pytest.approx(2.752)


def test_uncertainty_ranks_by_ema_and_ucb_adds_variance():
    def run(method):
        p = DataPruner(3, 5, PruningConfig(method=method, prune=0.6, anneal=0.0))
        p.set_epoch(0)
        # ex0 steady at 1.0; ex1 jumps 0 -> 1.2 -> 0.2 (ema .36, var 1.0528); ex2 steady .5
        for losses in ([1.0, 0.0, 0.5], [1.0, 1.2, 0.5], [1.0, 0.2, 0.5]):
            p.update(torch.arange(3), torch.tensor(losses))
        return selected(p)

    # k = round(0.4 * 3) = 1; ema = [1.0, 0.392, 0.5]; ucb = ema + var = [1.0, 0.392 + var1, 0.5]
    assert run("uncertainty") == {0}
    store = ScoreStore(1)
    for value in (0.0, 1.2, 0.2):
        store.update(torch.tensor([0]), torch.tensor([value]))
    assert store.ema.item() + store.ema_var.item() > 1.0  # the hand-computed premise
    assert run("ucb") == {1}


def test_eps_greedy_splits_exploit_and_explore():
    n, prune = 100, 0.9  # k = 10: 9 by ema, 1 at random from the other 91
    p = pruner_with("eps_greedy", [float(i) for i in range(n)], prune=prune, eps=0.1)
    chosen = selected(p)
    assert len(chosen) == 10
    assert set(range(91, 100)) <= chosen  # the 9 largest EMAs
    assert len(chosen - set(range(91, 100))) == 1


def test_elfl_trains_every_example_equally_often():
    n, prune, epochs = 10, 0.7, 11  # k = 3; 10 pruning epochs x 3 = 30 = 3 per example
    p = DataPruner(n, epochs, PruningConfig(method="elfl", prune=prune))
    for e in range(1, epochs):
        p.set_epoch(e)
    assert torch.equal(p.store.times_selected, torch.full((n,), 3, dtype=torch.int32))


def test_random_changes_and_static_random_does_not():
    rnd = pruner_with("random", [0.0] * 50)
    assert selected(rnd, 1) != selected(rnd, 2)
    static = pruner_with("static_random", [0.0] * 50)
    assert selected(static, 1) == selected(static, 2) and len(selected(static, 3)) == 25


def test_static_uses_given_scores_once():
    scores = torch.tensor([5.0, 1.0, 4.0, 2.0])
    p = DataPruner(4, 3, PruningConfig(method="static", prune=0.5), static_scores=scores)
    assert selected(p, 1) == {0, 2} == selected(p, 2)


def test_static_scores_file_and_wrong_length(tmp_path):
    path = tmp_path / "scores.txt"
    path.write_text("5\n1\n4\n2\n")
    p = DataPruner(4, 3, PruningConfig(method="static", prune=0.5, static_scores_file=str(path)))
    assert selected(p) == {0, 2}
    with pytest.raises(ValueError, match="static_scores.*3 examples"):
        DataPruner(3, 3, PruningConfig(method="static", prune=0.5, static_scores_file=str(path)))
    with pytest.raises(ValueError, match="static.*needs"):
        DataPruner(4, 3, PruningConfig(method="static", prune=0.5))


def test_full_keeps_everything():
    p = pruner_with("full", [1.0, 2.0, 3.0], prune=0.9)
    assert selected(p) == {0, 1, 2}


def test_unseen_examples_rank_first():
    p = DataPruner(4, 3, PruningConfig(method="emp", prune=0.5, anneal=0.0))
    p.set_epoch(0)
    p.update(torch.tensor([0, 1]), torch.tensor([9.0, 9.0]))
    assert selected(p) == {2, 3}


def test_top_k_ties_break_towards_lower_index():
    scores = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.0])
    assert torch.nonzero(top_k_mask(scores, 2)).squeeze(1).tolist() == [1, 2]
    assert top_k_mask(scores, 0).sum() == 0 and top_k_mask(scores, 9).all()


def test_nonfinite_losses_never_enter_a_selection():
    p = DataPruner(4, 3, PruningConfig(method="emp", prune=0.5, anneal=0.0, nonfinite_tolerance=2))
    p.set_epoch(0)
    p.update(torch.arange(4), torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.zeros(4))
    p.update(torch.arange(4), torch.tensor([float("nan"), float("inf"), 0.5, 0.5]), torch.zeros(4))
    assert p.store.nonfinite_count == 2
    assert p.store.loss.tolist() == [1.0, 2.0, 0.5, 0.5]  # the bad rows were not written
    assert selected(p) == {0, 1}


def test_kth_largest_radix_pass_equals_kthvalue():
    from emp_hf.core.policies import kth_largest

    g = torch.Generator().manual_seed(0)
    n = (1 << 20) + 17  # above the radix threshold
    cases = [
        torch.randn(n, generator=g),  # negatives and positives
        torch.randint(0, 5, (n,), generator=g).float(),  # heavy ties
        torch.cat([torch.full((n // 2,), float("inf")), torch.rand(n - n // 2, generator=g)]),  # unseen = inf
        torch.rand(n, generator=g) * 1e-30,  # tiny values, one bucket
        torch.cat([torch.zeros(n // 2), -torch.zeros(n - n // 2)]),  # +0 and -0
        torch.cat([torch.full((n // 3,), -float("inf")), torch.randn(n - n // 3, generator=g) * 1e20]),  # -inf, huge
        -torch.rand(n, generator=g),  # all negative: the sign bit set everywhere
    ]
    for scores in cases:
        for k in (1, 7, n // 3, n - 1, n):
            expected = torch.kthvalue(scores, n - k + 1).values
            assert float(kth_largest(scores, k)) == float(expected), k


def test_top_k_mask_at_radix_size_takes_k_with_ties_drawn_from_the_bucket():
    from emp_hf.core.policies import _RADIX_MIN

    g = torch.Generator().manual_seed(1)
    n = _RADIX_MIN + 1001
    cases = [
        torch.randint(0, 7, (n,), generator=g).float(),  # heavy ties, non-negative mapping
        torch.randint(-3, 4, (n,), generator=g).float(),  # heavy ties with negatives, general mapping
    ]
    for scores in cases:
        for k in (1, n // 5, n // 2 + 3, n - 1):
            mask = top_k_mask(scores, k, torch.Generator().manual_seed(0))
            assert int(mask.sum()) == k
            threshold = torch.kthvalue(scores, n - k + 1).values
            assert bool(mask[scores > threshold].all()) and not bool(mask[scores < threshold].any())
            ties = torch.nonzero(scores == threshold).squeeze(1)
            chosen_ties = torch.nonzero(mask & (scores == threshold)).squeeze(1)
            if 0 < chosen_ties.numel() < ties.numel():  # drawn at random, not the lowest indices
                assert not torch.equal(chosen_ties, ties[: chosen_ties.numel()])


def test_nonzero_indices_chunked_equals_nonzero_in_int32():
    from emp_hf.core.policies import _CHUNK, nonzero_indices

    g = torch.Generator().manual_seed(2)
    for n in (10, _CHUNK, 3 * _CHUNK + 5):
        for density in (0.0, 0.3, 1.0):
            mask = torch.rand(n, generator=g) < density
            got = nonzero_indices(mask)
            assert got.dtype == torch.int32
            assert torch.equal(got.long(), torch.nonzero(mask).squeeze(1))


def test_random_subset_mask_draws_exactly_count_candidates_uniformly():
    from emp_hf.core.policies import _RADIX_MIN, random_subset_mask

    g = torch.Generator().manual_seed(3)
    for n in (50, _RADIX_MIN + 3):
        candidates = torch.rand(n, generator=g) < 0.4
        total = int(candidates.sum())
        for count in (0, 1, total // 3, total):
            drawn = random_subset_mask(candidates, count, torch.Generator().manual_seed(count))
            assert int(drawn.sum()) == count and not bool((drawn & ~candidates).any())
    # uniform: each of 10 candidates drawn about count/10 of the time over many seeds
    candidates = torch.zeros(30, dtype=torch.bool)
    candidates[::3] = True
    hits = sum(random_subset_mask(candidates, 3, torch.Generator().manual_seed(s)).int() for s in range(2000))
    assert hits[~candidates].sum() == 0
    assert torch.allclose(hits[candidates].float() / 2000, torch.full((10,), 0.3), atol=0.05)
    with pytest.raises(ValueError, match="cannot draw 11 of 10"):
        random_subset_mask(candidates, 11, g)


def test_draw_unmasked_sets_exactly_count_new_entries_uniformly():
    from emp_hf.core.policies import draw_unmasked

    g = torch.Generator().manual_seed(5)
    for n, count in ((50, 3), (50, 20), (1 << 20, 250_000)):  # sparse, dense (fallback), several rounds
        mask = torch.arange(n) % 2 == 0 if n == 50 else torch.rand(n, generator=g) < 0.5
        before = mask.clone()
        after = draw_unmasked(mask, count, torch.Generator().manual_seed(count))
        assert int(after.sum()) == int(before.sum()) + count and bool(after[before].all())
    # uniform over the unset entries: each of 20 drawn 3/20 of the time over many seeds
    base = torch.zeros(30, dtype=torch.bool)
    base[::3] = True
    hits = sum(draw_unmasked(base.clone(), 3, torch.Generator().manual_seed(s)).int() - base.int()
               for s in range(3000))
    assert torch.allclose(hits[~base].float() / 3000, torch.full((20,), 0.15), atol=0.03)
    with pytest.raises(ValueError, match="cannot draw 21 of 20 unset entries"):
        draw_unmasked(base.clone(), 21, g)


def test_a_state_from_other_selection_rules_is_refused():
    """Future selections are recomputed on resume: under other rules they would differ from the interrupted
    run's, so a checkpoint made under other rules (or before they were versioned) must not resume."""
    p = pruner_with("eps_greedy", [float(i) for i in range(20)])
    state = p.state_dict()
    assert state["plan"]["selection_rules"] == "1.2"
    fresh = DataPruner(20, 4, PruningConfig(method="eps_greedy", prune=0.5, anneal=0.0), seed=3)
    fresh.load_state_dict(state)  # same rules: resumes
    for old in ("1.1", None):
        stale = {**state, "plan": {**state["plan"], "selection_rules": old}}
        with pytest.raises(ValueError, match=f"selection_rules: checkpoint {old!r}, now '1.2'.*resume with the "
                                             "emp-hf that wrote it"):
            fresh.load_state_dict(stale)


@pytest.mark.parametrize("method", ["emp", "ucb", "uncertainty", "eps_greedy", "static"])
def test_scores_computed_a_chunk_at_a_time_select_what_the_score_vector_selects(method, monkeypatch, core_sizes):
    """Above `_CHUNKED_SCORES_MIN` examples no score vector is built: every pass recomputes its chunk. The
    selections, ties and unseen examples included, and the reported mean must be those of the vector path."""
    import emp_hf.core.policies as policies

    core_sizes("_RADIX_MIN", 512)  # the radix threshold and its bucket pass, at test size
    core_sizes("_CHUNK", 300)
    n = 5003
    g = torch.Generator().manual_seed(4)
    losses = torch.randint(0, 40, (n,), generator=g).float() / 7  # heavy ties at any threshold
    entropies = torch.rand(n, generator=g)
    static = torch.randint(-20, 20, (n,), generator=g).float()  # negatives: the general radix mapping

    def run(chunked_min: int) -> tuple[list, list, int]:
        core_sizes("_CHUNKED_SCORES_MIN", chunked_min)
        p = DataPruner(n, 4, PruningConfig(method=method, prune=0.6, anneal=0.0), seed=3,
                       static_scores=static if method == "static" else None)
        parts: list[int] = []
        score = p.policy.score
        p.policy.score = lambda store, part=policies.ALL: parts.append(len(range(n)[part])) or score(store, part)
        p.set_epoch(0)
        half = torch.arange(0, n, 2)
        p.update(half, losses[half], entropies[half])  # the other half stays unseen: it must rank first
        selections, means = [], []
        for epoch in (1, 2):
            p.set_epoch(epoch)
            selections.append(p.selection.indices.tolist())
            means.append(p.report.epochs[epoch].mean_score)
            p.update(torch.arange(n), losses.flip(0) * epoch, entropies)
        return selections, means, max(parts)

    vector_selections, vector_means, vector_part = run(chunked_min=n + 1)
    chunked_selections, chunked_means, chunked_part = run(chunked_min=n)
    assert vector_part == n and chunked_part == 300  # each path did what it says
    assert chunked_selections == vector_selections
    assert chunked_means == vector_means
    kept = round(0.4 * n)
    assert all(len(s) == kept for s in chunked_selections)
    if method in ("emp", "ucb", "uncertainty"):  # the unseen half (2,501) ranks first and fills the 2,001 kept
        assert set(chunked_selections[0]) <= set(range(1, n, 2))


#: sha256 (first 24 hex digits) of five epochs' orders of a 20,000-example run per method, recorded under the
#: selection rules named beside it (`plan_settings()["selection_rules"]`). A change that orders or selects
#: differently fails here: it must raise the rules version (so that older checkpoints refuse to resume instead
#: of going on with other selections) and record the new orders.
PINNED_ORDERS = {
    "elfl": ("1.1", "d211a8ae1e651f600dc01cb9"),
    "emp": ("1.1", "a7af9defaf12b85018789dbe"),
    "eps_greedy": ("1.2", "37ea3e32833b4e58d82a7592"),
    "full": ("1.1", "56834deacc1d063f5eab091b"),
    "infobatch": ("1.2", "e8cf95725ab7af2895aa9ddb"),
    "random": ("1.1", "48c27d7466450fca60820a64"),
    "static_random": ("1.1", "0ab3d36029dcce0038ad87e8"),
    "ucb": ("1.1", "f1e7445b6e41d196f080ef00"),
    "uncertainty": ("1.1", "31580dcaca5d61b970d46d0e"),
}

PINNED_PACKED_ORDERS = {
    "elfl": ("2.1", "be9d8e60577b18d35a9c8c21"),
    "emp": ("2.1", "d3de30e1c96ea958406f242f"),
    "eps_greedy": ("2.2", "9ed67c0a82b5e9437da76d8c"),
    "full": ("2.1", "56834deacc1d063f5eab091b"),
    "infobatch": ("2.2", "12e943c7c06183018c5bacd9"),
    "random": ("2.1", "ce440cea9e4e2b1d47b3f2e6"),
    "static_random": ("2.1", "9a0f5b4568d44946c19209be"),
    "ucb": ("2.1", "bdfdb782845bb97a80372e77"),
    "uncertainty": ("2.1", "b6edcf9a1ff023e8fcd0e449"),
}


@pytest.mark.parametrize("path", ["vector", "chunked", "packed"])
@pytest.mark.parametrize("method", sorted(PINNED_ORDERS))
def test_every_method_orders_as_recorded_under_its_selection_rules(method, path, monkeypatch, core_sizes):
    """Both routes (one score vector with `kthvalue`; radix passes over chunks, chunked gather of the order) give
    the recorded orders; packed selections (shared rules 2: `shuffled_members` draws the order) theirs."""
    import hashlib


    if path in ("chunked", "packed"):  # the order's in-place gather too: 8,000 kept are two chunks
        core_sizes("_RADIX_MIN", 512)
        core_sizes("_CHUNK", 4096)
        core_sizes("_CHUNKED_SCORES_MIN", 8192)
    if path == "packed":
        core_sizes("_PACKED_MIN", 8192)
    p = DataPruner(20_000, 5, PruningConfig(method=method, prune=0.6, anneal=0.2), seed=11)
    g = torch.Generator().manual_seed(0)
    digest = hashlib.sha256()
    for epoch in range(5):
        p.set_epoch(epoch)
        order = p.epoch_order()
        digest.update(order.to(torch.int64).numpy().tobytes())
        p.update(order, torch.rand(len(order), generator=g), torch.rand(len(order), generator=g))
    pinned = PINNED_PACKED_ORDERS if path == "packed" else PINNED_ORDERS
    assert (p.plan_settings()["selection_rules"], digest.hexdigest()[:24]) == pinned[method]
