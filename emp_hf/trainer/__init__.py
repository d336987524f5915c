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
* checkpoints carry `pruning_state.pt`; a `PruningCallback` (added at construction) logs each epoch's
  pruning counts and writes `pruning_report.json` at the end of training; the model card gains a "Data
  pruning" section.

Every private Trainer hook used is listed and version-checked in `_compat.py`. Anything that would make
the scores wrong (no index, no logits, no labels, packed rows, the index reaching the model) stops the
run at the first training step, before any optimizer step, with the cause and the fix.
"""

from __future__ import annotations

from .. import _compat  # noqa: F401 - checks the installed transformers at import
from .checkpoints import STATE_FILE, TrainingDiverged, TrainingInterrupted, checkpoint_pruning_state
from .data import INDEX_KEY, IndexedDataset, IndexedExample, IndexingCollator, PlannedSampler, label_column
from .mixin import PruningArguments, PruningMixin, PruningSeq2SeqTrainer, PruningTrainer, release_distributed
from .report import REPORT_FILE, PruningCallback, model_card_section

__all__ = [
    "INDEX_KEY", "REPORT_FILE", "STATE_FILE", "IndexedDataset", "IndexedExample", "IndexingCollator", "PlannedSampler",
    "PruningArguments", "PruningCallback", "PruningMixin", "PruningSeq2SeqTrainer", "PruningTrainer", "TrainingDiverged",
    "TrainingInterrupted", "checkpoint_pruning_state", "label_column", "model_card_section", "release_distributed",
]
