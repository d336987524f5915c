"""Per-example scores from a training step's model outputs: the scorer plug-in of the Trainer front end.

A scorer turns the outputs of the training forward pass into `LossTerms`: each example's loss pieces and
the way the model's batch loss is built from them. The Trainer front end checks those terms against the
loss the step actually trained on (`loss_check.py`), so a scorer is never taken on trust.

Which built-in scorer fits is read off what the model declares, not guessed from shapes or class names:

* the sequence-classification family by `config.problem_type` as transformers decides it (the model sets
  it on its first forward; where it does not, by the same rule from the head's width and the label dtype);
* question answering by its `start_logits`/`end_logits` outputs and position labels;
* CTC by its loss type and `ctc_loss_reduction`/`ctc_zero_infinity`, with the model's own frame lengths;
* token-level losses by the encoder-decoder flag (no shift) and the model's `loss_type` where the class
  declares one (causal: shift; masked LM, token classification: none). A model that declares nothing
  (transformers then falls back to a causal default, which is not a declaration: GPT-2's and XLNet's LM
  heads both report it, and only GPT-2 shifts) gets both readings, and the model's loss on the first
  training batch decides between them.

Shapes only check the choice. A user scorer is any callable `(outputs, inputs) -> (loss, entropy)` or
`(loss, entropy, items)`, `items` being how many loss items each example adds to the model's mean (its
labelled tokens; default 1, a batch mean); 0 items marks an example with nothing to score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .core.per_example import (
    LossTerms,
    binary_terms,
    class_terms,
    ctc_terms,
    logprob_terms,
    span_terms,
    squared_error_terms,
    token_terms,
)

ScorerFn = Callable[[Any, Mapping[str, Any]], Any]

SCORER_NAMES = (
    "classification", "regression", "multi_label", "token_classification", "causal_lm", "seq2seq",
    "question_answering", "ctc", "fused_causal_lm",
)
_DESCRIPTIONS = {
    "classification": "cross-entropy of the logits against integer labels, batch mean",
    "regression": "squared error over the outputs, mean over the batch's outputs (entropy 0)",
    "multi_label": "binary cross-entropy over the labels, mean over the batch's labels",
    "token_classification": "token cross-entropy without shift (token classification, masked LM, XLNet), mean over "
                            "the batch's labelled positions",
    "causal_lm": "next-token cross-entropy, labels shifted one left, mean over the batch's labelled positions",
    "seq2seq": "cross-entropy of the decoder logits against the decoder labels (no shift), mean over the batch's "
               "labelled positions",
    "question_answering": "mean of the start and end position cross-entropies (positions outside the input "
                          "ignored)",
    "ctc": "CTC loss with the model's reduction, blank id, zero-infinity and frame lengths",
    "fused_causal_lm": "negative log-likelihood from TRL's fused LM head (per-token log-probabilities)",
}
_TOKEN_NAMES = ("token_classification", "causal_lm", "seq2seq")
_CAUSAL_TYPES = ("ForCausalLM", "ForConditionalGeneration")
_ALIGNED_TYPES = ("ForMaskedLM", "ForTokenClassification")
_PROBLEM_NAMES = {"regression": "regression", "single_label_classification": "classification",
                  "multi_label_classification": "multi_label"}


def output_field(outputs: Any, name: str) -> Any:
    """A field of a model output (ModelOutput, dict, or object); None when absent."""
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


class ScorerChoiceError(ValueError):
    pass


@dataclass(frozen=True)
class CTCSpec:
    """What the model's CTC loss is computed with, read from its config."""

    blank: int
    reduction: str
    zero_infinity: bool
    frame_lengths: Callable[[Tensor], Tensor] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class BuiltinScorer:
    """One of the built-in scorers, bound to the batch key of its labels."""

    name: str
    label_key: str = "labels"
    label_smoothing: float = 0.0
    ctc: CTCSpec | None = None

    @property
    def description(self) -> str:
        smoothing = f", label smoothing {self.label_smoothing}" if self.label_smoothing else ""
        return _DESCRIPTIONS[self.name] + smoothing

    def grad_rows(self, outputs: Any) -> tuple[Any, ...]:
        """The output tensors whose rows are the examples (InfoBatch scales their gradients row by row)."""
        if self.name == "fused_causal_lm":
            return (output_field(outputs, "log_probs"),)
        if self.name == "question_answering":
            return (output_field(outputs, "start_logits"), output_field(outputs, "end_logits"))
        return (output_field(outputs, "logits"),)

    def __call__(self, outputs: Any, inputs: Mapping[str, Any], need_entropy: bool = True) -> LossTerms:
        if self.name == "fused_causal_lm":
            fields = (output_field(outputs, name) for name in ("log_probs", "label_mask", "entropy"))
            return logprob_terms(*fields, need_entropy=need_entropy)
        if self.name == "question_answering":
            return span_terms(output_field(outputs, "start_logits"), output_field(outputs, "end_logits"),
                              inputs["start_positions"], inputs["end_positions"], need_entropy)
        logits = output_field(outputs, "logits")
        labels = inputs[self.label_key]
        if self.name == "classification":
            return class_terms(logits, labels, self.label_smoothing, need_entropy)
        if self.name == "regression":
            return squared_error_terms(logits, labels)
        if self.name == "multi_label":
            return binary_terms(logits, labels, need_entropy)
        if self.name == "ctc":
            assert self.ctc is not None
            return ctc_terms(logits, labels, ctc_frame_lengths(self.ctc, logits, inputs), blank=self.ctc.blank,
                             reduction=self.ctc.reduction, zero_infinity=self.ctc.zero_infinity,
                             need_entropy=need_entropy)
        return token_terms(logits, labels, shift=self.name == "causal_lm", label_smoothing=self.label_smoothing,
                           need_entropy=need_entropy)


def ctc_frame_lengths(spec: CTCSpec, logits: Tensor, inputs: Mapping[str, Any]) -> Tensor:
    """Valid output frames per example as the model computes them (wav2vec2 and its kin: the feature
    extractor's output length of the attended input samples); every frame where the model has no rule."""
    batch, frames = logits.shape[:2]
    source = inputs.get("attention_mask")
    if source is None:
        source = inputs.get("input_values", inputs.get("input_features"))
        source = None if source is None else torch.ones(source.shape[:2], dtype=torch.long, device=source.device)
    if spec.frame_lengths is None or source is None:
        return torch.full((batch,), frames, dtype=torch.long, device=logits.device)
    return spec.frame_lengths(source.sum(-1)).to(torch.long)


@dataclass(frozen=True)
class UserScorer:
    """A user's callable `(outputs, inputs) -> (loss, entropy[, items])`, read as `LossTerms`."""

    fn: ScorerFn

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", type(self.fn).__name__)

    def grad_rows(self, outputs: Any) -> tuple[Any, ...]:
        return (output_field(outputs, "logits"),)

    def __call__(self, outputs: Any, inputs: Mapping[str, Any], need_entropy: bool = True) -> LossTerms:
        result = self.fn(outputs, inputs)
        ok = isinstance(result, tuple) and len(result) in (2, 3) and all(isinstance(t, Tensor) for t in result)
        if not ok:
            raise ValueError(
                f"The user scorer {self.name} returned {type(result).__name__}; a scorer returns (loss, entropy) or "
                "(loss, entropy, items): float tensors of one value per example."
            )
        loss, entropy = (t.detach().reshape(-1).float() for t in result[:2])
        items = result[2].detach().reshape(-1).float() if len(result) == 3 else torch.ones_like(loss)
        if not loss.numel() == entropy.numel() == items.numel():
            raise ValueError(f"The user scorer {self.name} returned {loss.numel()}, {entropy.numel()} and "
                             f"{items.numel()} values; it must return one value each per example.")
        items = items.to(loss.device)
        counted = items > 0  # 0 items: nothing to score in this example (its NaN or 0 is not a score)
        sums = torch.where(counted, loss * items, torch.zeros_like(loss))
        entropy_sums = torch.where(counted, entropy.to(loss.device) * items, torch.zeros_like(loss))
        return LossTerms(sums[None], items[None], (1.0,), entropy_sums[None])


Scorer = BuiltinScorer | UserScorer


def describe(scorer: Scorer) -> str:
    if isinstance(scorer, BuiltinScorer):
        return f"'{scorer.name}' ({scorer.description})"
    return f"user scorer {scorer.name}"


def base_model(model: Any) -> Any:
    """The transformers model under PEFT and distributed wrappers."""
    for _ in range(4):
        if hasattr(model, "get_base_model"):  # PEFT
            model = model.get_base_model()
        elif hasattr(model, "module"):  # DDP, DeepSpeed
            model = model.module
        else:
            break
    return model


def trainer_shifts(model: Any) -> bool:
    """The Trainer's own rule for label smoothing: shift the labels when the model's class is registered as a
    causal LM."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return type(base_model(model)).__name__ in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def _classification_problem(config: Any, width: int, labels: Tensor) -> str:
    """transformers' sequence-classification rule: the problem type the config declares (a model sets it on its
    first forward), else regression for one output, single-label for int64/int32 labels, multi-label otherwise."""
    declared = getattr(config, "problem_type", None)
    if declared in _PROBLEM_NAMES:
        return _PROBLEM_NAMES[declared]
    num_labels = getattr(config, "num_labels", width) if config is not None else width
    if num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int):
        return "classification"
    return "multi_label"


@dataclass(frozen=True)
class Choice:
    """The scorers that fit the model and its first batch: one where the model declares its loss, two (causal
    shift or none) where it does not; the model's loss on the first training batch decides among them."""

    candidates: tuple[BuiltinScorer, ...]
    reason: str


def choose_scorers(model: Any, outputs: Any, inputs: Mapping[str, Any], label_names: list[str] | None, *,
                   label_smoothing: float = 0.0, requested: str | None = None) -> Choice:
    """The built-in scorers for this model and batch (or `requested`, checked against the batch).

    `label_smoothing`: the Trainer's factor where its label smoother computes the loss (the model then sees no
    labels, and the Trainer's own rule decides the shift)."""
    override = "Pass `scorer=` to the trainer (one of: " + ", ".join(SCORER_NAMES) + ", or a callable)."
    base = base_model(model)
    config = getattr(base, "config", None)
    declared = getattr(base, "loss_type", None)
    if requested == "fused_causal_lm" or (requested is None and output_field(outputs, "log_probs") is not None
                                          and output_field(outputs, "label_mask") is not None):
        return Choice((BuiltinScorer("fused_causal_lm"),), "TRL's fused LM head")
    spans = [output_field(outputs, k) for k in ("start_logits", "end_logits")]
    if requested == "question_answering" or (requested is None and all(isinstance(s, Tensor) for s in spans)):
        missing = [k for k in ("start_positions", "end_positions") if not isinstance(inputs.get(k), Tensor)]
        if missing or not all(isinstance(s, Tensor) for s in spans):
            raise ScorerChoiceError(
                f"Question answering needs `start_logits`/`end_logits` outputs and `start_positions`/`end_positions` "
                f"in the batch; missing: {missing or 'the span logits'}. {override}")
        return Choice((BuiltinScorer("question_answering"),), "the model's start/end span outputs")
    logits = output_field(outputs, "logits")
    if not isinstance(logits, Tensor):
        keys = list(outputs.keys()) if isinstance(outputs, Mapping) else type(outputs).__name__
        raise ScorerChoiceError(
            f"The model's training output has no `logits` (it has: {keys}), so per-example scores cannot be "
            "computed. Causes: a loss-only forward (e.g. `use_liger_kernel=True`, a fused loss), a model that "
            "returns tuples (`return_dict=False`), or a custom output class. Return logits, pass a `scorer=` that "
            "reads your outputs, or use a method that reads no scores (random, static_random, full)."
        )
    label_key = _label_key(label_names, inputs)
    labels = inputs.get(label_key) if label_key is not None else None
    if labels is None:
        raise ScorerChoiceError(
            f"The training batch has no labels under {label_key!r} (batch keys: {sorted(inputs)}), so examples "
            "cannot be scored by their loss. Set `TrainingArguments.label_names` to your label key, make the "
            "collator produce labels, or use a method that reads no scores (random, static_random, full)."
        )
    batch = logits.shape[0]
    if not isinstance(labels, Tensor) or labels.shape[:1] != (batch,):
        raise ScorerChoiceError(
            f"The labels under {label_key!r} are not a tensor with one row per example (logits have {batch} rows, "
            f"labels {getattr(labels, 'shape', type(labels).__name__)}). {override}"
        )
    smoothing = label_smoothing
    if requested is not None:
        scorer = _bind(requested, label_key, smoothing, config, base)
        _check_shapes(scorer, logits, labels, override)
        return Choice((scorer,), "named by `scorer=`")
    if logits.dim() <= 2:
        name = _classification_problem(config, logits.shape[-1] if logits.dim() == 2 else 1, labels)
        scorer = _bind(name, label_key, smoothing, config, base)
        _check_shapes(scorer, logits, labels, override)
        problem = getattr(config, "problem_type", None)
        return Choice((scorer,), f"problem_type {problem!r}" if problem else "transformers' problem-type rule")
    if logits.dim() == 3 and labels.dim() == 2 and (declared == "ForCTC" or hasattr(config, "ctc_loss_reduction")):
        return Choice((_bind("ctc", label_key, 0.0, config, base),), "the model's CTC loss settings")
    if logits.dim() == 3 and labels.dim() == 2 and not labels.is_floating_point():
        if labels.shape[1] != logits.shape[1]:
            raise ScorerChoiceError(
                f"Sequence logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not align position by "
                f"position. {override}")
        if getattr(config, "is_encoder_decoder", False):
            return Choice((_bind("seq2seq", label_key, smoothing, config, base),), "the encoder-decoder flag")
        shifted = _bind("causal_lm", label_key, smoothing, config, base)
        aligned = _bind("token_classification", label_key, smoothing, config, base)
        if smoothing:
            first = (shifted, aligned) if trainer_shifts(base) else (aligned, shifted)
            return Choice(first, "the Trainer's label smoother, decided by its loss on the first batch")
        if declared in _CAUSAL_TYPES:
            return Choice((shifted,), f"loss_type {declared!r}")
        if declared in _ALIGNED_TYPES:
            return Choice((aligned,), f"loss_type {declared!r}")
        return Choice((shifted, aligned), "no declared loss type: decided by the model's loss on the first batch")
    raise ScorerChoiceError(
        f"No built-in scorer fits logits {tuple(logits.shape)} with labels {tuple(labels.shape)} ({labels.dtype}). "
        f"{override}"
    )


def _label_key(label_names: list[str] | None, inputs: Mapping[str, Any]) -> str | None:
    """The batch key of the labels by the Trainer's own rule (`label_names`: the argument, else the model's
    label parameters)."""
    names = list(label_names or [])
    if len(names) == 1:
        return names[0]
    if not names:
        return "labels" if "labels" in inputs else None
    raise ScorerChoiceError(
        f"The model takes several label inputs ({names}); no built-in scorer knows how they combine into one "
        "loss per example. Pass `scorer=` (a callable (outputs, inputs) -> (loss, entropy)), or use a method "
        "that reads no scores."
    )


def _bind(name: str, label_key: str, smoothing: float, config: Any, base: Any) -> BuiltinScorer:
    if name == "ctc":
        if config is None or not hasattr(config, "ctc_loss_reduction"):
            raise ScorerChoiceError("Scorer 'ctc' needs a model config with `ctc_loss_reduction` (a transformers CTC "
                                    "model); pass a callable `scorer=` for another CTC model.")
        blank = getattr(config, "pad_token_id", None)
        spec = CTCSpec(blank=0 if blank is None else int(blank), reduction=str(config.ctc_loss_reduction),
                       zero_infinity=bool(getattr(config, "ctc_zero_infinity", False)),
                       frame_lengths=getattr(base, "_get_feat_extract_output_lengths", None))
        if spec.reduction not in ("mean", "sum"):
            raise ScorerChoiceError(f"ctc_loss_reduction={spec.reduction!r} has no per-example terms; use 'mean' "
                                    "or 'sum'.")
        return BuiltinScorer("ctc", label_key, 0.0, spec)
    keeps_smoothing = name in ("classification", *_TOKEN_NAMES)
    return BuiltinScorer(name, label_key, smoothing if keeps_smoothing else 0.0)


def _check_shapes(scorer: BuiltinScorer, logits: Tensor, labels: Tensor, override: str) -> None:
    if scorer.name in (*_TOKEN_NAMES, "ctc") and (logits.dim() != 3 or labels.dim() != 2):
        raise ScorerChoiceError(
            f"Scorer '{scorer.name}' needs logits (B, T, V) and labels (B, T); got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}. {override}"
        )
    if scorer.name in ("classification", "regression", "multi_label") and logits.dim() > 2:
        raise ScorerChoiceError(
            f"Scorer '{scorer.name}' needs one row of logits per example; got {tuple(logits.shape)}. {override}"
        )
    width = logits.shape[-1] if logits.dim() == 2 else 1
    if scorer.name in ("regression", "multi_label") and labels.numel() != labels.shape[0] * width:
        raise ScorerChoiceError(
            f"Scorer '{scorer.name}' needs one label per output: logits {tuple(logits.shape)}, labels "
            f"{tuple(labels.shape)}. {override}")
    if scorer.name == "classification" and (labels.is_floating_point() or labels.numel() != labels.shape[0]):
        raise ScorerChoiceError(
            f"Scorer 'classification' needs one integer label per example; got {tuple(labels.shape)} "
            f"({labels.dtype}). {override}")


def resolve_requested(scorer: str | ScorerFn | None) -> tuple[str | None, UserScorer | None]:
    """Split the trainer's `scorer=` argument into a built-in name or a user callable; refuse anything else."""
    if scorer is None or scorer == "auto":
        return None, None
    if isinstance(scorer, str):
        if scorer not in SCORER_NAMES:
            raise ValueError(f"Unknown `scorer` {scorer!r}; built-in scorers: auto, {', '.join(SCORER_NAMES)}.")
        return scorer, None
    if callable(scorer):
        return None, UserScorer(scorer)
    raise TypeError(f"`scorer` must be a built-in name or a callable (outputs, inputs) -> (loss, entropy), got "
                    f"{type(scorer).__name__}.")


def per_example(terms: LossTerms, batch: int, scorer: Scorer) -> tuple[Tensor, Tensor | None, Tensor]:
    """The terms' per-example loss, entropy and scorable flags, checked to hold one value per example."""
    if terms.batch_size != batch:
        raise ValueError(
            f"The {describe(scorer)} returned {terms.batch_size} values for a batch of {batch} examples; a scorer "
            "must return one value per example. Packed or padding-free batches (several examples in one row) "
            "cannot be scored per example: turn packing/padding_free off."
        )
    return terms.per_example()


__all__ = [
    "SCORER_NAMES", "BuiltinScorer", "CTCSpec", "Choice", "ScorerChoiceError", "ScorerFn", "UserScorer",
    "base_model", "choose_scorers", "describe", "output_field", "per_example", "resolve_requested",
    "trainer_shifts",
]
