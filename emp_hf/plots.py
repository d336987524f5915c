"""One picture per run, the same in every front end: what each epoch trained on, how the run learned, and how
often each example was picked.

matplotlib is a dependency; where it is missing anyway, the first plot says so once and the run goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger("emp_hf")

PLOT_FILE = "pruning.png"
_warned = False


def pyplot():
    """matplotlib's pyplot on the file-only backend, or None (said once) where matplotlib is not installed."""
    global _warned
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not _warned:
            logger.warning("No plots: matplotlib is not installed (pip install matplotlib).")
            _warned = True
        return None
    return plt


def plot_run(path: str | os.PathLike[str], report: Mapping[str, Any],
             curves: Mapping[str, Sequence[tuple[float, float]]], ylabel: str) -> bool:
    """Three panels: examples trained per epoch (kept) against the full data, the `curves` (name ->
    [(epoch, value)], e.g. the evaluation metric), and the selection-count histogram. False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    per_epoch = report.get("per_epoch", [])
    fig, (kept, learned, picked) = plt.subplots(1, 3, figsize=(14, 3.8))
    epochs = [r["epoch"] for r in per_epoch]
    kept.bar(epochs, [r["forwarded"] for r in per_epoch], label="examples forwarded")
    kept.axhline(report["num_examples"], color="grey", linestyle="--", linewidth=1, label="full data")
    kept.set(xlabel="epoch", ylabel="examples",
             title=f"{report['method']}: saved {report['saved_fraction']:.1%} of "
                   f"{report['full_data_examples']:,}")
    kept.legend(loc="lower left", fontsize=8)
    for name, points in curves.items():
        if points:
            xs, ys = zip(*points)
            learned.plot(xs, ys, marker="o", markersize=3, label=name)
    learned.set(xlabel="epoch", ylabel=ylabel, title="learning")
    if any(curves.values()):
        learned.legend(fontsize=8)
    hist = report.get("selection_count_histogram") or []
    picked.bar(range(len(hist)), hist)
    picked.set(xlabel="times selected in pruning epochs", ylabel="examples", title="selection counts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
