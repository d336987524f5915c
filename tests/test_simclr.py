"""SimCLR pre-training with pruning: NT-Xent terms, memory terms, EMP's SSL score, processes, resume, CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from launch import launch_two

from emp_hf import PruningConfig
from emp_hf.core import DataPruner
from emp_hf.core.contrastive import nt_xent_terms, view_distance
from emp_hf.vision.augment import VIEW_DRAWS, draw_view_params, simclr_view
from emp_hf.vision.data import load_digits_data
from emp_hf.vision.simclr import SimCLRArguments, SimCLRModel, contrastive_forward, pretrain_and_evaluate

ROOT = Path(__file__).resolve().parents[1]


def reference_nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's loss written out anchor by anchor, as in the paper's algorithm."""
    z = [F.normalize(v, dim=0) for v in torch.cat([z_a, z_b])]
    n = z_a.shape[0]
    sim = lambda u, v: float(torch.dot(u, v)) / tau  # noqa: E731

    def ell(i: int, j: int) -> float:
        denominator = sum(math.exp(sim(z[i], z[k])) for k in range(2 * n) if k != i)
        return -math.log(math.exp(sim(z[i], z[j])) / denominator)

    return torch.tensor([(ell(i, i + n) + ell(i + n, i)) / 2 for i in range(n)])


def test_nt_xent_terms_match_the_hand_written_loss():
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    for tau in (0.5, 0.1):
        assert torch.allclose(nt_xent_terms(z_a, z_b, tau), reference_nt_xent(z_a, z_b, tau), atol=1e-5)
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        nt_xent_terms(z_a, z_b, 0.0)
    with pytest.raises(ValueError, match="one shape"):
        nt_xent_terms(z_a, z_b[:3], 0.5)


def args_for(tmp_path, **kw) -> SimCLRArguments:
    base = dict(dataset="digits", model="resnet10", width=4, epochs=3, batch_size=32, eval="none",
                max_train_samples=192, output_dir=str(tmp_path), cpu=True, progress=False)
    return SimCLRArguments(**{**base, **kw})


@pytest.mark.parametrize("ssl_score", ["loss_f", "loss_g"])
def test_memory_and_contrastive_terms_against_one_example_at_a_time(ssl_score):
    """The batched forward pass against an independent computation: each view made alone, each image through
    the model alone (eval mode, so batch statistics play no part), NT-Xent by hand, the distance on f or g."""
    torch.manual_seed(0)
    data = load_digits_data()
    model = SimCLRModel("resnet10", 1, 4, 8).eval()
    args = args_for("/tmp", ssl_score=ssl_score)
    mean, std = data.channel_stats()
    images, draws = data.train_images[:5], draw_view_params(5, torch.Generator().manual_seed(1))
    with torch.no_grad():
        terms, distance = contrastive_forward(model, images, draws, args, mean, std)
        f, g = {}, {}
        for v in (0, 1):
            for i in range(5):
                view = simclr_view(images[i:i + 1], draws[i:i + 1, v], gray_p=args.grayscale_p)
                f[v, i], g[v, i] = (t[0] for t in model((view - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)))
    g_a, g_b = torch.stack([g[0, i] for i in range(5)]), torch.stack([g[1, i] for i in range(5)])
    assert torch.allclose(terms, reference_nt_xent(g_a, g_b, 0.5), atol=1e-4)
    source = f if ssl_score == "loss_f" else g
    expected = torch.tensor([float(torch.sqrt(((source[0, i] - source[1, i]) ** 2).sum())) for i in range(5)])
    assert torch.allclose(distance, expected, atol=1e-4)
    assert torch.allclose(view_distance(g_a, g_b), torch.linalg.norm(g_a - g_b, dim=1))


def test_emp_ssl_score_is_top_k_of_nt_xent_minus_beta_distance():
    """What the loop records (NT-Xent, -distance) makes EMP rank by NT-Xent_i - beta * d_i (METHODS.md)."""
    nt = torch.tensor([2.0, 2.1, 1.0, 3.0, 2.5, 0.5])
    d = torch.tensor([0.1, 0.3, 0.0, 0.5, 0.1, 0.05])
    pruner = DataPruner(6, 3, PruningConfig(method="emp", prune=0.5, beta=5.0, anneal=0.0), seed=0)
    pruner.set_epoch(0)
    pruner.update(torch.arange(6), nt, -d)
    pruner.set_epoch(1)
    by_hand = nt - 5.0 * d  # 1.5, 0.6, 1.0, 0.5, 2.0, 0.25 -> top 3: 4, 0, 2
    assert sorted(pruner.selection.indices.tolist()) == [0, 2, 4]
    assert set(torch.topk(by_hand, 3).indices.tolist()) == {0, 2, 4}
    # loss alone (InfoBatch, UCB, ...) would rank 3, 4, 1 first: the memory term changes the choice
    assert set(torch.topk(nt, 3).indices.tolist()) == {1, 3, 4}


def test_views_are_seeded_per_example_and_shape_preserving():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 12, 12), dtype=torch.uint8, generator=g)
    draws = draw_view_params(4, torch.Generator().manual_seed(5))
    assert draws.shape == (4, 2, VIEW_DRAWS)
    one = simclr_view(images, draws[:, 0], jitter=0.5)
    assert one.shape == (4, 3, 12, 12) and float(one.min()) >= 0 and float(one.max()) <= 1
    # an example's view depends on its own draws only, not on the rest of the batch
    assert torch.allclose(simclr_view(images[2:3], draws[2:3, 0], jitter=0.5), one[2:3], atol=1e-6)
    gray = simclr_view(images, draws[:, 0], gray_p=1.0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    # the identity crop (area 1, ratio 1, no flip) returns the image itself
    identity = torch.tensor([[1.0, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5, 0.5]])
    assert torch.allclose(simclr_view(images[:1], identity, gray_p=0.0), images[:1].float() / 255, atol=1e-5)


@pytest.mark.slow
def test_two_processes_gather_negatives_like_one_process_with_the_combined_batch(tmp_path):
    launch_two(ROOT / "tests" / "simclr_dist.py", tmp_path, "loss", launcher="torchrun")
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    a, b = z_a.clone().requires_grad_(), z_b.clone().requires_grad_()
    terms = nt_xent_terms(a, b, 0.5)
    terms.mean().backward()
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        rows = slice(rank * 4, rank * 4 + 4)
        assert torch.allclose(torch.tensor(got["terms"]), terms[rows].detach(), atol=1e-6)
        # each rank's gradient, averaged over ranks as DDP does, is the one-process gradient of its rows
        assert torch.allclose(torch.tensor(got["grad_a"]), a.grad[rows], atol=1e-6)
        assert torch.allclose(torch.tensor(got["grad_b"]), b.grad[rows], atol=1e-6)


@pytest.mark.parametrize("method", ["emp", "infobatch"])
@pytest.mark.slow
def test_two_processes_select_and_learn_the_same(tmp_path, method):
    launch_two(ROOT / "tests" / "simclr_dist.py", tmp_path, method)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == 2 and r0["per_epoch"] == r1["per_epoch"] and r0["store"] == r1["store"]
    assert r0["weights"] == r1["weights"]
    assert any(not e["full"] for e in r0["per_epoch"])
    assert min(r0["store"]["times_trained"]) >= 1  # every example trained at least in the full epochs


def test_resume_equals_uninterrupted(tmp_path):
    pargs = PruningConfig(method="emp", prune=0.5)
    whole = pretrain_and_evaluate(args_for(tmp_path / "a", epochs=4, save_every=1), pargs)
    pretrain_and_evaluate(args_for(tmp_path / "b", epochs=4, save_every=1), pargs)
    resumed = pretrain_and_evaluate(
        args_for(tmp_path / "b", epochs=4, resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-epoch1")), pargs)
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for name in ("loss", "entropy", "times_selected"):
        assert torch.equal(getattr(whole.pruner.store, name), getattr(resumed.pruner.store, name))
    assert [h["nt_xent"] for h in whole.history] == [h["nt_xent"] for h in resumed.history]
    with pytest.raises(ValueError, match="ssl_score: checkpoint 'loss_f', now 'loss_g'"):
        pretrain_and_evaluate(args_for(tmp_path / "b", epochs=4, ssl_score="loss_g", resume_from_checkpoint="latest"),
                              pargs)
    with pytest.raises(ValueError, match="prune: checkpoint 0.5, now 0.7"):
        pretrain_and_evaluate(args_for(tmp_path / "b", epochs=4, resume_from_checkpoint="latest"),
                              PruningConfig(method="emp", prune=0.7))


def test_pretrain_learns_features_a_linear_probe_can_use(tmp_path):
    """Digits, 10 classes: a linear probe on the pre-trained encoder beats one on the same encoder untrained."""
    kw = dict(width=8, batch_size=64, max_train_samples=None, eval="linear", eval_epochs=30, eval_batch_size=64)
    trained = pretrain_and_evaluate(args_for(tmp_path / "t", epochs=8, **kw), PruningConfig(method="emp", prune=0.7))
    untrained = pretrain_and_evaluate(args_for(tmp_path / "u", epochs=1, lr=1e-12, **kw),
                                      PruningConfig(method="full"))
    acc, base = trained.results["evaluation"]["test_acc"], untrained.results["evaluation"]["test_acc"]
    print(f"linear probe: pre-trained {acc:.4f}, untrained {base:.4f}")
    assert acc > base + 0.05, (acc, base)
    results = json.loads((tmp_path / "t" / "ssl_results.json").read_text())
    report = json.loads((tmp_path / "t" / "pruning_report.json").read_text())
    assert results["pretrain"]["forwarded_examples"] == report["forwarded_examples"] < 8 * 1437
    assert report["saved_fraction"] == results["pretrain"]["saved_fraction"] > 0.3
    assert (tmp_path / "t" / "pruning.png").is_file()


def test_finetune_evaluation_learns_the_labels(tmp_path):
    """Fine-tuning the pre-trained encoder with a head for 10 epochs on 192 digits: well above the 10% of chance
    (measured 43%)."""
    run = pretrain_and_evaluate(args_for(tmp_path, epochs=2, eval="finetune", eval_epochs=10),
                                PruningConfig(method="emp", prune=0.5))
    assert run.results["evaluation"]["mode"] == "finetune" and run.results["evaluation"]["test_acc"] > 0.25


@pytest.mark.slow
def test_script_runs_the_issue_command_shortened(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "scripts" / "simclr.py"), "--dataset", "digits", "--method", "emp",
           "--prune", "0.7", "--ssl_score", "loss_f", "--model", "resnet10", "--width", "4", "--epochs", "3",
           "--batch_size", "64", "--eval_epochs", "2", "--cpu", "--progress", "false", "--output_dir", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[emp-hf] simclr dataset=digits model=resnet10 method=emp prune=0.7 ssl_score=loss_f" in proc.stdout
    assert {"ssl_results.json", "pruning_report.json", "checkpoint-epoch2"} <= set(os.listdir(tmp_path))


def test_bad_input():
    with pytest.raises(ValueError, match="Unknown `ssl_score` 'loss_h'; allowed: loss_f, loss_g"):
        SimCLRArguments(ssl_score="loss_h")
    with pytest.raises(ValueError, match="Unknown `model` 'vgg16'; allowed: resnet10, resnet18"):
        SimCLRArguments(model="vgg16")
    with pytest.raises(ValueError, match="Unknown `eval` 'knn'; allowed: linear, finetune, none"):
        SimCLRArguments(eval="knn")
    with pytest.raises(ValueError, match="`temperature` must be a positive number"):
        SimCLRArguments(temperature=0)


@pytest.mark.slow
def test_sweep_is_resumable_and_renders_from_the_runs(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "scripts" / "simclr_sweep.py"), "--name", "tiny", "--runs_dir", str(tmp_path),
           "--results_dir", str(tmp_path), "--methods", "full", "emp", "--prunes", "0.5", "--ssl_scores", "loss_f", "loss_g", "--seeds", "0", "--",
           "--dataset", "digits", "--model", "resnet10", "--width", "4", "--epochs", "2", "--batch_size", "64",
           "--max_train_samples", "128", "--eval_epochs", "1", "--cpu"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and first.stdout.count("] run ") == 3, first.stdout + first.stderr
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.stdout.count("skip (complete)") == 3
    text = (tmp_path / "RESULTS.md").read_text()
    acc = 100 * json.loads((tmp_path / "tiny" / "emp-0.5-loss_g-seed0" / "ssl_results.json").read_text())[
        "evaluation"]["test_acc"]
    assert f"| 0.5 | emp | NT-Xent − β‖g_a − g_b‖ | 1 | {acc:.2f} |" in text
    assert "## tiny (SimCLR)" in text and "python scripts/simclr_sweep.py" in text
    assert (tmp_path / "tiny.jsonl").is_file()
