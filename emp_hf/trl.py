"""TRL's `SFTTrainer` with dynamic data pruning (`pip install 'emp-hf[trl]'`).

SFTTrainer's training forward uses TRL's fused LM head, which returns per-token log-probabilities and
entropies of the labels instead of the (B, T, V) logits; the 'fused_causal_lm' scorer reads those, so the
score of an example is exactly its term in TRL's own loss. Packing and padding-free batches put several
examples into one row and are refused at the first step (no per-example score exists there).
"""

from __future__ import annotations

try:
    import trl
    from trl import SFTTrainer
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("PruningSFTTrainer needs TRL: pip install 'emp-hf[trl]'.") from error

from ._compat import check_trl
from .trainer import PruningMixin

check_trl(trl.__version__)


class PruningSFTTrainer(PruningMixin, SFTTrainer):
    """`trl.SFTTrainer` with dynamic data pruning (see `PruningMixin`)."""
