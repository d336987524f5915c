#!/usr/bin/env python
"""Compute static data-pruning scores, one file per score, for `--method static --static_scores_file F`.

    python scripts/static_scores.py --front_end vision --scores el2n grand forgetting --score_epochs 2 \
        --scores_dir output/scores --dataset fashion_mnist --model resnet10 --width 16 --max_train_samples 15000 --cpu
    python scripts/vision.py --method static --prune 0.5 --static_scores_file output/scores/el2n.pt \
        --dataset fashion_mnist --model resnet10 --width 16 --max_train_samples 15000 --cpu

    python scripts/static_scores.py --front_end glue --scores el2n forgetting --score_epochs 1 \
        --scores_dir output/sst2-scores --task sst2 --data_dir data/glue --max_train_samples 2000 \
        --model_name_or_path MODEL --learning_rate 1e-4 --per_device_train_batch_size 16 --max_seq_length 64
    python scripts/glue.py --task sst2 --method static --static_scores_file output/sst2-scores/el2n.pt ...

--front_end vision (the default) or glue picks the training script whose flags follow.
The other flags are those of scripts/vision.py or scripts/glue.py: pass the pruned run the same data
flags (dataset or task, variants, seed, subset), since score i must belong to training example i. Each file
holds the scores, the end to keep (docs/static_scores.md) and the scoring run's cost (examples forwarded,
wall time), which the pruned run adds to its report and summary line.
"""

from __future__ import annotations

import sys

from emp_hf.cli import ArgumentParser, DataclassParser, guard
from emp_hf.vision.static_scoring import StaticScoreArguments

FRONT_ENDS = ("vision", "glue")


def main(argv: list[str]) -> None:
    with guard("static_scores.py") as run:
        front = ArgumentParser(prog="static_scores.py", add_help=False)
        front.add_argument("--front_end", default="vision", choices=FRONT_ENDS)
        front_end, argv = front.parse_known_args(argv)
        front_end = front_end.front_end
        if front_end == "vision":
            from emp_hf.vision import VisionArguments
            from emp_hf.vision.static_scoring import compute_static_scores

            parser = DataclassParser((StaticScoreArguments, VisionArguments), prog="static_scores.py",
                                     description=__doc__)
            sargs, vargs = parser.parse(argv)
            run.output_dir = sargs.scores_dir
            paths = compute_static_scores(sargs, vargs)
        else:
            import torch
            from transformers import DataCollatorWithPadding, set_seed

            from emp_hf.glue.runner import DataArguments, GlueTrainingArguments, ModelArguments, prepare
            from emp_hf.text_static_scoring import compute_text_static_scores

            parser = DataclassParser((StaticScoreArguments, DataArguments, ModelArguments, GlueTrainingArguments),
                                     prog="static_scores.py", description=__doc__)
            sargs, data_args, model_args, training_args = parser.parse(argv)
            run.output_dir = sargs.scores_dir
            set_seed(training_args.seed)
            task, data, tokenizer, make_model = prepare(model_args, data_args, training_args)
            train = data["train"]
            train = train.remove_columns([c for c in train.column_names
                                          if c not in ("input_ids", "attention_mask", "token_type_ids", "label")])
            device = torch.device("cuda" if torch.cuda.is_available() and not training_args.use_cpu else "cpu")
            paths = compute_text_static_scores(
                sargs.scores_dir, sargs.scores, sargs.score_epochs, sargs.score_seeds, make_model, train,
                DataCollatorWithPadding(tokenizer), learning_rate=training_args.learning_rate,
                batch_size=training_args.per_device_train_batch_size, seed=training_args.seed, device=device,
                metadata={"task": task.name, "model": model_args.model_name_or_path})
        for score, path in paths.items():
            print(f"[emp-hf] static score={score} file={path}")


if __name__ == "__main__":
    main(sys.argv[1:])
