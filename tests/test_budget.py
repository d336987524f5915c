"""The fair baseline from any Trainer script (issue 28): full data cut to a pruned run's examples, with its own
LR schedule planned over exactly those steps."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import tiny_args, tiny_bert, tiny_dataset
from transformers import TrainerCallback

from emp_hf import PruningArguments, PruningConfig, PruningTrainer
from emp_hf.core import DataPruner


class LRs(TrainerCallback):
    def __init__(self):
        self.lrs, self.epoch_steps = [], {}

    def on_step_end(self, args, state, control, lr_scheduler=None, **kw):
        self.lrs.append(lr_scheduler.get_last_lr()[0])


def test_a_budget_run_trains_exactly_the_budget_with_its_own_schedule(tmp_path):
    lrs = LRs()
    # 30 examples, batch 4: a budget of 70 is two full epochs and a third cut to 10 examples (3 batches)
    trainer = PruningTrainer(model=tiny_bert(), args=tiny_args(tmp_path, num_train_epochs=4, warmup_steps=0),
                             train_dataset=tiny_dataset(30), callbacks=[lrs],
                             pruning_args=PruningArguments(method="full", budget_examples=70))
    trainer.train()
    report = trainer.pruning_report()
    assert report["forwarded_examples"] == 70 and report["planned_examples_per_epoch"] == [30, 30, 10]
    assert report["full_data_examples"] == 120 and report["saved_fraction"] == pytest.approx(1 - 70 / 120)
    assert report["budget_examples"] == 70 and "budget_matched_twin" not in report
    assert trainer.state.global_step == trainer.state.max_steps == 8 + 8 + 3
    assert lrs.lrs[-1] == 0.0 and lrs.lrs[0] == pytest.approx(1e-2 * (1 - 1 / 19))  # linear to 0 over 19 steps
    last = report["per_epoch"][-1]
    assert last["kept"] == 10 and last["forwarded"] == 10


def test_a_pruned_runs_report_names_its_budget_matched_twin(tmp_path):
    trainer = PruningTrainer(model=tiny_bert(), args=tiny_args(tmp_path, num_train_epochs=4),
                             train_dataset=tiny_dataset(24), pruning_args=PruningArguments(method="emp", prune=0.5))
    trainer.train()
    twin = trainer.pruning_report()["budget_matched_twin"]
    forwarded = trainer.pruning_report()["forwarded_examples"]
    assert twin == {"method": "full", "budget_examples": forwarded, "flags": f"--method full --budget_examples "
                                                                            f"{forwarded}"}


def test_a_budget_runs_cut_epoch_is_a_seeded_subset_and_resumes_exactly():
    config = PruningConfig(method="full", budget_examples=25)
    p = DataPruner(10, 3, config, seed=4)
    assert p.plan() == [10, 10, 5]
    p.set_epoch(0)
    p.set_epoch(1)
    p.set_epoch(2)
    order = p.epoch_order()
    assert order.numel() == 5 and order.unique().numel() == 5
    q = DataPruner(10, 3, config, seed=4)
    q.load_state_dict(p.state_dict())
    assert torch.equal(q.epoch_order(), order)
    other = DataPruner(10, 3, config, seed=6)
    for epoch in range(3):
        other.set_epoch(epoch)
    assert not torch.equal(other.selection.indices, p.selection.indices)  # a function of the seed


def test_a_budget_run_resumes_mid_run_to_the_same_weights(tmp_path):
    def run(folder, resume=None):
        args = tiny_args(folder, num_train_epochs=3, save_strategy="steps", save_steps=5)
        trainer = PruningTrainer(model=tiny_bert(), args=args, train_dataset=tiny_dataset(20),
                                 pruning_args=PruningArguments(method="full", budget_examples=50))
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    whole = run(tmp_path / "whole")
    run(tmp_path / "cut")
    resumed = run(tmp_path / "cut", resume=str(tmp_path / "cut" / "checkpoint-10"))
    assert resumed.pruning_report()["per_epoch"] == whole.pruning_report()["per_epoch"]
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


@pytest.mark.parametrize("config, message", [
    (dict(method="emp", budget_examples=10), "use it with method 'full', not 'emp'"),
    (dict(method="full", budget_examples=0), "`budget_examples` must be an integer >= 1"),
])
def test_bad_budgets_are_refused_by_name(config, message):
    with pytest.raises(ValueError, match=message):
        PruningConfig(**config)


def test_a_budget_beyond_full_data_is_refused():
    with pytest.raises(ValueError, match="more than 2 full epochs of 10 examples"):
        DataPruner(10, 2, PruningConfig(method="full", budget_examples=21))
    assert math.ceil(20 / 10) == len(DataPruner(10, 2, PruningConfig(method="full", budget_examples=20)).plan())


# ------------------------------------------------------------------------------ the comparison
def fake_run(folder, method, seed, accuracy, forwarded, budget=None, prune=0.7, **settings):
    import json

    folder.mkdir(parents=True)
    report = {"method": method, "forwarded_examples": forwarded,
              "settings": {"method": method, "prune": 0.0 if method == "full" else prune, "pruning_seed": seed,
                           "budget_examples": budget, **settings}}
    if budget is not None:
        report["budget_examples"] = budget
    (folder / "pruning_report.json").write_text(json.dumps(report))
    (folder / "eval_results.json").write_text(json.dumps({"eval_accuracy": accuracy, "eval_loss": 0.3}))


def test_compare_pairs_each_run_with_its_budget_twin_and_gives_t_intervals(tmp_path, capsys):
    from emp_hf.compare import find_runs, main, pairings, summarise

    for seed, (full, emp, budget) in enumerate([(0.80, 0.82, 0.81), (0.81, 0.83, 0.81), (0.79, 0.85, 0.81)], 1):
        fake_run(tmp_path / f"full-{seed}", "full", seed, full, 2000)
        fake_run(tmp_path / f"emp-{seed}", "emp", seed, emp, 1020)
        fake_run(tmp_path / f"budget-{seed}", "full", seed, budget, 1020, budget=1020)
    fake_run(tmp_path / "random-1", "random", 1, 0.80, 1020, anneal=0.125)
    runs, metric = find_runs([tmp_path])
    assert metric == "eval_accuracy" and len(runs) == 10
    pairs = pairings(runs)
    diffs = [round(d * 100, 6) for d in pairs[("emp 0.7", "budget-matched")]]
    assert diffs == [1.0, 2.0, 4.0]
    s = summarise(diffs)
    # by hand: mean 7/3, sd sqrt(7/3), t(0.975, 2) = 4.302653, half-width 4.302653 * sd / sqrt(3)
    half = 4.302653 * math.sqrt(7 / 3) / math.sqrt(3)
    assert s.mean == pytest.approx(7 / 3) and s.sd == pytest.approx(math.sqrt(7 / 3))
    assert (s.low, s.high) == (pytest.approx(7 / 3 - half, abs=1e-5), pytest.approx(7 / 3 + half, abs=1e-5))
    assert (s.wins, s.ties, s.losses, s.sign_p) == (3, 0, 0, pytest.approx(0.25))
    # the variant's settings name its arm, and it pairs with the budget run of its seed (same count)
    assert [round(d * 100, 6) for d in pairs[("random 0.7 anneal=0.125", "budget-matched")]] == [-1.0]
    assert main([str(tmp_path), "--plot", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "| emp 0.7 | budget-matched | +2.33 [" in out and "(3/0/0, p=0.25, n=3)" in out
    assert "± is the standard deviation over seeds" in out and (tmp_path / "c.png").stat().st_size > 1000
