"""emp-hf: dynamic data pruning (EMP and its baselines) for Hugging Face training.

The core (`emp_hf.core`) needs torch only; `PruningTrainer` and
`PruningArguments` load transformers on first use.
"""

from __future__ import annotations

from typing import Any

from .core import DataPruner, PruningConfig, PruningSampler

__version__ = "0.1.0"
__all__ = ["DataPruner", "PruningArguments", "PruningConfig", "PruningSampler", "PruningTrainer", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("PruningTrainer", "PruningArguments"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'emp_hf' has no attribute {name!r}")
