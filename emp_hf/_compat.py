"""Every private piece of `transformers.Trainer` that emp-hf relies on, in one place.

transformers changes its private hooks between minor releases; a pruning Trainer that silently stops
being called would train on the wrong subset or with the wrong step plan. So the hooks are listed
here, checked against the installed version at import, and an unsupported version is refused with
the range that is tested (CI runs the trainer tests on both ends of it).
"""

from __future__ import annotations

import inspect

import transformers
from packaging.version import Version

MIN_TRANSFORMERS = Version("5.3.0")  # the first release with `_run_epoch`/`_init_training_state`/`_finalize_training`
MAX_TRANSFORMERS_EXCLUSIVE = Version("6.0.0")

#: Trainer methods PruningMixin overrides or calls, with the parameters it passes by name or position.
TRAINER_HOOKS: dict[str, tuple[str, ...]] = {
    # the per-epoch step plan: transformers fixes one epoch length; we give every epoch its own
    "set_initial_training_values": ("args", "dataloader"),
    # locate the resumed epoch from per-epoch step counts, restore the pruning state
    "_init_training_state": ("max_steps", "num_update_steps_per_epoch", "num_train_epochs",
                             "resume_from_checkpoint", "trial"),
    # select the epoch's examples and pass its own length
    "_run_epoch": ("model", "epoch", "train_dataloader", "steps_in_epoch", "num_update_steps_per_epoch"),
    # the pruning state goes into the checkpoint folder before the Trainer's own files
    "_save_checkpoint": ("model", "trial"),
    "_get_output_dir": ("trial",),
    # the report and its metrics at the end of training
    "_finalize_training": ("trial", "num_train_samples", "start_time"),
    # build the train dataloader with the Trainer's own settings (workers, pin_memory, Accelerate prepare)
    "_get_dataloader": ("dataset", "description", "batch_size", "sampler_fn", "is_training"),
    # drop unused columns (`datasets` ones up front, others in the collator) before the index wrapper
    "_remove_unused_columns": ("dataset", "description"),
    "_get_collator_with_removed_columns": ("data_collator", "description"),
    # the per-example scores are taken around the Trainer's own training step
    "training_step": ("model", "inputs", "num_items_in_batch"),
}
#: `Trainer.set_initial_training_values` returns these, in this order; PruningMixin reads some and replaces the
#: rest (`initial_training_values` checks the count at run time: a reordering would misread silently).
INITIAL_TRAINING_VALUES = ("num_train_epochs", "num_update_steps_per_epoch", "num_examples", "num_train_samples",
                           "total_train_batch_size", "steps_in_epoch", "max_steps")
#: The keyword of transformers' LR-schedule lambdas (`functools.partial(..., num_training_steps=...)`) that
#: InfoBatch's data-dependent plan rewrites once an epoch's real size is known (a warning says when none is found).
LR_LAMBDA_HORIZON = "num_training_steps"
#: `Trainer._get_dataloader` reads the collator from `self.data_collator`: PruningMixin hands it the indexing
#: collator for that one call (and restores the user's after it).
DATALOADER_COLLATOR_ATTRIBUTE = "data_collator"
#: TRL's SFTTrainer, with the fused LM head whose per-token outputs the 'fused_causal_lm' scorer reads.
MIN_TRL = Version("1.16.0")
MAX_TRL_EXCLUSIVE = Version("2.0.0")
TRL_FUSED_OUTPUTS = ("log_probs", "label_mask", "entropy")

#: Trainer instance attributes read: the train batch size, the label keys, and whether the Trainer's label smoother
#: computes the loss (the model then sees no labels); checked on each new trainer. `compute_loss` is wrapped on
#: the instance (the loss it returns is the scores' reference where the model returns none).
TRAINER_ATTRIBUTES = ("_train_batch_size", "label_names", "label_smoother", "compute_loss",
                      DATALOADER_COLLATOR_ATTRIBUTE)


def check_trainer_attributes(trainer: object) -> None:
    missing = [name for name in TRAINER_ATTRIBUTES if not hasattr(trainer, name)]
    if missing:
        raise ImportError(f"transformers {transformers.__version__}: Trainer instances lack {missing}; emp-hf "
                          f"needs them. {_report()}")


def initial_training_values(values: tuple) -> dict[str, object]:
    """`Trainer.set_initial_training_values`' result by name, refused if transformers changed its shape."""
    if not isinstance(values, tuple) or len(values) != len(INITIAL_TRAINING_VALUES):
        raise ImportError(f"transformers {transformers.__version__}: Trainer.set_initial_training_values returned "
                          f"{type(values).__name__} of {len(values) if isinstance(values, tuple) else '?'} values, not "
                          f"the {len(INITIAL_TRAINING_VALUES)} {INITIAL_TRAINING_VALUES}. {_report()}")
    return dict(zip(INITIAL_TRAINING_VALUES, values, strict=True))


def check_trl(version: str) -> None:
    """The TRL range PruningSFTTrainer is tested with (its fused LM head's outputs are read by name)."""
    if not MIN_TRL <= Version(version) < MAX_TRL_EXCLUSIVE:
        raise ImportError(f"emp-hf's PruningSFTTrainer supports trl >={MIN_TRL},<{MAX_TRL_EXCLUSIVE} (its fused LM "
                          f"head's outputs {TRL_FUSED_OUTPUTS}); trl {version} is installed. Install a supported "
                          f"version: pip install 'trl>={MIN_TRL},<{MAX_TRL_EXCLUSIVE}'.")


def check_transformers(version: str = transformers.__version__) -> None:
    installed = Version(version)
    if not MIN_TRANSFORMERS <= installed < MAX_TRANSFORMERS_EXCLUSIVE:
        raise ImportError(
            f"emp-hf's PruningTrainer supports transformers >={MIN_TRANSFORMERS},<{MAX_TRANSFORMERS_EXCLUSIVE} "
            f"(tested at both ends); transformers {version} is installed. "
            f"Install a supported version: "
            f"pip install 'transformers>={MIN_TRANSFORMERS},<{MAX_TRANSFORMERS_EXCLUSIVE}'."
        )
    from transformers import Trainer

    for name, params in TRAINER_HOOKS.items():
        method = getattr(Trainer, name, None)
        if method is None:
            raise ImportError(f"transformers {version}: Trainer.{name} is missing; emp-hf needs it. {_report()}")
        found = list(inspect.signature(method).parameters)
        missing = [p for p in params if p not in found]
        if missing:
            raise ImportError(
                f"transformers {version}: Trainer.{name} lacks parameter(s) {missing}; emp-hf needs them. {_report()}"
            )


def _report() -> str:
    return (f"Supported: transformers >={MIN_TRANSFORMERS},<{MAX_TRANSFORMERS_EXCLUSIVE}; please report the "
            "version at the project's issue tracker.")


check_transformers()
