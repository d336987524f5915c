"""PruningTrainer under the real transformers Trainer, on a tiny BERT built here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from grads import weighted_reference
from tiny import make_trainer, tiny_args, tiny_bert, tiny_dataset
from transformers import Trainer, TrainerCallback, default_data_collator

from emp_hf import PruningArguments, PruningTrainer
from emp_hf.core.state_file import write_manifest
from emp_hf.trainer import INDEX_KEY, REPORT_FILE, STATE_FILE, PruningCallback, model_card_section


class StepRecorder(TrainerCallback):
    """Optimizer steps per epoch, the LR at each step, and leftover gradients at epoch ends."""

    def __init__(self):
        self.steps_per_epoch, self.lrs, self.leftover_grads = [], [], []

    def on_epoch_begin(self, args, state, control, **kw):
        self.steps_per_epoch.append(0)

    def on_step_end(self, args, state, control, optimizer=None, **kw):
        self.steps_per_epoch[-1] += 1

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "learning_rate" in logs:
            self.lrs.append(logs["learning_rate"])

    def on_epoch_end(self, args, state, control, model=None, **kw):
        self.leftover_grads.append(any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()))


def make(tmp_path, n=30, pruning=None, callbacks=(), dataset=None, **arg_overrides):
    return make_trainer(tmp_path, n=n, pruning=pruning or PruningArguments(), callbacks=callbacks, dataset=dataset,
                        eval_dataset=tiny_dataset(8, seed=1), **arg_overrides)


# ---------------------------------------------------------------- indices
def test_index_reaches_the_loss_and_never_the_model(tmp_path):
    trainer = make(tmp_path, pruning=PruningArguments(method="emp", prune=0.5, anneal=0.0))
    seen_kwargs = []
    trainer.model.register_forward_pre_hook(lambda mod, args, kwargs: seen_kwargs.append(set(kwargs)),
                                            with_kwargs=True)
    trainer.train()
    assert seen_kwargs and all(INDEX_KEY not in kw for kw in seen_kwargs)
    store = trainer.pruner.store
    # epoch 0: every example once; epochs 1, 2: 15 each; so 30 + 15 + 15 rows, no index lost or invented
    assert int(store.times_trained.sum()) == 60 and bool(store.seen.all())
    assert trainer.pruner.report.forwarded_total == 60
    assert "eval_loss" in trainer.evaluate()
    assert trainer.predict(tiny_dataset(5, seed=2)).predictions.shape == (5, 2)


def test_index_survives_remove_unused_columns_false(tmp_path):
    data = tiny_dataset(12).remove_columns(["text"])
    trainer = make(tmp_path, dataset=data, remove_unused_columns=False,
                   pruning=PruningArguments(method="emp", prune=0.5))
    trainer.train()
    assert int(trainer.pruner.store.times_trained.sum()) > 12


def test_recorded_scores_are_the_float32_loss_and_entropy_of_the_batch(tmp_path):
    trainer = make(tmp_path, n=8, num_train_epochs=1, learning_rate=0.0,
                   pruning=PruningArguments(method="emp", prune=0.5))
    trainer.train()  # lr 0: the model is unchanged, so a fresh forward reproduces the training scores
    data = tiny_dataset(8)
    model = trainer.model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(data["input_ids"]),
                       attention_mask=torch.tensor(data["attention_mask"])).logits.float()
    labels = torch.tensor(data["label"])
    expected_loss = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    p = logits.softmax(-1)
    expected_entropy = -(p * p.log()).sum(-1)
    torch.testing.assert_close(trainer.pruner.store.loss, expected_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trainer.pruner.store.entropy, expected_entropy, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------- loss
def batch_of(n=6):
    data = tiny_dataset(n)
    features = [{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"], "labels": r["label"]}
                for r in data]
    return default_data_collator(features)


def step_grads(trainer, model, batch, num_items=None):
    """Gradients left by one training step (our training_step, or a plain Trainer's)."""
    model.zero_grad()
    trainer.training_step(model, dict(batch), num_items_in_batch=num_items)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def prepared(tmp_path, method, **overrides):
    trainer = make(tmp_path, pruning=PruningArguments(method=method, prune=0.5, anneal=0.0), **overrides)
    trainer.get_train_dataloader()  # builds the pruner
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps  # set by train()
    return trainer


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("num_items", [None, 12])
def test_loss_and_gradients_equal_the_plain_trainers(tmp_path, smoothing, num_items):
    for method in ("emp", "infobatch"):
        pruning = prepared(tmp_path, method, label_smoothing_factor=smoothing, gradient_accumulation_steps=2)
        plain = Trainer(model=pruning.model, args=pruning.args, train_dataset=tiny_dataset(30))
        plain.create_optimizer()
        plain.current_gradient_accumulation_steps = 2
        batch = batch_of()
        theirs = step_grads(plain, pruning.model, batch, num_items)
        ours_batch = {**batch, INDEX_KEY: torch.arange(6)}
        pruning.model.zero_grad()
        ours_loss = pruning.training_step(pruning.model, dict(ours_batch), num_items_in_batch=num_items)
        ours = {n: p.grad.clone() for n, p in pruning.model.named_parameters() if p.grad is not None}
        pruning.model.zero_grad()
        theirs_loss = plain.training_step(pruning.model, dict(batch), num_items_in_batch=num_items)
        torch.testing.assert_close(ours_loss, theirs_loss, rtol=1e-6, atol=1e-7)
        assert ours.keys() == theirs.keys()
        for name in ours:
            torch.testing.assert_close(ours[name], theirs[name], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("num_items", [None, 12])
def test_infobatch_gradient_is_that_of_the_weighted_loss(tmp_path, num_items):
    """In a pruning epoch (weights 1 and 2), the step's gradient equals that of sum(w_i l_i) / D for the
    Trainer's own normaliser D (the batch size, or `num_items_in_batch` across the accumulation window)."""
    trainer = prepared(tmp_path, "infobatch", gradient_accumulation_steps=2)
    trainer.pruner.set_epoch(0)
    trainer.pruner.update(torch.arange(30), torch.arange(30.0))  # 0..14 below the mean 14.5
    trainer.pruner.set_epoch(1)
    kept = trainer.pruner.selection.indices
    index = torch.cat([kept[kept < 15][:3], kept[kept >= 15][:3]])  # three weighted (below the mean), three not
    weights = trainer.pruner.loss_weights(index)
    assert weights.tolist() == [2.0] * 3 + [1.0] * 3  # the premise: a mixed batch
    model, batch = trainer.model, batch_of()
    ours = step_grads(trainer, model, {**batch, INDEX_KEY: index}, num_items)

    plain = Trainer(model=model, args=trainer.args, train_dataset=tiny_dataset(30))
    plain.current_gradient_accumulation_steps = 2
    plain_grads = step_grads(plain, model, batch, num_items)
    plain_loss = plain.training_step(model, dict(batch), num_items_in_batch=num_items)  # sum(l_i) / D
    model.zero_grad()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    per_example = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
    denominator = per_example.sum().detach() / plain_loss
    # BERT's classification loss is a batch mean (it ignores num_items_in_batch): D = 6, times GA=2 without it
    assert float(denominator) == pytest.approx(12 if num_items is None else 6)
    expected = weighted_reference(model, per_example, weights, denominator, plain_grads)
    for name, grad in expected.items():
        torch.testing.assert_close(ours[name], grad, rtol=1e-5, atol=1e-7)
    trainer.pruner.set_epoch(0)  # weights 1 again
    unweighted = step_grads(trainer, model, {**batch, INDEX_KEY: index}, num_items)
    assert not torch.allclose(ours["classifier.weight"], unweighted["classifier.weight"])  # the weights mattered


def test_nonfinite_losses_do_not_corrupt_scores(tmp_path):
    trainer = prepared(tmp_path, "emp")
    with torch.no_grad():
        trainer.model.classifier.weight[0, 0] = float("nan")
    trainer.training_step(trainer.model, {**batch_of(), INDEX_KEY: torch.arange(6)})
    assert trainer.pruner.store.nonfinite_count == 0  # buffered on the device until the epoch ends...
    trainer._flush_scores()
    assert trainer.pruner.store.nonfinite_count == 6  # ...then dropped and counted
    assert not bool(trainer.pruner.store.seen.any())


# --------------------------------------------------------------- schedule
@pytest.mark.parametrize("ga", [1, 3])
def test_each_epoch_runs_its_own_steps_and_the_lr_ends_at_zero(tmp_path, ga):
    recorder = StepRecorder()
    trainer = make(tmp_path, n=30, num_train_epochs=5, gradient_accumulation_steps=ga, callbacks=[recorder],
                   warmup_steps=0.2, pruning=PruningArguments(method="emp", prune=0.7, anneal=0.2))
    trainer.train()
    # plan: [30, 9, 9, 9, 30] examples -> batches of 4: [8, 3, 3, 3, 8] -> ceil(/ga) optimizer steps
    batches = [8, 3, 3, 3, 8]
    expected = [math.ceil(b / ga) for b in batches]
    assert trainer.pruner.plan() == [30, 9, 9, 9, 30]
    assert recorder.steps_per_epoch == expected
    assert trainer.state.global_step == trainer.state.max_steps == sum(expected)
    assert not any(recorder.leftover_grads)  # no accumulation window leaks into the next epoch
    assert trainer.lr_scheduler.get_last_lr()[0] == 0.0
    warmup = math.ceil(0.2 * sum(expected))  # the ratio refers to the pruned total
    assert max(recorder.lrs) == pytest.approx(1e-2) and recorder.lrs.index(max(recorder.lrs)) == warmup


def test_infobatch_moves_the_horizon_to_the_real_counts(tmp_path):
    recorder = StepRecorder()
    trainer = make(tmp_path, n=40, num_train_epochs=4, callbacks=[recorder],
                   pruning=PruningArguments(method="infobatch", prune=0.5, anneal=0.25))
    trainer.train()
    assert trainer.state.global_step == trainer.state.max_steps == sum(recorder.steps_per_epoch)
    assert trainer.lr_scheduler.get_last_lr()[0] == 0.0
    report = json.loads((tmp_path / REPORT_FILE).read_text())
    assert report["plan_is_exact"] is False
    assert report["forwarded_examples"] == sum(r["kept"] for r in report["per_epoch"])


# ------------------------------------------------------------------- resume
def final_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("method", ["emp", "infobatch"])
def test_resume_mid_epoch_equals_the_uninterrupted_run(tmp_path, method):
    settings = dict(num_train_epochs=4, gradient_accumulation_steps=2, save_strategy="steps", save_steps=5)
    pruning = PruningArguments(method=method, prune=0.5, anneal=0.25)
    full = make(tmp_path / "a", pruning=pruning, **settings)
    full.train()
    # 30 / 15 / 15 / 30 examples -> 8/4/4/8 batches -> 4/2/2/4 steps; step 5 is mid-epoch 2
    ckpt = tmp_path / "a" / "checkpoint-5"
    assert (ckpt / STATE_FILE).is_file()
    resumed = make(tmp_path / "b", pruning=pruning, **settings)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.state.global_step == full.state.global_step
    for name, value in final_state(full).items():
        assert torch.equal(value, final_state(resumed)[name]), name
    for field in ("loss", "entropy", "ema", "times_trained", "times_selected"):
        assert torch.equal(getattr(full.pruner.store, field), getattr(resumed.pruner.store, field)), field
    assert full.pruner.summary()["per_epoch"] == resumed.pruner.summary()["per_epoch"]


def test_infobatch_resume_uses_the_real_step_counts(tmp_path):
    # Skewed labels make the below-mean share far from the planning assumption of one half,
    # so the real epoch sizes differ from the estimated plan.
    data = tiny_dataset(40).map(lambda row, i: {"label": int(i % 8 == 0)}, with_indices=True)
    settings = dict(num_train_epochs=5, save_strategy="steps", save_steps=9, dataset=data)
    pruning = PruningArguments(method="infobatch", prune=0.7, anneal=0.2)
    full = make(tmp_path / "a", pruning=pruning, **settings)
    full.train()
    real = [r["kept"] for r in full.pruning_report()["per_epoch"]]
    assert real != full.pruner.plan()  # the premise: the estimate is wrong
    assert full.state.global_step == full.state.max_steps and full.lr_scheduler.get_last_lr()[0] == 0.0
    # real steps per epoch [10, 7, 5, 4, 10], estimated [10, 7, 7, 7, 10]: checkpoint-27 lies in epoch 4
    # in reality but in epoch 3 by the estimate
    assert full._epoch_plan.steps_per_epoch == [10, 7, 5, 4, 10]
    for step in (18, 27):
        resumed = make(tmp_path / f"b{step}", pruning=pruning, **settings)
        resumed.train(resume_from_checkpoint=str(tmp_path / "a" / f"checkpoint-{step}"))
        assert resumed.state.global_step == full.state.global_step
        assert [r["kept"] for r in resumed.pruning_report()["per_epoch"]] == real
        assert resumed.lr_scheduler.get_last_lr()[0] == 0.0
        for name, value in final_state(full).items():
            assert torch.equal(value, final_state(resumed)[name]), (step, name)


def test_resume_from_a_plain_trainer_checkpoint_is_refused(tmp_path):
    trainer = make(tmp_path, num_train_epochs=2, save_strategy="epoch",
                   pruning=PruningArguments(method="emp", prune=0.5))
    trainer.train()
    (tmp_path / "checkpoint-8" / STATE_FILE).unlink()
    again = make(tmp_path, num_train_epochs=3, save_strategy="epoch",
                 pruning=PruningArguments(method="emp", prune=0.5))
    (tmp_path / "checkpoint-8" / "emp_hf_checkpoint.json").unlink()  # as a plain Trainer's checkpoint: no manifest
    with pytest.raises(ValueError, match="no pruning_state.pt: it was not written by PruningTrainer"):
        again.train(resume_from_checkpoint=str(tmp_path / "checkpoint-8"))


def test_a_crafted_pruning_state_is_refused_and_does_not_run(tmp_path):
    import pickle

    trainer = make(tmp_path, num_train_epochs=2, save_strategy="epoch",
                   pruning=PruningArguments(method="emp", prune=0.5))
    trainer.train()
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "checkpoint-8" / STATE_FILE, "wb") as f:
        pickle.dump({"state": Payload()}, f)
    write_manifest(tmp_path / "checkpoint-8", 8)  # a crafted checkpoint can carry a matching manifest
    again = make(tmp_path, num_train_epochs=3, save_strategy="epoch",
                 pruning=PruningArguments(method="emp", prune=0.5))
    with pytest.raises(ValueError, match="pruning_state.pt is damaged or unsafe: .*nothing in it was run"):
        again.train(resume_from_checkpoint=str(tmp_path / "checkpoint-8"))
    assert not marker.exists()


# ---------------------------------------------------------------- reporting
def test_report_logs_and_model_card(tmp_path):
    trainer = make(tmp_path, pruning=PruningArguments(method="emp", prune=0.5), eval_strategy="epoch",
                   save_strategy="epoch")
    trainer.train()
    report = json.loads((tmp_path / REPORT_FILE).read_text())
    assert report["method"] == "emp" and report["settings"]["prune"] == 0.5
    assert report["forwarded_examples"] == 30 + 15 + 30  # anneal .125 of 3 epochs -> 1 full final epoch
    assert report["saved_fraction"] == pytest.approx(1 - 75 / 90)
    assert report["train_wall_time_s"] > 0 and sum(report["selection_count_histogram"]) == 30
    logged = [h for h in trainer.state.log_history if "pruning/kept" in h]
    assert [h["pruning/kept"] for h in logged] == [30, 15, 30]
    assert [h["pruning/forwarded_so_far"] for h in logged] == [30, 45, 75]
    assert [h["epoch"] for h in logged] == [1.0, 2.0, 3.0]  # logged as each epoch ends, before its evaluation
    assert [h["pruning/saved_fraction_so_far"] for h in logged] == pytest.approx([0.0, 0.25, 1 - 75 / 90])
    assert any("pruning_saved_fraction" in h for h in trainer.state.log_history)
    callbacks = [c for c in trainer.callback_handler.callbacks if isinstance(c, PruningCallback)]
    assert len(callbacks) == 1 and callbacks[0].report == report
    trainer.create_model_card(model_name="tiny")
    card = (tmp_path / "README.md").read_text()
    assert "## Data pruning" in card and "method `emp`" in card and "75 examples forwarded of 90" in card


def test_bf16_is_accepted_and_scores_stay_float32(tmp_path):
    trainer = make(tmp_path, bf16=True, num_train_epochs=2, pruning=PruningArguments(method="emp", prune=0.5))
    trainer.train()
    assert trainer.pruner.store.loss.dtype == torch.float32 and bool(trainer.pruner.store.seen.all())


def test_regression_scores_squared_error(tmp_path):
    trainer = PruningTrainer(model=tiny_bert(num_labels=1), args=tiny_args(tmp_path, num_train_epochs=2),
                             train_dataset=tiny_dataset(12, regression=True),
                             pruning_args=PruningArguments(method="emp", prune=0.5))
    trainer.train()
    assert bool(trainer.pruner.store.seen.all()) and float(trainer.pruner.store.entropy.abs().sum()) == 0.0


def test_methods_that_read_no_scores_train_without_labels(tmp_path):
    class SelfSupervised(torch.nn.Module):  # returns its own loss, takes no labels
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(40, 4)

        def forward(self, input_ids=None, attention_mask=None):
            return {"loss": self.emb(input_ids).pow(2).mean()}

    data = tiny_dataset(12).remove_columns(["label"])
    trainer = PruningTrainer(model=SelfSupervised(), args=tiny_args(tmp_path, num_train_epochs=2),
                             train_dataset=data, pruning_args=PruningArguments(method="random", prune=0.5))
    trainer.train()
    assert trainer.pruner.report.forwarded_total == 12 + 6


# --------------------------------------------------------------- bad input
def test_bad_input_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="known methods"):
        PruningArguments(method="nope")
    with pytest.raises(ValueError, match="`prune`"):
        PruningArguments(prune=1.2)
    with pytest.raises(ValueError, match="no labels under 'labels'"):
        make(tmp_path, dataset=tiny_dataset(8).remove_columns(["label"]), pruning=PruningArguments()).train()
    with pytest.raises(ValueError, match="max_steps=5"):
        make(tmp_path, max_steps=5)
    with pytest.raises(ValueError, match="whole number"):
        make(tmp_path, num_train_epochs=1.5)
    with pytest.raises(ValueError, match="train_sampling_strategy='group_by_length'"):
        make(tmp_path, train_sampling_strategy="group_by_length")
    with pytest.raises(ValueError, match="empty"):
        make(tmp_path, dataset=tiny_dataset(8).select([]))
    iterable = tiny_dataset(8).to_iterable_dataset()
    with pytest.raises(ValueError, match="IterableDataset"):
        make(tmp_path, dataset=iterable)
    scores = tmp_path / "s.txt"
    scores.write_text("1\n2\n")
    with pytest.raises(ValueError, match="static_scores.*30 examples"):
        make(tmp_path, pruning=PruningArguments(method="static", static_scores_file=str(scores))).train()


def test_push_to_hub_uploads_report_and_card(tmp_path, monkeypatch):
    import transformers.trainer as hf_trainer

    uploaded = {}

    class FakeHub:  # stands in for huggingface_hub.HfApi: no network on the test machines
        def create_repo(self, name, **kw):
            return type("Repo", (), {"repo_id": f"user/{name}"})()

        def upload_folder(self, repo_id, folder_path, ignore_patterns=(), **kw):
            import fnmatch
            import os

            uploaded["repo"] = repo_id
            uploaded["files"] = {f: open(os.path.join(folder_path, f), encoding="utf-8", errors="ignore").read()
                                 for f in os.listdir(folder_path)
                                 if not any(fnmatch.fnmatch(f, p) for p in ignore_patterns)}

    if hasattr(hf_trainer, "hf_api"):  # transformers >= 5.x: one client object
        monkeypatch.setattr(hf_trainer, "hf_api", lambda: FakeHub())
    else:  # earlier 5.x: module-level functions
        monkeypatch.setattr(hf_trainer, "create_repo", lambda name, **kw: FakeHub().create_repo(name, **kw))
        monkeypatch.setattr(hf_trainer, "upload_folder", lambda **kw: FakeHub().upload_folder(**kw))
    trainer = make(tmp_path / "pruned-run", pruning=PruningArguments(method="emp", prune=0.5))
    trainer.train()
    trainer.push_to_hub()
    assert uploaded["repo"] == "user/pruned-run"
    assert json.loads(uploaded["files"][REPORT_FILE])["method"] == "emp"
    assert "## Data pruning" in uploaded["files"]["README.md"]


def test_the_report_label_column_is_read_in_one_go(monkeypatch):
    """datasets >= 4 returns a lazy column; read row by row it cost seconds per 10^5 rows at every train()."""
    import datasets

    from emp_hf.trainer import label_column

    data = tiny_dataset(500)
    expected = list(data["label"][:])
    calls = []
    real = datasets.Dataset.__getitem__
    monkeypatch.setattr(datasets.Dataset, "__getitem__", lambda self, key: calls.append(key) or real(self, key))
    labels = label_column(data, ["labels"])
    assert labels.tolist() == expected and len(calls) <= 2  # not one call per row


def test_full_data_reports_prune_zero_whatever_prune_says(tmp_path):
    config = PruningArguments(method="full", prune=0.7)
    assert config.effective_prune == 0.0 and config.to_dict()["prune"] == 0.0
    card = model_card_section(config, str(tmp_path / "missing.json"))
    assert "prune ratio 0.0." in card and "| prune | 0.0 |" in card and "0.7" not in card
    assert PruningArguments(method="emp", prune=0.7).to_dict()["prune"] == 0.7


def test_evaluation_during_training_leaves_the_training_rng_untouched(tmp_path):
    """The evaluation dataloader's iterator draws from torch's global generator: evaluating each epoch must not
    change the dropout masks, and so the weights, of the training that follows."""
    from transformers import BertConfig, BertForSequenceClassification

    def dropout_model():
        torch.manual_seed(0)
        return BertForSequenceClassification(BertConfig(
            vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=16, num_labels=2, hidden_dropout_prob=0.3))

    def final_weights(folder, **overrides):
        trainer = PruningTrainer(model=dropout_model(), args=tiny_args(folder, num_train_epochs=4, **overrides),
                                 train_dataset=tiny_dataset(24), eval_dataset=tiny_dataset(8, seed=1),
                                 pruning_args=PruningArguments(method="emp", prune=0.5))
        trainer.train()
        return {k: v.clone() for k, v in trainer.model.state_dict().items()}

    quiet = final_weights(tmp_path / "no-eval")
    evaluated = final_weights(tmp_path / "eval", eval_strategy="epoch")
    assert all(torch.equal(quiet[k], evaluated[k]) for k in quiet)
    # the plain Trainer does shift them: the test can fail
    from transformers import Trainer

    def plain(folder, **overrides):
        trainer = Trainer(model=dropout_model(), args=tiny_args(folder, num_train_epochs=2, **overrides),
                          train_dataset=tiny_dataset(24), eval_dataset=tiny_dataset(8, seed=1))
        trainer.train()
        return trainer.model.classifier.weight.detach().clone()

    assert not torch.equal(plain(tmp_path / "p1"), plain(tmp_path / "p2", eval_strategy="epoch"))


def test_a_second_get_train_dataloader_call_keeps_the_pruning_state(tmp_path):
    trainer = make(tmp_path, n=12, pruning=PruningArguments(method="emp", prune=0.5))
    trainer.get_train_dataloader()
    pruner = trainer.pruner
    pruner.set_epoch(0)
    pruner.update(torch.arange(12), torch.arange(12.0), torch.zeros(12))
    pruner.set_epoch(1)
    chosen = pruner.selection.indices.clone()
    trainer.get_train_dataloader()  # e.g. a callback asking for the loader again
    assert trainer.pruner is pruner and torch.equal(trainer.pruner.selection.indices, chosen)
    assert trainer.pruner.store.num_seen == 12
    trainer.pruning_args = PruningArguments(method="emp", prune=0.7)  # another plan: a new state
    trainer.get_train_dataloader()
    assert trainer.pruner is not pruner and trainer.pruner.store.num_seen == 0


OWN_SCRIPT = """
from tiny import tiny_args, tiny_bert, tiny_dataset
from emp_hf import PruningArguments, PruningTrainer

args = tiny_args({out!r}, log_level={level!r}, num_train_epochs={epochs})
PruningTrainer(model=tiny_bert(), args=args, train_dataset=tiny_dataset(),
               pruning_args=PruningArguments(method="emp", prune=0.5)).train()
"""


@pytest.mark.parametrize("level,epochs,shown,hidden", [
    ("info", 3, ["[emp_hf] Data pruning: method emp", "[emp_hf] Data pruning scores each example by"], []),
    ("passive", 2, ["[emp_hf] Data pruning will save only"], ["[emp_hf] Data pruning: method"]),
])
def test_an_own_script_shows_the_plan_where_transformers_shows_its_lines(tmp_path, level, epochs, shown, hidden):
    """No logging set up by the script: emp-hf's lines reach stderr at the Trainer's `log_level` (INFO: the
    plan and the scorer; the default: only warnings, such as a run too short to prune)."""
    code = OWN_SCRIPT.format(out=str(tmp_path / "out"), level=level, epochs=epochs)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parent)}  # tests/tiny.py
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    for line in shown:
        assert line in done.stderr, (line, done.stderr[-2000:])
    for line in hidden:
        assert line not in done.stderr
    assert done.stderr.count("[emp_hf] Data pruning: method") <= 1  # printed once, not once per handler
