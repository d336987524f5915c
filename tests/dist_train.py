"""Run by test_distributed_trainer.py under `accelerate launch --multi_gpu --num_processes 2` (CPU, gloo).

Each rank writes what it trained (its local example indices per epoch), the
order its sampler produced, and its score store, for the test to compare.
"""

import json
import os
import sys

from tiny import tiny_args, tiny_bert, tiny_dataset

import emp_hf.core.distributed as emp_distributed
from emp_hf import PruningArguments, PruningTrainer
from emp_hf.trainer import INDEX_KEY, release_distributed


class CountingCollectives:
    """torch.distributed as emp-hf sees it, counting the collectives emp-hf issues (the Trainer's own are not)."""

    def __init__(self, real):
        self.real, self.epochs = real, []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def all_gather(self, *args, **kwargs):
        self.epochs.append(TRAINER.pruner.epoch)
        return self.real.all_gather(*args, **kwargs)


emp_distributed.dist = CountingCollectives(emp_distributed.dist)
TRAINER = None


class RecordingTrainer(PruningTrainer):
    def training_step(self, model, inputs, num_items_in_batch=None):
        self.local_seen.setdefault(self.pruner.epoch, []).extend(inputs[INDEX_KEY].tolist())
        return super().training_step(model, inputs, num_items_in_batch)


def main(out_dir: str, method: str, ga: int) -> None:
    trainer = RecordingTrainer(
        model=tiny_bert(),
        args=tiny_args(os.path.join(out_dir, "run"), num_train_epochs=4, gradient_accumulation_steps=ga,
                       per_device_train_batch_size=3),
        train_dataset=tiny_dataset(29),
        pruning_args=PruningArguments(method=method, prune=0.5, anneal=0.25),
    )
    trainer.local_seen = {}
    global TRAINER
    TRAINER = trainer
    trainer.train()
    rank = trainer.args.process_index
    store = trainer.pruner.store
    result = {
        "world_size": trainer.args.world_size,
        "local_seen": trainer.local_seen,
        "plan": trainer.pruner.plan(),
        "per_epoch": trainer.pruner.summary()["per_epoch"],
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "final_lr": trainer.lr_scheduler.get_last_lr()[0],
        "store": {k: getattr(store, k).tolist() for k in ("loss", "entropy", "times_trained", "times_selected")},
        "collectives_per_epoch": [emp_distributed.dist.epochs.count(e) for e in range(4)],
        "weights_sum": float(sum(p.detach().double().sum() for p in trainer.model.parameters())),
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    release_distributed(trainer)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
