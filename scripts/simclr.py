#!/usr/bin/env python
"""SimCLR pre-training with dynamic data pruning (EMP Table 4), then linear evaluation or fine-tuning.

    python scripts/simclr.py --dataset digits --method emp --prune 0.7 --ssl_score loss_f --epochs 20 --cpu
    accelerate launch scripts/simclr.py --dataset cifar10 --model resnet50 --method emp --prune 0.7 --eval finetune

Writes ssl_results.json (pre-training facts, evaluation accuracy), pruning_report.json, ssl.png (with
matplotlib) and checkpoints with the pruning state (--save_every, --resume_from_checkpoint latest).
"""

import os

from transformers import HfArgumentParser

from emp_hf import PruningConfig
from emp_hf.core.distributed import shutdown, world_size
from emp_hf.vision.simclr import SimCLRArguments, pretrain_and_evaluate


def main() -> None:
    args, pargs = HfArgumentParser((SimCLRArguments, PruningConfig)).parse_args_into_dataclasses()
    results = pretrain_and_evaluate(args, pargs).results
    if int(os.environ.get("RANK", "0")) == 0:
        pre, ev = results["pretrain"], results["evaluation"]
        acc = f"{ev['test_acc']:.4f}" if "test_acc" in ev else "n/a"
        print(f"[emp-hf] simclr dataset={args.dataset} model={args.model} method={pargs.method} "
              f"prune={pargs.effective_prune} ssl_score={args.ssl_score} eval={ev['mode']} test_acc={acc} "
              f"forwarded={pre['forwarded_examples']:,} saved={pre['saved_fraction']:.3f} "
              f"pretrain={pre['train_time_s']:.1f}s world_size={max(world_size(), 1)}")
    shutdown()


if __name__ == "__main__":
    main()
