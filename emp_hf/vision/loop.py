"""The vision front end: an Accelerate training loop on the pruning core, readable top to bottom.

Data lives on the device as uint8 tensors; each step gathers its batch by
index and augments it with tensor ops. The core's sampler gives every rank its
share of the same global order (`num_replicas`/`rank` mode, padded so all ranks
step together). Per-example loss and entropy are kept on the device during the
epoch and applied to the score store once at its end, gathered from all ranks:
one host sync per epoch, and the selection (made at the next epoch's start)
sees exactly the same scores. Padding repeats within an epoch count once.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from ..core import DataPruner, PruningConfig, PruningSampler, ScoreBuffer, classification_scores, save_json
from ..core.epoch_plan import EpochPlan, sharded_batches
from ..core.fingerprint import tensors_fingerprint
from ..core.policies import seeded_generator
from ..core.run_lock import RunLock
from ..core.state_file import DamagedStateError, load_state_file, newest_complete, require, save_state_file
from ..plots import PLOT_FILE, plot_run
from .augment import normalise, random_crop_flip
from .data import AUGMENTATION, DATASETS, apply_variants, load_image_data
from .engine import StepTerms, batch_of, log_plan, plan_of, pruned_epochs  # noqa: F401 - batch_of: re-exported
from .models import MODELS, build_model
from .optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_schedule

_AUGMENT_STREAM = 0xA06


@dataclass
class VisionArguments:
    dataset: str = field(default="cifar10", metadata={"help": f"One of {', '.join(DATASETS)}."})
    model: str = field(default="resnet18", metadata={"help": f"One of {', '.join(MODELS)}."})
    width: int = field(default=64, metadata={"help": "Channels of the first stage (64 in the papers)."})
    epochs: int = field(default=200, metadata={"help": "Training epochs."})
    batch_size: int = field(default=128, metadata={"help": "Batch size per process."})
    lr: float | None = field(default=None, metadata={"help": "Peak LR; default 0.1 (sgd), 5.2 (lars), 1e-3 (adam)."})
    optimizer: str = field(default="sgd", metadata={"help": f"One of {', '.join(OPTIMIZERS)}."})
    schedule: str | None = field(
        default=None, metadata={"help": f"One of {', '.join(SCHEDULES)}; default step (sgd), onecycle (lars)."})
    momentum: float = field(default=0.9, metadata={"help": "Momentum (Nesterov for sgd)."})
    weight_decay: float = field(default=5e-4, metadata={"help": "Weight decay."})
    seed: int = field(default=0, metadata={"help": "Seed of model init, variants, augmentation and pruning."})
    output_dir: str = field(default="output/vision", metadata={"help": "Where metrics, report and checkpoints go."})
    data_dir: str | None = field(default=None, metadata={"help": "Local data folder (CIFAR pickles, IDX files)."})
    imbalance: bool = field(default=False, metadata={"help": "Class-imbalanced CIFAR-10 keep rates (docs/methods.md)."})
    per_class: int | None = field(default=None, metadata={"help": "Keep at most N training images per class."})
    label_noise: float = field(default=0.0, metadata={"help": "Fraction of training labels replaced at random."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Random subset of the training set."})
    augment: bool = field(default=True, metadata={"help": "Pad-4 random crop and horizontal flip."})
    eval_batch_size: int = field(default=512, metadata={"help": "Evaluation batch size per process."})
    save_every: int = field(default=0, metadata={"help": "Checkpoint every N epochs (0: only at the end)."})
    budget_schedule_examples: list[int] | None = field(
        default=None,
        metadata={"help": "With --budget_examples: the examples of each epoch of the pruned run it matches (one "
                          "count per --epochs; they sum to the budget). The LR schedule is then laid over that run's "
                          "steps, so both runs have the same LR at every step and differ only in their data. "
                          "Without it a step schedule's epoch milestones fall on the budget run's own, fewer, "
                          "epochs, and its LR phases differ from the pruned run's (scripts/vision_sweep.py passes "
                          "it)."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "A checkpoint folder, or 'latest'."})
    cpu: bool = field(default=False, metadata={"help": "Train on the CPU even if a GPU is present."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    channels_last: bool = field(default=False, metadata={"help": "NHWC memory layout (faster convolutions on GPUs)."})

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"Unknown `dataset` {self.dataset!r}; known datasets: {', '.join(DATASETS)}.")
        if self.model not in MODELS:
            raise ValueError(f"Unknown `model` {self.model!r}; known models: {', '.join(MODELS)}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown `optimizer` {self.optimizer!r}; known optimizers: {', '.join(OPTIMIZERS)}.")
        if self.schedule is None:
            self.schedule = {"sgd": "step", "lars": "onecycle", "adam": "constant"}[self.optimizer]
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown `schedule` {self.schedule!r}; known schedules: {', '.join(SCHEDULES)}.")
        if self.lr is None:
            self.lr = {"sgd": 0.1, "lars": 5.2, "adam": 1e-3}[self.optimizer]
        for name in ("epochs", "batch_size", "eval_batch_size", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"`lr` must be a positive number, got {self.lr}.")
        for name in ("max_train_samples", "per_class"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be >= 1 (or unset), got {value}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), got {self.momentum}.")
        if not (self.weight_decay >= 0.0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"`weight_decay` must be a finite number >= 0, got {self.weight_decay}.")
        if not 0.0 <= self.label_noise < 1.0:
            raise ValueError(f"`label_noise` must be in [0, 1), got {self.label_noise}.")
        if self.save_every < 0:
            raise ValueError(f"`save_every` must be >= 0, got {self.save_every}.")
        if self.budget_schedule_examples is not None:
            counts = self.budget_schedule_examples
            if len(counts) != self.epochs or min(counts) < 1:
                raise ValueError(f"`budget_schedule_examples` must hold one count >= 1 per epoch (--epochs "
                                 f"{self.epochs}); got {counts}. Take them from the matched run's "
                                 "pruning_report.json (per_epoch[i].forwarded).")


#: A static run's scoring cost, carried from the report into metrics.json's `final` (docs/static_scores.md).
SCORING_COST_KEYS = ("scoring_forwarded_examples", "scoring_wall_time_s", "saved_fraction_including_scoring",
                     "scoring_cost_exceeds_saving")
STATE_KEYS = ("model", "optimizer", "scheduler", "pruner", "history", "epoch")


def _read_state(folder: Path) -> dict[str, Any]:
    path = folder / "state.pt"
    state = load_state_file(path)
    require(state, path, *STATE_KEYS)
    return state


def _complete_checkpoint(folder: Path) -> dict[str, Any]:
    """A vision checkpoint's state, checked to hold every field and its folder's own epoch (`DamagedStateError`
    if not): what `latest` may resume from."""
    state = _read_state(folder)
    if folder.name != f"checkpoint-epoch{state['epoch']}":
        raise DamagedStateError(f"its state is for epoch {state['epoch']}")
    return state


def resume_run(resume: str | None, output_dir: str, pruner, model, optimizer, scheduler,
               accelerator: Accelerator) -> tuple[list[dict[str, Any]], int]:
    """Restore a checkpoint (a folder, or 'latest': the newest complete one in `output_dir`) into the run's
    objects; returns the history so far and the epoch to start at ([] and 0 without `resume`). The pruning
    state goes first, so that a checkpoint made for another plan is refused by name before anything changes."""
    if not resume:
        return [], 0
    if resume == "latest":
        found = newest_complete(output_dir, "checkpoint-epoch", _complete_checkpoint)  # read once, here
        if found is None:
            raise ValueError(f"--resume_from_checkpoint latest: no complete checkpoint in {output_dir!r}. "
                             "Drop the flag to start a new run.")
        resume, state = str(found[0]), found[1]
    else:
        state = _read_state(Path(resume))
    pruner.load_state_dict(state["pruner"], source=os.path.join(resume, "state.pt"))
    accelerator.unwrap_model(model).load_state_dict(state["model"])
    if state["optimizer"] is None or state["scheduler"] is None:  # a finished run's last checkpoint
        if state["epoch"] + 1 < len(pruner.plan()):
            raise DamagedStateError(f"{os.path.join(resume, 'state.pt')} holds no optimizer state, but epoch "
                                    f"{state['epoch']} is not the plan's last: it cannot be resumed.")
        return state["history"], state["epoch"] + 1
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["history"], state["epoch"] + 1


@dataclass
class TrainResult:
    final: dict[str, Any]
    history: list[dict[str, Any]]
    pruner: DataPruner
    model: torch.nn.Module


def train(vargs: VisionArguments, pargs: PruningConfig, data=None) -> TrainResult:
    """Train and evaluate. `data` (an ImageData) replaces loading `vargs.dataset` (tests, custom data)."""
    accelerator = Accelerator(cpu=vargs.cpu)
    device, world, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    main = accelerator.is_main_process
    os.makedirs(vargs.output_dir, exist_ok=True)
    if main:
        RunLock(vargs.output_dir).acquire()  # one run per output folder (released at exit)

    # ---- data: whole set on the device, variants by seed
    raw = data if data is not None else load_image_data(vargs.dataset, vargs.data_dir, seed=vargs.seed)
    data, noisy = apply_variants(raw, imbalance=vargs.imbalance, per_class=vargs.per_class,
                                 label_noise=vargs.label_noise, max_train=vargs.max_train_samples, seed=vargs.seed)
    mean, std = data.channel_stats()
    data, mean, std = data.to(device), mean.to(device), std.to(device)
    n = int(data.train_labels.numel())
    budget = pargs.budget_examples
    if vargs.budget_schedule_examples is not None and (budget is None or sum(vargs.budget_schedule_examples) != budget):
        raise ValueError(f"`budget_schedule_examples` lays a budget run's LR schedule over the matched run's epochs: "
                         f"give --method full --budget_examples {sum(vargs.budget_schedule_examples)} (their sum).")

    # ---- model, pruning, plan, optimiser, schedule sized to the pruned plan
    torch.manual_seed(vargs.seed)
    model = build_model(vargs.model, data.num_classes, data.in_channels, vargs.width)
    layout = torch.channels_last if vargs.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    pruner = DataPruner(
        n, vargs.epochs, pargs, seed=vargs.seed, labels=data.train_labels.cpu(),
        run_facts={"world_size": world, "batch_size": vargs.batch_size,  # shape the plan: checked on resume
                   **({"budget_schedule_examples": list(vargs.budget_schedule_examples)}
                      if vargs.budget_schedule_examples is not None else {})},
        data_fingerprint=tensors_fingerprint({"images": data.train_images, "labels": data.train_labels}))
    epochs = len(pruner.plan())  # a budget run's: the full epochs its budget buys, the last one cut
    scores = ScoreBuffer(pruner, capacity=-(-n // world) + vargs.batch_size, scored=True)  # the loss needs them
    sampler = PruningSampler(pruner, num_replicas=world, rank=rank)
    plan = plan_of(pruner, world, vargs.batch_size)
    optimizer = build_optimizer(vargs.optimizer, model.parameters(), vargs.lr, vargs.momentum, vargs.weight_decay)
    # A budget run given the matched run's epochs takes that run's LR at every step (same step counts up to
    # each epoch's batch rounding: past the end the schedule holds its final LR).
    schedule_plan, schedule_epochs = plan, epochs
    if vargs.budget_schedule_examples is not None:
        schedule_plan = EpochPlan.of(list(vargs.budget_schedule_examples),
                                     lambda size: sharded_batches(size, world, vargs.batch_size))
        schedule_epochs = vargs.epochs
    scheduler = build_schedule(vargs.schedule, optimizer, schedule_plan, schedule_epochs)
    model, optimizer = accelerator.prepare(model, optimizer)
    if main:
        log_plan(pruner, plan)

    history, start_epoch = resume_run(vargs.resume_from_checkpoint, vargs.output_dir, pruner, model, optimizer,
                                      scheduler, accelerator)

    wall_start = time.time() - (history[-1]["elapsed_s"] if history else 0.0)
    objective = Supervised(model, data, mean, std, vargs, rank, layout, accelerator.autocast)
    for epoch, sums, train_time in pruned_epochs(
            pruner, sampler, scores, plan, range(start_epoch, epochs), world=world, batch_size=vargs.batch_size,
            device=device, model=model, objective=objective, optimizer=optimizer, scheduler=scheduler,
            backward=accelerator.backward, progress=main and vargs.progress):
        # ---- the epoch's record (the scores are in every rank's store already)
        trained_at = time.time()
        totals = accelerator.reduce(torch.stack([sums["loss"], sums["correct"].float(), sums["examples"]]), "sum")
        test_acc = evaluate(model, data, mean, std, vargs.eval_batch_size, accelerator)
        record = {
            "epoch": epoch,
            "examples": int(pruner.report.epochs[epoch].forwarded),
            "kept": int(pruner.report.epochs[epoch].kept),
            "train_loss": float(totals[0] / totals[2]),
            "train_acc": float(totals[1] / totals[2]),
            "test_acc": test_acc,
            "lr": scheduler.get_last_lr()[0],
            "train_time_s": train_time,  # selection, training steps and score updates; not evaluation
            "epoch_time_s": train_time + time.time() - trained_at,
            "elapsed_s": time.time() - wall_start,
        }
        history.append(record)
        last = epoch == epochs - 1
        pruner.close_epoch(epoch)  # a diverged epoch stops the run here, before its checkpoint
        if last or (vargs.save_every and (epoch + 1) % vargs.save_every == 0):
            save_checkpoint(vargs.output_dir, epoch, model, optimizer, scheduler, pruner, history, accelerator,
                            final=last)
        if main and not last:  # so that an interrupted run keeps what it measured
            save_json({"arguments": asdict(vargs), "pruning": pargs.to_dict(), "final": None, "epochs": history},
                      os.path.join(vargs.output_dir, "metrics.json"))

    if pruner.epoch is not None:
        pruner.close_epoch(pruner.epoch)  # the last epoch's divergence check

    wall = history[-1]["elapsed_s"] if history else 0.0
    train_time = sum(h["train_time_s"] for h in history)
    # A budget-matched run is compared with the run of --epochs full epochs it stands in for (the report's).
    nominal = {} if budget is None else {"schedule_steps": schedule_plan.total}
    report = pruner.summary(**nominal, train_wall_time_s=train_time, wall_time_with_eval_s=wall, world_size=world,
                            dataset=data.name, model=vargs.model, mixed_precision=accelerator.mixed_precision,
                            optimizer_steps=plan.total, label_noise=vargs.label_noise,
                            noisy_labels_changed=int(noisy.sum()))
    final = {"test_acc": history[-1]["test_acc"] if history else None, "wall_time_s": wall,
             "train_time_s": train_time,
             "forwarded_examples": report["forwarded_examples"], "saved_fraction": report["saved_fraction"],
             **{k: report[k] for k in SCORING_COST_KEYS if k in report}}
    if main:
        save_json({"arguments": asdict(vargs), "pruning": pargs.to_dict(), "final": final, "epochs": history},
                  os.path.join(vargs.output_dir, "metrics.json"))
        save_json(report, os.path.join(vargs.output_dir, "pruning_report.json"))
        plot_run(os.path.join(vargs.output_dir, PLOT_FILE), report,
                 {"test": [(h["epoch"], h["test_acc"]) for h in history],
                  "train": [(h["epoch"], h["train_acc"]) for h in history]}, "accuracy")
    accelerator.wait_for_everyone()
    return TrainResult(final, history, pruner, accelerator.unwrap_model(model))


class Supervised:
    """The supervised objective: each example's cross-entropy (its augmented view, seeded per epoch and rank), its
    predictive entropy as the second score field, and the batch's loss and correct counts for the record."""

    def __init__(self, model, data, mean, std, vargs: VisionArguments, rank: int, layout, autocast) -> None:
        self.model, self.data, self.mean, self.std, self.vargs, self.rank = model, data, mean, std, vargs, rank
        self.layout, self.autocast = layout, autocast
        self.pad, self.flip = AUGMENTATION.get(data.name, (4, True))
        self.augment_gen: torch.Generator | None = None

    def begin_epoch(self, epoch: int) -> None:
        gen = seeded_generator(self.vargs.seed, epoch, self.rank, _AUGMENT_STREAM)
        device = self.data.train_images.device
        self.augment_gen = gen if device.type == "cpu" else torch.Generator(device).manual_seed(int(gen.initial_seed()))

    def __call__(self, idx: torch.Tensor) -> StepTerms:
        images, labels = self.data.train_images[idx], self.data.train_labels[idx]
        if self.vargs.augment:
            images = random_crop_flip(images, self.augment_gen, pad=self.pad, flip=self.flip)
        inputs = normalise(images, self.mean, self.std).contiguous(memory_format=self.layout)
        with self.autocast():
            logits = self.model(inputs)
        loss_i, entropy_i = classification_scores(logits, labels)
        return StepTerms(loss_i, (loss_i, entropy_i), {"loss": loss_i.detach().sum(),
                                                      "correct": (logits.detach().argmax(-1) == labels).sum()})


@torch.no_grad()
def evaluate(model, data, mean, std, batch_size: int, accelerator: Accelerator) -> float:
    """Test accuracy; each rank takes every world-th batch, counts are summed.

    Uses the unwrapped model: DDP's forward broadcasts buffers (a collective),
    and ranks may hold different numbers of test batches.
    """
    model = accelerator.unwrap_model(model)
    model.eval()
    correct = torch.zeros((), device=accelerator.device)
    n = int(data.test_labels.numel())
    starts = range(accelerator.process_index * batch_size, n, accelerator.num_processes * batch_size)
    for start in starts:
        images = normalise(data.test_images[start:start + batch_size], mean, std)
        with accelerator.autocast():
            logits = model(images)
        correct += (logits.argmax(-1) == data.test_labels[start:start + batch_size]).sum()
    return float(accelerator.reduce(correct, "sum")) / n


def save_checkpoint(output_dir, epoch, model, optimizer, scheduler, pruner, history, accelerator,
                    final: bool = False) -> None:
    """`checkpoint-epoch<N>/state.pt`. The last epoch's (`final`) holds no optimizer or schedule state: nothing
    is left to resume, so it keeps the weights, the pruning state and the history (Adam's moments alone are
    twice the model)."""
    if not accelerator.is_main_process:
        return
    folder = Path(output_dir) / f"checkpoint-epoch{epoch}"
    folder.mkdir(parents=True, exist_ok=True)
    save_state_file({"model": accelerator.unwrap_model(model).state_dict(),
                     "optimizer": None if final else optimizer.state_dict(),
                     "scheduler": None if final else scheduler.state_dict(), "pruner": pruner.state_dict(),
                     "history": history, "epoch": epoch, "final": final}, folder / "state.pt")
