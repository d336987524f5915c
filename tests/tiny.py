"""Tiny models and data built in the tests (no downloads)."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments


def tiny_bert(num_labels: int = 2, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=num_labels, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def tiny_dataset(n: int = 24, length: int = 6, num_labels: int = 2, seed: int = 0, regression: bool = False) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (n, length), generator=g)
    if regression:
        labels = (ids[:, 0].float() / 40.0).tolist()
    else:
        labels = (ids[:, 0] % num_labels).tolist()  # learnable from the first token
    return Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": [[1] * length] * n,
            "label": labels,
            "text": [f"row {i}" for i in range(n)],  # a column the model does not take
        }
    )


def tiny_args(tmp_path, **overrides) -> TrainingArguments:
    settings = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        num_train_epochs=3,
        learning_rate=1e-2,
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=40, n_positions=32, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return GPT2LMHeadModel(config)


def tiny_t5(seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=40, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
                      dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=2)
    return T5ForConditionalGeneration(config)


def tiny_bert_for(head: str, num_labels: int = 3, seed: int = 0, **config_overrides):
    """A tiny BERT with another head: 'token' (token classification) or 'multi_label'."""
    from transformers import BertForTokenClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32, num_labels=num_labels, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, **config_overrides,
    )
    if head == "token":
        return BertForTokenClassification(config)
    config.problem_type = "multi_label_classification"
    return BertForSequenceClassification(config)


def ragged_lm_dataset(n: int = 12, seed: int = 0, max_len: int = 10) -> Dataset:
    """Pre-padded causal-LM rows of different lengths: pad id 0, labels -100 on padding (run_clm without
    grouping, or an SFT script that pads itself)."""
    g = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for _ in range(n):
        length = int(torch.randint(3, max_len + 1, (1,), generator=g))
        ids = torch.randint(3, 40, (length,), generator=g).tolist()
        pad = max_len - length
        rows["input_ids"].append(ids + [0] * pad)
        rows["attention_mask"].append([1] * length + [0] * pad)
        rows["labels"].append(ids + [-100] * pad)
    return Dataset.from_dict(rows)
