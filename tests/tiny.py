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


# ---------------------------------------------------------------- exactness helpers
def scored_once(trainer_cls=None, *, model, dataset, tmp_path, pruning=None, **kwargs):
    """One epoch at lr 0: every example scored once by an unchanged model (returns the trainer and its store)."""
    from emp_hf import PruningArguments, PruningTrainer

    trainer_cls = trainer_cls or PruningTrainer
    args = kwargs.pop("args", None) or tiny_args(tmp_path, num_train_epochs=1, learning_rate=0.0,
                                                 **kwargs.pop("arg_overrides", {}))
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset,
                          pruning_args=pruning or PruningArguments(method="emp", prune=0.5), **kwargs)
    trainer.train()
    store = trainer.pruner.store
    assert int(store.times_trained.sum()) + trainer.pruner.report.epochs[0].unscored_rows == len(dataset)
    return trainer, store


def own_losses(model, rows, loss=None):
    """The model's own loss on each example alone (the independent computation); `loss(outputs)` picks it."""
    model.eval()
    out = []
    with torch.no_grad():
        for row in rows:
            batch = {k: torch.as_tensor(v).unsqueeze(0) for k, v in row.items()}
            outputs = model(**batch)
            out.append(float(outputs.loss if loss is None else loss(outputs)))
    return torch.tensor(out)


def assert_scores_equal(store, expected, rtol=1e-5, atol=1e-6):
    torch.testing.assert_close(store.loss, expected.float(), rtol=rtol, atol=atol)


# ---------------------------------------------------------------- more model families
def tiny_bert_head(cls_name: str, seed: int = 0, **config_overrides):
    """A tiny BERT with any head class of transformers (BertForMultipleChoice, BertForQuestionAnswering, ...)."""
    import transformers

    torch.manual_seed(seed)
    settings = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                    max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    settings.update(config_overrides)
    return getattr(transformers, cls_name)(BertConfig(**settings))


def tiny_llava(seed: int = 0, image_token: int = 47):
    """A tiny vision-language model (CLIP vision tower, Llama text model): 4 image tokens per 8x8 image."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=8, patch_size=4, num_channels=3)
    text = LlamaConfig(vocab_size=48, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
    return LlavaForConditionalGeneration(LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image_token, projector_hidden_act="gelu",
        vision_feature_layer=-1, vision_feature_select_strategy="default"))


def tiny_wav2vec2_ctc(reduction: str = "mean", zero_infinity: bool = True, seed: int = 0):
    """A tiny Wav2Vec2ForCTC whose attention mask is honoured (layer-norm feature extractor), without SpecAugment."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(seed)
    return Wav2Vec2ForCTC(Wav2Vec2Config(
        vocab_size=12, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(4, 2), conv_kernel=(8, 4), num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True, hidden_dropout=0.0,
        activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0,
        mask_time_prob=0.0, ctc_loss_reduction=reduction, ctc_zero_infinity=zero_infinity, pad_token_id=0))


def tiny_xlnet(seed: int = 0):
    from transformers import XLNetConfig, XLNetLMHeadModel

    torch.manual_seed(seed)
    return XLNetLMHeadModel(XLNetConfig(vocab_size=40, d_model=16, n_layer=1, n_head=2, d_inner=32, dropout=0.0))


def tiny_mixtral(coef: float = 0.5, seed: int = 0):
    """A tiny mixture-of-experts causal LM whose loss includes the router's load-balancing term."""
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(seed)
    return MixtralForCausalLM(MixtralConfig(
        vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, output_router_logits=True,
        router_aux_loss_coef=coef, max_position_embeddings=32, pad_token_id=0))


def tiny_vit(num_labels: int = 3, seed: int = 0):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    return ViTForImageClassification(ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def tiny_whisper(seed: int = 0):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    return WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=40, num_mel_bins=4, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, d_model=8, max_source_positions=8,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        dropout=0.0))


def tiny_bart(seed: int = 0):
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    return BartForConditionalGeneration(BartConfig(
        vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=2))


def set_core_size(monkeypatch, name: str, value: int) -> None:
    """Set one of the core's size switches (`_CHUNK`, `_RADIX_MIN`, `_PACKED_MIN`, `_CHUNKED_SCORES_MIN`,
    `_ORDER_BUCKETS`) in every module that reads it, so that the large-N paths run at test sizes."""
    import emp_hf.core.policies as policies
    import emp_hf.core.ranking as ranking
    import emp_hf.core.selection as selection

    modules = [m for m in (selection, ranking, policies) if hasattr(m, name)]
    assert modules, name
    for module in modules:
        monkeypatch.setattr(module, name, value)


def make_trainer(tmp_path, *, model=None, dataset=None, pruning=None, callbacks=(), trainer_cls=None, eval_dataset=None,
                 n=30, trainer_kwargs=None, **arg_overrides):
    """The one PruningTrainer factory of the tests: a tiny BERT on `n` tiny rows unless told otherwise, the
    tests' `tiny_args` with `arg_overrides`, EMP at 0.5 by default."""
    from emp_hf import PruningArguments, PruningTrainer

    return (trainer_cls or PruningTrainer)(
        model=model if model is not None else tiny_bert(),
        args=tiny_args(tmp_path, **arg_overrides),
        train_dataset=dataset if dataset is not None else tiny_dataset(n),
        eval_dataset=eval_dataset,
        pruning_args=pruning if pruning is not None else PruningArguments(method="emp", prune=0.5),
        callbacks=list(callbacks),
        **(trainer_kwargs or {}),
    )


def word_tokenizer():
    """A word-level tokenizer over w4 .. w39 with [PAD], [CLS], [SEP] and [MASK] (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[MASK]": 3, **{f"w{i}": i for i in range(4, 40)}}
    word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[PAD]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
