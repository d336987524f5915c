"""The framework-free pruning core: imports torch only."""

from .buffer import ScoreBuffer
from .config import PruningConfig
from .distributed import gather_updates
from .packed import PackedMask
from .per_example import classification_scores, regression_scores
from .policies import (
    POLICIES,
    Selection,
    SelectionContext,
    SelectionPolicy,
    mask_to_selection,
    register_policy,
    top_k_mask,
)
from .pruner import DataPruner, load_scores_file
from .report import PruningReport, save_json
from .sampler import PruningSampler
from .schedule import PruningSchedule, kept_count
from .scores import BYTES_PER_EXAMPLE, ScoreStore

__all__ = [
    "BYTES_PER_EXAMPLE",
    "DataPruner",
    "POLICIES",
    "PackedMask",
    "PruningConfig",
    "PruningReport",
    "PruningSampler",
    "PruningSchedule",
    "ScoreBuffer",
    "ScoreStore",
    "Selection",
    "SelectionContext",
    "SelectionPolicy",
    "classification_scores",
    "gather_updates",
    "kept_count",
    "load_scores_file",
    "mask_to_selection",
    "regression_scores",
    "register_policy",
    "save_json",
    "top_k_mask",
]
