"""The plot every results table links: a task's metric against the examples its runs forwarded.

One point per method and prune ratio (mean over seeds, error bars one std), the full-data run as a dashed
line, the budget-matched full-data runs joined by a line (the cost/accuracy curve of simply training less; a
dotted one for those on their own LR schedule rather than the matched run's),
each method's ratios joined by a thin line; the legend sits outside the axes so that it hides no point.
"""

from __future__ import annotations

from pathlib import Path

#: The end of a budget-matched run's label when it ran its own LR schedule instead of the matched run's.
OWN_SCHEDULE = "[own LR schedule]"


def plot_metric_vs_forwarded(path: Path, title: str, ylabel: str,
                             points: dict[str, list[tuple[float, float, float]]]) -> bool:
    """`points`: method label -> [(forwarded, metric mean, metric std)]. False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    # Every budget-matched point is full data cut to some count: one curve, whichever run set its count; a
    # second one for those on their own LR schedule (label ending OWN_SCHEDULE), not the matched run's.
    curves = {}
    for name, own in (("budget", False), ("budget own", True)):
        series = sorted(p for method, s in points.items()
                        if method.startswith("budget_") and method.endswith(OWN_SCHEDULE) == own for p in s)
        if series:
            curves[name] = series
    points = {**curves, **{m: s for m, s in points.items() if not m.startswith("budget_")}}
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    markers = "osD^v<>phX*"
    colours = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)]  # grey: the budget
    for i, method in enumerate(points):
        x, y, e = zip(*sorted(points[method]))
        if method == "full":
            ax.axhline(y[0], color="black", linestyle="--", linewidth=1, label=f"full data ({x[0]:,.0f} forwarded)")
            ax.errorbar(x, y, yerr=e, fmt="o", color="black", capsize=3)
        elif method == "budget":
            ax.errorbar(x, y, yerr=e, fmt="s-", color="grey", capsize=3,
                        label="full data cut to N examples (budget-matched)" if "budget own" not in points
                        else "full data cut to N, the matched run's LR at every step")
        elif method == "budget own":
            ax.errorbar(x, y, yerr=e, fmt="s:", color="grey", markerfacecolor="none", capsize=3,
                        label="full data cut to N, its own LR schedule")
        else:  # a method's ratios joined thinly: its own cost/accuracy curve; ablations hollow
            ablation = "[" in method
            ax.errorbar(x, y, yerr=e, fmt=markers[i % len(markers)] + "-", linewidth=0.6, capsize=3,
                        color=colours[i % len(colours)], label=method,
                        markerfacecolor="none" if ablation else colours[i % len(colours)])
    ax.set(xlabel="examples forwarded in training (mean over seeds)", ylabel=ylabel, title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
