"""PruningTrainer under FSDP on a GPU (not collected by pytest: CI and the CPU machines have no GPU).

    FSDP_VERSION=2 torchrun --standalone --nproc_per_node 1 tests/gpu_fsdp_check.py OUT_DIR   # or 1

Accelerate runs FSDP only on accelerators (on a CPU it falls back to DDP over gloo), so this is the
FSDP check, run on a lent GPU. It asserts, and prints one line per check:
1. the Trainer really wrapped the model in FSDP;
2. the scores recorded under FSDP (bf16 autocast) equal the model's own loss per example, for sequence
   classification and a causal LM (lr 0, one epoch);
3. a run checkpointed mid-epoch and resumed makes the same selections and ends with the same weights
   and score store as the uninterrupted run.
"""

from __future__ import annotations

import os
import sys

import torch
from torch.utils.data import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    TrainingArguments,
)

from emp_hf import PruningArguments, PruningTrainer
from emp_hf.trainer import release_distributed


class Rows(Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def classification_rows(n=64, length=12):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (n, length), generator=g)
    return Rows([{"input_ids": ids[i], "labels": int(ids[i, 0]) % 2} for i in range(n)])


def lm_rows(n=48, length=16):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 100, (n, length), generator=g)
    labels = ids.clone()
    labels[::3, 10:] = -100
    return Rows([{"input_ids": ids[i], "labels": labels[i]} for i in range(n)])


def bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=64, n_layer=2, n_head=2,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


FSDP_VERSION = int(os.environ.get("FSDP_VERSION", "2"))
FSDP_CONFIG = {"version": FSDP_VERSION, "reshard_after_forward": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}
if FSDP_VERSION == 1:
    FSDP_CONFIG = {"version": 1, "sharding_strategy": "FULL_SHARD", "use_orig_params": True,
                   "auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}


def args(out, **overrides):
    settings = dict(output_dir=out, per_device_train_batch_size=8, num_train_epochs=1, learning_rate=0.0,
                    report_to="none", save_strategy="no", bf16=True, seed=0, disable_tqdm=True,
                    logging_strategy="no", fsdp=True, fsdp_config=FSDP_CONFIG)
    settings.update(overrides)
    return TrainingArguments(**settings)


def own_losses(model, rows):
    out = []
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for row in rows.rows:
            batch = {k: torch.as_tensor(v).unsqueeze(0).cuda() for k, v in row.items()}
            out.append(float(model(**batch).loss))
    return torch.tensor(out)


def main(out: str) -> None:
    for name, make, rows in (("classification", bert, classification_rows()), ("causal_lm", gpt2, lm_rows())):
        trainer = PruningTrainer(model=make().cuda(), args=args(os.path.join(out, name)), train_dataset=rows,
                                 pruning_args=PruningArguments(method="emp", prune=0.5))
        trainer.train()
        assert trainer.is_fsdp_enabled, "FSDP was not enabled"
        wrapped = type(trainer.model_wrapped).__name__
        store = trainer.pruner.store
        assert bool(store.seen.all())
        # the reference: a plain (unwrapped, unsharded) copy of the same weights, same autocast
        reference = make().cuda().eval()
        expected = own_losses(reference, rows)
        diff = float((store.loss - expected).abs().max())
        print(f"FSDP{FSDP_VERSION} {name}: wrapped in {wrapped}; scorer {trainer._scorer.name}; "
              f"max |score - own loss| {diff:.2e} (bf16 autocast)", flush=True)
        assert diff < 2e-2, diff

    # resume: 4 epochs of EMP at 0.5, checkpoint every 3 steps; resume from a mid-epoch checkpoint
    settings = dict(num_train_epochs=4, learning_rate=1e-3, save_strategy="steps", save_steps=3, bf16=False)
    pruning = PruningArguments(method="emp", prune=0.5, anneal=0.25)
    full = PruningTrainer(model=bert().cuda(), args=args(os.path.join(out, "a"), **settings),
                          train_dataset=classification_rows(), pruning_args=pruning)
    full.train()
    # 64 / 32 / 32 / 64 examples -> 8/4/4/8 steps; step 15 is in epoch 2
    resumed = PruningTrainer(model=bert().cuda(), args=args(os.path.join(out, "b"), **settings),
                             train_dataset=classification_rows(), pruning_args=pruning)
    resumed.train(resume_from_checkpoint=os.path.join(out, "a", "checkpoint-15"))
    same_selection = full.pruner.summary()["per_epoch"] == resumed.pruner.summary()["per_epoch"]
    a = {k: v.float().cpu() for k, v in full.model.state_dict().items()}
    b = {k: v.float().cpu() for k, v in resumed.model.state_dict().items()}
    weight_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    store_diff = float((full.pruner.store.loss - resumed.pruner.store.loss).abs().max())
    print(f"FSDP{FSDP_VERSION} resume: same selections {same_selection}; max weight diff {weight_diff:.2e}; "
          f"max score diff {store_diff:.2e}; steps {full.state.global_step}/{resumed.state.global_step}", flush=True)
    assert same_selection and full.state.global_step == resumed.state.global_step
    assert weight_diff < 1e-5 and store_diff < 1e-5
    release_distributed(resumed)
    print(f"FSDP{FSDP_VERSION} CHECK PASSED", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
