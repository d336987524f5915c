"""SimCLR pre-training with dynamic data pruning (EMP section 3.4, Table 4), then linear evaluation or fine-tuning.

The third front end of the core, on the vision loop's machinery: uint8 data on the device, batched seeded
augmentation, the pruning sampler's per-rank share of one global order, scores buffered on the device and
applied once per epoch, checkpoints with the pruning state. What is new is the score source
(`core/contrastive.py`): each example's NT-Xent term and the distance between its two views' features,
both from the training forward pass (no extra passes).

Evaluation after pre-training is not distributed: every process runs the same seeded evaluation and gets
the same accuracy (no collective, so no process waits on another's long fine-tuning).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from ..core import DataPruner, PruningConfig, PruningSampler, ScoreBuffer, save_json
from ..core.contrastive import SSL_SCORES, nt_xent_terms, view_distance
from ..core.fingerprint import tensors_fingerprint
from ..core.policies import seeded_generator
from ..core.run_lock import RunLock
from ..plots import PLOT_FILE, plot_run
from .augment import draw_view_params, normalise, random_crop_flip, simclr_view
from .data import AUGMENTATION, DATASETS, ImageData, apply_variants, load_image_data
from .engine import StepTerms, log_plan, plan_of, pruned_epochs
from .loop import resume_run, save_checkpoint
from .models import build_model
from .optim import build_schedule

_VIEW_STREAM = 0x551
_EVAL_STREAM = 0xE7A1
ENCODERS = ("resnet10", "resnet18", "resnet34", "resnet50")
EVALUATIONS = ("linear", "finetune", "none")


@dataclass
class SimCLRArguments:
    dataset: str = field(default="cifar10", metadata={"help": f"One of {', '.join(DATASETS)}."})
    model: str = field(default="resnet18", metadata={"help": f"Encoder f: one of {', '.join(ENCODERS)} "
                                                               "(CIFAR-style; the paper's Table 4 uses resnet50)."})
    width: int = field(default=64, metadata={"help": "Channels of the encoder's first stage (64 in the papers)."})
    epochs: int = field(default=100, metadata={"help": "Pre-training epochs (EMP B.5: 100)."})
    batch_size: int = field(default=256, metadata={"help": "Pre-training batch size per process (B.5: 256)."})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate (B.5: 1e-3)."})
    weight_decay: float = field(default=1e-6, metadata={"help": "Adam weight decay (B.5: 1e-6)."})
    lr_gamma: float = field(default=0.98, metadata={"help": "Exponential LR decay per epoch (B.5 names an "
                                                            "exponential schedule but no rate; 0.98 is ours)."})
    temperature: float = field(default=0.5, metadata={"help": "NT-Xent temperature (paper: 0.5)."})
    projection_dim: int = field(default=128, metadata={"help": "Output size of the projection head g."})
    ssl_score: str = field(default="loss_f", metadata={"help": "EMP's memory term: loss_f (distance of the "
                                                               "encoder features f, the paper's) or loss_g "
                                                               "(of the projections g(f))."})
    color_jitter: float = field(default=0.0, metadata={"help": "SimCLR colour-jitter strength s (SimCLR: 0.5); "
                                                               "0 = off, as B.5 lists none."})
    grayscale_p: float = field(default=0.8, metadata={"help": "Probability of a grayscale view (B.5: 0.8)."})
    eval: str = field(default="linear", metadata={"help": f"After pre-training: one of {', '.join(EVALUATIONS)}."})
    eval_epochs: int = field(default=100, metadata={"help": "Evaluation epochs (B.5 fine-tuning: 100)."})
    eval_lr: float = field(default=1e-3, metadata={"help": "Evaluation Adam learning rate (B.5: 1e-3)."})
    eval_batch_size: int = field(default=32, metadata={"help": "Evaluation batch size (B.5: 32)."})
    seed: int = field(default=0, metadata={"help": "Seed of model init, views, pruning and evaluation."})
    output_dir: str = field(default="output/simclr", metadata={"help": "Where results, report and checkpoints go."})
    data_dir: str | None = field(default=None, metadata={"help": "Local data folder (CIFAR pickles, IDX files)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Random subset of the training set."})
    save_every: int = field(default=0, metadata={"help": "Checkpoint every N epochs (0: only at the end)."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "A checkpoint folder, or 'latest'."})
    cpu: bool = field(default=False, metadata={"help": "Train on the CPU even if a GPU is present."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    channels_last: bool = field(default=False, metadata={"help": "NHWC memory layout (faster on GPUs)."})

    def __post_init__(self) -> None:
        choices = {"dataset": DATASETS, "model": ENCODERS, "ssl_score": SSL_SCORES, "eval": EVALUATIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"Unknown `{name}` {getattr(self, name)!r}; allowed: {', '.join(allowed)}.")
        for name in ("epochs", "batch_size", "width", "projection_dim", "eval_epochs", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        for name in ("lr", "eval_lr", "temperature"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"`{name}` must be a positive number, got {getattr(self, name)}.")
        if not 0.0 < self.lr_gamma <= 1.0:
            raise ValueError(f"`lr_gamma` must be in (0, 1], got {self.lr_gamma}.")
        if not (self.weight_decay >= 0.0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"`weight_decay` must be a finite number >= 0, got {self.weight_decay}.")
        if not 0.0 <= self.color_jitter <= 1.0:
            raise ValueError(f"`color_jitter` must be in [0, 1], got {self.color_jitter}.")
        if not 0.0 <= self.grayscale_p <= 1.0:
            raise ValueError(f"`grayscale_p` must be in [0, 1], got {self.grayscale_p}.")
        if self.max_train_samples is not None and self.max_train_samples < 2:
            raise ValueError(f"`max_train_samples` must be >= 2 (or unset), got {self.max_train_samples}.")
        if self.save_every < 0:
            raise ValueError(f"`save_every` must be >= 0, got {self.save_every}.")


class SimCLRModel(nn.Module):
    """Encoder f (a CIFAR-style ResNet without its classifier) and projection head g (2-layer MLP)."""

    def __init__(self, arch: str, in_channels: int, width: int, projection_dim: int) -> None:
        super().__init__()
        self.encoder = build_model(arch, num_classes=1, in_channels=in_channels, width=width)
        self.encoder.head = nn.Identity()  # f(x): the pooled features
        dim = self.encoder.feature_dim
        self.projector = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, projection_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x)
        return features, self.projector(features)


@dataclass
class SimCLRResult:
    results: dict[str, Any]
    history: list[dict[str, Any]]
    pruner: DataPruner
    model: SimCLRModel


def pretrain_and_evaluate(args: SimCLRArguments, pargs: PruningConfig, data: ImageData | None = None) -> SimCLRResult:
    """Pre-train with pruning, evaluate, write ssl_results.json, pruning_report.json and pruning.png."""
    accelerator = Accelerator(cpu=args.cpu)
    device, world, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    main = accelerator.is_main_process
    os.makedirs(args.output_dir, exist_ok=True)
    if main:
        RunLock(args.output_dir).acquire()  # one run per output folder (released at exit)

    raw = data if data is not None else load_image_data(args.dataset, args.data_dir, seed=args.seed)
    data, _ = apply_variants(raw, max_train=args.max_train_samples, seed=args.seed)
    mean, std = data.channel_stats()
    data, mean, std = data.to(device), mean.to(device), std.to(device)
    n = int(data.train_labels.numel())

    torch.manual_seed(args.seed)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    model = SimCLRModel(args.model, data.in_channels, args.width, args.projection_dim).to(memory_format=layout)
    # Checked on resume: the plan's shape, and what the scores mean (a resumed run must not mix score sources).
    pruner = DataPruner(
        n, args.epochs, pargs, seed=args.seed, labels=data.train_labels.cpu(),
        run_facts={"world_size": world, "batch_size": args.batch_size, "ssl_score": args.ssl_score,
                   "temperature": args.temperature},
        data_fingerprint=tensors_fingerprint({"images": data.train_images, "labels": data.train_labels}))
    scores = ScoreBuffer(pruner, capacity=-(-n // world) + args.batch_size, scored=True)  # the loss needs them
    sampler = PruningSampler(pruner, num_replicas=world, rank=rank)
    plan = plan_of(pruner, world, args.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = build_schedule("exponential", optimizer, plan, args.epochs, gamma=args.lr_gamma)
    model, optimizer = accelerator.prepare(model, optimizer)
    if main:
        log_plan(pruner, plan)

    history, start_epoch = resume_run(args.resume_from_checkpoint, args.output_dir, pruner, model, optimizer,
                                      scheduler, accelerator)

    wall_start = time.time() - (history[-1]["elapsed_s"] if history else 0.0)
    objective = Contrastive(model, data, mean, std, args, layout, accelerator.autocast)
    for epoch, sums, train_time in pruned_epochs(
            pruner, sampler, scores, plan, range(start_epoch, args.epochs), world=world, batch_size=args.batch_size,
            device=device, model=model, objective=objective, optimizer=optimizer, scheduler=scheduler,
            backward=accelerator.backward, progress=main and args.progress, desc="pre-training"):
        totals = accelerator.reduce(torch.stack([sums["nt_xent"], sums["examples"]]), "sum")
        record = {"epoch": epoch, "examples": int(pruner.report.epochs[epoch].forwarded),
                  "kept": int(pruner.report.epochs[epoch].kept), "nt_xent": float(totals[0] / totals[1]),
                  "lr": scheduler.get_last_lr()[0], "train_time_s": train_time,
                  "elapsed_s": time.time() - wall_start}
        history.append(record)
        last = epoch == args.epochs - 1
        pruner.close_epoch(epoch)  # a diverged epoch stops the run here, before its checkpoint
        if last or (args.save_every and (epoch + 1) % args.save_every == 0):
            save_checkpoint(args.output_dir, epoch, model, optimizer, scheduler, pruner, history, accelerator,
                            final=last)

    if pruner.epoch is not None:
        pruner.close_epoch(pruner.epoch)
    train_time = sum(h["train_time_s"] for h in history)
    report = pruner.summary(train_wall_time_s=train_time, world_size=world, dataset=data.name, model=args.model,
                            task="simclr", ssl_score=args.ssl_score, mixed_precision=accelerator.mixed_precision,
                            optimizer_steps=plan.total)
    encoder = accelerator.unwrap_model(model).encoder
    eval_start = time.time()
    evaluation: dict[str, Any] = {"mode": args.eval}
    if args.eval != "none":
        evaluate = linear_evaluation if args.eval == "linear" else finetune_evaluation
        evaluation["test_acc"] = evaluate(encoder, data, mean, std, args, layout)
        evaluation.update(epochs=args.eval_epochs, lr=args.eval_lr, batch_size=args.eval_batch_size)
    evaluation["time_s"] = time.time() - eval_start
    results = {
        "arguments": asdict(args), "pruning": pargs.to_dict(),
        "pretrain": {"final_nt_xent": history[-1]["nt_xent"] if history else None,
                     "forwarded_examples": report["forwarded_examples"],
                     "saved_fraction": report["saved_fraction"], "train_time_s": train_time, "epochs": history},
        "evaluation": evaluation,
    }
    if main:
        save_json(results, os.path.join(args.output_dir, "ssl_results.json"))
        save_json(report, os.path.join(args.output_dir, "pruning_report.json"))
        plot_run(os.path.join(args.output_dir, PLOT_FILE), report,
                 {"NT-Xent (pre-training)": [(h["epoch"], h["nt_xent"]) for h in history]}, "NT-Xent")
    accelerator.wait_for_everyone()
    return SimCLRResult(results, history, pruner, accelerator.unwrap_model(model))


class Contrastive:
    """SimCLR's objective: each example's NT-Xent term over both views (drawn per epoch from the seed, the epoch
    and the example only), and as the second score field minus its memory term: EMP ranks by
    loss + beta * second field = NT-Xent_i - beta * distance_i (METHODS.md)."""

    def __init__(self, model, data: ImageData, mean, std, args: SimCLRArguments, layout, autocast) -> None:
        self.model, self.data, self.mean, self.std, self.args = model, data, mean, std, args
        self.layout, self.autocast = layout, autocast
        self.draws: torch.Tensor | None = None

    def begin_epoch(self, epoch: int) -> None:
        n = int(self.data.train_labels.numel())
        self.draws = draw_view_params(n, seeded_generator(self.args.seed, epoch, _VIEW_STREAM)).to(
            self.data.train_labels.device)

    def __call__(self, idx: torch.Tensor) -> StepTerms:
        terms, distance = contrastive_forward(self.model, self.data.train_images[idx], self.draws[idx], self.args,
                                              self.mean, self.std, self.layout, self.autocast)
        return StepTerms(terms, (terms.detach(), -distance.detach()), {"nt_xent": terms.detach().sum()})


def contrastive_forward(model, images, draws, args: SimCLRArguments, mean, std, layout=torch.contiguous_format,
                        autocast=contextlib.nullcontext) -> tuple[torch.Tensor, torch.Tensor]:
    """One training forward pass of a batch: both views through f and g together (batch statistics over
    both), then each example's NT-Xent term (negatives from the global batch) and its memory term."""
    views = [_standardise(simclr_view(images, draws[:, v], gray_p=args.grayscale_p, jitter=args.color_jitter),
                          mean, std) for v in (0, 1)]
    with autocast():
        features, projections = model(torch.cat(views).contiguous(memory_format=layout))
    f_a, f_b = features.chunk(2)
    g_a, g_b = projections.chunk(2)
    terms = nt_xent_terms(g_a, g_b, args.temperature)
    distance = view_distance(f_a, f_b) if args.ssl_score == "loss_f" else view_distance(g_a, g_b)
    return terms, distance


def _standardise(views: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (views - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


@torch.no_grad()
def _features(encoder: nn.Module, images: torch.Tensor, mean, std, layout, batch_size: int = 512) -> torch.Tensor:
    encoder.eval()
    return torch.cat([encoder(normalise(images[s:s + batch_size], mean, std).contiguous(memory_format=layout)).float()
                      for s in range(0, images.shape[0], batch_size)])


def linear_evaluation(encoder: nn.Module, data: ImageData, mean, std, args: SimCLRArguments, layout) -> float:
    """Test accuracy of a linear classifier trained on the frozen encoder's features (computed once)."""
    train_x = _features(encoder, data.train_images, mean, std, layout)
    test_x = _features(encoder, data.test_images, mean, std, layout)
    gen = seeded_generator(args.seed, _EVAL_STREAM)
    torch.manual_seed(int(gen.initial_seed()) % 2**31)
    head = nn.Linear(train_x.shape[1], data.num_classes).to(train_x.device)
    optimizer = torch.optim.Adam(head.parameters(), lr=args.eval_lr, weight_decay=args.weight_decay)
    n = train_x.shape[0]
    for _ in range(args.eval_epochs):
        order = torch.randperm(n, generator=gen).to(train_x.device)
        for s in range(0, n, args.eval_batch_size):
            idx = order[s:s + args.eval_batch_size]
            loss = nn.functional.cross_entropy(head(train_x[idx]), data.train_labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return float((head(test_x).argmax(-1) == data.test_labels).float().mean())


def finetune_evaluation(encoder: nn.Module, data: ImageData, mean, std, args: SimCLRArguments, layout) -> float:
    """Test accuracy after fine-tuning a copy of the encoder with a new linear head (EMP B.5), with the
    supervised loop's crop-and-flip augmentation."""
    gen = seeded_generator(args.seed, _EVAL_STREAM)
    torch.manual_seed(int(gen.initial_seed()) % 2**31)
    net = nn.Sequential(copy.deepcopy(encoder), nn.Linear(encoder.feature_dim, data.num_classes))
    net = net.to(data.train_labels.device)  # (the encoder is already there)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.eval_lr, weight_decay=args.weight_decay)
    pad, flip = AUGMENTATION.get(data.name, (4, True))
    n = int(data.train_labels.numel())
    device = data.train_labels.device
    augment_gen = torch.Generator(device).manual_seed(int(gen.initial_seed()) % 2**31)
    for _ in range(args.eval_epochs):
        net.train()
        order = torch.randperm(n, generator=gen).to(data.train_labels.device)
        for s in range(0, n, args.eval_batch_size):
            idx = order[s:s + args.eval_batch_size]
            images = random_crop_flip(data.train_images[idx], augment_gen, pad=pad, flip=flip)
            inputs = normalise(images, mean, std).contiguous(memory_format=layout)
            loss = nn.functional.cross_entropy(net(inputs), data.train_labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(normalise(data.test_images[s:s + 512], mean, std).contiguous(memory_format=layout))
                            for s in range(0, int(data.test_labels.numel()), 512)])
    return float((logits.argmax(-1) == data.test_labels).float().mean())
