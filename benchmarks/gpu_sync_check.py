"""On a GPU: does emp-hf's per-step code make the host wait for the device? (It must not.)

    python benchmarks/gpu_sync_check.py

`torch.cuda.set_sync_debug_mode("error")` is switched on around emp-hf's work inside every training step
(the scoring forward hook, with the InfoBatch gradient-hook registration; the check of the scores against
the step's loss after the first step, which alone reads its verdict on the host; and the append to the score
buffer), so any synchronising operation there raises. The Trainer's own per-step syncs (its NaN check of
the loss, logging) are outside and not counted. Runs EMP and InfoBatch for 3 epochs (InfoBatch's epoch 1
is weighted) on a BERT-base-sized model in bf16, and EMP on a GPT-2-shaped causal LM (V=32,000), and prints
one line per run.
"""

from __future__ import annotations

import contextlib
import tempfile

import torch
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

import emp_hf.core.buffer as buffer_module
from emp_hf import PruningArguments, PruningTrainer

CHECKED = {"calls": 0}


@contextlib.contextmanager
def no_sync_allowed():
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")
    CHECKED["calls"] += 1


real_add = buffer_module.ScoreBuffer.add


def checked_add(self, *args, **kwargs):
    with no_sync_allowed():
        return real_add(self, *args, **kwargs)


buffer_module.ScoreBuffer.add = checked_add


class CheckedTrainer(PruningTrainer):
    def _on_forward(self, *args, **kwargs):
        with no_sync_allowed():
            return super()._on_forward(*args, **kwargs)

    def _checked_scores(self, step):
        if not self._scorer_checked:  # the first step reads its verdict on the host, once
            return super()._checked_scores(step)
        with no_sync_allowed():
            return super()._checked_scores(step)


class Rows(Dataset):
    def __init__(self, n=1024, length=128, vocab=1000, lm=False):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, vocab, (n, length), generator=g)
        self.lm = lm

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        if self.lm:
            labels = self.ids[i].clone()
            labels[: len(labels) // 4] = -100  # a prompt
            return {"input_ids": self.ids[i], "labels": labels}
        return {"input_ids": self.ids[i], "labels": int(self.ids[i, 0]) % 2}


def run(label, model, rows, method, batch=32):
    CHECKED["calls"] = 0
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, per_device_train_batch_size=batch, num_train_epochs=3, bf16=True,
                                 report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True)
        trainer = CheckedTrainer(model=model, args=args, train_dataset=rows,
                                 pruning_args=PruningArguments(method=method, prune=0.5, anneal=0.0))
        trainer.train()
    weighted = [r.epoch for r in trainer.pruner.report.epochs.values() if not r.full]
    print(f"{label} {method}: {trainer.state.global_step} steps, emp-hf per-step code checked {CHECKED['calls']} "
          f"times under set_sync_debug_mode('error'): no host sync (pruned epochs {weighted}; scores flushed "
          f"{len(trainer.pruner.report.epochs)} times, once per epoch; scores checked against the loss on "
          f"{trainer._loss_check.checked_steps} steps)")


def main() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; BERT 12x768, batch 32, seq 128, bf16; "
          "GPT-2 12x768 V=32,000, batch 8, seq 512, bf16")
    for method in ("emp", "infobatch"):
        torch.manual_seed(0)
        run("bert", BertForSequenceClassification(BertConfig(vocab_size=1000, max_position_embeddings=128)), Rows(),
            method)
    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=32_000, n_positions=512))
    run("gpt2", gpt, Rows(n=256, length=512, vocab=32_000, lm=True), "emp", batch=8)


if __name__ == "__main__":
    main()
