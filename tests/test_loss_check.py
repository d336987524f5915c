"""The per-step check of the scores against the loss the step trained on: it refuses a wrong scorer before the
first optimizer step, stops a run whose scores go wrong later before a selection reads them, and does not trip
on what is right (mixed precision, gradient accumulation, label smoothing, `compute_loss_func`)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from tiny import (
    assert_scores_equal,
    make_trainer,
    own_losses,
    ragged_lm_dataset,
    scored_once,
    tiny_args,
    tiny_bert,
    tiny_bert_for,
    tiny_dataset,
    tiny_gpt2,
)
from transformers import TrainerCallback

from emp_hf import PruningArguments, PruningTrainer
from emp_hf.core.per_example import LossTerms

EMP = PruningArguments(method="emp", prune=0.5)


class StepCounter(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kw):
        self.steps += 1


def ce(outputs, inputs):
    loss = F.cross_entropy(outputs.logits, inputs["labels"], reduction="none")
    return loss, torch.zeros_like(loss)


def train(tmp_path, *, model=None, data=None, epochs=1, **kwargs):
    counter = StepCounter()
    trainer = make_trainer(tmp_path, model=model, dataset=data if data is not None else tiny_dataset(16),
                           pruning=kwargs.pop("pruning", EMP), callbacks=[counter], num_train_epochs=epochs,
                           trainer_kwargs=kwargs, **kwargs.pop("arg_overrides", {}))
    return trainer, counter


def test_batch_loss_of_terms_is_each_components_mean_or_sum():
    sums = torch.tensor([[2.0, 6.0, 0.0], [1.0, 1.0, 4.0]])
    terms = LossTerms(sums, torch.tensor([[2.0, 3.0, 0.0], [1.0, 1.0, 1.0]]), (0.5, 0.5))
    # component means: 8/5 and 6/3; the loss 0.5 * 1.6 + 0.5 * 2
    assert float(terms.batch_loss()) == pytest.approx(1.8)
    assert float(terms.batch_loss(4.0)) == pytest.approx(0.5 * 8 / 4 + 0.5 * 6 / 4)
    loss, _, scorable = terms.per_example()
    # example 2 has no item in the first component: its score is the second's alone
    torch.testing.assert_close(loss, torch.tensor([0.5 * 1.0 + 0.5 * 1.0, 0.5 * 2.0 + 0.5 * 1.0, 4.0]))
    assert scorable.all()
    summed = LossTerms(torch.tensor([[3.0, 4.0]]), torch.ones(1, 2), summed=True)
    assert float(summed.batch_loss()) == 7.0 and float(summed.batch_loss(10.0)) == 7.0
    empty = LossTerms(torch.tensor([[0.0, 5.0]]), torch.tensor([[0.0, 2.0]]))
    loss, _, scorable = empty.per_example()
    assert scorable.tolist() == [False, True] and torch.isnan(loss[0]) and float(loss[1]) == 2.5


def test_a_wrong_user_scorer_is_refused_before_the_first_optimizer_step(tmp_path):
    def doubled(outputs, inputs):
        loss, entropy = ce(outputs, inputs)
        return 2 * loss, entropy

    trainer, counter = train(tmp_path, scorer=doubled)
    with pytest.raises(ValueError, match=r"do not reproduce the loss .*the loss the model returned: [\d.]+.*user "
                                         r"scorer .*doubled adds up to [\d.]+.*verify_scores=False"):
        trainer.train()
    assert counter.steps == 0


def test_the_first_step_numbers_are_the_models_loss_and_the_scores_sum(tmp_path):
    """The refusal names both numbers: the model's loss on the first batch, and twice it from the scorer."""
    def doubled(outputs, inputs):
        loss, entropy = ce(outputs, inputs)
        return 2 * loss, entropy

    trainer, _ = train(tmp_path, scorer=doubled)
    first = next(iter(trainer.get_train_dataloader()))
    first.pop("emp_example_index")
    with torch.no_grad():
        model_loss = float(trainer.model(**first).loss)
    with pytest.raises(ValueError) as raised:
        trainer.train()
    assert f"{model_loss:.6g}" in str(raised.value) and f"{2 * model_loss:.6g}" in str(raised.value)


def test_verify_scores_false_runs_a_user_scorer_and_says_it_is_unverified(tmp_path, caplog):
    def doubled(outputs, inputs):
        loss, entropy = ce(outputs, inputs)
        return 2 * loss, entropy

    trainer, counter = train(tmp_path, scorer=doubled, verify_scores=False, arg_overrides={"log_level": "info"})
    with caplog.at_level(logging.INFO, logger="emp_hf"):
        trainer.train()
    assert counter.steps == 4
    assert any("UNVERIFIED" in r.getMessage() and "verify_scores=False" in r.getMessage() for r in caplog.records)
    with pytest.raises(TypeError, match="verify_scores"):
        PruningTrainer(model=tiny_bert(), args=tiny_args(tmp_path), train_dataset=tiny_dataset(8), verify_scores="no")


class GoesWrong:
    """Reproduces the loss for its first `good` calls, then returns three times it."""

    def __init__(self, good):
        self.good, self.calls = good, 0

    def __call__(self, outputs, inputs):
        self.calls += 1
        loss, entropy = ce(outputs, inputs)
        return (loss if self.calls <= self.good else 3 * loss), entropy


def test_scores_that_go_wrong_later_stop_the_run_at_the_epoch_end_before_a_selection(tmp_path):
    scorer = GoesWrong(good=2)
    trainer, counter = train(tmp_path, scorer=scorer, epochs=3)
    with pytest.raises(RuntimeError, match=r"no longer reproduce the loss .*at step 3 the scores added up to "
                                           r"[\d.]+ where the loss was [\d.]+.*no selection has read them"):
        trainer.train()
    assert counter.steps == 4  # epoch 0 ran to its end (4 steps of 4 examples) ...
    assert trainer.pruner.epoch == 0 and trainer.pruner.store.num_seen == 0  # ... and nothing reached the store


def test_scores_that_go_wrong_stop_before_the_checkpoint_that_would_carry_them(tmp_path):
    import os

    scorer = GoesWrong(good=3)
    trainer, _ = train(tmp_path, scorer=scorer, epochs=3,
                       arg_overrides={"save_strategy": "steps", "save_steps": 2})
    with pytest.raises(RuntimeError, match="at step 4 "):
        trainer.train()
    assert os.path.isdir(tmp_path / "checkpoint-2") and not os.path.exists(tmp_path / "checkpoint-4")


class LossOfItsOwn(torch.nn.Module):
    """Not a transformers class: its loss is twice the token cross-entropy, which no reading reproduces."""

    def __init__(self, scale=2.0, shift=False):
        super().__init__()
        self.emb = torch.nn.Embedding(40, 40)
        self.scale, self.shift = scale, shift

    def forward(self, input_ids=None, labels=None, attention_mask=None):
        logits = self.emb(input_ids)
        if self.shift:
            loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:])
        else:
            loss = F.cross_entropy(logits.transpose(1, 2), labels)
        return {"loss": self.scale * loss, "logits": logits}


def test_a_model_that_declares_nothing_is_read_as_its_loss_says(tmp_path):
    data = ragged_lm_dataset(8).remove_columns(["attention_mask"])
    for shift, expected in ((False, "token_classification"), (True, "causal_lm")):
        trainer, store = scored_once(model=LossOfItsOwn(1.0, shift), dataset=data, tmp_path=tmp_path / str(shift))
        assert trainer._scorer.name == expected
        assert_scores_equal(store, own_losses(trainer.model, data, loss=lambda out: out["loss"]))


def test_a_loss_no_reading_reproduces_is_refused_with_each_readings_number(tmp_path):
    data = ragged_lm_dataset(8).remove_columns(["attention_mask"])
    trainer, counter = train(tmp_path, model=LossOfItsOwn(2.0), data=data)
    with pytest.raises(ValueError, match=r"'causal_lm' .* adds up to [\d.]+; 'token_classification' .* adds up to "):
        trainer.train()
    assert counter.steps == 0


def test_a_compute_loss_override_with_another_loss_is_refused(tmp_path):
    class Focal(PruningTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            ce = F.cross_entropy(outputs.logits, labels, reduction="none")
            loss = ((1 - torch.exp(-ce)) ** 2 * ce).mean()
            return (loss, outputs) if return_outputs else loss

    counter = StepCounter()
    trainer = Focal(model=tiny_bert(), args=tiny_args(tmp_path), train_dataset=tiny_dataset(8), pruning_args=EMP,
                    callbacks=[counter])
    with pytest.raises(ValueError, match="the loss compute_loss returned"):
        trainer.train()
    assert counter.steps == 0


def test_compute_loss_func_is_the_reference_where_it_computes_the_loss(tmp_path):
    def loss_func(outputs, labels, num_items_in_batch=None):
        return F.cross_entropy(outputs.logits, labels)

    data = tiny_dataset(8).remove_columns(["text"]).rename_column("label", "labels")
    trainer, store = scored_once(model=tiny_bert(), dataset=data, tmp_path=tmp_path, compute_loss_func=loss_func)
    assert trainer._loss_check.checked_steps == 2
    assert_scores_equal(store, own_losses(trainer.model, data))


@pytest.mark.parametrize("model_fn, data_fn", [
    (tiny_gpt2, lambda: ragged_lm_dataset(8)),
    (tiny_bert, lambda: tiny_dataset(8).remove_columns(["text"]).rename_column("label", "labels")),
])
def test_bf16_autocast_does_not_trip_the_check(tmp_path, model_fn, data_fn):
    trainer, store = scored_once(model=model_fn(), dataset=data_fn(), tmp_path=tmp_path, arg_overrides={"bf16": True})
    assert trainer._loss_check.checked_steps == 2 and store.loss.dtype == torch.float32


def test_a_run_where_nothing_can_be_scored_refuses(tmp_path):
    data = tiny_dataset(8).remove_columns(["text", "label"])
    data = data.add_column("labels", [[-100] * 6] * 8)
    trainer, _ = train(tmp_path, model=tiny_bert_for("token"), data=data)
    with pytest.raises(RuntimeError, match="No training example could be scored.*-100"):
        trainer.train()
