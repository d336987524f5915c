"""The supported-task table of the README: one test per row.

Each trains one epoch at learning rate 0 with dropout 0, so the model does not change, and compares every
example's recorded score with the model's own loss on that example alone. Every run also passes the
per-step check against the model's loss (it is on by default: a scorer that did not reproduce it would
have stopped the run).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from datasets import Dataset
from tiny import (
    assert_scores_equal,
    own_losses,
    ragged_lm_dataset,
    scored_once,
    tiny_args,
    tiny_bart,
    tiny_bert_for,
    tiny_bert_head,
    tiny_gpt2,
    tiny_llava,
    tiny_mixtral,
    tiny_vit,
    tiny_wav2vec2_ctc,
    tiny_whisper,
    tiny_xlnet,
    word_tokenizer,
)
from transformers import Seq2SeqTrainingArguments, default_data_collator

from emp_hf import PruningArguments, PruningSeq2SeqTrainer, PruningTrainer


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


def ids(n, length, g, low=3, high=40):
    return torch.randint(low, high, (n, length), generator=g)


# ------------------------------------------------- sequence classification: every problem_type
def test_regression_with_several_outputs_is_mse_over_the_outputs(tmp_path):
    g = gen()
    model = tiny_bert_head("BertForSequenceClassification", num_labels=3, problem_type="regression")
    data = Dataset.from_dict({"input_ids": ids(10, 6, g).tolist(), "labels": torch.randn(10, 3, generator=g).tolist()})
    trainer, store = scored_once(model=model, dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "regression"
    assert_scores_equal(store, own_losses(trainer.model, data))
    # the multi-label reading (BCE) is another number: this test can fail
    logits = trainer.model(input_ids=torch.tensor(data["input_ids"])).logits.detach()
    bce = F.binary_cross_entropy_with_logits(logits, torch.tensor(data["labels"]).clamp(0, 1), reduction="none")
    assert (bce.mean(1) - store.loss).abs().max() > 0.1


def test_one_logit_multi_label_is_binary_cross_entropy(tmp_path):
    g = gen(2)
    model = tiny_bert_for("multi_label", num_labels=1)  # problem_type multi_label_classification
    data = Dataset.from_dict({"input_ids": ids(10, 6, g).tolist(),
                              "labels": torch.randint(0, 2, (10, 1), generator=g).float().tolist()})
    trainer, store = scored_once(model=model, dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "multi_label"
    assert_scores_equal(store, own_losses(trainer.model, data))


def test_undeclared_problem_type_follows_transformers_rule(tmp_path):
    """num_labels 1: regression; int64 labels: single-label; float labels with several logits: multi-label."""
    g = gen(3)
    cases = [
        (1, torch.randn(10, generator=g).tolist(), "regression"),
        (3, torch.randint(0, 3, (10,), generator=g).tolist(), "classification"),
        (3, torch.randint(0, 2, (10, 3), generator=g).float().tolist(), "multi_label"),
    ]
    for i, (num_labels, labels, expected) in enumerate(cases):
        model = tiny_bert_head("BertForSequenceClassification", num_labels=num_labels)
        assert model.config.problem_type is None
        data = Dataset.from_dict({"input_ids": ids(10, 6, g).tolist(), "labels": labels})
        trainer, store = scored_once(model=model, dataset=data, tmp_path=tmp_path / str(i))
        assert trainer._scorer.name == expected
        assert_scores_equal(store, own_losses(trainer.model, data))


def test_multiple_choice(tmp_path):
    g = gen(4)
    data = Dataset.from_dict({"input_ids": torch.randint(3, 40, (8, 4, 6), generator=g).tolist(),
                              "labels": [0, 1, 2, 3, 0, 1, 2, 3]})
    trainer, store = scored_once(model=tiny_bert_head("BertForMultipleChoice"), dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "classification"
    assert_scores_equal(store, own_losses(trainer.model, data))


def test_image_classification(tmp_path):
    g = gen(5)
    data = Dataset.from_dict({"pixel_values": torch.randn(8, 3, 8, 8, generator=g).tolist(),
                              "labels": [0, 1, 2, 0, 1, 2, 0, 1]})
    trainer, store = scored_once(model=tiny_vit(), dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "classification"
    assert_scores_equal(store, own_losses(trainer.model, data))


# ----------------------------------------------------------------------------- token losses
class RecordingCollator:
    """The user's collator, keeping each batch it builds (random masking included) for the reference."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __call__(self, rows):
        batch = self.collator(rows)
        self.batches.append({k: v.clone() for k, v in batch.items()})
        return batch


def test_masked_lm_with_run_mlm_collator_and_rows_with_nothing_masked(tmp_path):
    """run_mlm's DataCollatorForLanguageModeling masks at random; a row of special tokens only is never masked:
    it has nothing to score, is counted as such, and keeps no score (it is not a score of 0)."""
    from transformers import DataCollatorForLanguageModeling

    tokenizer = word_tokenizer()
    g = gen(6)
    rows = [[1] + torch.randint(4, 40, (7,), generator=g).tolist() + [2] for _ in range(11)] + [[1, 2] + [0] * 7]
    data = Dataset.from_dict({"input_ids": rows, "attention_mask": [[1 if t else 0 for t in r] for r in rows]})
    torch.manual_seed(0)
    collator = RecordingCollator(DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3))
    trainer, store = scored_once(model=tiny_bert_head("BertForMaskedLM"), dataset=data, tmp_path=tmp_path,
                                 data_collator=collator, arg_overrides={"remove_unused_columns": False})
    assert trainer._scorer.name == "token_classification"
    order = trainer.pruner.epoch_order().tolist()
    batches = {k: torch.cat([b[k] for b in collator.batches]) for k in collator.batches[0]}
    masked = (batches["labels"] != -100).sum(1)
    expected = torch.full((len(rows),), float("nan"))
    seen = own_losses(trainer.model, [{k: v[i] for k, v in batches.items()} for i in range(len(order))])
    expected[order] = seen
    scored = masked > 0
    assert not bool(scored[order.index(11)])  # the special-tokens row
    assert int(trainer.pruner.report.epochs[0].unscored_rows) == int((~scored).sum()) >= 1
    assert bool((store.seen[order] == scored).all())
    assert_scores_equal_where(store.loss[order][scored], expected[order][scored])


def assert_scores_equal_where(recorded, expected):
    torch.testing.assert_close(recorded, expected.float(), rtol=1e-5, atol=1e-6)


def test_causal_lm_with_prompt_masking(tmp_path):
    """SFT-style rows: the prompt's labels are -100, so only the answer is scored."""
    data = ragged_lm_dataset(12)
    labels = [[-100] * 2 + row[2:] for row in data["labels"]]
    data = data.remove_columns(["labels"]).add_column("labels", labels)
    trainer, store = scored_once(model=tiny_gpt2(), dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "causal_lm"
    assert_scores_equal(store, own_losses(trainer.model, data))


def test_causal_lm_token_averaged_across_accumulated_batches(tmp_path):
    """Gradient accumulation: the model divides by the Trainer's num_items_in_batch (tokens of the whole
    window), not by its own count; the check reads that normaliser."""
    data = ragged_lm_dataset(16)
    trainer, store = scored_once(model=tiny_gpt2(), dataset=data, tmp_path=tmp_path,
                                 arg_overrides={"gradient_accumulation_steps": 2})
    assert trainer._loss_check.checked_steps == 4
    assert_scores_equal(store, own_losses(trainer.model, data))


def test_vision_language_model_is_shifted_like_its_loss(tmp_path):
    g = gen(7)
    rows = {"input_ids": [], "attention_mask": [], "labels": [], "pixel_values": []}
    for _ in range(8):
        text = torch.randint(3, 40, (6,), generator=g).tolist()
        rows["input_ids"].append([47] * 4 + text)
        rows["attention_mask"].append([1] * 10)
        rows["labels"].append([-100] * 4 + text)
        rows["pixel_values"].append(torch.randn(3, 8, 8, generator=g).tolist())
    data = Dataset.from_dict(rows)
    trainer, store = scored_once(model=tiny_llava(), dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "causal_lm"
    assert_scores_equal(store, own_losses(trainer.model, data))


def test_xlnet_permutation_lm_is_unshifted(tmp_path):
    """XLNet declares no loss type (transformers then reports its causal default); its loss does not shift, and
    the model's loss on the first batch picks the unshifted reading."""
    g = gen(8)
    rows = {"input_ids": [], "perm_mask": [], "target_mapping": [], "labels": []}
    for _ in range(8):
        tokens = torch.randint(3, 40, (8,), generator=g)
        targets = torch.randperm(8, generator=g)[:3]
        perm = torch.zeros(8, 8)
        perm[:, targets] = 1.0
        mapping = torch.zeros(3, 8)
        mapping[torch.arange(3), targets] = 1.0
        rows["input_ids"].append(tokens.tolist())
        rows["perm_mask"].append(perm.tolist())
        rows["target_mapping"].append(mapping.tolist())
        rows["labels"].append(tokens[targets].tolist())
    data = Dataset.from_dict(rows)
    model = tiny_xlnet()
    assert model.loss_type is None
    trainer, store = scored_once(model=model, dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "token_classification"
    assert_scores_equal(store, own_losses(trainer.model, data))


def test_mixture_of_experts_router_term_is_not_in_the_score(tmp_path):
    data = ragged_lm_dataset(8)
    trainer, store = scored_once(model=tiny_mixtral(coef=0.5), dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "causal_lm"
    expected = own_losses(trainer.model, data, loss=lambda out: out.loss - 0.5 * out.aux_loss)
    assert_scores_equal(store, expected)


def test_bart_with_label_smoothing_is_the_trainers_smoothed_loss(tmp_path):
    from transformers.trainer_pt_utils import LabelSmoother

    g = gen(9)
    targets = ids(8, 4, g)
    targets[::3, 3] = -100
    decoder_inputs = torch.cat([torch.full((8, 1), 2), targets[:, :-1].clamp(min=0)], 1)  # DataCollatorForSeq2Seq's
    data = Dataset.from_dict({"input_ids": ids(8, 6, g).tolist(), "labels": targets.tolist(),
                              "decoder_input_ids": decoder_inputs.tolist()})
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=1,
                                    learning_rate=0.0, report_to="none", use_cpu=True, save_strategy="no",
                                    label_smoothing_factor=0.1, disable_tqdm=True)
    trainer, store = scored_once(PruningSeq2SeqTrainer, model=tiny_bart(), dataset=data, tmp_path=tmp_path, args=args)
    assert trainer._scorer.name == "seq2seq" and trainer._scorer.label_smoothing == 0.1
    smoother = LabelSmoother(epsilon=0.1)
    unsmoothed = own_losses(trainer.model, data)
    trainer.model.eval()
    with torch.no_grad():
        smoothed = torch.tensor([float(smoother(trainer.model(input_ids=torch.tensor([r["input_ids"]]),
                                                              decoder_input_ids=torch.tensor([r["decoder_input_ids"]])),
                                                torch.tensor([r["labels"]]))) for r in data])
    assert_scores_equal(store, smoothed)
    assert (unsmoothed - smoothed).abs().max() > 1e-3


def test_whisper_speech_to_text(tmp_path):
    g = gen(10)
    labels = ids(8, 5, g)
    labels[::3, 4] = -100
    data = Dataset.from_dict({"input_features": torch.randn(8, 4, 16, generator=g).tolist(), "labels": labels.tolist()})
    trainer, store = scored_once(model=tiny_whisper(), dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "seq2seq"
    assert_scores_equal(store, own_losses(trainer.model, data))


# ----------------------------------------------------------------------- span and CTC losses
def test_extractive_question_answering_with_positions_outside_the_input(tmp_path):
    """run_qa: the mean of the start and end cross-entropies. transformers ignores a position outside the
    input (clamped to T): such a part is left out of the example's score, and an example with both outside
    has nothing to score."""
    g = gen(11)
    starts, ends = [1, 2, 0, 9, 3, 4, 20, 5], [2, 3, 1, 4, 9, 5, 30, 6]
    data = Dataset.from_dict({"input_ids": ids(8, 7, g).tolist(), "start_positions": starts, "end_positions": ends})
    trainer, store = scored_once(model=tiny_bert_head("BertForQuestionAnswering"), dataset=data, tmp_path=tmp_path)
    assert trainer._scorer.name == "question_answering"
    with torch.no_grad():
        out = trainer.model(input_ids=torch.tensor(data["input_ids"]))
    start_ce = F.cross_entropy(out.start_logits, torch.tensor(starts).clamp(max=6), reduction="none")
    end_ce = F.cross_entropy(out.end_logits, torch.tensor(ends).clamp(max=6), reduction="none")
    inside = [i for i in range(8) if starts[i] < 7 and ends[i] < 7]
    assert_scores_equal_where(store.loss[inside], own_losses(trainer.model, data.select(inside)))
    assert_scores_equal_where(store.loss[[3, 4]], torch.stack([end_ce[3], start_ce[4]]))
    assert not bool(store.seen[6]) and trainer.pruner.report.epochs[0].unscored_rows == 1
    # the per-epoch log counts it too
    trainer = PruningTrainer(model=trainer.model, args=tiny_args(tmp_path / "log", num_train_epochs=2,
                                                                 learning_rate=0.0),
                             train_dataset=data, pruning_args=PruningArguments(method="emp", prune=0.5))
    trainer.train()
    logged = [h["pruning/unscored_so_far"] for h in trainer.state.log_history if "pruning/unscored_so_far" in h]
    assert len(logged) == 2 and logged[0] == 1  # each epoch's end counts the unscored rows forwarded so far
    assert logged[-1] == trainer.pruning_report()["unscored_rows"]


def ctc_rows(g, n=8, samples=160, impossible=3):
    rows = {"input_values": [], "attention_mask": [], "labels": []}
    for i in range(n):
        length = int(torch.randint(100, samples + 1, (1,), generator=g))
        rows["input_values"].append(torch.randn(length, generator=g).tolist() + [0.0] * (samples - length))
        rows["attention_mask"].append([1] * length + [0] * (samples - length))
        k = 30 if i == impossible else int(torch.randint(2, 6, (1,), generator=g))  # 30 labels > 19 frames
        rows["labels"].append(torch.randint(1, 12, (k,), generator=g).tolist() + [-100] * (30 - k))
    return Dataset.from_dict(rows)


def test_ctc_speech_recognition_both_reductions_and_zero_infinity(tmp_path):
    """run_speech_recognition_ctc: padded audio with its attention mask, labels padded with -100. The model's
    frame lengths and reduction apply; a target too long for its frames is zeroed by zero_infinity and has
    nothing to score."""
    for reduction in ("mean", "sum"):
        data = ctc_rows(gen(12))
        trainer, store = scored_once(model=tiny_wav2vec2_ctc(reduction), dataset=data, tmp_path=tmp_path / reduction)
        assert trainer._scorer.name == "ctc"
        rows = []
        for r in data:
            n = sum(r["attention_mask"])
            rows.append({"input_values": r["input_values"][:n], "labels": [x for x in r["labels"] if x != -100]})
        expected = own_losses(trainer.model, rows)
        possible = [i for i in range(8) if i != 3]
        assert_scores_equal_where(store.loss[possible], expected[possible])
        assert not bool(store.seen[3]) and bool(store.seen[possible].all())


def test_ctc_labels_as_long_as_the_frames_are_not_read_as_tokens(tmp_path):
    """Labels padded to exactly the number of output frames looked like token classification to a shape rule;
    the model's CTC settings decide."""
    g = gen(13)
    rows = {"input_values": torch.randn(8, 160, generator=g).tolist(),
            "labels": [torch.randint(1, 12, (3,), generator=g).tolist() + [-100] * 15 for _ in range(8)]}
    data = Dataset.from_dict(rows)
    model = tiny_wav2vec2_ctc("sum")
    with torch.no_grad():
        assert model(input_values=torch.tensor(rows["input_values"][:1])).logits.shape[1] == 18
    trainer, store = scored_once(model=model, dataset=data, tmp_path=tmp_path, data_collator=default_data_collator)
    assert trainer._scorer.name == "ctc"
    rows = [{"input_values": r["input_values"], "labels": [x for x in r["labels"] if x != -100]} for r in data]
    assert_scores_equal(store, own_losses(trainer.model, rows))
