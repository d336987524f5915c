"""GLUE metrics pinned against values worked out by hand."""

import math

import numpy as np
import pytest

from emp_hf.glue import TASKS, compute_glue_metrics, get_task, main_metric


def test_accuracy_and_f1_for_mrpc():
    labels = np.array([1, 1, 0, 0, 1])
    logits = np.array([[0, 1], [1, 0], [1, 0], [0, 1], [0, 1]])  # preds 1 0 0 1 1
    m = compute_glue_metrics(TASKS["mrpc"], logits, labels)
    # tp = 2, fp = 1, fn = 1 -> precision 2/3, recall 2/3, f1 2/3; accuracy 3/5
    assert m["accuracy"] == pytest.approx(0.6) and m["f1"] == pytest.approx(2 / 3)
    assert m["combined_score"] == pytest.approx((0.6 + 2 / 3) / 2)


def test_matthews_for_cola():
    labels = np.array([1, 1, 0, 0])
    preds = np.array([[0, 1], [0, 1], [0, 1], [1, 0]])  # tp 2, fp 1, tn 1, fn 0
    m = compute_glue_metrics(TASKS["cola"], preds, labels)
    # mcc = (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = 2 / sqrt(3*2*2*1) = 0.57735
    assert m["matthews_correlation"] == pytest.approx(2 / math.sqrt(12))
    assert set(m) == {"matthews_correlation"}


def test_pearson_spearman_for_stsb():
    labels = np.array([1.0, 2.0, 3.0, 4.0])
    preds = np.array([[1.0], [3.0], [2.0], [4.0]])
    m = compute_glue_metrics(TASKS["stsb"], preds, labels)
    # pearson: x-mean = [-1.5,-.5,.5,1.5], y-mean same but swapped middle: cov = 2.25+(-.25)+(-.25)+2.25 = 4, var 5
    assert m["pearson"] == pytest.approx(0.8)
    # spearman: ranks differ by one swap: 1 - 6*sum d^2 / (n(n^2-1)) = 1 - 6*2/60 = 0.8
    assert m["spearmanr"] == pytest.approx(0.8) and m["combined_score"] == pytest.approx(0.8)


def test_accuracy_for_three_way_mnli_and_main_metrics():
    m = compute_glue_metrics(TASKS["mnli"], np.eye(3)[[0, 1, 2, 2]], np.array([0, 1, 2, 0]))
    assert m == {"accuracy": 0.75}
    assert [main_metric(TASKS[t]) for t in ("cola", "stsb", "mrpc", "rte")] == [
        "matthews_correlation", "combined_score", "combined_score", "accuracy"]


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="known tasks: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli"):
        get_task("mnli-mm")


def test_the_evaluate_module_loads_offline_for_every_task_like_the_hubs_glue_metric():
    """`evaluate.load(GLUE_METRIC, task)` from the folder inside the package (HF_HUB_OFFLINE=1 in conftest):
    the Hub metric's names, and the hand-worked values of the tests above."""
    import os

    import evaluate

    from emp_hf.metrics import GLUE_METRIC

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    expected_keys = {"cola": {"matthews_correlation"}, "stsb": {"pearson", "spearmanr"}, "mrpc": {"accuracy", "f1"},
                     "qqp": {"accuracy", "f1"}}
    for task in TASKS:
        metric = evaluate.load(GLUE_METRIC, task)
        if task == "stsb":
            out = metric.compute(predictions=[1.0, 3.0, 2.0, 4.0], references=[1.0, 2.0, 3.0, 4.0])
            assert out["pearson"] == pytest.approx(0.8) and out["spearmanr"] == pytest.approx(0.8)
        else:
            out = metric.compute(predictions=[1, 0, 0, 1, 1], references=[1, 1, 0, 0, 1])
            if task in ("mrpc", "qqp"):
                assert out == pytest.approx({"accuracy": 0.6, "f1": 2 / 3})
            elif task == "cola":
                # tp 2, tn 1, fp 1, fn 1: (2 - 1) / sqrt(3 * 3 * 2 * 2) = 1/6
                assert out["matthews_correlation"] == pytest.approx(1 / 6)
            else:
                assert out == pytest.approx({"accuracy": 0.6})
        assert set(out) == expected_keys.get(task, {"accuracy"}), task
    with pytest.raises(KeyError, match="Unknown GLUE task 'mnli-mm'"):
        evaluate.load(GLUE_METRIC, "mnli-mm")
