"""`PruningMixin`: dynamic data pruning for `transformers.Trainer` and any of its subclasses.

    class PruningSeq2SeqTrainer(PruningMixin, Seq2SeqTrainer): ...   # shipped, as is PruningTrainer

What it changes, and nothing else:

* the train sampler is the core's `PruningSampler` (global order, identical on every process;
  Accelerate shards the batches);
* each training example travels with its position: the dataset yields (index, example) pairs and the
  outermost collate function peels the indices off, calls the user's collator on the examples alone and
  puts the indices into the batch, so custom collators never see them;
* `training_step` takes the indices out before the Trainer's own step, and a forward hook on the model
  scores the examples from the training forward pass (`scorers.py`), whatever `compute_loss` does; the
  loss is untouched (InfoBatch's weights scale each example's gradient at the output rows instead);
* the step plan: transformers fixes steps-per-epoch once from `len(train_dataloader)`; here every epoch
  gets its own length, `max_steps` (the LR horizon) is the sum of the planned per-epoch update steps, and
  a resumed run finds its epoch from those per-epoch counts;
* checkpoints carry `pruning_state.pt`; the end of training writes `pruning_report.json` and the model
  card gains a "Data pruning" section.

Every private Trainer hook used is listed and version-checked in `_compat.py`. Anything that would make
the scores wrong (no index, no logits, no labels, packed rows, the index reaching the model) stops the
run at the first training step, before any optimizer step, with the cause and the fix.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset
from transformers import Seq2SeqTrainer, Trainer, TrainingArguments

from . import _compat  # checks the installed transformers at import
from .core import DataPruner, PruningConfig, PruningSampler, ScoreBuffer
from .core.distributed import max_across_ranks, shutdown
from .core.report import save_json
from .core.run_lock import RunLock
from .core.state_file import (
    MANIFEST,
    DamagedStateError,
    check_manifest,
    load_state_file,
    newest_complete,
    no_space_error,
    remove_manifest,
    require,
    save_state_file,
    write_manifest,
)
from .data_identity import train_data_fingerprint
from .loss_check import LossCheck, LossMismatchError, Reference
from .scorers import (
    Choice,
    Scorer,
    ScorerChoiceError,
    ScorerFn,
    base_model,
    choose_scorers,
    describe,
    output_field,
    per_example,
    resolve_requested,
)

logger = logging.getLogger("emp_hf")

#: HfArgumentParser-ready settings; the same dataclass as the core's `PruningConfig`.
PruningArguments = PruningConfig

INDEX_KEY = "emp_example_index"
STATE_FILE = "pruning_state.pt"
REPORT_FILE = "pruning_report.json"
_LABEL_COLUMNS = ("label", "labels", "label_ids")


class IndexedExample(NamedTuple):
    """A training example and its position in the train dataset (a tuple, so that the Trainer's
    column-removing collator passes it through untouched)."""

    index: int
    example: Any


class IndexedDataset(Dataset):
    """Yields `IndexedExample(position, item)`; the item itself is untouched (dict, tuple, anything)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> IndexedExample:
        return IndexedExample(int(index), self.dataset[index])

    def __getitems__(self, indices: list[int]) -> list[IndexedExample]:
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]
        return [IndexedExample(int(i), item) for i, item in zip(indices, items)]


class IndexingCollator:
    """The outermost collate function: the user's collator sees the examples alone, the batch gets the indices."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, features: list[IndexedExample]) -> MutableMapping[str, Any]:
        indices = torch.tensor([f.index for f in features], dtype=torch.int64)
        batch = self.collator([f.example for f in features])
        if not isinstance(batch, MutableMapping):
            raise TypeError(
                f"The data collator returned a {type(batch).__name__}; the Trainer calls `model(**batch)`, so it "
                "must return a dict of tensors (PruningTrainer adds the example index to it)."
            )
        if INDEX_KEY in batch:
            raise ValueError(f"The collated batch already has a key {INDEX_KEY!r}, which PruningTrainer uses.")
        batch[INDEX_KEY] = indices
        return batch


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


class TrainingDiverged(RuntimeError):
    """The loss or the weights went NaN/inf: the run stops, naming the last good checkpoint."""


class TrainingInterrupted(RuntimeError):
    """A signal stopped the run before its plan's end; its checkpoint resumes it."""


def _rng_states() -> dict[str, Any]:
    """The RNG states the Trainer saves in a checkpoint (python, numpy, torch CPU and accelerator)."""
    import random

    import numpy as np

    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                              "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


@contextlib.contextmanager
def _rng_as(states: dict[str, Any] | None) -> Iterator[None]:
    """Run the block with the RNGs set to `states` (then back to where they were); nothing when None."""
    if states is None:
        yield
        return
    import random

    import numpy as np

    now = _rng_states()
    for key, setter in (("python", random.setstate), ("numpy", np.random.set_state),
                        ("cpu", torch.random.set_rng_state), ("cuda", torch.cuda.set_rng_state_all)):
        if key in states:
            setter(states[key])
    try:
        yield
    finally:
        for key, setter in (("python", random.setstate), ("numpy", np.random.set_state),
                            ("cpu", torch.random.set_rng_state), ("cuda", torch.cuda.set_rng_state_all)):
            if key in now:
                setter(now[key])


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Scores in float32 whatever the step's mixed precision: autocast would run their products in bf16/fp16."""
    try:
        return torch.autocast(device.type, enabled=False)
    except RuntimeError:  # a device type without autocast
        return contextlib.nullcontext()


def label_column(dataset: Any, label_names: list[str] | None) -> Tensor | None:
    """1-D integer class labels of a `datasets.Dataset`, for the report's per-class section only.

    Best effort: any other label form (token labels, multi-label vectors, floats, no labels, a torch
    Dataset) skips that section of the report, never the run."""
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        return None
    key = next((k for k in [*(label_names or []), *_LABEL_COLUMNS] if k in columns), None)
    if key is None:
        return None
    try:
        # `[:]`: datasets >= 4 returns a lazy column, which torch would read one row at a time (seconds at 10^5 rows)
        labels = torch.as_tensor(dataset[key][:])
    except (TypeError, ValueError, RuntimeError):
        return None
    if labels.dim() != 1 or labels.is_floating_point() or labels.numel() != len(dataset) or labels.numel() == 0:
        return None
    return labels if int(labels.min()) >= 0 else None


@dataclass
class _Step:
    """What one training step's forward hook and `compute_loss` leave behind."""

    indices: Tensor
    inputs: Mapping[str, Any]
    num_items: Tensor | int | None = None
    forwards: int = 0
    scored: list[tuple[Scorer, Any]] | None = None  # (scorer, LossTerms) per candidate scorer
    model_loss: tuple[Tensor, ...] | None = None  # the loss the model returned (and less its auxiliary term)
    trained_loss: Tensor | None = None  # the loss compute_loss returned


class PruningMixin:
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
        self._epoch_batches: list[int] = []
        self._epoch_updates: list[int] = []
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
        self._step: _Step | None = None
        self._hooked: torch.nn.Module | None = None
        self._hook_handle: torch.utils.hooks.RemovableHandle | None = None
        self._check_args(self.args)
        self._record_trained_loss()

    def _record_trained_loss(self) -> None:
        """Keep the loss `compute_loss` returns in a training step: the reference for the scores where the labels
        never reach the model (label smoothing, `compute_loss_func`, a `compute_loss` override, TRL). Wrapped on
        this instance, so that a subclass's own `compute_loss` is the one recorded."""
        own = self.compute_loss

        @functools.wraps(own)
        def compute_loss(*args: Any, **kwargs: Any) -> Any:
            result = own(*args, **kwargs)
            step = self._step
            if step is not None and torch.is_grad_enabled():
                loss = result[0] if isinstance(result, tuple) else result
                if isinstance(loss, Tensor) and loss.numel() == 1:
                    step.trained_loss = loss.detach()
            return result

        self.compute_loss = compute_loss  # type: ignore[method-assign]

    def evaluate(self, *args: Any, **kwargs: Any):
        """`Trainer.evaluate`, leaving the random number generators as it found them. Creating the evaluation
        dataloader's iterator draws from torch's global generator, so evaluating during training would otherwise
        shift every later dropout mask and shuffle: two runs that differ only in `eval_strategy` would train
        differently (measured: 2.5 points of SST-2 accuracy)."""
        with _rng_as(_rng_states()):
            return super().evaluate(*args, **kwargs)

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

    # --------------------------------------------------------- dataloader
    def _build_pruner(self, dataset: Any) -> DataPruner:
        pruner = DataPruner(
            len(dataset),
            int(self.args.num_train_epochs),
            self.pruning_args,
            seed=self.args.seed,
            labels=label_column(dataset, self.label_names),
        )
        args = self.args
        pruner.run_facts = {  # what shapes the step plan besides the pruning settings: compared on resume
            "world_size": args.world_size, "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "dataloader_drop_last": args.dataloader_drop_last,
        }
        return pruner

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """`Trainer.train`; `resume_from_checkpoint=True` or "latest" resumes from the newest *complete*
        checkpoint in `output_dir` (one whose manifest matches its files; others are skipped, saying why), and
        refuses when there is none, instead of starting over. The output folder is locked for this process's
        life: a second run into it is refused. A run stopped by SIGTERM (`enable_jit_checkpoint`) ends with
        `TrainingInterrupted` after its checkpoint, not as a finished run."""
        if self.args.should_save:
            RunLock(self.args.output_dir).acquire()
        if resume_from_checkpoint is True or resume_from_checkpoint == "latest":
            found = newest_complete(self.args.output_dir, "checkpoint-", checkpoint_pruning_state)
            if found is None:
                raise ValueError(
                    f"resume_from_checkpoint={resume_from_checkpoint!r}: no complete checkpoint in "
                    f"{self.args.output_dir!r}. Drop the flag to start a new run."
                )
            logger.warning("Resuming from %s, the newest complete checkpoint.", found[0])
            resume_from_checkpoint = str(found[0])
        elif isinstance(resume_from_checkpoint, (str, os.PathLike)):
            checkpoint_pruning_state(resume_from_checkpoint)  # complete and undamaged, before anything is loaded
        self._interrupted_by = None
        with self._watch_sigterm():
            return super().train(resume_from_checkpoint, *args, **kwargs)

    @contextlib.contextmanager
    def _watch_sigterm(self) -> Iterator[None]:
        """With `enable_jit_checkpoint`, the Trainer saves a checkpoint on SIGTERM and stops early; note the signal
        so that the end of training reports an interruption, not a finished run."""
        import signal
        import threading

        if not getattr(self.args, "enable_jit_checkpoint", False) or threading.current_thread() is not \
                threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGTERM)

        def noted(signum, frame):
            self._interrupted_by = "SIGTERM"
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, noted)
        try:
            yield
        finally:
            if signal.getsignal(signal.SIGTERM) is noted:
                signal.signal(signal.SIGTERM, previous)

    def get_train_dataloader(self):
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        self._check_args(self.args)
        self._check_train_dataset(self.train_dataset)
        dataset = self.train_dataset
        self._check_collator_takes(dataset)
        self.pruner = self._build_pruner(dataset)
        self._scores = ScoreBuffer(self.pruner, capacity=-(-len(dataset) // max(1, self.args.world_size)) + 64)
        self._hook_model()
        self._train_start = None
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
        self.pruner.data_fingerprint = self._data_fingerprint(dataset)
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

    # --------------------------------------------------------- step plan
    def set_initial_training_values(self, args, dataloader):
        (num_train_epochs, _, num_examples, _, total_train_batch_size, _, _) = super().set_initial_training_values(
            args, dataloader
        )
        assert self.pruner is not None and self._pruning_sampler is not None
        self._planning_dataloader = dataloader  # the prepared loader, before any skip-wrapping on resume
        self._plan_steps(dataloader)
        max_steps = sum(self._epoch_updates)
        plan = self.pruner.plan()
        planned_examples = sum(plan)
        full = num_examples * num_train_epochs
        saved = 1 - planned_examples / full
        logger.info(
            "Data pruning: method %s, prune %s; examples per epoch %s; %d of %d examples (%.1f%% saved%s); "
            "optimizer steps %d",
            self.pruning_args.method, self.pruning_args.effective_prune, plan, planned_examples, full,
            100 * saved, "" if self.pruner.exact_plan else ", estimated", max_steps,
        )
        self._warn_if_little_is_pruned(plan, num_examples, saved)
        return (
            len(self._epoch_updates),  # the plan's epochs: fewer than num_train_epochs for a budget run
            self._epoch_updates[0],
            num_examples,
            planned_examples,
            total_train_batch_size,
            self._epoch_batches[0],
            max_steps,
        )

    def _warn_if_little_is_pruned(self, plan: list[int], num_examples: int, saved: float) -> None:
        prune = self.pruning_args.prune
        if prune == 0 or self.pruning_args.method == "full":
            return
        pruning_epochs = sum(size < num_examples for size in plan)
        if saved >= prune / 2:
            return
        anneal = self.pruner.config.effective_anneal
        logger.warning(
            "Data pruning will save only %.1f%% of the examples (prune %s): %d of %d epochs prune; epoch 0 is always "
            "full and anneal=%s keeps the last %d epoch(s) full. Train more epochs, or lower `anneal` (0 turns the "
            "annealing off).",
            100 * saved, prune, pruning_epochs, len(plan), anneal, self.pruner.schedule.num_anneal_epochs,
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

    def _init_training_state(
        self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
    ):
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
        state = checkpoint_pruning_state(resume_from_checkpoint, self.state.global_step)
        self.pruner.load_state_dict(state, source=state_path)
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
        self.pruner.prepare_loss_weights(self.args.device)  # here, once, not inside a training step
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
                **({"pruning/unscored_so_far": unscored} if (unscored := self._unscored()) else {}),
            }
        )
        result = super()._run_epoch(
            model, epoch, train_dataloader, steps_in_epoch, num_update_steps_per_epoch, *args, **kwargs
        )
        self._flush_scores()  # the next epoch's selection needs this epoch's scores
        self._check_finite(f"at the end of epoch {epoch}")
        return result

    def _log_pruning(self, logs: dict[str, Any]) -> None:
        """Through the Trainer's own `log` (so `report_to` integrations get it), unless logging is off."""
        if self.args.logging_strategy != "no":
            self.log(logs)

    def _unscored(self) -> int:
        """Examples forwarded so far that had nothing to score (no labelled position)."""
        assert self.pruner is not None
        return sum(r.unscored_rows for r in self.pruner.report.epochs.values())

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

    # ------------------------------------------------------- the scores
    def training_step(self, model, inputs, num_items_in_batch=None):
        """The Trainer's own step, with the example indices taken out of the batch first, the examples scored
        from the training forward pass (a forward hook), whatever `compute_loss` does, and the scores checked
        against the loss the step trained on."""
        if not isinstance(inputs, MutableMapping) or INDEX_KEY not in inputs:
            raise RuntimeError(
                "The training batch carries no example index, so pruning cannot tell which examples were trained. "
                "Cause: a `get_train_dataloader` override replaced PruningMixin's dataloader. Build the dataloader "
                "with `super().get_train_dataloader()`."
            )
        assert self.pruner is not None and self._scores is not None
        indices = inputs.pop(INDEX_KEY)
        if self._window_step != self.state.global_step:  # the first batch of an optimizer step's window
            self._window_step, self._committed_rows = self.state.global_step, len(self._scores)
            self._window_rng = _rng_states()
        self._step = _Step(indices=indices, inputs=dict(inputs), num_items=num_items_in_batch)
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
            step = self._step
        finally:
            self._step = None
        if step.forwards == 0:
            raise RuntimeError(
                "No forward pass of the model was seen in this training step, so nothing was scored. Cause: a "
                "`compute_loss` or `training_step` override that calls another module than `trainer.model`. Call "
                "`model(**inputs)` on the model the Trainer passes, or use a method that reads no scores."
            )
        if step.forwards > 1 and self.pruner.policy.uses_scores:
            raise RuntimeError(
                f"The model ran {step.forwards} forward passes with gradients in one training step; the scores of "
                "the first would be taken for the whole step. Pass a `scorer=` that fits your loss, or use a method "
                "that reads no scores (random, static_random, full)."
            )
        assert self._scores is not None
        # On the device until the epoch ends or a checkpoint is saved (`_flush_scores`): no per-step collective
        # or host copy.
        scored = None if step.scored is None else self._checked_scores(step)
        self._scores.add(indices, *(scored or ()))
        if isinstance(loss, Tensor):  # on the device: read where the scores are flushed (`_check_finite`)
            bad = ~torch.isfinite(loss.detach()).all()
            if scored is not None:  # a batch with nothing to score has a 0/0 loss: that is not divergence
                bad = bad & (scored[2] > 0).any()
            self._nonfinite_rows = self._nonfinite_rows + bad * indices.numel()
        return loss

    def _checked_scores(self, step: _Step) -> tuple[Tensor, Tensor, Tensor]:
        """The step's per-example loss, entropy and scorable flags (0 where an example had nothing to score),
        from terms checked against the step's loss: on the host at the first step (where the model's loss picks
        among candidate scorers), on the device after it."""
        assert step.scored is not None
        reference = self._reference(step)
        if not self._scorer_checked:
            chosen = self._first_check(step, reference)
            if chosen is None:  # the step's loss is not finite: nothing to decide on, and no finite score from it
                scorer, terms = step.scored[0]
                _, _, scorable = per_example(terms, step.indices.numel(), scorer)
                nan = torch.full(scorable.shape, math.nan, device=scorable.device)
                return nan, nan, scorable.float()
            scorer, terms = chosen
        else:
            scorer, terms = step.scored[0]
            if self._verify_scores and reference is not None:
                self._loss_check.record(terms, reference, self.state.global_step + 1)
        loss, entropy, scorable = per_example(terms, step.indices.numel(), scorer)
        return loss, torch.zeros_like(loss) if entropy is None else entropy, scorable.float()

    def _reference(self, step: _Step) -> Reference | None:
        """What this step trained on: the model's loss, else what `compute_loss` returned; with the normalisers
        a token mean may have used (its own count, the Trainer's `num_items_in_batch`, that per process)."""
        normalisers: tuple[Any, ...] = (None,)
        if step.num_items is not None:
            normalisers += (step.num_items,)
            if self.args.world_size > 1:
                normalisers += (step.num_items / self.args.world_size,)
        if step.model_loss is not None:
            return Reference(step.model_loss, "the loss the model returned", normalisers)
        if step.trained_loss is not None:
            return Reference((step.trained_loss,), "the loss compute_loss returned", normalisers)
        return None

    def _first_check(self, step: _Step, reference: Reference | None) -> tuple[Scorer, Any] | None:
        """The first scored step: pick the candidate whose terms reproduce the step's loss, or refuse before
        any optimizer step. None while the loss says nothing (no loss item in the batch)."""
        assert step.scored is not None
        prefix = f"PruningTrainer (method {self.pruning_args.method!r})"
        named = self._user_scorer is not None or self._requested_scorer is not None
        if not self._verify_scores or reference is None:
            if not named:
                raise ValueError(
                    f"{prefix}: this training step exposes no loss to check the scores against (the model returned "
                    "none and `compute_loss` returned no scalar), so the automatic scorer cannot be verified. Pass "
                    "`scorer=` (a built-in name or a callable) to use it unverified."
                )
            self._scorer, self._scorer_checked = step.scored[0][0], True
            logger.warning("Data pruning scores each example by the %s, UNVERIFIED: %s.", describe(self._scorer),
                           "`verify_scores=False`" if not self._verify_scores else "the step exposes no loss")
            return step.scored[0]
        finite = all(bool(torch.isfinite(v.detach()).all()) for v in reference.values)
        if float(max_across_ranks(torch.tensor([0.0 if finite else 1.0]))) > 0:  # every rank waits together
            return None
        batch = step.indices.numel()
        losses = [per_example(terms, batch, scorer)[0] for scorer, terms in step.scored]  # checks the batch size
        fix = ("Pass `scorer=` (a built-in name, or a callable (outputs, inputs) -> (loss, entropy[, items])) that "
               "reproduces your loss per example" + (", or `verify_scores=False` to rank by it unverified."
                                                       if named else "."))
        try:
            index = self._loss_check.decide([(sc, t, loss) for (sc, t), loss in zip(step.scored, losses)],
                                            reference, describe, fix)
        except LossMismatchError as error:
            raise ValueError(f"{prefix}: {error}") from None
        self._scorer, self._scorer_checked = step.scored[index][0], True
        logger.info(
            "Data pruning scores each example by the %s (%s); checked against %s on every step. Override with "
            "`scorer=`.", describe(self._scorer), self._choice.reason if self._choice else "named by `scorer=`",
            reference.source)
        return step.scored[index]

    def _flush_scores(self, committed_only: bool = False) -> None:
        """All ranks' buffered scores into the store (at each epoch's end and before each checkpoint save), once
        the steps since the last flush are known to have reproduced their loss. `committed_only`: leave out the
        batches of an optimizer step not yet taken (a save inside a gradient-accumulation window)."""
        if self._scores is None:
            return
        if self.pruner is not None and self.pruner.policy.uses_scores and self._verify_scores:
            failed = self._loss_check.failure()
            if failed is not None:
                step, predicted, actual = failed
                at = f"at step {step} the scores added up to {predicted:.6g} where the loss was {actual:.6g}" \
                    if step >= 0 else "on another process"
                raise RuntimeError(
                    f"Data pruning stopped: the per-example scores no longer reproduce the loss the model trains on "
                    f"({at}; scorer {describe(self._scorer) if self._scorer else '?'}). These scores were not used: "
                    "no selection has read them. Pass a `scorer=` that reproduces your loss per example (or "
                    "`verify_scores=False` to rank by a user scorer unverified), and resume from the last checkpoint."
                )
        in_window = committed_only and self._window_step == self.state.global_step
        self._scores.flush(self._committed_rows if in_window else None)
        self._committed_rows = 0

    def _check_finite(self, when: str) -> None:
        """Stop a run whose loss or weights went NaN/inf (beyond `nonfinite_tolerance` examples), before its
        state is saved or its scores select anything; every rank reaches the same verdict."""
        assert self.pruner is not None
        rows = self._nonfinite_rows if isinstance(self._nonfinite_rows, Tensor) else torch.tensor(0)
        params = [p.detach() for p in self.model.parameters()]
        weights_bad = torch.stack([~torch.isfinite(p).all() for p in params]).any() if params else torch.tensor(False)
        verdict = max_across_ranks(torch.stack([rows.float().cpu().reshape(()),
                                                weights_bad.float().cpu().reshape(())]))
        bad_rows = max(int(verdict[0]), self.pruner.store.nonfinite_count)
        tolerance = self.pruning_args.nonfinite_tolerance
        if not bool(verdict[1]) and bad_rows <= tolerance:
            return
        what = ("the model's weights hold NaN or inf" if bool(verdict[1]) else
                f"the loss of {bad_rows} example(s) was NaN or inf (nonfinite_tolerance={tolerance})")
        found = newest_complete(self.args.output_dir, "checkpoint-", checkpoint_pruning_state)
        last = (f"The last good checkpoint is {found[0]}: resume from it" if found is not None else
                "No checkpoint was saved before it: start again")
        raise TrainingDiverged(
            f"Training diverged: {what}, found {when} (step {self.state.global_step}). Nothing was saved as if the "
            f"run had finished. {last} with a lower learning rate, gradient clipping (max_grad_norm), or bf16 "
            "instead of fp16. To let a few non-finite examples pass (they keep their last finite score), set "
            "PruningArguments(nonfinite_tolerance=N)."
        )

    def _hook_model(self) -> None:
        """Put the scoring hook on the user's model, before Accelerate wraps it (DDP, FSDP and DeepSpeed call
        the wrapped module, so the hook fires inside them); once per model."""
        if self._hooked is self.model:
            return
        if self._hook_handle is not None:
            self._hook_handle.remove()
        self._hook_handle = self.model.register_forward_hook(self._on_forward, with_kwargs=True)
        self._hooked = self.model

    def _on_forward(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any], outputs: Any) -> None:
        if INDEX_KEY in kwargs:
            raise RuntimeError(
                f"The example index ({INDEX_KEY!r}) reached the model's forward: a `training_step` override did "
                "not call PruningMixin's, so the examples are not being scored. Call `super().training_step(...)`."
            )
        step = self._step
        if step is None or not torch.is_grad_enabled():
            return  # evaluation, or a no-grad forward for metrics (TRL)
        step.forwards += 1
        if step.forwards > 1:
            return
        assert self.pruner is not None
        step.model_loss = self._model_loss(module, outputs)
        candidates = self._candidates(outputs, step) if self.pruner.policy.uses_scores else ()
        if candidates:
            need_entropy = self.pruner.policy.uses_entropy
            with torch.no_grad(), _autocast_off(self.args.device):
                step.scored = [(scorer, scorer(outputs, step.inputs, need_entropy)) for scorer in candidates]
        if self.pruner.weighted:
            self._weight_gradients(candidates[0] if candidates else None, outputs, step.indices)

    @staticmethod
    def _model_loss(module: torch.nn.Module, outputs: Any) -> tuple[Tensor, ...] | None:
        """The loss the model returned, and that loss less its router auxiliary term (mixture-of-experts models
        add `router_aux_loss_coef * aux_loss`, which no example owns)."""
        loss = output_field(outputs, "loss")
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            return None
        loss = loss.detach()
        aux = output_field(outputs, "aux_loss")
        config = getattr(base_model(module), "config", None)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        coef = getattr(text, "router_aux_loss_coef", None)
        if isinstance(aux, Tensor) and aux.numel() == 1 and isinstance(coef, (int, float)):
            return loss, loss - coef * aux.detach().to(loss.device)
        return (loss,)

    def _candidates(self, outputs: Any, step: _Step) -> tuple[Scorer, ...]:
        if self._scorer is not None:
            return (self._scorer,)
        if self._choice is None:
            smoothing = 0.0
            if self.label_smoother is not None and step.model_loss is None and "labels" in step.inputs:
                smoothing = self.args.label_smoothing_factor  # the Trainer's label smoother computes the loss
            try:
                self._choice = choose_scorers(self._hooked, outputs, step.inputs, self.label_names,
                                              label_smoothing=smoothing, requested=self._requested_scorer)
            except ScorerChoiceError as error:
                raise ValueError(f"PruningTrainer (method {self.pruning_args.method!r}): {error}") from None
        return self._choice.candidates

    def _weight_gradients(self, scorer: Scorer | None, outputs: Any, indices: Tensor) -> None:
        """InfoBatch's loss weights w_i, applied to the gradient of each example's output rows.

        For a loss that is a sum of per-example terms over a normaliser D (every Trainer loss: batch mean,
        token mean with `num_items_in_batch`, label smoothing, a custom per-example loss), scaling row i of
        the gradient at the outputs by w_i gives exactly the gradient of sum_i w_i l_i / D, with the
        Trainer's own D and without touching its loss (tested against that sum)."""
        assert self.pruner is not None
        rows = scorer.grad_rows(outputs) if scorer is not None else (output_field(outputs, "logits"),)
        if not all(isinstance(r, Tensor) and r.shape[:1] == indices.shape[:1] and r.requires_grad for r in rows):
            raise RuntimeError(
                f"Method {self.pruning_args.method!r} weights each kept example's loss, which needs an output tensor "
                "with one row per example in the autograd graph (`logits`, or TRL's `log_probs`); this model's "
                "training output has none. Use a method without loss weights (emp, random, ucb, ...)."
            )
        weights = self.pruner.loss_weights(indices.to(rows[0].device))  # on the device: no host sync
        for row in rows:
            shape = (-1,) + (1,) * (row.dim() - 1)
            scale = weights.to(row.dtype).view(shape)
            row.register_hook(lambda grad, scale=scale: grad * scale)

    # --------------------------------------------------- checkpoints/end
    def _save_checkpoint(self, model, trial):
        """The Trainer's checkpoint with the pruning state in it, made complete by a manifest written last.

        A save inside a gradient-accumulation window (the JIT checkpoint on SIGTERM, before the optimizer step)
        holds the state at the window's start: its batches' scores stay out, and the RNG state saved is the
        window's starting one, so the resumed run redoes the window as the uninterrupted run did. Older
        checkpoints are rotated out only after the manifest, so a complete one always remains."""
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

        self._flush_scores(committed_only=True)  # every rank, before the state is written
        step = self.state.global_step
        self._check_finite(f"before saving checkpoint-{step}")
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
        if self.pruner is not None and self.args.should_save:
            os.makedirs(folder, exist_ok=True)
            remove_manifest(folder)  # a folder saved again is incomplete until its new manifest is written
            save_state_file({**self.pruner.state_dict(), "global_step": step}, os.path.join(folder, STATE_FILE))
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        in_window = self._window_step == step and self._window_rng is not None
        try:
            with _rng_as(self._window_rng if in_window else None):
                super()._save_checkpoint(model, trial)
        except Exception as error:  # noqa: BLE001 - rewrapped only when it is a full disk
            from pathlib import Path

            written = [p for p in Path(folder).rglob("*") if p.is_file()] if os.path.isdir(folder) else []
            last = max(written, key=lambda p: p.stat().st_mtime_ns, default=folder)  # the file it was writing
            full = no_space_error(error, last)
            if full is not None:
                raise full from None
            raise
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()  # every rank's files are in place
        if self.args.should_save:
            write_manifest(folder, step)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)

    def _finalize_training(self, trial, num_train_samples, start_time):
        if self._interrupted_by is not None or (self.state.global_step < self.state.max_steps
                                                and getattr(self.args, "enable_jit_checkpoint", False)
                                                and self.control.should_training_stop):
            found = newest_complete(self.args.output_dir, "checkpoint-", checkpoint_pruning_state)
            raise TrainingInterrupted(
                f"Training was interrupted ({self._interrupted_by or 'stopped early'}) at step "
                f"{self.state.global_step} of {self.state.max_steps}: nothing was written as if the run had "
                f"finished. {'Its state is in ' + str(found[0]) if found else 'No complete checkpoint holds it'}: "
                "resume with resume_from_checkpoint=True (the scripts' --resume_from_checkpoint latest)."
            )
        self._check_finite("at the end of training")
        if self._scores is not None and len(self._scores):  # every epoch ends with a flush (`_run_epoch`)
            raise RuntimeError("PruningTrainer: scores were left unflushed at the end of training.")
        if self.pruner is not None and self.pruner.epoch is not None:
            self.pruner.close_epoch(self.pruner.epoch)  # the last epoch's divergence check
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
        evals = [h for h in self.state.log_history if any(k.startswith("eval_") for k in h)]
        timing = ("_runtime", "_per_second")
        final = {k: v for k, v in (evals[-1] if evals else {}).items()
                 if k.startswith("eval_") and isinstance(v, (int, float)) and not k.endswith(timing)}
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n" + model_card_section(self.pruning_args, report_path, final))


def checkpoint_pruning_state(folder: os.PathLike[str] | str, step: int | None = None) -> dict[str, Any]:
    """The pruning state of a Trainer checkpoint folder, checked to belong to that checkpoint: it must be at
    `step` (when resuming, the step of the checkpoint's trainer_state.json), else at the step that the
    folder's trainer_state.json records. trainer_state.json is the Trainer's last write, so a folder where it
    parses, at the folder's own step, with a pruning state of the same step, is complete.
    Anything else raises `DamagedStateError` with the reason."""
    import json
    from pathlib import Path

    folder = Path(folder)
    if step is None:
        state_json = folder / "trainer_state.json"
        if not state_json.is_file():
            raise DamagedStateError("no trainer_state.json (the save was cut short)")
        try:
            step = int(json.loads(state_json.read_text(encoding="utf-8"))["global_step"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise DamagedStateError(f"trainer_state.json is damaged ({type(error).__name__})") from None
        if folder.name != f"checkpoint-{step}":
            raise DamagedStateError(f"trainer_state.json is at step {step}, not the folder's")
    path = folder / STATE_FILE
    if not path.is_file() and not (folder / MANIFEST).is_file():
        raise DamagedStateError(f"{folder} has no {STATE_FILE}: it was not written by PruningTrainer, so the pruning "
                                "scores and selection cannot be restored")
    check_manifest(folder, step)
    state = load_state_file(path)
    require(state, path, "global_step")
    if int(state["global_step"]) != step:
        raise DamagedStateError(
            f"{path} belongs to step {state['global_step']}, but its checkpoint's trainer_state.json is at step "
            f"{step}: the folder mixes two saves. Resume from another checkpoint."
        )
    return state


def release_distributed(trainer: Trainer | None = None) -> None:
    """End a multi-process run cleanly: free the trainer's DDP wrapper, then the process group
    (`emp_hf.core.distributed.shutdown`), so the group is not destroyed from inside DDP's destructor."""
    if trainer is not None:
        trainer.model_wrapped = trainer.model
        trainer.accelerator.free_memory()
    shutdown()


def model_card_section(config: PruningConfig, report_path: str, final_metrics: dict[str, float] | None = None) -> str:
    """The model card's "Data pruning" section: the settings, what was measured, and the final evaluation."""
    import json

    from . import __version__

    lines = [
        "## Data pruning",
        "",
        f"Trained with emp-hf {__version__} dynamic data pruning: method `{config.method}`, prune ratio "
        f"{config.effective_prune}. Each epoch trained on a subset chosen from per-example scores recorded during training.",
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
    if final_metrics:
        lines += ["", "Final evaluation of this pruned run:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k.removeprefix('eval_')} | {v:.4f} |" for k, v in final_metrics.items()]
    return "\n".join(lines) + "\n"


class PruningTrainer(PruningMixin, Trainer):
    """`transformers.Trainer` with dynamic data pruning (see `PruningMixin`)."""


class PruningSeq2SeqTrainer(PruningMixin, Seq2SeqTrainer):
    """`transformers.Seq2SeqTrainer` with dynamic data pruning; generation-based evaluation is unchanged."""
