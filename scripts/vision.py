#!/usr/bin/env python
"""Image classification with dynamic data pruning (EMP Table 1, dynamic-data-pruning figures).

    accelerate launch scripts/vision.py --dataset cifar100 --model resnet18 --method emp --prune 0.7 --epochs 200
    python scripts/vision.py --dataset fashion_mnist --model resnet10 --width 16 --epochs 5 --cpu

Writes metrics.json, pruning_report.json, pruning.png (with matplotlib) and
checkpoints (with the pruning state) to --output_dir.
"""

import os

from transformers import HfArgumentParser

from emp_hf import PruningConfig
from emp_hf.core.distributed import shutdown, world_size
from emp_hf.core.static import scoring_cost_note
from emp_hf.vision import VisionArguments, train


def main() -> None:
    vargs, pargs = HfArgumentParser((VisionArguments, PruningConfig)).parse_args_into_dataclasses()
    final = train(vargs, pargs).final
    if int(os.environ.get("RANK", "0")) == 0:
        print_summary(vargs, pargs, final)
    shutdown()


def print_summary(vargs, pargs, final) -> None:
    print(f"[emp-hf] dataset={vargs.dataset} model={vargs.model} method={pargs.method} prune={pargs.effective_prune} "
          f"test_acc={final['test_acc']:.4f} forwarded={final['forwarded_examples']:,} "
          f"saved={final['saved_fraction']:.3f} wall={final['wall_time_s']:.1f}s world_size={max(world_size(), 1)}"
          + scoring_cost_note(final))


if __name__ == "__main__":
    main()
