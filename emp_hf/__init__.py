"""emp-hf: dynamic data pruning (EMP and its baselines) for Hugging Face training.

The core (`emp_hf.core`) needs torch only; the Trainer classes load transformers on
first use, and `PruningSFTTrainer` needs TRL (`pip install 'emp-hf[trl]'`).
"""

from __future__ import annotations

from typing import Any

from .core import DataPruner, PruningConfig, PruningSampler
from .logs import install_console_handler

install_console_handler()

__version__ = "0.1.0"
__all__ = [
    "DataPruner", "PruningArguments", "PruningConfig", "PruningMixin", "PruningSampler", "PruningSeq2SeqTrainer",
    "PruningSFTTrainer", "PruningTrainer", "__version__",
]
_TRAINER_NAMES = ("PruningTrainer", "PruningArguments", "PruningMixin", "PruningSeq2SeqTrainer")


def __getattr__(name: str) -> Any:
    if name in _TRAINER_NAMES:
        from . import trainer

        return getattr(trainer, name)
    if name == "PruningSFTTrainer":
        from . import trl

        return trl.PruningSFTTrainer
    raise AttributeError(f"module 'emp_hf' has no attribute {name!r}")
