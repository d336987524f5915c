"""The core's per-example kernels against independent float64 computations (torch's own losses)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from emp_hf.core.per_example import (
    binary_terms,
    class_terms,
    ctc_terms,
    span_terms,
    squared_error_terms,
    token_terms,
)


def reference_tokens(logits, labels, shift, smoothing):
    logits, labels = logits.double(), labels.clone()
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    log_probs = F.log_softmax(logits, -1)
    token = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100,
                            label_smoothing=smoothing)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    counted = labels != -100
    return (token * counted).sum(1), (entropy * counted).sum(1), counted.sum(1)


@pytest.mark.parametrize("shift", [True, False])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [7, 1 << 18])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_token_terms_equal_torchs_cross_entropy_and_entropy(shift, smoothing, chunk, scale):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 9, 50, generator=g) * scale
    labels = torch.randint(0, 50, (3, 9), generator=g)
    labels[0, :5] = -100  # a prompt
    labels[2, :] = -100  # nothing to score
    sums, entropy, counts = reference_tokens(logits, labels, shift, smoothing)
    for chunk_elements in (chunk * 50, 50):  # several blocks, and one row a block
        terms = token_terms(logits, labels, shift=shift, label_smoothing=smoothing, need_entropy=True,
                            chunk_elements=chunk_elements)
        torch.testing.assert_close(terms.sums[0].double(), sums, rtol=1e-5, atol=1e-5 * scale)
        torch.testing.assert_close(terms.entropy_sums[0].double(), entropy, rtol=1e-5, atol=1e-4 * scale)
        assert terms.counts[0].tolist() == counts.tolist()
        loss, _, scorable = terms.per_example()
        assert scorable.tolist() == [True, True, False] and math.isnan(float(loss[2]))
    without = token_terms(logits, labels, shift=shift, label_smoothing=smoothing)
    assert without.entropy_sums is None
    torch.testing.assert_close(without.sums[0].double(), sums, rtol=1e-5, atol=1e-5 * scale)


def test_token_terms_read_bf16_logits_in_float32():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 30, generator=g).bfloat16()
    labels = torch.randint(0, 30, (2, 6), generator=g)
    sums, _, _ = reference_tokens(logits.float(), labels, True, 0.0)
    terms = token_terms(logits, labels, shift=True)
    assert terms.sums.dtype == torch.float32
    torch.testing.assert_close(terms.sums[0].double(), sums, rtol=1e-5, atol=1e-5)


def test_class_binary_and_squared_error_terms():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 4, generator=g)
    labels = torch.tensor([0, 3, -100, 1, 2])
    terms = class_terms(logits, labels, 0.1, need_entropy=True)
    expected = F.cross_entropy(logits, labels, reduction="none", label_smoothing=0.1, ignore_index=-100)
    torch.testing.assert_close(terms.sums[0], expected)
    assert float(terms.batch_loss()) == pytest.approx(float(F.cross_entropy(logits, labels, label_smoothing=0.1)))
    targets = torch.randint(0, 2, (5, 4), generator=g).float()
    assert float(binary_terms(logits, targets).batch_loss()) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, targets)), rel=1e-6)
    assert float(squared_error_terms(logits, targets).batch_loss()) == pytest.approx(
        float(F.mse_loss(logits, targets)), rel=1e-6)
    with pytest.raises(ValueError, match="one target per output"):
        squared_error_terms(logits, targets[:, :2])


def test_span_terms_are_transformers_question_answering_loss():
    from transformers.loss.loss_utils import ForQuestionAnsweringLoss

    g = torch.Generator().manual_seed(3)
    start, end = torch.randn(6, 7, generator=g), torch.randn(6, 7, generator=g)
    starts, ends = torch.tensor([1, 9, 0, 3, 6, 2]), torch.tensor([2, 3, 30, 5, 6, 4])
    terms = span_terms(start, end, starts, ends)
    expected = ForQuestionAnsweringLoss(start, end, starts, ends)
    assert float(terms.batch_loss()) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ctc_terms_are_transformers_ctc_loss(reduction):
    from transformers.loss.loss_ctc import ForCTCLoss

    g = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 12, 6, generator=g)
    labels = torch.tensor([[1, 2, -100, -100], [3, 3, 4, -100], [5, 1, 2, 3], [1] * 4])
    lengths = torch.tensor([12, 10, 12, 2])  # the last target cannot fit in 2 frames: infinite loss
    terms = ctc_terms(logits, labels, lengths, blank=0, reduction=reduction, zero_infinity=True)
    expected = ForCTCLoss(logits, labels, lengths, 0, reduction=reduction, zero_infinity=True)
    assert float(terms.batch_loss()) == pytest.approx(float(expected), rel=1e-5)
    assert terms.per_example()[2].tolist() == [True, True, True, False]


def test_token_terms_for_a_label_far_below_the_others():
    """A loss above ~69 (p_y underflows in float32): log Z comes from the largest logit instead."""
    logits = torch.zeros(1, 3, 10)
    logits[0, :, 4] = 120.0
    labels = torch.tensor([[0, 1, 2]])
    sums, entropy, _ = reference_tokens(logits, labels, False, 0.0)
    terms = token_terms(logits, labels, shift=False, need_entropy=True)
    assert float(sums[0]) > 300
    torch.testing.assert_close(terms.sums[0].double(), sums, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(terms.entropy_sums[0].double(), entropy, rtol=1e-5, atol=1e-5)
