"""The cost of scoring a causal LM: PruningTrainer(method emp) against the plain Trainer, side by side in one run.

    OMP_NUM_THREADS=1 python benchmarks/causal_lm_bench.py                      # V = 32,000 and 151,936
    OMP_NUM_THREADS=1 python benchmarks/causal_lm_bench.py --vocab 32000 --prompt 0.75
    python benchmarks/causal_lm_bench.py --gpu --hidden 2048 --layers 16 --heads 16 --length 1024 --batch 8 \\
        --vocab 128256                                                          # a ~1B-parameter shape, bf16

A GPT-2-shaped causal LM (CPU default: hidden 256, 4 layers, T=256, batch 4) is trained for one epoch, so every
step is a full-data step whose batch is scored (EMP reads the loss and the entropy) and checked against the
model's loss. Runs alternate plain, pruning, plain, pruning, ... so that drift on a shared machine hits both;
the figure is the ratio of the median optimizer-step times (first two steps of each run dropped). `--prompt`
labels only the last (1 - prompt) of each row, as SFT with prompt masking does. `--method` prices another
method (random: no scoring at all).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging as hf_logging

from emp_hf import PruningArguments, PruningTrainer


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t0)


def build(a: argparse.Namespace, vocab: int) -> tuple[GPT2LMHeadModel, Dataset]:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_positions=a.length, n_embd=a.hidden, n_layer=a.layers, n_head=a.heads,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (a.batch * a.steps, a.length), generator=g)
    labels = ids.clone()
    labels[:, : int(a.prompt * a.length)] = -100
    rows = Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})
    return GPT2LMHeadModel(config), rows


def run(kind: str, a: argparse.Namespace, vocab: int) -> list[float]:
    model, rows = build(a, vocab)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, per_device_train_batch_size=a.batch, num_train_epochs=1, learning_rate=1e-4,
                                 save_strategy="no", report_to="none", use_cpu=not a.gpu, bf16=a.gpu,
                                 disable_tqdm=True, logging_strategy="no", seed=0)
        common = dict(model=model, args=args, train_dataset=rows, callbacks=[timer])
        if kind == "plain":
            trainer = Trainer(**common)
        else:
            trainer = PruningTrainer(**common, pruning_args=PruningArguments(method=a.method, prune=0.5))
        trainer.train()
    return timer.times[2:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32_000, 151_936])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    parser.add_argument("--pairs", type=int, default=3, help="plain/pruning run pairs, alternating")
    parser.add_argument("--prompt", type=float, default=0.0, help="fraction of each row without labels")
    parser.add_argument("--method", default="emp")
    parser.add_argument("--gpu", action="store_true", help="bf16 on the GPU")
    a = parser.parse_args()
    hf_logging.set_verbosity_error()
    print(f"# {platform.node()} {platform.machine()} torch {torch.__version__} threads {torch.get_num_threads()} "
          f"{'cuda bf16' if a.gpu else 'cpu fp32'}; GPT-2 shape hidden {a.hidden}, {a.layers} layers, T={a.length}, "
          f"batch {a.batch}, prompt-masked fraction {a.prompt}, method {a.method}, {time.strftime('%Y-%m-%d %H:%M')}")
    for vocab in a.vocab:
        times: dict[str, list[float]] = {"plain": [], "pruning": []}
        for _ in range(a.pairs):
            for kind in ("plain", "pruning"):
                times[kind] += run(kind, a, vocab)
        plain, pruning = statistics.median(times["plain"]), statistics.median(times["pruning"])
        print(f"V={vocab:>7,}: median step plain {plain * 1000:8.1f} ms, PruningTrainer {pruning * 1000:8.1f} ms, "
              f"ratio {pruning / plain:.3f} ({len(times['plain'])} + {len(times['pruning'])} steps)")


if __name__ == "__main__":
    main()
