"""Issue 25: a resume goes on exactly as the uninterrupted run would, or refuses before any training.

Forged but well-typed pruning states, changed training data, two writers in one folder, half-rewritten
checkpoints, non-finite training, interrupted runs, bad input files and a full disk: each gets a test here.
"""

from __future__ import annotations

import pytest
import torch

from emp_hf import PruningConfig
from emp_hf.core import DataPruner
from emp_hf.core.state_file import DamagedStateError


def trained_pruner(method="emp", n=32, epochs=4):
    p = DataPruner(n, epochs, PruningConfig(method=method, prune=0.5, anneal=0.25), seed=3)
    p.set_epoch(0)
    p.update(torch.arange(n), torch.linspace(0.1, 3.0, n), torch.full((n,), 0.5))
    p.set_epoch(1)
    return p


def forged(mutate, method="emp"):
    state = trained_pruner(method).state_dict()
    mutate(state)
    return state


def fresh(method="emp"):
    return DataPruner(32, 4, PruningConfig(method=method, prune=0.5, anneal=0.25), seed=3)


@pytest.mark.parametrize("mutate, field", [
    (lambda s: s.update(epoch=-1), "'epoch' is -1"),
    (lambda s: s.update(epoch=99), "'epoch' is 99"),
    (lambda s: s.update(pruned_epoch=7), "'pruned_epoch' is 7"),
    (lambda s: s.update(seed=4), "'seed' is 4, but the plan's pruning_seed is 3"),
    (lambda s: s["store"]["loss"].__setitem__(5, float("inf")), "'store.loss' holds NaN or inf"),
    (lambda s: s["store"]["ema_var"].__setitem__(0, -1.0), "'store.ema_var' holds a negative variance"),
    (lambda s: s["store"]["times_trained"].__setitem__(0, -2), "'store.times_trained' holds a negative count"),
    (lambda s: s["store"]["last_epoch"].__setitem__(0, 9), "'store.last_epoch' holds an epoch outside"),
    (lambda s: s["selection"].update(indices=torch.zeros(16, dtype=torch.int64)),
     "'selection.indices' is not strictly ascending.*more than once"),
    (lambda s: s["selection"].update(indices=torch.arange(20, 36)), "'selection.indices' holds 20 .. 35, outside"),
    (lambda s: s["selection"].update(indices=torch.arange(16).float()), "'selection.indices' is not a 1-D tensor"),
    (lambda s: s["selection"].update(weight=float("nan")), "'selection.weight' is nan"),
])
def test_a_forged_but_well_typed_state_is_refused_naming_the_field(mutate, field):
    state = forged(mutate)
    with pytest.raises(DamagedStateError, match=rf"ckpt/pruning_state.pt is damaged: .*{field}"):
        fresh().load_state_dict(state, source="ckpt/pruning_state.pt")


def test_the_unforged_state_resumes_to_the_same_order():
    p = trained_pruner()
    q = fresh()
    q.load_state_dict(p.state_dict())
    assert torch.equal(q.epoch_order(), p.epoch_order())


def test_a_partial_selection_for_a_full_epoch_is_refused():
    def mutate(state):
        state["epoch"] = 0
    with pytest.raises(DamagedStateError, match="'selection' holds 16 of 32 examples for epoch 0"):
        fresh().load_state_dict(forged(mutate))
