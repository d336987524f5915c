"""The GLUE Trainer script's pieces: its argument dataclasses, the data and model it prepares, and its main.

`scripts/glue.py` runs `main`; `scripts/static_scores.py` uses `prepare` so that a scoring run sees the same
training rows in the same order as the training run.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field

import transformers
from datasets import Dataset, DatasetDict, DatasetInfo, Value
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

from ..cli import DataclassParser, guard
from ..core.static import scoring_cost_note
from ..plots import PLOT_FILE, plot_run
from ..trainer import PruningArguments, PruningTrainer, release_distributed
from ..trainer.mixin import check_training_args
from .tasks import TASKS, compute_glue_metrics, get_task, load_files, load_local, main_metric

logger = logging.getLogger("glue")

DESCRIPTION = r"""Fine-tune a sequence-classification model on a GLUE task while dynamic data pruning trains
each epoch on a subset chosen from per-example scores (EMP by default; InfoBatch, UCB, eps-greedy, random
and more with --method). Data: the Hub's nyu-mll/glue, or local files (--data_dir, --train_file). Metrics:
the GLUE metrics through `evaluate`, offline. Outputs in --output_dir: the model, eval_results.json,
pruning_report.json and a model card. Pruning flags come first below; every TrainingArguments flag works.

example (offline, from the repository root, a few minutes on a CPU):
  python scripts/glue.py --task sst2 --prune 0.7 --data_dir data/glue --max_train_samples 2000 \
      --max_seq_length 64 --num_train_epochs 4 --per_device_train_batch_size 16 --learning_rate 1e-4 \
      --model_name_or_path /path/to/model"""


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="bert-base-uncased", metadata={"help": "Hub model id or local folder (with its tokenizer)."}
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's."})
    base_model_id: str | None = field(
        default=None,
        metadata={"help": "Hub id of the model that --model_name_or_path is a local copy of, for the model card's "
                          "base_model (a local path is never written there)."},
    )
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Load a checkpoint whose classification head has another number of labels."}
    )


@dataclass
class DataArguments:
    task: str = field(metadata={"help": f"GLUE task: {', '.join(TASKS)}."})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Read local files instead of the Hub: <data_dir>/<task>/<split>.jsonl or GLUE TSV folders."},
    )
    train_file: str | None = field(
        default=None, metadata={"help": "A .csv/.json/.jsonl training file with the Hub's columns (needs --validation_file)."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "The evaluation file for --train_file."})
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    train_subset_seed: int | None = field(
        default=None,
        metadata={"help": "With --max_train_samples: keep N rows drawn at random with this seed (in file order) "
                          "instead of the first N. Some files are sorted (STS-B's first 2,000 pairs are nearly all "
                          "image captions; its dev set mixes all sources)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N rows of each eval split."})

    def __post_init__(self) -> None:
        get_task(self.task)
        if (self.train_file is None) != (self.validation_file is None):
            raise ValueError("Pass both --train_file and --validation_file, or neither.")
        if self.train_file is not None and self.data_dir is not None:
            raise ValueError("Pass --data_dir or --train_file/--validation_file, not both.")
        if self.train_file is not None and self.task == "mnli":
            raise ValueError("--train_file is for single-evaluation tasks; MNLI needs --data_dir (matched and "
                             "mismatched splits).")
        if self.train_subset_seed is not None and self.max_train_samples is None:
            raise ValueError("--train_subset_seed draws the --max_train_samples rows at random: give "
                             "--max_train_samples too.")
        for name in ("max_seq_length", "max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}.")


@dataclass
class GlueTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the EMP paper's GLUE settings (B.4) as defaults."""

    output_dir: str | None = field(default=None, metadata={"help": "Where the model, results and report go."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Training epochs (paper: 10)."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate (paper: 2e-5)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device (paper: 32)."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Eval batch size per device."})
    lr_scheduler_type: SchedulerType | str = field(default="linear", metadata={"help": "LR schedule (paper: linear)."})
    eval_strategy: IntervalStrategy | str = field(default="epoch", metadata={"help": "Evaluate every epoch."})
    save_strategy: SaveStrategy | str = field(
        default="no",
        metadata={"help": "Checkpoints to resume from ('epoch': one per epoch). Each holds the model, the optimizer's "
                          "state (twice the model's size with AdamW) and the pruning state: 260 MB for MiniLM-L6, "
                          "1.3 GB for bert-base. Off by default: the final model is saved either way."})
    save_total_limit: int | None = field(default=1, metadata={"help": "Checkpoints kept."})
    logging_strategy: IntervalStrategy | str = field(default="epoch", metadata={"help": "Log every epoch."})
    max_steps: int = field(default=-1, metadata={"help": "Refused with pruning, which plans the run by epochs: "
                                                         "leave -1 and set --num_train_epochs."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_training_args(self)  # before any data or model loads


def load_raw(task, data_args: DataArguments) -> DatasetDict:
    if data_args.data_dir is not None or data_args.train_file is not None:
        if data_args.train_file is not None:
            splits = load_files(task, {"train": data_args.train_file, "validation": data_args.validation_file})
            splits = {("train" if name == "train" else task.eval_splits[0]): rows for name, rows in splits.items()}
        else:
            splits = load_local(task, data_args.data_dir)
        # Named like the Hub's, so that the model card says which dataset, configuration and split.
        return DatasetDict({name: Dataset.from_list(rows, info=DatasetInfo(builder_name="glue", config_name=task.name),
                                                    split=name) for name, rows in splits.items()})
    from datasets import load_dataset

    try:
        return load_dataset("nyu-mll/glue", task.name)
    except (OSError, ValueError) as error:  # offline, or the Hub unreachable
        reason = " ".join(str(error).split())[:160]
        raise ValueError(f"Could not load nyu-mll/glue {task.name!r} from the Hub ({reason}). "
                         "Pass --data_dir with local files (this repository's data/glue holds sst2, rte and stsb) "
                         "or --train_file/--validation_file, or go online.") from None


def parse(argv: list[str]):
    """The four argument dataclasses (pruning flags first in --help); every mistake is one line (`emp_hf.cli`)."""
    parser = DataclassParser((PruningArguments, DataArguments, ModelArguments, GlueTrainingArguments),
                             prog="glue.py", description=DESCRIPTION, usage="glue.py --task TASK [options]")
    pruning_args, data_args, model_args, training_args = parser.parse(argv)
    return model_args, data_args, training_args, pruning_args


def train_rows(num_rows: int, keep: int, seed: int | None) -> list[int]:
    """The training rows `--max_train_samples` keeps: the first `keep`, or with a seed `keep` drawn uniformly
    (Python's `random`, stable across versions), in file order."""
    if seed is None or keep >= num_rows:
        return list(range(min(keep, num_rows)))
    return sorted(random.Random(seed).sample(range(num_rows), keep))


def load_or_explain(load, flag: str, name: str, **kwargs):
    """`load(name)`; where it fails, one error naming the flag and whether `name` is a missing folder or a Hub id
    that could not be reached, instead of the Hub client's traceback."""
    try:
        return load(name, **kwargs)
    except (OSError, ValueError) as error:
        if os.path.isdir(name):
            raise ValueError(f"`--{flag}` {name!r} is a folder, but not a model transformers can load: "
                             f"{' '.join(str(error).split())[:200]}") from None
        looks_local = name.startswith((".", "/", "~")) or name.count("/") != 1
        what = ("no such folder" if looks_local else
                "no local folder of that name, and it could not be loaded from the Hub (offline, or not a model id)")
        raise ValueError(f"`--{flag}` {name!r}: {what}. Give a folder holding config.json and the tokenizer, or a "
                         "Hub model id (online).") from None


def prepare(model_args, data_args, training_args):
    """The task, its tokenised splits, the tokenizer and a model factory: what a training run and a static
    scoring run (scripts/static_scores.py) share, so that both see the same training rows in the same order."""
    task = get_task(data_args.task)

    raw = load_raw(task, data_args)
    for split in ("train", *task.eval_splits):
        if split not in raw:
            raise ValueError(f"The data for task {task.name!r} has no {split!r} split (found {list(raw)}).")
    if data_args.max_train_samples is not None:
        raw["train"] = raw["train"].select(train_rows(len(raw["train"]), data_args.max_train_samples,
                                                      data_args.train_subset_seed))
    if data_args.max_eval_samples is not None:
        for split in task.eval_splits:
            raw[split] = raw[split].select(range(min(data_args.max_eval_samples, len(raw[split]))))

    # The task's label names in the config (a Hub widget and pipeline then say "positive", not "LABEL_1").
    labels = ({"id2label": dict(enumerate(task.label_names)),
               "label2id": {name: i for i, name in enumerate(task.label_names)}} if task.label_names
              else {"num_labels": task.num_labels})
    config = load_or_explain(AutoConfig.from_pretrained, "model_name_or_path", model_args.model_name_or_path,
                             finetuning_task=task.name, **labels)
    tokenizer = load_or_explain(AutoTokenizer.from_pretrained, "tokenizer_name" if model_args.tokenizer_name
                                else "model_name_or_path", model_args.tokenizer_name or model_args.model_name_or_path)

    def make_model():
        return AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes
        )

    first, second = task.keys

    def tokenize(batch):
        texts = (batch[first],) if second is None else (batch[first], batch[second])
        return tokenizer(*texts, truncation=True, max_length=data_args.max_seq_length)

    with training_args.main_process_first(desc="tokenising"):
        data = raw.map(tokenize, batched=True, desc="Tokenising")
    if task.is_regression:
        data = data.cast_column("label", Value("float32"))
    return task, data, tokenizer, make_model


def main(argv: list[str] | None = None) -> None:
    """scripts/glue.py: a mistake is one line and exit status 1 or 2 (`emp_hf.cli.guard`)."""
    argv = sys.argv[1:] if argv is None else argv
    with guard("glue.py") as run:
        model_args, data_args, training_args, pruning_args = parse(argv)
        # TrainingArguments fills an unset output_dir with "trainer_output"; give each run its own folder instead.
        if not any(a == "--output_dir" or a.startswith("--output_dir=") for a in argv) and not (
                len(argv) == 1 and argv[0].endswith(".json")):
            training_args.output_dir = os.path.join(
                "output", f"{data_args.task}-{pruning_args.method}-{pruning_args.prune}-seed{training_args.seed}")
        run.output_dir = training_args.output_dir
        train_and_evaluate(model_args, data_args, training_args, pruning_args)


def train_and_evaluate(model_args, data_args, training_args, pruning_args) -> None:
    import torch

    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # pinning needs an accelerator; on a CPU it only warns
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO
                        if training_args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)
    task, data, tokenizer, make_model = prepare(model_args, data_args, training_args)
    model = make_model()

    def compute_metrics(p):
        return compute_glue_metrics(task, p.predictions, p.label_ids)

    budget = pruning_args.budget_examples
    trainer = PruningTrainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data[task.eval_splits[0]],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        pruning_args=pruning_args,
    )
    start = time.time()
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    wall = time.time() - start
    trainer.save_model()
    metrics = dict(train_result.metrics)
    metrics["train_samples"] = len(data["train"])
    trainer.save_metrics("train", metrics)
    trainer.save_state()

    eval_metrics: dict[str, float] = {}
    for split in task.eval_splits:
        result = trainer.evaluate(eval_dataset=data[split])
        suffix = "" if split == task.eval_splits[0] else "_mm"
        result = {f"{k}{suffix}": v for k, v in result.items()}
        result[f"eval_samples{suffix}"] = len(data[split])
        eval_metrics.update(result)
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("eval", eval_metrics)

    key = f"eval_{main_metric(task)}"
    report = trainer.pruning_report()
    if trainer.is_world_process_zero():
        # the metric per epoch where the run evaluated each epoch, and at the end (the final evaluation)
        curve = [(h["epoch"], h[key]) for h in trainer.state.log_history if key in h]
        plot_run(os.path.join(training_args.output_dir, PLOT_FILE), report,
                 {f"validation {main_metric(task)}": curve}, main_metric(task))

    # base_model: a Hub id only (the given id, or the model name when it is not a local folder); never a path.
    base = model_args.base_model_id or (None if os.path.isdir(model_args.model_name_or_path)
                                         else model_args.model_name_or_path)
    kwargs = {"finetuned_from": base, "tasks": "text-classification", "language": "en", "dataset_tags": "nyu-mll/glue",
              "dataset_args": task.name, "dataset": f"GLUE {task.name.upper()}",
              "card_sections": card_sections(task, data, data_args, base, pruning_args)}
    if training_args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    elif trainer.is_world_process_zero():
        trainer.create_model_card(**kwargs)

    if trainer.is_world_process_zero():
        twin = report.get("budget_matched_twin")
        print(
            f"[emp-hf] task={task.name} method={pruning_args.method} "
            + (f"prune={pruning_args.effective_prune} " if budget is None else f"budget_examples={budget:,} ")
            + f"{key}={eval_metrics.get(key, float('nan')):.4f} forwarded={report['forwarded_examples']:,}/"
            f"{report['full_data_examples']:,} saved={report['saved_fraction']:.3f} wall={wall:.1f}s "
            f"world_size={training_args.world_size}" + scoring_cost_note(report)
            + (f" | budget-matched twin: {twin['flags']}" if twin else "")
        )
    release_distributed(trainer)


def card_sections(task, data, data_args, base: str | None, pruning_args) -> dict[str, str]:
    """The model card's sections the run can fill (transformers leaves them "More information needed")."""
    train = data["train"]
    local = data_args.data_dir or data_args.train_file
    source = f"local files ({local})" if local else "the Hub's nyu-mll/glue"
    if data_args.max_train_samples is None:
        rows = f"all {len(train):,} training rows"
    elif data_args.train_subset_seed is None:
        rows = f"the first {len(train):,} training rows (`--max_train_samples {data_args.max_train_samples}`)"
    else:
        seed = data_args.train_subset_seed
        rows = (f"{len(train):,} training rows drawn at random with seed {seed} "
                f"(`--max_train_samples {data_args.max_train_samples} --train_subset_seed {seed}`)")
    evals = ", ".join(f"{split} ({len(data[split]):,} rows)" for split in task.eval_splits)
    labels = (f"labels {', '.join(f'{i} = {name}' for i, name in enumerate(task.label_names))}"
              if task.label_names else f"a similarity score in [{task.label_range[0]:g}, {task.label_range[1]:g}]")
    what = "a regression" if task.is_regression else f"{task.num_labels}-way classification"
    return {
        "Model description": f"{base or 'A sequence-classification model'} fine-tuned on GLUE {task.name.upper()} "
                             f"({what}; {labels}) with emp-hf dynamic data pruning, method `{pruning_args.method}`: "
                             "each pruned epoch trained on a subset chosen from per-example scores recorded during "
                             "training (see Data pruning below).",
        "Intended uses & limitations": f"GLUE {task.name.upper()} as the benchmark defines it (English). Evaluated "
                                       f"only on its validation split; trained on {rows}, with inputs cut to "
                                       f"{data_args.max_seq_length} tokens, so longer texts lose their end.",
        "Training and evaluation data": f"GLUE {task.name.upper()} from {source}: trained on {rows}; inputs "
                                        f"truncated to {data_args.max_seq_length} tokens; evaluated on {evals}.",
    }
