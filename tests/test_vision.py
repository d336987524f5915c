"""The vision loop on CPU: tiny ResNets on synthetic images and on digits."""

import gzip
import json
import math
import os
from pathlib import Path

import pytest
import torch
from launch import launch_two

from emp_hf import PruningConfig
from emp_hf.core.epoch_plan import EpochPlan
from emp_hf.vision import ImageData, VisionArguments, apply_variants, build_model, load_image_data, train
from emp_hf.vision.augment import random_crop_flip
from emp_hf.vision.data import IMBALANCE_KEEP
from emp_hf.vision.optim import build_optimizer, build_schedule

ROOT = Path(__file__).resolve().parents[1]


def synthetic(n=96, classes=4, size=8, seed=0) -> ImageData:
    """Images whose class is a bright quadrant: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 60, (n, 3, size, size), generator=g, dtype=torch.uint8)
    half = size // 2
    for c in range(classes):
        r, q = divmod(c, 2)
        images[labels == c, :, r * half:(r + 1) * half, q * half:(q + 1) * half] += 150
    return ImageData(images, labels, images[:32].clone(), labels[:32].clone(), classes, "synthetic")


def args(tmp_path, **kw):
    base = dict(dataset="digits", model="resnet10", width=4, epochs=4, batch_size=16, optimizer="adam",
                output_dir=str(tmp_path), cpu=True, progress=False)
    base.update(kw)
    return VisionArguments(**base)


@pytest.mark.parametrize("method", ["emp", "infobatch", "ucb", "elfl"])
def test_each_epoch_trains_its_planned_examples(tmp_path, method):
    result = train(args(tmp_path, epochs=5), PruningConfig(method=method, prune=0.5), data=synthetic())
    report = json.loads((tmp_path / "pruning_report.json").read_text())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["examples"] for e in metrics["epochs"]] == [r["forwarded"] for r in report["per_epoch"]]
    assert [r["forwarded"] for r in report["per_epoch"]] == [r["kept"] for r in report["per_epoch"]]
    if method != "infobatch":
        assert [r["kept"] for r in report["per_epoch"]] == result.pruner.plan()
    full = sum(result.pruner.schedule.is_full(e) for e in range(5))
    # every selected example was trained in its epoch, and no other
    assert torch.equal(result.pruner.store.times_trained, result.pruner.store.times_selected + full)
    assert set(metrics["epochs"][0]) >= {"train_loss", "train_acc", "test_acc", "epoch_time_s"}


@pytest.mark.slow
def test_learns_digits_and_writes_outputs(tmp_path):
    final = train(args(tmp_path, epochs=5, width=8, batch_size=32), PruningConfig(method="emp", prune=0.3)).final
    assert final["test_acc"] > 0.6  # 10 classes: chance is 0.1
    assert (tmp_path / "checkpoint-epoch4" / "state.pt").is_file()
    pytest.importorskip("matplotlib")
    assert (tmp_path / "pruning.png").stat().st_size > 1000


@pytest.mark.parametrize("method", ["emp", "infobatch"])
def test_resume_equals_uninterrupted(tmp_path, method):
    cfg = PruningConfig(method=method, prune=0.5, anneal=0.25)
    full = train(args(tmp_path / "a", save_every=1), cfg, data=synthetic())
    resumed = train(args(tmp_path / "b", resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-epoch1")), cfg,
                    data=synthetic())
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for field in ("loss", "entropy", "times_trained", "times_selected"):
        assert torch.equal(getattr(full.pruner.store, field), getattr(resumed.pruner.store, field))
    assert [h["test_acc"] for h in full.history] == [h["test_acc"] for h in resumed.history]
    assert [h["lr"] for h in full.history] == [h["lr"] for h in resumed.history]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["emp", "infobatch"])
def test_two_processes_select_the_same_subset(tmp_path, method):
    launch_two(ROOT / "tests" / "vision_dist.py", tmp_path, method)
    a, b = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert a["world"] == 2 and a["per_epoch"] == b["per_epoch"] and a["store"] == b["store"]
    assert a["weights"] == b["weights"]
    trained, selected = torch.tensor(a["store"]["times_trained"]), torch.tensor(a["store"]["times_selected"])
    assert torch.equal(trained, selected + a["full_epochs"])  # each selected example trained by some rank, once


def test_schedule_horizon_is_the_pruned_plan():
    plan = EpochPlan([10, 3, 3, 10], [10, 3, 3, 10])
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer("lars", model.parameters(), lr=5.2, momentum=0.9, weight_decay=5e-4)
    sched = build_schedule("onecycle", opt, plan, epochs=4)
    lrs = []
    for _ in range(plan.total):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(5.2, rel=1e-3)
    assert sched.get_last_lr()[0] == pytest.approx(5.2 / 25 / 1e4)  # OneCycle's end, at the pruned total
    opt = build_optimizer("sgd", model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = build_schedule("step", opt, EpochPlan([5] * 10, [5] * 10), epochs=10)  # decay at epochs 3, 6, 8
    lrs = []
    for _ in range(50):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[14] == pytest.approx(0.1) and lrs[15] == pytest.approx(0.02) and lrs[40] == pytest.approx(0.0008)


def test_variants_are_exact_and_reproducible():
    data = synthetic(n=400, classes=10)
    imb, _ = apply_variants(data, imbalance=True, seed=1)
    counts = torch.bincount(imb.train_labels, minlength=10)
    assert counts.tolist() == [round(IMBALANCE_KEEP[c] * 40) for c in range(10)]
    per, _ = apply_variants(data, per_class=7, seed=1)
    assert torch.bincount(per.train_labels).tolist() == [7] * 10
    noisy_a, changed = apply_variants(data, label_noise=0.2, seed=3)
    noisy_b, _ = apply_variants(data, label_noise=0.2, seed=3)
    assert torch.equal(noisy_a.train_labels, noisy_b.train_labels)
    differs = noisy_a.train_labels != data.train_labels
    assert torch.equal(differs, changed) and 0 < int(differs.sum()) <= 80  # 80 replaced, ~1/10 kept their label


def test_augmentation_is_seeded_and_shape_preserving():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    a = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    b = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert a.shape == x.shape and torch.equal(a, b)
    assert torch.equal(random_crop_flip(x, torch.Generator().manual_seed(0), pad=0, flip=False), x)


@pytest.mark.parametrize("name,channels", [("resnet10", 3), ("resnet18", 1), ("resnet34", 3), ("resnet50", 3),
                                           ("vgg16", 1)])
def test_models_build_for_the_data(name, channels):
    model = build_model(name, num_classes=7, in_channels=channels, width=4)
    assert model(torch.randn(2, channels, 28, 28)).shape == (2, 7)


def test_fashion_mnist_idx_reader(tmp_path):
    def idx(path, array, dims):
        header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
        with gzip.open(path, "wb") as f:
            f.write(header + bytes(array))

    idx(tmp_path / "train-images-idx3-ubyte.gz", range(2 * 4), [2, 2, 2])
    idx(tmp_path / "train-labels-idx1-ubyte.gz", [3, 1], [2])
    idx(tmp_path / "t10k-images-idx3-ubyte.gz", [9] * 4, [1, 2, 2])
    idx(tmp_path / "t10k-labels-idx1-ubyte.gz", [0], [1])
    data = load_image_data("fashion_mnist", tmp_path)
    assert data.train_images.shape == (2, 1, 2, 2) and data.train_images[1, 0, 1, 1] == 7
    assert data.train_labels.tolist() == [3, 1] and data.test_images.shape == (1, 1, 2, 2)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="known datasets: cifar10, cifar100, fashion_mnist, digits"):
        VisionArguments(dataset="mnist")
    with pytest.raises(ValueError, match="known models: resnet10, resnet18"):
        VisionArguments(model="resnet20")
    with pytest.raises(ValueError, match="known methods"):
        PruningConfig(method="forgetting")
    with pytest.raises(ValueError, match=r"`label_noise` must be in \[0, 1\)"):
        VisionArguments(label_noise=1.0)
    with pytest.raises(ValueError, match="lacks train-images-idx3-ubyte"):
        load_image_data("fashion_mnist", tmp_path)
    with pytest.raises(ValueError, match="lacks the cifar10 python-pickle files"):
        load_image_data("cifar10", tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        load_image_data("cifar10", tmp_path / "absent")
    with pytest.raises(ValueError, match="known optimizers"):
        VisionArguments(optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"`max_train_samples` must be >= 1"):
        VisionArguments(max_train_samples=0)
    with pytest.raises(ValueError, match=r"`per_class` must be >= 1"):
        VisionArguments(per_class=0)
    with pytest.raises(ValueError, match=r"`momentum` must be in \[0, 1\)"):
        VisionArguments(momentum=1.0)
    with pytest.raises(ValueError, match="`weight_decay` must be a finite number >= 0"):
        VisionArguments(weight_decay=-1e-4)


def test_bf16_mixed_precision_through_accelerate(tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    AcceleratorState._reset_state(reset_partial_state=True)  # a process-wide singleton: earlier tests set "no"
    try:
        result = train(args(tmp_path, epochs=2), PruningConfig(method="emp", prune=0.5), data=synthetic())
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert result.pruner.store.loss.dtype == torch.float32 and bool(result.pruner.store.seen.all())
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert json.loads((tmp_path / "pruning_report.json").read_text())["mixed_precision"] == "bf16"


def test_budget_matched_full_data_baseline(tmp_path):
    """--budget_examples: all data, the last epoch cut so that exactly the budget is forwarded (batch-rounded),
    the schedule over exactly those steps; refused with a pruning method."""
    run = train(args(tmp_path, epochs=8), PruningConfig(method="full", budget_examples=700), data=synthetic())
    report = json.loads((tmp_path / "pruning_report.json").read_text())
    n = run.pruner.num_examples
    assert report["epochs_run"] == math.ceil(700 / n)
    assert report["forwarded_examples"] == 700  # the last epoch is cut to the budget exactly (the core's plan)
    assert [h["examples"] for h in run.history] == [n] * (report["epochs_run"] - 1) + [700 - 7 * n]
    assert report["optimizer_steps"] == 7 * 6 + 2  # 96 images in 6 batches of 16; 28 left -> 2 batches
    # saved against the --epochs (8) full-data run it stands in for
    assert report["full_data_examples"] == 8 * n and report["saved_fraction"] == pytest.approx(1 - 700 / (8 * n))
    with pytest.raises(ValueError, match="use it with method 'full', not 'emp'"):
        PruningConfig(method="emp", budget_examples=700)


def test_budget_run_takes_the_matched_runs_lr_at_every_step(tmp_path, monkeypatch):
    """With the matched run's epochs (--budget_schedule_examples) the budget run's step schedule decays where the
    pruned run's does, though it trains on fewer, full epochs: only the data differ. Without them the milestones
    fall on its own epochs (what the first recorded Fashion-MNIST baselines did)."""
    seen: list[float] = []
    step = torch.optim.SGD.step

    def recording_step(self, *a, **kw):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    sgd = dict(optimizer="sgd", schedule="step", lr=0.1)
    pruned = train(args(tmp_path / "emp", **sgd), PruningConfig(method="emp", prune=0.5), data=synthetic())
    pruned_lrs, seen[:] = list(seen), []
    counts = [e["examples"] for e in pruned.history]
    assert counts == [96, 48, 48, 96]  # 6 + 3 + 3 + 6 steps: decays after steps 6, 9 and 12
    assert pruned_lrs == pytest.approx([0.1] * 6 + [0.02] * 3 + [0.004] * 3 + [0.0008] * 6)
    train(args(tmp_path / "budget", budget_schedule_examples=counts, **sgd),
          PruningConfig(method="full", budget_examples=288), data=synthetic())
    assert seen == pytest.approx(pruned_lrs)  # 3 full epochs of 6 steps, the pruned run's LR at each
    report = json.loads((tmp_path / "budget" / "pruning_report.json").read_text())
    assert report["epochs_run"] == 3 and report["schedule_steps"] == 18 and report["forwarded_examples"] == 288
    seen[:] = []
    train(args(tmp_path / "own", **sgd), PruningConfig(method="full", budget_examples=288), data=synthetic())
    assert seen != pytest.approx(pruned_lrs)  # milestones round(0.9, 1.8, 2.4) = epochs 1, 2, 2 of 3
    seen[:] = []
    train(args(tmp_path / "planned", optimizer="sgd", schedule="linear", lr=0.1),
          PruningConfig(method="full", budget_examples=288), data=synthetic())
    assert seen == pytest.approx([0.1 * (1 - s / 18) for s in range(18)])  # planned for the budget: linear to 0
    with pytest.raises(ValueError, match="give --method full --budget_examples 288"):
        train(args(tmp_path / "x", budget_schedule_examples=counts), PruningConfig(method="full"), data=synthetic())
    with pytest.raises(ValueError, match=r"one count >= 1 per epoch \(--epochs 4\)"):
        VisionArguments(epochs=4, budget_schedule_examples=[96, 48, 48])


@pytest.mark.slow
def test_vision_sweep_seeds_budget_match_and_table(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, str(ROOT / "scripts" / "vision_sweep.py"), "--name", "t", "--runs_dir", str(tmp_path),
           "--results_dir", str(tmp_path),
           "--methods", "emp", "--prunes", "0.5", "--seeds", "0", "1", "--budget_match", "emp", "--",
           "--dataset", "digits", "--model", "resnet10", "--width", "4", "--epochs", "4", "--batch_size", "64",
           "--optimizer", "adam", "--lr", "0.001", "--max_train_samples", "200", "--cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stdout.count("] run ") == 4, proc.stdout + proc.stderr
    emp = json.loads((tmp_path / "t" / "emp-0.5-seed1" / "pruning_report.json").read_text())
    budget = json.loads((tmp_path / "t" / "budget_emp-0.5-seed1" / "pruning_report.json").read_text())
    assert budget["budget_examples"] == emp["forwarded_examples"] == 600  # 200 + 100 + 100 + 200
    budget_args = json.loads((tmp_path / "t" / "budget_emp-0.5-seed1" / "metrics.json").read_text())["arguments"]
    assert budget_args["budget_schedule_examples"] == [200, 100, 100, 200]  # the emp run's epochs, for its LR
    accs = [100 * json.loads((tmp_path / "t" / f"emp-0.5-seed{s}" / "metrics.json").read_text())["final"]["test_acc"]
            for s in (0, 1)]
    text = (tmp_path / "RESULTS.md").read_text()
    assert f"| 0 | 0.5 | emp | 2 | {sum(accs) / 2:.2f} ± " in text and "| 0 | 0.5 | budget_emp | 2 |" in text
    assert (tmp_path / "t" / "accuracy_vs_forwarded.png").is_file()
    assert (tmp_path / "t.jsonl").is_file()  # the condensed study the table can be rebuilt from
    budget_accs = [100 * json.loads((tmp_path / "t" / f"budget_emp-0.5-seed{s}" / "metrics.json").read_text())
                   ["final"]["test_acc"] for s in (0, 1)]
    paired = (accs[0] - budget_accs[0] + accs[1] - budget_accs[1]) / 2
    assert f"| 0 | 0.5 | emp − budget_emp | 2 | {paired:.2f} ± " in text
    # --budget_schedule own: the same budget on the run's own epochs and schedule, a row and a pair of its own
    proc = subprocess.run(cmd[:cmd.index("--")] + ["--budget_schedule", "own"] + cmd[cmd.index("--"):],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stdout.count("] run budget_emp+own-0.5-seed") == 2, proc.stdout + proc.stderr
    own = json.loads((tmp_path / "t" / "budget_emp+own-0.5-seed0" / "metrics.json").read_text())
    assert own["pruning"]["budget_examples"] == 600 and own["arguments"]["budget_schedule_examples"] is None
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| 0 | 0.5 | budget_emp [own LR schedule] | 2 |" in text
    assert "| 0 | 0.5 | emp − budget_emp [own LR schedule] | 2 |" in text
    # --budget_schedule planned: a schedule planned for the budget (linear decay to 0 over its steps)
    proc = subprocess.run(cmd[:cmd.index("--")] + ["--budget_schedule", "planned"] + cmd[cmd.index("--"):],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stdout.count("] run budget_emp+planned-0.5-seed") == 2, proc.stdout
    planned = json.loads((tmp_path / "t" / "budget_emp+planned-0.5-seed0" / "metrics.json").read_text())
    assert planned["arguments"]["schedule"] == "linear" and planned["pruning"]["budget_examples"] == 600
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| 0 | 0.5 | emp − budget_emp [planned: linear to 0] | 2 |" in text


@pytest.mark.slow
def test_vision_sweep_variants_name_runs_and_rows(tmp_path):
    """An ablation is the same job with extra flags; its label names the folder and the table's row."""
    import subprocess
    import sys

    cmd = [sys.executable, str(ROOT / "scripts" / "vision_sweep.py"), "--name", "v", "--runs_dir", str(tmp_path),
           "--results_dir", str(tmp_path),
           "--methods", "emp", "--prunes", "0.5", "--variants", "noanneal:--anneal 0", "--",
           "--dataset", "digits", "--model", "resnet10", "--width", "4", "--epochs", "4", "--batch_size", "64",
           "--optimizer", "adam", "--lr", "0.001", "--max_train_samples", "200", "--cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stdout.count("] run ") == 1, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "v" / "emp+noanneal-0.5" / "pruning_report.json").read_text())
    assert report["forwarded_examples"] == 500  # 200 + 100 + 100 + 100: the last epoch is pruned too
    assert "| 0 | 0.5 | emp [noanneal] | 1 |" in (tmp_path / "RESULTS.md").read_text()
    bad = subprocess.run([*cmd[:2], "--name", "w", "--runs_dir", str(tmp_path), "--results_dir", str(tmp_path),
                          "--variants", "no anneal:--anneal 0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--variants labels" in bad.stderr and not (tmp_path / "w").exists()


def test_a_last_batch_of_one_example_joins_the_one_before():
    """BatchNorm cannot train on one example, and InfoBatch's epoch sizes leave one at random: no batch of one,
    no example dropped, at any share."""
    from emp_hf.core.epoch_plan import sharded_batches
    from emp_hf.vision.loop import batch_of

    for batch_size in (1, 2, 5):
        for share in range(0, 23):
            order = torch.arange(share)
            steps = sharded_batches(share, 1, batch_size)
            batches = [batch_of(order, b, steps, batch_size) for b in range(steps)]
            assert torch.equal(torch.cat(batches) if batches else order, order), (share, batch_size)
            assert all(len(x) >= min(2, share, batch_size) for x in batches), (share, batch_size)
            assert all(len(x) <= batch_size + 1 for x in batches)
