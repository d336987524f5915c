"""What a run reports: `pruning_report.json` at the end of training, its metrics, and the model card's "Data pruning"
section."""

from __future__ import annotations

import logging
import os
import time
import weakref
from typing import Any

from transformers import TrainerCallback

from ..core import PruningConfig
from ..core.report import save_json
from ..core.state_file import newest_complete
from ..plots import PLOT_FILE
from .checkpoints import TrainingInterrupted, checkpoint_pruning_state

logger = logging.getLogger("emp_hf")


REPORT_FILE = "pruning_report.json"


class PruningCallback(TrainerCallback):
    """The run's pruning facts where a Trainer user looks for them: each epoch's counts through the Trainer's
    `log` (so `report_to` integrations receive them), and `pruning_report.json` at the end of training."""

    def __init__(self, trainer) -> None:
        self._trainer = weakref.proxy(trainer)  # the trainer holds this callback: no reference cycle
        self.report: dict[str, Any] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.report = None

    def on_epoch_end(self, args, state, control, **kwargs):
        trainer = self._trainer
        pruner = trainer.pruner
        if pruner is None or pruner.epoch is None:
            return
        # The epoch's steps are all taken: its scores go into the store now (not after this event and the
        # epoch-end save, where `_run_epoch` ends), so the counts below include this epoch.
        trainer._end_epoch_scores(pruner.epoch)
        record = pruner.report.epochs[pruner.epoch]
        unscored = sum(r.unscored_rows for r in pruner.report.epochs.values())
        done = [r for r in pruner.report.epochs.values() if r.forwarded]
        full = pruner.num_examples * len(done)
        trainer._log_pruning({
            "pruning/kept": record.kept,
            "pruning/forwarded_so_far": pruner.report.forwarded_total,
            "pruning/saved_fraction_so_far": 1.0 - sum(r.forwarded for r in done) / full if full else 0.0,
            **({"pruning/mean_score": record.mean_score} if record.mean_score is not None else {}),
            **({"pruning/unscored_so_far": unscored} if unscored else {}),
        })

    def on_train_end(self, args, state, control, **kwargs):
        trainer = self._trainer
        if trainer.pruner is None:
            return
        wall = time.time() - (trainer._train_start or time.time())
        forwarded = trainer.pruner.report.forwarded_total
        self.report = trainer.pruning_report(train_wall_time_s=wall,
                                             train_samples_per_second=forwarded / wall if wall > 0 else None)
        if args.should_save:
            os.makedirs(args.output_dir, exist_ok=True)
            save_json(self.report, os.path.join(args.output_dir, REPORT_FILE))


class Reporting:
    """PruningMixin's end of training (its refusals, the report's facts in the train metrics) and model card."""

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
        output = super()._finalize_training(trial, num_train_samples, start_time)  # PruningCallback writes the report
        if self.pruner is None or self._pruning_callback.report is None:
            return output
        report = self._pruning_callback.report
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
            planned_optimizer_steps=self._epoch_plan.total,
            **extra,
        )

    def create_model_card(self, *args: Any, card_sections: dict[str, str] | None = None, **kwargs: Any) -> None:
        """`Trainer.create_model_card`, with a "Data pruning" section (settings, the seed, what was measured, the
        plot) and the sections transformers leaves "More information needed" filled where the run knows them:
        `card_sections` (title -> text) from the script, else the training and evaluation rows counted here."""
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
        sections = dict(card_sections or {})
        if "Training and evaluation data" not in sections and self.train_dataset is not None:
            rows = f"Trained on {len(self.train_dataset):,} rows"
            eval_rows = len(self.eval_dataset) if hasattr(self.eval_dataset, "__len__") else None
            sections["Training and evaluation data"] = rows + (f"; evaluated on {eval_rows:,} rows." if eval_rows
                                                               else ".")
        with open(path, encoding="utf-8") as f:
            card = f.read()
        for title, text in sections.items():
            card = card.replace(f"\n## {title}\n\nMore information needed\n", f"\n## {title}\n\n{text}\n")
        plot = os.path.isfile(os.path.join(self.args.output_dir, PLOT_FILE))
        seed = self.pruner.seed if self.pruner is not None else None
        card += "\n" + model_card_section(self.pruning_args, report_path, final, pruning_seed=seed,
                                          plot=PLOT_FILE if plot else None)
        with open(path, "w", encoding="utf-8") as f:
            f.write(card)


def model_card_section(config: PruningConfig, report_path: str, final_metrics: dict[str, float] | None = None,
                       pruning_seed: int | None = None, plot: str | None = None) -> str:
    """The model card's "Data pruning" section: the settings with the seed the selections drew from, what was
    measured, the run's plot, and the final evaluation."""
    import json

    from .. import __version__

    lines = [
        "## Data pruning",
        "",
        f"Trained with emp-hf {__version__} dynamic data pruning: method `{config.method}`, prune ratio "
        f"{config.effective_prune}. Each epoch trained on a subset chosen from per-example scores recorded during "
        "training.",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    settings = {k: v for k, v in config.to_dict().items() if v is not None}
    if pruning_seed is not None:
        settings["pruning_seed"] = pruning_seed  # the seed used (the Trainer's seed unless it was set apart)
    lines += [f"| {k} | {v} |" for k, v in settings.items()]
    if os.path.isfile(report_path):
        report = json.loads(open(report_path, encoding="utf-8").read())
        lines += [
            "",
            f"Measured: {report['forwarded_examples']:,} examples forwarded of {report['full_data_examples']:,} "
            f"for full-data training over {report['epochs_run']} epochs "
            f"(saved fraction {report['saved_fraction']:.3f}); training wall time "
            f"{report.get('train_wall_time_s', float('nan')):.1f} s. Details: `{REPORT_FILE}`.",
        ]
    if plot is not None:
        lines += ["", f"![Examples forwarded per epoch, the evaluation metric, and selection counts]({plot})"]
    if final_metrics:
        lines += ["", "Final evaluation of this pruned run:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k.removeprefix('eval_')} | {v:.4f} |" for k, v in final_metrics.items()]
    return "\n".join(lines) + "\n"
