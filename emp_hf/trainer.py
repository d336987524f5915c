"""`PruningTrainer`: a `transformers.Trainer` that trains each epoch on the pruned subset.

Swap it in for `Trainer`; everything else stays the user's. What it changes:

* the train sampler is the core's `PruningSampler` (global order, identical on
  every process; Accelerate shards the batches);
* each training example carries its positional index (`INDEX_KEY`) through the
  collator to `compute_loss`, where it is popped before `model(**inputs)`;
* `compute_loss` returns the Trainer's own loss (times the infobatch weights),
  and records per-example loss and entropy, gathered from all ranks;
* the step plan: transformers fixes steps-per-epoch once from
  `len(train_dataloader)`; here every epoch gets its own length, `max_steps`
  (the LR horizon) is the sum of the planned per-epoch update steps, and a
  resumed run finds its epoch from those per-epoch counts;
* checkpoints carry `pruning_state.pt`; the end of training writes
  `pruning_report.json` and the model card gains a "Data pruning" section.

Private Trainer hooks used (transformers 5.x): `_get_train_sampler`,
`_set_signature_columns_if_needed`, `set_initial_training_values`,
`_init_training_state`, `_run_epoch`, `_save_checkpoint`, `_finalize_training`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset
from transformers import Trainer, TrainingArguments

from .core import POLICIES, DataPruner, PruningConfig, PruningSampler, classification_scores, gather_updates, regression_scores
from .core.distributed import shutdown
from .core.report import save_json

logger = logging.getLogger(__name__)

#: HfArgumentParser-ready settings; the same dataclass as the core's `PruningConfig`.
PruningArguments = PruningConfig

INDEX_KEY = "emp_example_index"
STATE_FILE = "pruning_state.pt"
REPORT_FILE = "pruning_report.json"
LABEL_KEYS = ("labels", "label", "label_ids")


class IndexedDataset(Dataset):
    """Adds each item's position under `INDEX_KEY`; the rest of the item is untouched."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _with_index(self, item: Any, index: int) -> dict[str, Any]:
        if not isinstance(item, Mapping):
            raise TypeError(
                f"PruningTrainer needs training examples that are dicts (got {type(item).__name__}): "
                "the example index travels as one more key."
            )
        return {**item, INDEX_KEY: index}

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._with_index(self.dataset[index], int(index))

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]
        return [self._with_index(item, int(i)) for item, i in zip(items, indices)]


class PlannedSampler(PruningSampler):
    """A PruningSampler whose length can be set to a planned epoch size, to ask the
    prepared dataloader (with its drop_last, sharding and even_batches rules)
    how many batches that epoch will have."""

    _assumed: int | None = None

    @contextlib.contextmanager
    def assume_size(self, size: int) -> Iterator[None]:
        self._assumed = size
        try:
            yield
        finally:
            self._assumed = None

    def __len__(self) -> int:
        return self._assumed if self._assumed is not None else super().__len__()


def _label_key(dataset: Any) -> str | None:
    """The dataset's label column (from `column_names`, or the first item's keys)."""
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        first = dataset[0]
        columns = list(first.keys()) if isinstance(first, Mapping) else []
    return next((k for k in LABEL_KEYS if k in columns), None)


def _label_column(dataset: Any) -> torch.Tensor | None:
    """Integer class labels of a `datasets.Dataset`, for the per-class report; None when not available."""
    key = _label_key(dataset)
    if key is None or getattr(dataset, "column_names", None) is None:
        return None
    try:
        return torch.as_tensor(dataset[key])
    except (TypeError, ValueError):
        return None


class PruningTrainer(Trainer):
    """`Trainer` with dynamic data pruning; `pruning_args` defaults to `PruningArguments()` (EMP, prune 0.5)."""

    def __init__(self, *args: Any, pruning_args: PruningConfig | None = None, **kwargs: Any) -> None:
        self.pruning_args = pruning_args if pruning_args is not None else PruningArguments()
        if not isinstance(self.pruning_args, PruningConfig):
            raise TypeError(f"`pruning_args` must be a PruningArguments, got {type(self.pruning_args).__name__}.")
        # Refuse bad input before the parent's checks, whose messages do not mention pruning.
        bound = inspect.signature(Trainer.__init__).bind(self, *args, **kwargs).arguments
        if bound.get("args") is not None:
            self._check_args(bound["args"])
        if bound.get("train_dataset") is not None:
            self._check_train_dataset(bound["train_dataset"], bound.get("compute_loss_func"))
        super().__init__(*args, **kwargs)
        self.pruner: DataPruner | None = None
        self._pruning_sampler: PlannedSampler | None = None
        self._epoch_batches: list[int] = []
        self._epoch_updates: list[int] = []
        self._planning_dataloader = None
        self._train_start: float | None = None
        self._check_args(self.args)

    # ------------------------------------------------------------ checks
    def _check_args(self, args: TrainingArguments) -> None:
        if args.max_steps is not None and args.max_steps > 0:
            raise ValueError(
                f"`max_steps={args.max_steps}` conflicts with pruning: PruningTrainer plans the run by epochs "
                "(each epoch trains on its own pruned subset). Set `num_train_epochs` (an integer) and leave "
                "`max_steps=-1`."
            )
        epochs = args.num_train_epochs
        if epochs < 1 or float(epochs) != int(epochs):
            raise ValueError(
                f"`num_train_epochs` must be a whole number >= 1 with pruning (the schedule prunes whole "
                f"epochs), got {epochs}."
            )
        strategy = getattr(args, "train_sampling_strategy", "random")
        if strategy not in ("random", None):
            raise ValueError(
                f"`train_sampling_strategy={strategy!r}` cannot be combined with pruning: the pruning "
                "sampler decides each epoch's examples and shuffles them itself. Use the default 'random'."
            )

    def _check_train_dataset(self, dataset: Any, compute_loss_func: Any = None) -> None:
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            raise ValueError(
                "PruningTrainer needs a map-style `train_dataset` with a length (e.g. `datasets.Dataset`): "
                "pruning picks examples by index each epoch, and an IterableDataset has neither a length "
                "nor indices."
            )
        if len(dataset) == 0:
            raise ValueError("`train_dataset` is empty: there is nothing to train on or prune.")
        if INDEX_KEY in (getattr(dataset, "column_names", None) or []):
            raise ValueError(f"`train_dataset` already has a column named {INDEX_KEY!r}, which PruningTrainer uses.")
        if POLICIES[self.pruning_args.method].uses_scores and _label_key(dataset) is None:
            raise ValueError(
                f"Method {self.pruning_args.method!r} scores each example by its loss, so `train_dataset` needs "
                f"a label column (one of {', '.join(LABEL_KEYS)}). Add labels, or use a method that reads no "
                f"scores ({', '.join(sorted(k for k, v in POLICIES.items() if not v.uses_scores))})."
            )

    # --------------------------------------------------------- dataloader
    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if INDEX_KEY not in self._signature_columns:
            self._signature_columns.append(INDEX_KEY)

    def _build_pruner(self, dataset: Any) -> DataPruner:
        return DataPruner(
            len(dataset),
            int(self.args.num_train_epochs),
            self.pruning_args,
            seed=self.args.seed,
            labels=_label_column(dataset),
        )

    def get_train_dataloader(self):
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        self._check_args(self.args)
        self._check_train_dataset(self.train_dataset, self.compute_loss_func)
        dataset = self.train_dataset
        self.pruner = self._build_pruner(dataset)
        self._train_start = None
        try:
            import datasets

            if isinstance(dataset, datasets.Dataset):
                dataset = self._remove_unused_columns(dataset, description="training")
        except ImportError:
            pass
        self._pruning_sampler = PlannedSampler(self.pruner)
        return self._get_dataloader(
            dataset=IndexedDataset(dataset),
            description="Training",
            batch_size=self._train_batch_size,
            sampler_fn=lambda _: self._pruning_sampler,
            is_training=True,
        )

    # --------------------------------------------------------- step plan
    def set_initial_training_values(self, args, dataloader):
        (num_train_epochs, _, num_examples, _, total_train_batch_size, _, _) = super().set_initial_training_values(
            args, dataloader
        )
        assert self.pruner is not None and self._pruning_sampler is not None
        self._planning_dataloader = dataloader  # the prepared loader, before any skip-wrapping on resume
        self._plan_steps(dataloader)
        max_steps = sum(self._epoch_updates)
        planned_examples = sum(self.pruner.plan())
        full = num_examples * num_train_epochs
        logger.info(
            "  Data pruning: method %s, prune %s; examples per epoch %s; %d of %d examples (%.1f%% saved%s); "
            "optimizer steps %d",
            self.pruning_args.method, self.pruning_args.prune, self.pruner.plan(), planned_examples, full,
            100 * (1 - planned_examples / full), "" if self.pruner.exact_plan else ", estimated", max_steps,
        )
        return (
            num_train_epochs,
            self._epoch_updates[0],
            num_examples,
            planned_examples,
            total_train_batch_size,
            self._epoch_batches[0],
            max_steps,
        )

    def _plan_steps(self, dataloader) -> None:
        """Batches and optimizer steps of every epoch, asked of the prepared dataloader (its drop_last,
        sharding and even_batches rules) for each planned epoch size."""
        assert self.pruner is not None and self._pruning_sampler is not None
        self._epoch_batches = []
        for size in self.pruner.current_plan():
            with self._pruning_sampler.assume_size(size):
                self._epoch_batches.append(len(dataloader))
        ga = self.args.gradient_accumulation_steps
        self._epoch_updates = [math.ceil(b / ga) for b in self._epoch_batches]

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial):
        epochs_trained, steps_in_epoch_done = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        if resume_from_checkpoint is None or self.state.global_step == 0:
            return epochs_trained, steps_in_epoch_done
        state_path = os.path.join(resume_from_checkpoint, STATE_FILE)
        if not os.path.isfile(state_path):
            raise ValueError(
                f"Checkpoint {resume_from_checkpoint!r} has no {STATE_FILE}: it was not written by PruningTrainer, "
                "so the pruning scores and selection cannot be restored."
            )
        assert self.pruner is not None
        self.pruner.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=False))
        # The restored state knows the real sizes of the epochs already run (infobatch's differ from the plan).
        self._plan_steps(self._planning_dataloader)
        self.state.max_steps = sum(self._epoch_updates)
        # Locate the epoch from the per-epoch step counts (the parent assumes equal epochs).
        done = self.state.global_step
        epochs_trained = 0
        while epochs_trained < len(self._epoch_updates) and done >= self._epoch_updates[epochs_trained]:
            done -= self._epoch_updates[epochs_trained]
            epochs_trained += 1
        steps_in_epoch_done = 0 if self.args.ignore_data_skip else done * self.args.gradient_accumulation_steps
        return epochs_trained, steps_in_epoch_done

    def _run_epoch(self, model, epoch, train_dataloader, steps_in_epoch, num_update_steps_per_epoch, *args, **kwargs):
        assert self.pruner is not None and self._pruning_sampler is not None
        if self._train_start is None:
            self._train_start = time.time()
        self._pruning_sampler.set_epoch(epoch)
        steps_in_epoch = len(train_dataloader)
        num_update_steps_per_epoch = math.ceil(steps_in_epoch / self.args.gradient_accumulation_steps)
        if self.pruner.exact_plan and steps_in_epoch != self._epoch_batches[epoch]:
            raise RuntimeError(
                f"Epoch {epoch} has {steps_in_epoch} batches but {self._epoch_batches[epoch]} were planned."
            )
        if not self.pruner.exact_plan:
            self._retarget_horizon(self._planning_dataloader)
        record = self.pruner.report.epochs[epoch]
        self._log_pruning(
            {
                "pruning/kept": record.kept,
                "pruning/forwarded_so_far": self.pruner.report.forwarded_total,
                "pruning/saved_fraction_so_far": self._saved_fraction(),
                **({"pruning/mean_score": record.mean_score} if record.mean_score is not None else {}),
            }
        )
        return super()._run_epoch(
            model, epoch, train_dataloader, steps_in_epoch, num_update_steps_per_epoch, *args, **kwargs
        )

    def _log_pruning(self, logs: dict[str, Any]) -> None:
        """Through the Trainer's own `log` (so `report_to` integrations get it), unless logging is off."""
        if self.args.logging_strategy != "no":
            self.log(logs)

    def _saved_fraction(self) -> float:
        assert self.pruner is not None
        done = [r for r in self.pruner.report.epochs.values() if r.forwarded]
        full = self.pruner.num_examples * len(done)
        return 1.0 - sum(r.forwarded for r in done) / full if full else 0.0

    def _retarget_horizon(self, dataloader) -> None:
        """For a data-dependent plan (infobatch), once the epoch's real size is known, re-plan the steps
        and move `max_steps` and the LR schedule's horizon there (always: after a resume the scheduler
        is rebuilt with the initial estimate)."""
        self._plan_steps(dataloader)
        total = sum(self._epoch_updates)
        self.state.max_steps = total
        scheduler = self.lr_scheduler
        lambdas = getattr(scheduler, "lr_lambdas", None)
        retargeted = False
        for i, fn in enumerate(lambdas or []):
            if isinstance(fn, functools.partial) and "num_training_steps" in fn.keywords:
                lambdas[i] = functools.partial(fn.func, *fn.args, **{**fn.keywords, "num_training_steps": total})
                retargeted = True
        if not retargeted:
            logger.warning("Could not move the LR scheduler's horizon to the re-estimated %d steps.", total)

    # ----------------------------------------------------------- the loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        indices = inputs.pop(INDEX_KEY, None)
        if indices is None or not model.training or self.pruner is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = next((inputs[k] for k in LABEL_KEYS if k in inputs), None)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else outputs[1]
        if (labels is None or logits is None) and not self.pruner.policy.uses_scores:
            (all_idx,) = gather_updates(indices)
            self.pruner.count_forwarded(all_idx.numel())
            return (loss, outputs) if return_outputs else loss
        if labels is None or logits is None:
            raise ValueError(
                "PruningTrainer scores examples from the model's `logits` and the batch's `labels`; this batch "
                "has " + ("no labels." if labels is None else "no logits in the model output.")
            )
        if logits.shape[-1] == 1 and labels.is_floating_point():
            per_loss, entropy = regression_scores(logits, labels)
        else:
            per_loss, entropy = classification_scores(logits, labels, self.args.label_smoothing_factor)
        all_idx, all_loss, all_ent = gather_updates(indices, per_loss.detach(), entropy.detach())
        self.pruner.update(all_idx, all_loss, all_ent)
        if self.pruner.weighted:
            weights = self.pruner.loss_weights(indices.detach().cpu())
            # The Trainer's loss is sum(l_i) / D for some normaliser D (batch size, or tokens across the
            # accumulation window); keep D and weight the terms: sum(w_i l_i) / D.
            denominator = per_loss.detach().sum() / loss.detach()
            if torch.isfinite(denominator) and denominator > 0:
                loss = (per_loss * weights.to(per_loss.device)).sum() / denominator
        return (loss, outputs) if return_outputs else loss

    # --------------------------------------------------- checkpoints/end
    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        if self.pruner is not None and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            torch.save(self.pruner.state_dict(), os.path.join(folder, STATE_FILE))
        super()._save_checkpoint(model, trial)

    def _finalize_training(self, trial, num_train_samples, start_time):
        output = super()._finalize_training(trial, num_train_samples, start_time)
        if self.pruner is None:
            return output
        wall = time.time() - (self._train_start or start_time)
        forwarded = self.pruner.report.forwarded_total
        report = self.pruning_report(train_wall_time_s=wall,
                                     train_samples_per_second=forwarded / wall if wall > 0 else None)
        if self.args.should_save:
            os.makedirs(self.args.output_dir, exist_ok=True)
            save_json(report, os.path.join(self.args.output_dir, REPORT_FILE))
        facts = {
            "pruning_forwarded_examples": report["forwarded_examples"],
            "pruning_full_data_examples": report["full_data_examples"],
            "pruning_saved_fraction": report["saved_fraction"],
        }
        output.metrics.update(facts)
        self._log_pruning(facts)
        return output

    def pruning_report(self, **extra: Any) -> dict[str, Any]:
        """The report of the current (or last) run, as written to `pruning_report.json`."""
        if self.pruner is None:
            raise RuntimeError("No training has run yet, so there is no pruning report.")
        return self.pruner.summary(
            world_size=self.args.world_size,
            gradient_accumulation_steps=self.args.gradient_accumulation_steps,
            optimizer_steps=self.state.global_step,
            planned_optimizer_steps=sum(self._epoch_updates),
            **extra,
        )

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        super().create_model_card(*args, **kwargs)
        if not self.is_world_process_zero():
            return
        path = os.path.join(self.args.output_dir, "README.md")
        report_path = os.path.join(self.args.output_dir, REPORT_FILE)
        if not os.path.isfile(path):
            return
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n" + model_card_section(self.pruning_args, report_path))


def release_distributed(trainer: Trainer | None = None) -> None:
    """End a multi-process run cleanly: free the trainer's DDP wrapper, then the process group
    (`emp_hf.core.distributed.shutdown`), so the group is not destroyed from inside DDP's destructor."""
    if trainer is not None:
        trainer.model_wrapped = trainer.model
        trainer.accelerator.free_memory()
    shutdown()


def model_card_section(config: PruningConfig, report_path: str) -> str:
    import json

    lines = [
        "## Data pruning",
        "",
        f"Trained with [emp-hf](https://pypi.org/project/emp-hf/) dynamic data pruning: method "
        f"`{config.method}`, prune ratio {config.prune}.",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in config.to_dict().items() if v is not None]
    if os.path.isfile(report_path):
        report = json.loads(open(report_path, encoding="utf-8").read())
        lines += [
            "",
            f"Measured: {report['forwarded_examples']:,} examples forwarded of {report['full_data_examples']:,} "
            f"for full-data training over {report['epochs_run']} epochs "
            f"(saved fraction {report['saved_fraction']:.3f}); training wall time "
            f"{report.get('train_wall_time_s', float('nan')):.1f} s. Details: `{REPORT_FILE}`.",
        ]
    return "\n".join(lines) + "\n"
