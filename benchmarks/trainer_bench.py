"""PruningTrainer against the plain Trainer, measured side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/trainer_bench.py overhead
    OMP_NUM_THREADS=1 python benchmarks/trainer_bench.py saving
    python benchmarks/trainer_bench.py overhead --gpu --method emp --layers 12 --hidden 768 --length 128
    python benchmarks/trainer_bench.py interleaved --gpu --layers 12 --hidden 768 --length 128 --n 8192 --repeats 3

overhead: median optimizer-step time of PruningTrainer(method="full") over the
  plain Trainer on the same model, data and settings; runs alternate A, B, A, B
  so drift on a shared machine hits both. Target <= 1.01. `--method emp` prices the scoring too
  (epoch 0 is full, so every step scores its batch); `--gpu` runs in bf16 on the GPU.
own: the time emp-hf's own code takes per optimizer step in one PruningTrainer run,
  timed around each of its per-step pieces (the `training_step` wrapper outside the
  Trainer's own step, the forward hook, the indexing collator outside the user's
  collator), as a fraction of the median step: a bound on the overhead that run-to-run
  noise on a shared machine (about +-2% per run) cannot resolve.
saving: wall-clock training time at prune 0.3/0.5/0.7 (EMP, its default
  annealing) against the full-data run. ideal saving = 1 - forwarded/full;
  achieved saving = 1 - time/full_time; efficiency = achieved / ideal. Target >= 0.95.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch
from datasets import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging as hf_logging

from emp_hf import PruningArguments, PruningTrainer


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t0)


def model(layers: int, hidden: int) -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=4 * hidden, max_position_embeddings=128, num_labels=2))


def data(n: int, length: int) -> Dataset:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (n, length), generator=g)
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * length] * n,
                              "label": (ids[:, 0] % 2).tolist()})


GPU = False


def run(kind: str, ds: Dataset, epochs: int, layers: int, hidden: int, pruning=None) -> tuple[float, StepTimer, int]:
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, per_device_train_batch_size=32, num_train_epochs=epochs, learning_rate=1e-4,
                                 save_strategy="no", report_to="none", use_cpu=not GPU, bf16=GPU, disable_tqdm=True,
                                 logging_strategy="no", seed=0)
        common = dict(model=model(layers, hidden), args=args, train_dataset=ds, callbacks=[timer])
        trainer = Trainer(**common) if kind == "plain" else PruningTrainer(**common, pruning_args=pruning)
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
        forwarded = trainer.pruner.report.forwarded_total if kind != "plain" else len(ds) * epochs
    return wall, timer, forwarded


def overhead(args) -> None:
    ds = data(args.n, args.length)
    steps = {"plain": [], "pruning": []}
    run("plain", ds, 1, args.layers, args.hidden)  # warm-up, discarded
    for _ in range(args.repeats):
        for kind in ("plain", "pruning"):
            pruning = PruningArguments(method=args.method)
            wall, timer, _ = run(kind, ds, 1 if args.method != "full" else args.epochs, args.layers, args.hidden,
                                 pruning)
            if GPU:  # kernels run asynchronously: time whole runs (train() ends with a device sync) per step
                steps[kind].append(wall / len(timer.times))
            else:
                steps[kind].extend(timer.times[2:])  # drop warm-up steps
    med = {k: statistics.median(v) for k, v in steps.items()}
    print(f"median step s: plain {med['plain']:.4f}  pruning({args.method}) {med['pruning']:.4f}  "
          f"ratio {med['pruning'] / med['plain']:.3f}  ({len(steps['plain'])} {'runs' if GPU else 'steps'} each)")


def own(args) -> None:
    from emp_hf import trainer as emp_trainer

    spent = {"training_step wrapper": 0.0, "forward hook": 0.0, "indexing collator": 0.0}
    inner = {"step": 0.0, "collator": 0.0}

    def timed(fn, on_done):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                on_done(time.perf_counter() - t0)
        return wrapper

    def add(table, key):
        def done(seconds):
            table[key] += seconds
        return done

    patches = [
        (emp_trainer.PruningMixin, "training_step", add(spent, "training_step wrapper")),
        (Trainer, "training_step", add(inner, "step")),
        (emp_trainer.PruningMixin, "_on_forward", add(spent, "forward hook")),
        (emp_trainer.IndexingCollator, "__call__", add(spent, "indexing collator")),
    ]
    originals = [(cls, name, getattr(cls, name)) for cls, name, _ in patches]
    for cls, name, done in patches:
        setattr(cls, name, timed(getattr(cls, name), done))
    collator_init = emp_trainer.IndexingCollator.__init__

    def init(self, collator):  # time the user's collator inside ours, to take it out of ours
        collator_init(self, timed(collator, add(inner, "collator")))
    emp_trainer.IndexingCollator.__init__ = init
    try:
        ds = data(args.n, args.length)
        epochs = 1 if args.method != "full" else args.epochs
        run("pruning", ds, 1, args.layers, args.hidden, PruningArguments(method=args.method))  # warm-up
        for table in (spent, inner):
            table.update({k: 0.0 for k in table})
        _, timer, _ = run("pruning", ds, epochs, args.layers, args.hidden, PruningArguments(method=args.method))
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)
        emp_trainer.IndexingCollator.__init__ = collator_init
    steps = len(timer.times)
    own_s = {
        "training_step wrapper": spent["training_step wrapper"] - inner["step"],  # the Trainer's step taken out
        "forward hook": spent["forward hook"],
        "indexing collator": spent["indexing collator"] - inner["collator"],
    }
    median = statistics.median(timer.times[2:])
    for name, seconds in own_s.items():
        print(f"{name:>22}: {1e3 * seconds / steps:.3f} ms per step")
    total = sum(own_s.values()) / steps
    print(f"emp-hf's own code: {1e3 * total:.3f} ms per step of median {1e3 * median:.1f} ms: "
          f"{total / median:.4f} of the step ({steps} steps, method {args.method})")


def interleaved(args) -> None:
    """Whole-run wall time per step of plain / PruningTrainer(emp) / PruningTrainer(full), one epoch each, the order
    rotated every round, so that drift and per-run costs (set-up, the end of training) count as they do for users."""
    ds = data(args.n, args.length)
    run("plain", ds, 1, args.layers, args.hidden)  # warm-up, discarded
    per_step: dict[str, list[float]] = {"plain": [], "emp": [], "full": []}
    for round_ in range(args.repeats):
        kinds = ["plain", "emp", "full"]
        for kind in kinds[round_ % 3:] + kinds[: round_ % 3]:
            wall, timer, _ = run("plain" if kind == "plain" else "pruning", ds, 1, args.layers, args.hidden,
                                 PruningArguments(method="full" if kind == "plain" else kind))
            per_step[kind].append(wall / len(timer.times))
    med = {k: statistics.median(v) for k, v in per_step.items()}
    print("per-step s by run: " + "; ".join(f"{k} " + ", ".join(f"{x:.4f}" for x in v) for k, v in per_step.items()))
    print(f"median: plain {med['plain']:.4f}  emp {med['emp']:.4f} ({med['emp'] / med['plain']:.3f})  "
          f"full {med['full']:.4f} ({med['full'] / med['plain']:.3f})")


def saving(args) -> None:
    ds = data(args.n, args.length)
    print(f"{'prune':>6} {'wall s':>8} {'fwd':>7} {'ideal saving':>13} {'achieved':>9} {'efficiency':>11}")
    results = {}
    run("plain", ds, 1, args.layers, args.hidden)  # warm-up, discarded
    for _ in range(args.repeats):
        for prune in (0.0, 0.3, 0.5, 0.7):
            method = "full" if prune == 0.0 else "emp"
            wall, _, fwd = run("pruning", ds, args.epochs, args.layers, args.hidden,
                               PruningArguments(method=method, prune=prune))
            results.setdefault(prune, []).append((wall, fwd))
    full_wall = statistics.median(w for w, _ in results[0.0])
    full_fwd = results[0.0][0][1]
    for prune, rows in results.items():
        wall = statistics.median(w for w, _ in rows)
        ideal = 1 - rows[0][1] / full_fwd
        achieved = 1 - wall / full_wall
        eff = f"{achieved / ideal:.3f}" if ideal > 0 else "-"
        print(f"{prune:>6} {wall:>8.2f} {rows[0][1]:>7} {ideal:>13.3f} {achieved:>9.3f} {eff:>11}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["overhead", "own", "interleaved", "saving"])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", default="full", choices=["full", "emp"],
                        help="overhead: PruningTrainer's method (emp: one full epoch, every step scored)")
    parser.add_argument("--gpu", action="store_true", help="bf16 on the GPU instead of the CPU")
    args = parser.parse_args()
    global GPU
    GPU = args.gpu
    hf_logging.set_verbosity_error()
    device = torch.cuda.get_device_name() if GPU else f"CPU, {torch.get_num_threads()} thread(s)"
    epochs = 1 if (args.mode in ("overhead", "own") and args.method != "full") or args.mode == "interleaved" \
        else args.epochs
    print(f"torch {torch.__version__}, {device}, {platform.machine()}; "
          f"BERT {args.layers}x{args.hidden}, N={args.n}, len {args.length}, batch 32, {epochs} epoch(s) per run, "
          f"{args.repeats} repeats")
    {"overhead": overhead, "own": own, "interleaved": interleaved, "saving": saving}[args.mode](args)


if __name__ == "__main__":
    main()
