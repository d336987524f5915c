#!/usr/bin/env python
"""Fine-tune on a GLUE task with dynamic data pruning (EMP paper, Table 3).

    accelerate launch scripts/glue.py --task mnli --prune 0.7 --output_dir out/mnli-emp-0.7
    python scripts/glue.py --task sst2 --method infobatch --prune 0.5 --data_dir data/glue \
        --model_name_or_path /path/to/local/model --output_dir out/sst2

Every `TrainingArguments` flag works; the defaults that differ from the
Trainer's are the paper's (B.4): 10 epochs, lr 2e-5, batch 32, AdamW, linear
schedule, evaluation and checkpoint each epoch. Runs the same under `python`,
`accelerate launch` (one or many processes) and `torchrun`.
"""

from __future__ import annotations

from emp_hf.glue.runner import (  # noqa: F401 - the script's namespace, for runpy users and static_scores.py
    DataArguments,
    GlueTrainingArguments,
    ModelArguments,
    main,
    parse,
    prepare,
    train_rows,
)

if __name__ == "__main__":
    main()
