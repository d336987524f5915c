"""Checkpoints that resume exactly or refuse: the pruning state in each checkpoint, made complete by a manifest written
last; the output folder's lock; a SIGTERM interruption reported as such; evaluation that leaves the RNGs alone."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch

from ..core.run_lock import RunLock
from ..core.state_file import (
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

logger = logging.getLogger("emp_hf")


STATE_FILE = "pruning_state.pt"


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


class Checkpointing:
    """PruningMixin's training entry point and checkpoint saves."""

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
        self.pruner = None  # each training run starts a pruning state (a resume then loads its checkpoint's)
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

    def evaluate(self, *args: Any, **kwargs: Any):
        """`Trainer.evaluate`, leaving the random number generators as it found them. Creating the evaluation
        dataloader's iterator draws from torch's global generator, so evaluating during training would otherwise
        shift every later dropout mask and shuffle: two runs that differ only in `eval_strategy` would train
        differently (measured: 2.5 points of SST-2 accuracy)."""
        with _rng_as(_rng_states()):
            return super().evaluate(*args, **kwargs)

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
