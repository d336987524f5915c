"""Per-example scores from a training step's model outputs: the scorer plug-in of the Trainer front end.

A scorer is any callable `(outputs, inputs) -> (loss_per_example[B], entropy_per_example[B])`, called
without gradient right after the model's training forward pass. The built-ins below reproduce the
per-example term of the loss each model family trains on; `choose_scorer` picks one from the model and
the first batch, and refuses (naming the fix) where the choice would be a guess.

Every built-in also names the output tensor whose rows are the examples (`grad_rows`): InfoBatch's
loss weights scale the gradient flowing back through it, row by row (see `PruningMixin`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .core.per_example import (
    classification_scores,
    multilabel_scores,
    regression_scores,
    sequence_scores,
    token_logprob_scores,
)

ScorerFn = Callable[[Any, Mapping[str, Any]], "tuple[Tensor, Tensor]"]

SCORER_NAMES = (
    "classification", "regression", "multi_label", "token_classification", "causal_lm", "seq2seq", "fused_causal_lm",
)
_DESCRIPTIONS = {
    "classification": "cross-entropy of the logits against integer labels (with the Trainer's label smoothing), "
                      "entropy of softmax",
    "regression": "squared error of the single output (entropy 0)",
    "multi_label": "mean binary cross-entropy over the labels, mean Bernoulli entropy",
    "token_classification": "mean token cross-entropy over positions whose label is not -100 (no shift)",
    "causal_lm": "mean next-token cross-entropy, shifted as the model's own loss, over labels not -100",
    "seq2seq": "mean cross-entropy of the decoder logits against the decoder labels (no shift), labels not -100",
    "fused_causal_lm": "mean negative log-likelihood and entropy from TRL's fused LM head (per-token log-probs)",
}


def output_field(outputs: Any, name: str) -> Any:
    """A field of a model output (ModelOutput, dict, or object); None when absent."""
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


@dataclass(frozen=True)
class BuiltinScorer:
    """One of the built-in scorers, bound to the batch key of the labels."""

    name: str
    label_key: str = "labels"
    label_smoothing: float = 0.0

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self.name]

    def grad_rows(self, outputs: Any) -> Tensor | None:
        return output_field(outputs, "log_probs" if self.name == "fused_causal_lm" else "logits")

    def __call__(self, outputs: Any, inputs: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        if self.name == "fused_causal_lm":
            fields = (output_field(outputs, name) for name in ("log_probs", "label_mask", "entropy"))
            return token_logprob_scores(*fields)
        logits = output_field(outputs, "logits")
        labels = inputs[self.label_key].to(logits.device)
        if self.name == "classification":
            return classification_scores(logits.reshape(logits.shape[0], -1), labels, self.label_smoothing)
        if self.name == "regression":
            return regression_scores(logits, labels)
        if self.name == "multi_label":
            return multilabel_scores(logits, labels)
        return sequence_scores(logits, labels, shift=self.name == "causal_lm", label_smoothing=self.label_smoothing)


def describe(scorer: ScorerFn) -> str:
    if isinstance(scorer, BuiltinScorer):
        return f"'{scorer.name}' ({scorer.description})"
    return f"user scorer {getattr(scorer, '__qualname__', type(scorer).__name__)}"


def _base_model(model: Any) -> Any:
    """The transformers model under PEFT and distributed wrappers."""
    for _ in range(4):
        if hasattr(model, "get_base_model"):  # PEFT
            model = model.get_base_model()
        elif hasattr(model, "module"):  # DDP, DeepSpeed
            model = model.module
        else:
            break
    return model


def is_causal_lm(model: Any) -> bool:
    """The Trainer's own rule (class name among the causal-LM auto classes), plus the naming convention
    of causal-LM classes that are not registered there."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = type(_base_model(model)).__name__
    return name in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) or name.endswith(("ForCausalLM", "LMHeadModel"))


class ScorerChoiceError(ValueError):
    pass


def choose_scorer(model: Any, outputs: Any, inputs: Mapping[str, Any], label_key: str | None,
                  label_smoothing: float, requested: str | None = None) -> BuiltinScorer:
    """The built-in scorer for this model and batch (or `requested`, checked against the batch)."""
    override = "Pass `scorer=` to the trainer (one of: " + ", ".join(SCORER_NAMES) + ", or a callable)."
    if requested == "fused_causal_lm" or (requested is None and output_field(outputs, "log_probs") is not None
                                          and output_field(outputs, "label_mask") is not None):
        return BuiltinScorer("fused_causal_lm")
    logits = output_field(outputs, "logits")
    if not isinstance(logits, Tensor):
        keys = list(outputs.keys()) if isinstance(outputs, Mapping) else type(outputs).__name__
        raise ScorerChoiceError(
            f"The model's training output has no `logits` (it has: {keys}), so per-example scores cannot be "
            "computed. Causes: a loss-only forward (e.g. `use_liger_kernel=True`, a fused loss), a model that "
            "returns tuples (`return_dict=False`), or a custom output class. Return logits, pass a `scorer=` that "
            "reads your outputs, or use a method that reads no scores (random, static_random, full)."
        )
    if label_key is None or label_key not in inputs:
        raise ScorerChoiceError(
            f"The training batch has no labels under {label_key!r} (batch keys: {sorted(inputs)}), so examples "
            "cannot be scored by their loss. Set `TrainingArguments.label_names` to your label key, make the "
            "collator produce labels, or use a method that reads no scores (random, static_random, full)."
        )
    labels = inputs[label_key]
    batch = logits.shape[0]
    if not isinstance(labels, Tensor) or labels.shape[:1] != (batch,):
        raise ScorerChoiceError(
            f"The labels under {label_key!r} are not a tensor with one row per example (logits have {batch} rows, "
            f"labels {getattr(labels, 'shape', type(labels).__name__)}). {override}"
        )
    name = requested or _infer_name(model, logits, labels, override)
    scorer = BuiltinScorer(name, label_key, label_smoothing if name not in ("regression", "multi_label") else 0.0)
    _check_shapes(scorer, logits, labels, override)
    return scorer


def _infer_name(model: Any, logits: Tensor, labels: Tensor, override: str) -> str:
    if logits.dim() <= 2:
        classes = logits.shape[-1] if logits.dim() == 2 else 1
        if labels.is_floating_point():
            if labels.dim() == 2 and labels.shape[1] == classes and classes > 1:
                return "multi_label"
            if classes == 1 and labels.numel() == labels.shape[0]:
                return "regression"
        elif labels.dim() == 1 and classes > 1:
            return "classification"
        raise ScorerChoiceError(
            f"Cannot tell which loss logits {tuple(logits.shape)} and labels {tuple(labels.shape)} "
            f"({labels.dtype}) were trained with. {override}"
        )
    if logits.dim() == 3 and labels.dim() == 2 and not labels.is_floating_point():
        base = _base_model(model)
        if is_causal_lm(base):
            return "causal_lm"
        config = getattr(base, "config", None)
        if getattr(config, "is_encoder_decoder", False):
            return "seq2seq"
        from transformers import PreTrainedModel

        if isinstance(base, PreTrainedModel) and logits.shape[1] == labels.shape[1]:
            return "token_classification"
        raise ScorerChoiceError(
            f"Sequence logits {tuple(logits.shape)} from {type(base).__name__}, which is not a transformers "
            f"model class: cannot tell whether its loss shifts the labels (causal LM) or not. {override}"
        )
    raise ScorerChoiceError(
        f"No built-in scorer fits logits {tuple(logits.shape)} with labels {tuple(labels.shape)}. {override}"
    )


def _check_shapes(scorer: BuiltinScorer, logits: Tensor, labels: Tensor, override: str) -> None:
    sequence = scorer.name in ("token_classification", "causal_lm", "seq2seq")
    if sequence and (logits.dim() != 3 or labels.dim() != 2):
        raise ScorerChoiceError(
            f"Scorer '{scorer.name}' needs logits (B, T, V) and labels (B, T); got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}. {override}"
        )
    if not sequence and logits.dim() > 2:
        raise ScorerChoiceError(
            f"Scorer '{scorer.name}' needs one row of logits per example; got {tuple(logits.shape)}. {override}"
        )


def resolve_requested(scorer: str | ScorerFn | None) -> tuple[str | None, ScorerFn | None]:
    """Split the trainer's `scorer=` argument into a built-in name or a user callable; refuse anything else."""
    if scorer is None or scorer == "auto":
        return None, None
    if isinstance(scorer, str):
        if scorer not in SCORER_NAMES:
            raise ValueError(f"Unknown `scorer` {scorer!r}; built-in scorers: auto, {', '.join(SCORER_NAMES)}.")
        return scorer, None
    if callable(scorer):
        return None, scorer
    raise TypeError(f"`scorer` must be a built-in name or a callable (outputs, inputs) -> (loss, entropy), got "
                    f"{type(scorer).__name__}.")


def check_scores(scores: Any, batch: int, scorer: ScorerFn) -> tuple[Tensor, Tensor]:
    """A scorer's result, checked: two float tensors of one value per example."""
    ok = isinstance(scores, tuple) and len(scores) == 2 and all(isinstance(s, Tensor) for s in scores)
    if ok:
        loss, entropy = (s.detach().reshape(-1).float() for s in scores)
        if loss.numel() == entropy.numel() == batch:
            return loss, entropy
        detail = f"{loss.numel()} and {entropy.numel()} values"
    else:
        detail = f"{type(scores).__name__}"
    raise ValueError(
        f"The {describe(scorer)} returned {detail} for a batch of {batch} examples; a scorer must return "
        "(loss_per_example, entropy_per_example), one value each per example. Packed or padding-free batches "
        "(several examples in one row) cannot be scored per example: turn packing/padding_free off."
    )


__all__ = [
    "SCORER_NAMES", "BuiltinScorer", "ScorerChoiceError", "ScorerFn", "check_scores", "choose_scorer", "describe",
    "is_causal_lm", "output_field", "resolve_requested",
]
