"""`PruningMixin`: its constructor, input checks and dataloader; the rest of it lives in one module per concept
(scoring, plan, checkpoints, report)."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import IterableDataset
from transformers import Seq2SeqTrainer, Trainer, TrainingArguments

from .. import _compat
from ..core import DataPruner, PruningConfig, ScoreBuffer
from ..core.distributed import shutdown
from ..core.epoch_plan import EpochPlan
from ..data_identity import train_data_fingerprint
from ..loss_check import LossCheck
from ..scorers import (
    Choice,
    Scorer,
    ScorerFn,
    resolve_requested,
)
from .checkpoints import Checkpointing
from .data import IndexedDataset, IndexingCollator, PlannedSampler, label_column
from .plan import StepPlanning
from .report import PruningCallback, Reporting
from .scoring import ScoringSteps, _Step

logger = logging.getLogger("emp_hf")


def check_training_args(args: TrainingArguments) -> None:
    """The `TrainingArguments` pruning cannot take (a step budget, a fractional epoch, another sampler): checked
    by the trainer, and by the scripts as soon as the flags are parsed."""
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


#: HfArgumentParser-ready settings; the same dataclass as the core's `PruningConfig`.
PruningArguments = PruningConfig


class PruningMixin(ScoringSteps, StepPlanning, Checkpointing, Reporting):
    """Dynamic data pruning for a `transformers.Trainer` subclass: put it first in the bases.

    `pruning_args` defaults to `PruningArguments()` (EMP, prune 0.5). `scorer` picks how examples are
    scored: "auto" (default: read off the model's declared loss, and logged), a built-in name
    (`emp_hf.scorers.SCORER_NAMES`), or a callable `(outputs, inputs) -> (loss[B], entropy[B][, items[B]])`.
    Whatever the scorer, every training step checks that its per-example terms add up to the loss the step
    trained on (`loss_check.py`); `verify_scores=False` turns that off for a user scorer that ranks examples
    by something other than their loss on purpose (the log then says the scores are unverified).
    """
    def __init__(self, *args: Any, pruning_args: PruningConfig | None = None,
                 scorer: str | ScorerFn | None = None, verify_scores: bool = True, **kwargs: Any) -> None:
        self.pruning_args = pruning_args if pruning_args is not None else PruningArguments()
        if not isinstance(self.pruning_args, PruningConfig):
            raise TypeError(f"`pruning_args` must be a PruningArguments, got {type(self.pruning_args).__name__}.")
        if not isinstance(verify_scores, bool):
            raise TypeError(f"`verify_scores` must be True or False, got {verify_scores!r}.")
        self._requested_scorer, self._user_scorer = resolve_requested(scorer)
        self._verify_scores = verify_scores
        # Refuse bad input before the parent's checks, whose messages do not mention pruning.
        bound = inspect.signature(super().__init__).bind(*args, **kwargs).arguments
        if bound.get("args") is not None:
            self._check_args(bound["args"])
        if bound.get("train_dataset") is not None:
            self._check_train_dataset(bound["train_dataset"])
        super().__init__(*args, **kwargs)
        _compat.check_trainer_attributes(self)
        logger.setLevel(self.args.get_process_log_level())  # follow the Trainer's verbosity (log_level)
        self.pruner: DataPruner | None = None
        self._pruning_sampler: PlannedSampler | None = None
        self._epoch_plan = EpochPlan([], [])  # the run's step plan (`plan.py`)
        self._planning_dataloader = None
        self._train_start: float | None = None
        self._scorer: Scorer | None = self._user_scorer
        self._choice: Choice | None = None  # candidate scorers until the first step's loss decides
        self._scorer_checked = False  # the first scored step has checked (and picked) the scorer
        self._fingerprint_of: tuple[Any, Any] | None = None  # (dataset key, its fingerprint)
        # The optimizer step whose batches are being forwarded, the buffered rows before it, and the RNG at its
        # start: a checkpoint saved inside a window (the JIT checkpoint on SIGTERM) holds none of that window.
        self._window_step: int | None = None
        self._committed_rows = 0
        self._window_rng: dict[str, Any] | None = None
        self._nonfinite_rows: Tensor | int = 0  # examples in steps whose loss was NaN/inf, on the device
        self._interrupted_by: str | None = None
        self._loss_check = LossCheck()
        self._scores: ScoreBuffer | None = None
        self._epoch_flushed: int | None = None  # the last epoch whose end flushed its scores
        self._step: _Step | None = None
        self._hooked: torch.nn.Module | None = None
        self._hook_handle: torch.utils.hooks.RemovableHandle | None = None
        self._pruning_callback = PruningCallback(self)  # the per-epoch log and pruning_report.json
        self.add_callback(self._pruning_callback)
        self._check_args(self.args)
        self._record_trained_loss()

    def _check_args(self, args: TrainingArguments) -> None:
        check_training_args(args)

    def _check_train_dataset(self, dataset: Any) -> None:
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            raise ValueError(
                "PruningTrainer needs a map-style `train_dataset` with a length (e.g. `datasets.Dataset`): "
                "pruning picks examples by index each epoch, and an IterableDataset has neither a length "
                "nor indices."
            )
        if len(dataset) == 0:
            raise ValueError("`train_dataset` is empty: there is nothing to train on or prune.")

    def _check_collator_takes(self, dataset: Any) -> None:
        """transformers' default collators need dict examples; say so instead of failing inside them."""
        from transformers import DataCollatorWithPadding, default_data_collator

        first = dataset[0]
        default = self.data_collator is default_data_collator or isinstance(self.data_collator, DataCollatorWithPadding)
        if default and not isinstance(first, Mapping):
            raise ValueError(
                f"`train_dataset` items are {type(first).__name__}s, but the Trainer's default data collator needs "
                "dicts (feature name -> value). Return dicts from the dataset, or pass a `data_collator` that turns "
                "your items into a dict batch for `model(**batch)`."
            )

    def _build_pruner(self, dataset: Any, fingerprint) -> DataPruner:
        args = self.args
        return DataPruner(
            len(dataset),
            int(args.num_train_epochs),
            self.pruning_args,
            seed=args.seed,
            labels=label_column(dataset, self.label_names),
            run_facts={  # what shapes the step plan besides the pruning settings: compared on resume
                "world_size": args.world_size, "per_device_train_batch_size": args.per_device_train_batch_size,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "dataloader_drop_last": args.dataloader_drop_last,
            },
            data_fingerprint=fingerprint,
        )

    def get_train_dataloader(self):
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        self._check_args(self.args)
        self._check_train_dataset(self.train_dataset)
        dataset = self.train_dataset
        self._check_collator_takes(dataset)
        try:
            import datasets

            is_hf_dataset = isinstance(dataset, datasets.Dataset)
        except ImportError:
            is_hf_dataset = False
        if is_hf_dataset:
            dataset = self._remove_unused_columns(dataset, description="training")
            inner = self.data_collator
        else:
            inner = self._get_collator_with_removed_columns(self.data_collator, description="training")
        fingerprint = self._data_fingerprint(dataset)
        pruner = self._build_pruner(dataset, fingerprint)
        if self.pruner is None or self.pruner.plan_settings() != pruner.plan_settings() \
                or self.pruner.data_fingerprint != fingerprint:
            # A new plan or new data: a new pruning state. The same again (a second call, e.g. by a callback or an
            # evaluation helper) keeps the scores and selections recorded so far.
            self.pruner = pruner
            self._scores = ScoreBuffer(pruner, capacity=-(-len(dataset) // max(1, self.args.world_size)) + 64)
            self._train_start = None
        self._hook_model()
        self._pruning_sampler = PlannedSampler(self.pruner)
        # `_get_dataloader` reads `self.data_collator`: hand it the indexing collator for this one call.
        user_collator, self.data_collator = self.data_collator, IndexingCollator(inner)
        try:
            return self._get_dataloader(
                dataset=IndexedDataset(dataset),
                description="Training",
                batch_size=self._train_batch_size,
                sampler_fn=lambda _: self._pruning_sampler,
                is_training=True,
            )
        finally:
            self.data_collator = user_collator

    def _data_fingerprint(self, dataset: Any):
        """The fingerprint of the rows the model trains on (computed once per dataset object), recorded in every
        checkpoint and compared on resume."""
        key = getattr(dataset, "_fingerprint", None) or id(dataset)  # datasets' own lineage fingerprint
        if self._fingerprint_of is not None and self._fingerprint_of[0] == key:
            return self._fingerprint_of[1]
        start = time.time()
        found = train_data_fingerprint(dataset)
        self._fingerprint_of = (key, found)
        logger.info("Training data fingerprint: %d rows, %s (%.1f s)", found.rows, found.ordered[:16],
                    time.time() - start)
        return found


def release_distributed(trainer: Trainer | None = None) -> None:
    """End a multi-process run cleanly: free the trainer's DDP wrapper, then the process group
    (`emp_hf.core.distributed.shutdown`), so the group is not destroyed from inside DDP's destructor."""
    if trainer is not None:
        trainer.model_wrapped = trainer.model
        trainer.accelerator.free_memory()
    shutdown()


class PruningTrainer(PruningMixin, Trainer):
    """`transformers.Trainer` with dynamic data pruning (see `PruningMixin`)."""


class PruningSeq2SeqTrainer(PruningMixin, Seq2SeqTrainer):
    """`transformers.Seq2SeqTrainer` with dynamic data pruning; generation-based evaluation is unchanged."""
