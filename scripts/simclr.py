#!/usr/bin/env python
"""SimCLR pre-training with dynamic data pruning (EMP Table 4), then linear evaluation or fine-tuning.

EMP's self-supervised score ranks examples by their NT-Xent term minus beta times the distance between their
two views' features, both from the training forward pass. Writes ssl_results.json (pre-training facts, the
evaluation accuracy), pruning_report.json, pruning.png and checkpoints with the pruning state
(--save_every, --resume_from_checkpoint latest) to --output_dir.

examples:
  python scripts/simclr.py --dataset digits --method emp --prune 0.7 --ssl_score loss_f --epochs 20 --cpu
  accelerate launch scripts/simclr.py --dataset cifar10 --model resnet50 --method emp --prune 0.7 --eval finetune"""

from __future__ import annotations

import os
import sys

from emp_hf import PruningConfig
from emp_hf.cli import DataclassParser, guard
from emp_hf.core.distributed import shutdown, world_size
from emp_hf.logs import show_plan_on_main_process
from emp_hf.vision.simclr import SimCLRArguments, pretrain_and_evaluate


def main(argv: list[str] | None = None) -> None:
    with guard("simclr.py") as run:
        parser = DataclassParser((PruningConfig, SimCLRArguments), prog="simclr.py", description=__doc__)
        pargs, args = parser.parse(sys.argv[1:] if argv is None else argv)
        show_plan_on_main_process()
        run.output_dir = args.output_dir
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
