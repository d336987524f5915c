"""Pruning in the kinds of Trainer code users bring: each case trains on exact per-example scores
(checked against the model's own loss on one example at a time) or refuses before the first optimizer
step with a message naming the cause.

"Exact" is measured with learning rate 0 over one full epoch: the model does not change, so the score
recorded for example i must equal the loss the model itself computes for example i alone.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from grads import weighted_reference
from tiny import (
    assert_scores_equal,
    own_losses,
    ragged_lm_dataset,
    scored_once,
    tiny_args,
    tiny_bert,
    tiny_bert_for,
    tiny_dataset,
    tiny_gpt2,
    tiny_t5,
)
from transformers import Trainer, TrainerCallback, default_data_collator

from emp_hf import PruningArguments, PruningSeq2SeqTrainer, PruningTrainer
from emp_hf.trainer import INDEX_KEY

EMP = PruningArguments(method="emp", prune=0.5)


# ------------------------------------------------------------- exact scores per task
def test_causal_lm_scores_are_shifted_like_the_models_own_loss(tmp_path):
    data = ragged_lm_dataset(12)
    trainer, store = scored_once(model=tiny_gpt2(), dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "causal_lm"
    assert_scores_equal(store, own_losses(trainer.model, data))
    # the unshifted reading (logits[t] against labels[t]) is a different number: the test can fail
    logits = trainer.model(input_ids=torch.tensor(data["input_ids"][:1])).logits[0]
    unshifted = F.cross_entropy(logits, torch.tensor(data["labels"][0]), ignore_index=-100)
    assert abs(float(unshifted) - float(store.loss[0])) > 1e-3
    assert (store.entropy > 0).all()


def test_gradient_checkpointing_scores_the_one_training_forward(tmp_path):
    data = ragged_lm_dataset(8)
    trainer, store = scored_once(model=tiny_gpt2(), dataset=data, tmp_path=tmp_path,
                                 arg_overrides={"gradient_checkpointing": True})
    assert_scores_equal(store, own_losses(trainer.model, data))


def test_run_clm_style_grouped_texts(tmp_path):
    ids = torch.randint(3, 40, (8, 8), generator=torch.Generator().manual_seed(3)).tolist()
    from datasets import Dataset

    data = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * 8] * 8, "labels": ids})
    trainer, store = scored_once(model=tiny_gpt2(), dataset=data, tmp_path=tmp_path,
                                 data_collator=default_data_collator)
    assert_scores_equal(store, own_losses(trainer.model, data))


def test_token_classification_with_pre_padded_labels(tmp_path):
    from datasets import Dataset

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 40, (10, 7), generator=g)
    labels = torch.randint(0, 3, (10, 7), generator=g)
    labels[:, 0] = -100  # [CLS]
    labels[::2, 5:] = -100  # padding
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})
    trainer, store = scored_once(model=tiny_bert_for("token"), dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "token_classification"
    assert_scores_equal(store, own_losses(trainer.model, data))
    assert trainer.pruner.report.labels is None  # 2-D labels: no per-class report, and no error


def test_multi_label_float_vectors(tmp_path):
    from datasets import Dataset

    g = torch.Generator().manual_seed(2)
    data = Dataset.from_dict({
        "input_ids": torch.randint(3, 40, (10, 6), generator=g).tolist(),
        "labels": torch.randint(0, 2, (10, 3), generator=g).float().tolist(),
    })
    trainer, store = scored_once(model=tiny_bert_for("multi_label"), dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "multi_label"
    assert_scores_equal(store, own_losses(trainer.model, data))
    logits = trainer.model(input_ids=torch.tensor(data["input_ids"])).logits
    p = torch.sigmoid(logits)
    bernoulli = -(p * p.log() + (1 - p) * (1 - p).log()).mean(1)
    torch.testing.assert_close(store.entropy, bernoulli.detach(), rtol=1e-4, atol=1e-6)


def test_regression_and_classification_match_the_models_loss(tmp_path):
    data = tiny_dataset(10, regression=True).remove_columns(["text"]).rename_column("label", "labels")
    trainer, store = scored_once(model=tiny_bert(num_labels=1), dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "regression" and float(store.entropy.abs().sum()) == 0.0
    assert_scores_equal(store, own_losses(trainer.model, data))
    data = tiny_dataset(10).remove_columns(["text"]).rename_column("label", "labels")
    trainer, store = scored_once(model=tiny_bert(), dataset=data, tmp_path=tmp_path / "c")
    assert trainer._scorer.name == "classification"
    assert_scores_equal(store, own_losses(trainer.model, data))


def test_seq2seq_trainer_with_generation_based_evaluation(tmp_path):
    from datasets import Dataset
    from transformers import Seq2SeqTrainingArguments

    g = torch.Generator().manual_seed(4)
    targets = torch.randint(3, 40, (10, 4), generator=g)
    targets[::3, 3] = -100
    data = Dataset.from_dict({"input_ids": torch.randint(3, 40, (10, 6), generator=g).tolist(),
                              "labels": targets.tolist()})
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=1,
                                    learning_rate=0.0, report_to="none", use_cpu=True, save_strategy="no",
                                    predict_with_generate=True, generation_max_length=5, disable_tqdm=True)
    trainer, store = scored_once(PruningSeq2SeqTrainer, model=tiny_t5(), dataset=data, tmp_path=tmp_path, args=args,
                                 eval_dataset=data)
    assert trainer._scorer.name == "seq2seq"
    assert_scores_equal(store, own_losses(trainer.model, data))
    predictions = trainer.predict(data.select(range(3)))
    assert predictions.predictions.shape[0] == 3  # generated sequences


def test_label_smoothing_scores_match_the_trainers_smoothed_loss(tmp_path):
    from transformers.trainer_pt_utils import LabelSmoother

    data = ragged_lm_dataset(6)
    trainer, store = scored_once(model=tiny_gpt2(), dataset=data, tmp_path=tmp_path,
                                 arg_overrides={"label_smoothing_factor": 0.1})
    smoother = LabelSmoother(epsilon=0.1)
    expected = []
    with torch.no_grad():
        for row in data:
            out = trainer.model(input_ids=torch.tensor([row["input_ids"]]))
            expected.append(float(smoother(out, torch.tensor([row["labels"]]), shift_labels=True)))
    assert_scores_equal(store, torch.tensor(expected))


# ----------------------------------------------------------- user code we never saw
class OwnLossTrainer(PruningTrainer):
    """A subclass that computes its own loss from a renamed label column (`label_names=["targets"]`)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        targets = inputs.pop("targets")
        outputs = model(**inputs)
        loss = F.cross_entropy(outputs.logits, targets)
        return (loss, outputs) if return_outputs else loss


def test_compute_loss_override_with_label_names(tmp_path):
    data = tiny_dataset(10).remove_columns(["text"]).rename_column("label", "targets")
    trainer, store = scored_once(OwnLossTrainer, model=tiny_bert(), dataset=data, tmp_path=tmp_path,
                                 arg_overrides={"label_names": ["targets"]})
    with torch.no_grad():
        logits = trainer.model(input_ids=torch.tensor(data["input_ids"])).logits
    assert_scores_equal(store, F.cross_entropy(logits, torch.tensor(data["targets"]), reduction="none"))


def test_collator_that_tokenises_on_the_fly(tmp_path):
    from datasets import Dataset

    texts = ["a b c", "b c", "c a a", "a", "b b", "c c c", "a c", "b a c"]
    data = Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(8)]})
    vocab = {"a": 5, "b": 6, "c": 7}

    def collate(rows):
        assert all(set(r) == {"text", "label"} for r in rows)  # the user's collator never sees the index
        ids = [[vocab[w] for w in r["text"].split()] for r in rows]
        width = max(map(len, ids))
        return {"input_ids": torch.tensor([i + [0] * (width - len(i)) for i in ids]),
                "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids]),
                "labels": torch.tensor([r["label"] for r in rows])}

    trainer, store = scored_once(model=tiny_bert(), dataset=data, tmp_path=tmp_path, data_collator=collate,
                                 arg_overrides={"remove_unused_columns": False})
    expected = own_losses(trainer.model, [{k: v[0] for k, v in collate([row]).items()} for row in data])
    assert_scores_equal(store, expected)


class TupleDataset(torch.utils.data.Dataset):
    def __init__(self, n=8):
        self.ids = torch.randint(3, 40, (n, 5), generator=torch.Generator().manual_seed(5))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i], int(self.ids[i, 0]) % 2


def test_tuple_dataset_with_its_collator_and_without(tmp_path):
    def collate(items):
        return {"input_ids": torch.stack([x for x, _ in items]), "labels": torch.tensor([y for _, y in items])}

    data = TupleDataset()
    trainer, store = scored_once(model=tiny_bert(), dataset=data, tmp_path=tmp_path, data_collator=collate)
    with torch.no_grad():
        logits = trainer.model(input_ids=data.ids).logits
    assert_scores_equal(store, F.cross_entropy(logits, data.ids[:, 0] % 2, reduction="none"))
    with pytest.raises(ValueError, match="items are tuples.*default data collator needs dicts"):
        PruningTrainer(model=tiny_bert(), args=tiny_args(tmp_path), train_dataset=data, pruning_args=EMP).train()


def test_peft_lora(tmp_path):
    import peft  # in the test extra: a missing PEFT fails the test, it does not skip it

    lora = peft.LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query", "value"], init_lora_weights=False)
    model = peft.get_peft_model(tiny_bert(), lora)
    data = tiny_dataset(10).remove_columns(["text"]).rename_column("label", "labels")
    trainer, store = scored_once(model=model, dataset=data, tmp_path=tmp_path)
    assert_scores_equal(store, own_losses(trainer.model, data))
    # and it trains the adapters with pruning
    trainer = PruningTrainer(model=model, args=tiny_args(tmp_path / "t", num_train_epochs=3), train_dataset=data,
                             pruning_args=EMP)
    trainer.train()
    assert trainer.pruner.report.forwarded_total == 10 + 5 + 10


# ------------------------------------------------------------- InfoBatch, token averaging
def test_infobatch_weights_causal_lm_tokens_averaged_across_the_window(tmp_path):
    """Weighted epoch, causal LM, `num_items_in_batch` token averaging: the step's gradient equals that of
    sum_i w_i S_i / D, S_i example i's summed token loss and D the Trainer's own normaliser."""
    data = ragged_lm_dataset(16)
    trainer = PruningTrainer(model=tiny_gpt2(), args=tiny_args(tmp_path, gradient_accumulation_steps=2),
                             train_dataset=data, pruning_args=PruningArguments(method="infobatch", prune=0.5))
    trainer.get_train_dataloader()
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 2
    trainer.pruner.set_epoch(0)
    trainer.pruner.update(torch.arange(16), torch.arange(16.0))
    trainer.pruner.set_epoch(1)
    kept = trainer.pruner.selection.indices
    index = torch.cat([kept[kept < 8][:2], kept[kept >= 8][:2]])
    weights = trainer.pruner.loss_weights(index)
    assert weights.tolist() == [2.0, 2.0, 1.0, 1.0]
    rows = data.select(index.tolist())
    batch = {k: torch.tensor(rows[k]) for k in ("input_ids", "attention_mask", "labels")}
    num_items = torch.tensor(int((batch["labels"][:, 1:] != -100).sum()) + 7)  # + tokens of the window's other batch
    model = trainer.model

    def grads_of(step_trainer, step_batch):
        model.zero_grad()
        loss = step_trainer.training_step(model, dict(step_batch), num_items_in_batch=num_items)
        return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    _, ours = grads_of(trainer, {**batch, INDEX_KEY: index})
    plain = Trainer(model=model, args=trainer.args, train_dataset=data)
    plain.current_gradient_accumulation_steps = 2
    plain_loss, plain_grads = grads_of(plain, batch)
    model.zero_grad()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    token_loss = F.cross_entropy(logits.transpose(1, 2), batch["labels"][:, 1:], ignore_index=-100, reduction="none")
    per_example_sum = token_loss.sum(1)
    # the Trainer's own D is num_items_in_batch (tokens across the accumulation window)
    torch.testing.assert_close(per_example_sum.sum().detach() / plain_loss, num_items.float())
    expected = weighted_reference(model, per_example_sum, weights, num_items, plain_grads)
    for name, grad in expected.items():
        torch.testing.assert_close(ours[name], grad, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------ refusals
class NoLogits(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(40, 2)

    def forward(self, input_ids=None, labels=None, attention_mask=None):
        logits = self.emb(input_ids).mean(1)
        return {"loss": F.cross_entropy(logits, labels)}


class StepCounter(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kw):
        self.steps += 1


def refuses(match, *, model, dataset, tmp_path, trainer_cls=PruningTrainer, **kwargs):
    counter = StepCounter()
    trainer = trainer_cls(model=model, args=tiny_args(tmp_path, **kwargs.pop("arg_overrides", {})),
                          train_dataset=dataset, pruning_args=kwargs.pop("pruning", EMP), callbacks=[counter], **kwargs)
    with pytest.raises((ValueError, RuntimeError, TypeError), match=match):
        trainer.train()
    assert counter.steps == 0  # before the first optimizer step


def test_loss_only_forward_is_refused(tmp_path):
    refuses("no `logits`.*loss-only forward", model=NoLogits(), dataset=tiny_dataset(8).remove_columns(["text"]),
            tmp_path=tmp_path)


def test_compute_loss_override_that_hides_the_model_is_refused(tmp_path):
    class Elsewhere(PruningTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs.pop("labels")
            return self.shadow(**inputs).logits.sum()

    trainer_model = tiny_bert()

    class WithShadow(Elsewhere):
        shadow = tiny_bert(seed=1)

    refuses("No forward pass of the model", model=trainer_model, dataset=tiny_dataset(8), tmp_path=tmp_path,
            trainer_cls=WithShadow)


def test_training_step_override_without_super_is_refused(tmp_path):
    class OwnStep(PruningTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = model(**inputs).loss
            loss.backward()
            return loss.detach()

    refuses("index .* reached the model", model=tiny_bert(), dataset=tiny_dataset(8), tmp_path=tmp_path,
            trainer_cls=OwnStep)


def test_several_label_keys_are_refused(tmp_path):
    refuses("several label inputs", model=tiny_bert(), dataset=tiny_dataset(8), tmp_path=tmp_path / "two",
            arg_overrides={"label_names": ["labels", "other"]})


def test_packed_rows_are_refused(tmp_path):
    def scorer(outputs, inputs):  # returns one value for the whole (packed) batch
        return outputs["logits"].sum().reshape(1), outputs["logits"].sum().reshape(1)

    refuses("returned 1 values for a batch of 4.*Packed", model=tiny_bert(), dataset=tiny_dataset(8), tmp_path=tmp_path,
            scorer=scorer)


def test_a_user_scorer_is_used_and_methods_without_scores_need_none(tmp_path):
    calls = []

    def scorer(outputs, inputs):
        calls.append(1)
        loss = F.cross_entropy(outputs.logits, inputs["labels"], reduction="none")
        return loss, torch.zeros_like(loss)

    _, store = scored_once(model=tiny_bert(), dataset=tiny_dataset(8), tmp_path=tmp_path, scorer=scorer)
    assert calls and float(store.entropy.abs().sum()) == 0.0
    trainer = PruningTrainer(model=NoLogits(), args=tiny_args(tmp_path / "r", num_train_epochs=2),
                             train_dataset=tiny_dataset(8).remove_columns(["text"]),
                             pruning_args=PruningArguments(method="random", prune=0.5))
    trainer.train()  # random reads no scores: a loss-only model is fine
    assert trainer.pruner.report.forwarded_total == 8 + 4
    with pytest.raises(ValueError, match="Unknown `scorer` 'causal'.*causal_lm"):
        PruningTrainer(model=tiny_bert(), args=tiny_args(tmp_path), train_dataset=tiny_dataset(8), scorer="causal")


def test_a_plan_that_prunes_little_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="emp_hf"):
        PruningTrainer(model=tiny_bert(), args=tiny_args(tmp_path, num_train_epochs=2), train_dataset=tiny_dataset(8),
                       pruning_args=EMP).train()
    message = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "save only 0.0% of the examples" in message and "0 of 2 epochs prune" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="emp_hf"):
        PruningTrainer(model=tiny_bert(), args=tiny_args(tmp_path, num_train_epochs=8), train_dataset=tiny_dataset(8),
                       pruning_args=EMP).train()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING and "save only" in r.getMessage()]


# ------------------------------------------------------------------------------- TRL
def sft_setup(tmp_path, **config):
    from datasets import Dataset  # TRL is in the test extra: a missing TRL fails, it does not skip
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from trl import SFTConfig

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 40)}}
    word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>")
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(f"w{int(t)}" for t in torch.randint(3, 40, (int(torch.randint(3, 9, (1,), generator=g)),),
                                                           generator=g)) for _ in range(12)]
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none", use_cpu=True,
                     save_strategy="no", max_length=16, disable_tqdm=True, **config)
    return dict(model=tiny_gpt2(), args=args, train_dataset=Dataset.from_dict({"text": texts}),
                processing_class=tokenizer)


def test_trl_sft_trainer_scores_its_own_loss(tmp_path):
    from emp_hf import PruningSFTTrainer

    trainer = PruningSFTTrainer(**sft_setup(tmp_path, num_train_epochs=1, learning_rate=0.0), pruning_args=EMP)
    trainer.train()
    store = trainer.pruner.store
    assert trainer._scorer.name == "fused_causal_lm" and bool(store.seen.all())
    rows = [{"input_ids": r["input_ids"], "labels": r["input_ids"]} for r in trainer.train_dataset]
    # TRL's fused head computes the log-probs in its own blocks: on transformers 5.3 its numbers differ from the
    # model's unfused loss by up to 5e-5 relative (the per-step check's float32 tolerance is 1e-4)
    assert_scores_equal(store, own_losses(trainer.model, rows), rtol=1e-4)
    trainer = PruningSFTTrainer(**sft_setup(tmp_path / "t", num_train_epochs=4, learning_rate=1e-2), pruning_args=EMP)
    trainer.train()
    assert [r.kept for r in trainer.pruner.report.epochs.values()] == [12, 6, 6, 12]


def test_trl_packing_is_refused(tmp_path):
    from emp_hf import PruningSFTTrainer

    counter = StepCounter()
    trainer = PruningSFTTrainer(**sft_setup(tmp_path, num_train_epochs=1, packing=True), pruning_args=EMP,
                                callbacks=[counter])
    with pytest.raises(ValueError, match="Packed or padding-free"):
        trainer.train()
    assert counter.steps == 0


def test_unsupported_transformers_versions_are_refused_by_name():
    from emp_hf._compat import check_transformers

    check_transformers("5.3.0")
    for version in ("5.2.0", "6.0.0", "4.57.1"):
        with pytest.raises(ImportError, match=rf"supports transformers >=5.3.0,<6.0.0.*transformers {version} is"):
            check_transformers(version)


def test_the_private_couplings_are_checked_by_name():
    from emp_hf._compat import check_trl, initial_training_values

    assert initial_training_values((3, 4, 100, 300, 8, 13, 40))["num_examples"] == 100
    with pytest.raises(ImportError, match="returned tuple of 6 values, not the 7"):
        initial_training_values((3, 4, 100, 300, 8, 13))
    check_trl("1.16.0")
    with pytest.raises(ImportError, match=r"supports trl >=1.16.0,<2.0.0 .* trl 2.1.0 is installed"):
        check_trl("2.1.0")
