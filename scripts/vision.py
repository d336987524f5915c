#!/usr/bin/env python
"""Image classification with dynamic data pruning (EMP Table 1, the dynamic-data-pruning paper's figures).

The whole training set sits on the device as uint8, augmented there per batch; each pruned epoch trains on
the examples the method picks from per-example scores recorded during training. Writes metrics.json,
pruning_report.json, pruning.png and checkpoints (with the pruning state) to --output_dir.

examples:
  python scripts/vision.py --dataset digits --model resnet10 --width 16 --epochs 8 --method emp --prune 0.5 --cpu
  accelerate launch scripts/vision.py --dataset cifar100 --model resnet18 --method emp --prune 0.7 --epochs 200"""

from __future__ import annotations

import os
import sys

from emp_hf import PruningConfig
from emp_hf.cli import DataclassParser, guard
from emp_hf.core.distributed import shutdown, world_size
from emp_hf.core.static import scoring_cost_note
from emp_hf.logs import show_plan_on_main_process
from emp_hf.vision import VisionArguments, train


def main(argv: list[str] | None = None) -> None:
    with guard("vision.py") as run:
        parser = DataclassParser((PruningConfig, VisionArguments), prog="vision.py", description=__doc__)
        pargs, vargs = parser.parse(sys.argv[1:] if argv is None else argv)
        show_plan_on_main_process()
        run.output_dir = vargs.output_dir
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
