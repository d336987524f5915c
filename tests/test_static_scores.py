"""Static scores: each definition on a hand-made case, the file format, the direction, and the cost counted."""

from __future__ import annotations

import math

import pytest
import torch

from emp_hf import PruningConfig
from emp_hf.core import DataPruner
from emp_hf.core.static import (
    ForgettingCounter,
    el2n,
    entropy,
    grand,
    herding_rank,
    k_center_greedy_rank,
    least_confidence,
    load_static_file,
    margin,
    save_static_scores,
)

P = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
Y = torch.tensor([0, 2])


def test_probability_scores_by_hand():
    assert torch.allclose(el2n(P, Y), torch.tensor([math.sqrt(0.09 + 0.04 + 0.01), math.sqrt(0.16 + 0.1225 + 0.5625)]))
    assert torch.allclose(least_confidence(P), torch.tensor([0.3, 0.6]))
    assert torch.allclose(margin(P), torch.tensor([0.5, 0.05]))
    h = [-sum(p * math.log(p) for p in row) for row in P.tolist()]
    assert torch.allclose(entropy(P), torch.tensor(h))


def test_forgetting_counts_learned_to_forgotten_transitions():
    counter = ForgettingCounter(3)
    history = [  # presentations of examples 0, 1, 2: 1 = classified correctly
        [1, 1, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0],
    ]
    for row in history:
        counter.update(torch.arange(3), torch.tensor(row, dtype=torch.bool))
    # 0: right, wrong, right, wrong = 2 events; 1: never forgotten; 2: never learned -> 4 presentations + 1
    assert counter.scores().tolist() == [2.0, 0.0, 5.0]


def test_grand_equals_per_example_autograd():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    x, y = torch.randn(7, 4), torch.randint(0, 3, (7,))
    expected = []
    for i in range(7):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x[i:i + 1]), y[i:i + 1]).backward()
        expected.append(math.sqrt(sum(float((p.grad ** 2).sum()) for p in net.parameters())))
    assert torch.allclose(grand(net, x, y, chunk=3), torch.tensor(expected), atol=1e-5)


def brute_k_center(x: torch.Tensor, first: int) -> list[int]:
    picked = [first]
    while len(picked) < len(x):
        rest = [i for i in range(len(x)) if i not in picked]
        picked.append(max(rest, key=lambda i: min(float(((x[i] - x[j]) ** 2).sum()) for j in picked)))
    return picked


def brute_herding(x: torch.Tensor) -> list[int]:
    target, picked = x.mean(0), []
    while len(picked) < len(x):
        rest = [i for i in range(len(x)) if i not in picked]
        picked.append(min(rest, key=lambda i: float(torch.linalg.norm(target - x[picked + [i]].mean(0)))))
    return picked


def test_k_center_and_herding_ranks_follow_the_greedy_order():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 1.0], [5.0, 5.0], [0.5, 0.2]])
    g = torch.Generator().manual_seed(3)
    first = int(torch.randint(6, (1,), generator=torch.Generator().manual_seed(3)))
    rank = k_center_greedy_rank(x, g)
    assert torch.argsort(rank, descending=True).tolist() == brute_k_center(x, first)
    assert torch.argsort(herding_rank(x), descending=True).tolist() == brute_herding(x)


def test_file_direction_flip_and_cost_in_the_report(tmp_path):
    scores = torch.tensor([0.9, 0.1, 0.5, 0.3])
    path = tmp_path / "margin.pt"
    save_static_scores(path, scores, "margin", {"scoring_forwarded_examples": 10, "scoring_wall_time_s": 1.5})
    assert load_static_file(path)["keep"] == "low"

    def kept(**kw):
        p = DataPruner(4, 2, PruningConfig(method="static", prune=0.5, static_scores_file=str(path), **kw))
        p.set_epoch(1)
        return sorted(p.selection.indices.tolist()), p

    low, pruner = kept()
    assert low == [1, 3]  # margin: the smallest margins are kept
    assert kept(static_flip=True)[0] == [0, 2]
    pruner.update(pruner.selection.indices, torch.zeros(2))
    report = pruner.summary()
    assert report["scoring_forwarded_examples"] == 10 and report["scoring_wall_time_s"] == 1.5
    # epochs: 4 (full) + 2 forwarded... only epoch 1 was set here: forwarded 2 of 8, scoring 10 -> -0.5 saved
    assert report["saved_fraction_including_scoring"] == pytest.approx(1 - (2 + 10) / 4)
    assert report["scoring_cost_exceeds_saving"] is True
    assert report["static_scores"]["score"] == "margin"
    with pytest.raises(ValueError, match="known scores: el2n, grand"):
        save_static_scores(path, scores, "el3n", {})
    with pytest.raises(ValueError, match="NaN or inf"):
        save_static_scores(path, torch.tensor([1.0, float("nan")]), "el2n", {})
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not one written by scripts/static_scores.py"):
        DataPruner(4, 2, PruningConfig(method="static", prune=0.5, static_scores_file=str(tmp_path / "other.pt")))


def test_vision_scores_feed_a_static_run_and_its_cost_is_reported(tmp_path):
    from emp_hf.vision import VisionArguments, train
    from emp_hf.vision.static_scoring import StaticScoreArguments, compute_static_scores

    vargs = dict(dataset="digits", model="resnet10", width=4, batch_size=64, optimizer="adam", lr=1e-3,
                 max_train_samples=200, cpu=True, progress=False)
    sargs = StaticScoreArguments(scores=["el2n", "grand", "forgetting", "margin", "kcenter", "herding"],
                                 score_epochs=1, score_seeds=2, scores_dir=str(tmp_path / "scores"))
    paths = compute_static_scores(sargs, VisionArguments(output_dir=str(tmp_path / "unused"), **vargs))
    for name, path in paths.items():
        meta = load_static_file(path)
        assert meta["scores"].shape == (200,) and bool(torch.isfinite(meta["scores"]).all()), name
        # 2 seeds x (1 training epoch + 1 scoring pass + 1 GraNd pass) x 200 examples
        assert meta["scoring_forwarded_examples"] == 2 * 3 * 200 and meta["scoring_wall_time_s"] > 0
    result = train(VisionArguments(epochs=3, output_dir=str(tmp_path / "run"), **vargs),
                   PruningConfig(method="static", prune=0.5, static_scores_file=paths["el2n"]))
    el2n_scores = load_static_file(paths["el2n"])["scores"]
    assert sorted(result.pruner.selection.indices.tolist()) != []
    top = set(torch.topk(el2n_scores, 100).indices.tolist())
    assert set(result.pruner._pruned.indices.tolist()) == top  # keep the hardest (highest EL2N)
    assert result.final["scoring_forwarded_examples"] == 1200
    assert result.final["scoring_cost_exceeds_saving"] is True  # 1,200 spent to save 200


def test_glue_scores_feed_a_static_trainer_run_and_its_cost_is_reported(tmp_path, monkeypatch):
    import json
    import runpy
    import sys
    from pathlib import Path

    from glue_fixtures import write_tiny_model

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    data = tmp_path / "data" / "sst2"
    data.mkdir(parents=True)
    rows = [{"sentence": f"text {i} {'good' if i % 2 else 'bad'}", "label": i % 2, "idx": i} for i in range(24)]
    for split in ("train", "validation"):
        (data / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    model = write_tiny_model(tmp_path / "model", [r["sentence"] for r in rows], num_labels=2)
    common = ["--task", "sst2", "--data_dir", str(tmp_path / "data"), "--model_name_or_path", str(model),
              "--per_device_train_batch_size", "8", "--use_cpu"]
    monkeypatch.setattr(sys, "argv", [str(scripts / "static_scores.py"), "--front_end", "glue", "--scores", "el2n",
                                      "grand", "forgetting", "herding", "--score_epochs", "1",
                                      "--scores_dir", str(tmp_path / "scores"), *common])
    runpy.run_path(str(scripts / "static_scores.py"), run_name="__main__")
    meta = load_static_file(tmp_path / "scores" / "el2n.pt")
    assert meta["scores"].shape == (24,) and meta["grand_parameters"] == "head"
    assert meta["scoring_forwarded_examples"] == 3 * 24  # one training epoch, the scoring pass, GraNd's pass
    assert load_static_file(tmp_path / "scores" / "herding.pt")["scores"].sort().values.tolist() == list(
        range(1, 25))

    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", [str(scripts / "glue.py"), "--method", "static", "--prune", "0.5",
                                      "--static_scores_file", str(tmp_path / "scores" / "el2n.pt"),
                                      "--num_train_epochs", "2", "--eval_strategy", "no", "--save_strategy", "no",
                                      "--output_dir", str(out), *common])
    runpy.run_path(str(scripts / "glue.py"), run_name="__main__")
    report = json.loads((out / "pruning_report.json").read_text())
    assert report["forwarded_examples"] == 24 + 12
    assert report["scoring_forwarded_examples"] == 72 and report["scoring_cost_exceeds_saving"] is True
    assert report["saved_fraction_including_scoring"] == pytest.approx(1 - (36 + 72) / 48)
    assert report["static_scores"]["score"] == "el2n"
