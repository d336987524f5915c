"""A PruningTrainer run that can be killed anywhere and resumed (driven by test_fault_injection.py).

    python tests/fault_train.py OUT            # train; resume from OUT's newest complete checkpoint if any
    FAULT=state:7 python tests/fault_train.py OUT   # SIGKILL itself halfway through writing step 7's pruning state
    FAULT=rng:12 python tests/fault_train.py OUT    # SIGKILL itself inside step 12's Trainer save (no trainer_state.json)
    JIT=1 python tests/fault_train.py OUT           # enable_jit_checkpoint: SIGTERM saves a checkpoint and stops
"""

import os
import signal
import sys
import time

import torch
from tiny import tiny_args, tiny_bert, tiny_dataset
from transformers import Trainer, TrainerCallback

import emp_hf.trainer as pruning_trainer
import emp_hf.trainer.checkpoints as trainer_checkpoints
from emp_hf import PruningArguments, PruningTrainer
from emp_hf.core.state_file import newest_complete


def arm_fault(spec: str) -> None:
    where, step = spec.split(":")
    step = int(step)
    if where == "state":
        real = trainer_checkpoints.save_state_file

        def torn_write(state, path):
            if state["global_step"] == step:
                tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
                with open(tmp, "wb") as f:
                    torch.save(state, f)
                    f.truncate(f.tell() // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            real(state, path)

        trainer_checkpoints.save_state_file = torn_write  # where checkpoints are saved
    else:
        real_rng = Trainer._save_rng_state

        def killed_in_save(self, output_dir):
            if self.state.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)
            real_rng(self, output_dir)

        Trainer._save_rng_state = killed_in_save


class Slow(TrainerCallback):
    """Sleeps between the micro-batches of a gradient-accumulation window, so that a SIGTERM lands inside one."""

    def on_substep_end(self, args, state, control, **kwargs):
        time.sleep(float(os.environ["SLOW"]))


def main(out: str) -> None:
    if os.environ.get("FAULT"):
        arm_fault(os.environ["FAULT"])
    trainer = PruningTrainer(
        model=tiny_bert(),
        args=tiny_args(out, num_train_epochs=5, save_strategy="steps", save_total_limit=3,
                       gradient_accumulation_steps=2, per_device_train_batch_size=3,
                       **({"enable_jit_checkpoint": True, "save_steps": 1000} if os.environ.get("JIT") else
                          {"save_steps": 1})),
        train_dataset=tiny_dataset(40),
        pruning_args=PruningArguments(method="emp", prune=0.5, anneal=0.2),
        callbacks=[Slow()] if os.environ.get("SLOW") else None,
    )
    resume = newest_complete(out, "checkpoint-", pruning_trainer.checkpoint_pruning_state)
    print("TRAINING", "resume" if resume else "fresh", flush=True)
    trainer.train(resume_from_checkpoint="latest" if resume else None)
    torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, os.path.join(out, "final_weights.pt"))
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
