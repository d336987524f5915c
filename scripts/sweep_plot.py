"""The plot every results table links: a task's metric against the examples its runs forwarded.

One point per method and prune ratio (mean over seeds, error bars one std), the full-data run as a dashed
line, the budget-matched full-data runs joined by a line (the cost/accuracy curve of simply training less).
"""

from __future__ import annotations

from pathlib import Path


def plot_metric_vs_forwarded(path: Path, title: str, ylabel: str,
                             points: dict[str, list[tuple[float, float, float]]]) -> bool:
    """`points`: method label -> [(forwarded, metric mean, metric std)]. False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "osD^v<>phX*"
    for i, method in enumerate(points):
        x, y, e = zip(*sorted(points[method]))
        if method == "full":
            ax.axhline(y[0], color="black", linestyle="--", linewidth=1, label=f"full data ({x[0]:,.0f} forwarded)")
            ax.errorbar(x, y, yerr=e, fmt="o", color="black", capsize=3)
        elif method.startswith("budget_"):
            ax.errorbar(x, y, yerr=e, fmt="s-", color="grey", capsize=3,
                        label=f"budget-matched full data (to {method[len('budget_'):]})")
        else:
            ax.errorbar(x, y, yerr=e, fmt=markers[i % len(markers)], capsize=3, label=method)
    ax.set(xlabel="examples forwarded in training (mean over seeds)", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
