#!/usr/bin/env python
"""Compute static data-pruning scores for a vision training set, one file per score, for `--method static`.

    python scripts/static_scores.py --scores el2n grand forgetting --score_epochs 2 --scores_dir output/scores \
        --dataset fashion_mnist --model resnet10 --width 16 --max_train_samples 15000 --cpu
    python scripts/vision.py --method static --prune 0.5 --static_scores_file output/scores/el2n.pt \
        --dataset fashion_mnist --model resnet10 --width 16 --max_train_samples 15000 --cpu

Pass the pruned run the same data flags (dataset, variants, seed, subset): score i must be example i.
Each file holds the scores, the end to keep (docs/static_scores.md) and the scoring run's cost (examples
forwarded, wall time), which the pruned run adds to its report and summary line.
"""

import os
import sys

from transformers import HfArgumentParser

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from emp_hf.vision import VisionArguments  # noqa: E402
from emp_hf.vision.static_scoring import StaticScoreArguments, compute_static_scores  # noqa: E402


def main() -> None:
    sargs, vargs = HfArgumentParser((StaticScoreArguments, VisionArguments)).parse_args_into_dataclasses()
    for score, path in compute_static_scores(sargs, vargs).items():
        print(f"[emp-hf] static score={score} file={path}")


if __name__ == "__main__":
    main()
