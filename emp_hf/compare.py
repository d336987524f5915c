"""Does pruning pay on my task? Compare runs at equal cost.

    python -m emp_hf.compare RUN_DIR [RUN_DIR ...] [--metric eval_accuracy] [--plot compare.png]

Each RUN_DIR is a run's output folder (or a folder holding several, searched below it): its
`pruning_report.json` and its evaluation (`eval_results.json` of a Trainer run, `metrics.json` of the vision
loop). Runs are grouped into arms by method and settings; a budget run (`method full, budget_examples=N`) is
the arm "full @ N examples". Printed, as Markdown:

* per arm: the seeds, the metric's mean and standard deviation over seeds, the 95% confidence interval of
  the mean (Student's t), and the examples forwarded;
* per pairing, seed by seed: each pruned run minus the budget-matched run of the same seed that forwarded as
  many examples ("does it beat simply training less?"), and minus full data: the mean difference, its 95%
  interval (t over the paired differences), wins/ties/losses, and the exact two-sided sign test's p.

`--plot` draws the metric against the examples forwarded, one point per arm with the standard deviation over
seeds as error bars, the budget runs and full data joined as the curve of "training less".
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core.config import PruningConfig
from .plots import pyplot


@dataclass(frozen=True)
class Run:
    folder: Path
    arm: str
    seed: int | None
    metric: float
    forwarded: int
    budget: int | None  # a budget run's example budget
    method: str


@dataclass(frozen=True)
class Summary:
    """Statistics of a sample (an arm's metric over seeds, or paired differences)."""

    n: int
    mean: float
    sd: float
    low: float  # 95% confidence interval of the mean (Student's t); equal to the mean when n = 1
    high: float
    wins: int = 0
    ties: int = 0
    losses: int = 0
    sign_p: float = 1.0  # exact two-sided sign test (ties dropped)
    values: tuple[float, ...] = field(default=(), repr=False)


def summarise(values: Sequence[float]) -> Summary:
    from scipy import stats

    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n) if n > 1 else 0.0
    wins, losses = sum(v > 0 for v in values), sum(v < 0 for v in values)
    ties = n - wins - losses
    p = float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
    return Summary(n, mean, sd, mean - half, mean + half, wins, ties, losses, p, tuple(values))


def describe_differences(diffs: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """"mean [95% CI low, high] (W/T/L wins/ties/losses, sign p)" of paired differences, times `scale`."""
    s = summarise([d * scale for d in diffs])
    interval = f" [{s.low:+.{digits}f}, {s.high:+.{digits}f}]" if s.n > 1 else ""
    return f"{s.mean:+.{digits}f}{interval} ({s.wins}/{s.ties}/{s.losses}, p={s.sign_p:.2g}, n={s.n})"


# ------------------------------------------------------------------------------ the sweeps' pairs and plot
# Each pruned run against the budget-matched full-data run that trained on as many examples, seed by seed. A
# budget run (`--budget_match METHOD`) trains on all the data, cut to the examples one pruned run forwarded.
# Every pruned run of the same cell (task or label noise, prune ratio) and seed that forwarded exactly that
# many examples is compared with it, whatever its method: at prune 0.7 random, eps-greedy and UCB all forward
# the same count, so one `budget_random` answers "does this method beat simply training less?" for all three.
# A budget run laid over the matched run's epochs (vision's `--budget_schedule_examples`: the same LR at every
# step) pairs only with runs whose epochs had those sizes.
@dataclass(frozen=True)
class PairableRun:
    label: str  # the method as the tables name it; budget runs "budget_<method>"
    cell: Hashable  # what must match besides the seed, e.g. (task, prune) or (label noise, prune)
    seed: int | None
    metric: float
    trained: int  # examples forwarded in training (a static run's scoring pass not included)
    budget: int | None = None  # budget-matched runs: the example budget they were cut to
    #: pruned runs: examples per epoch; budget runs: the epoch sizes their LR schedule was laid over (None:
    #: their own schedule, which pairs with any run of their count)
    epochs: tuple[int, ...] | None = None


def budget_pairs(runs: Iterable[PairableRun]) -> dict[tuple[str, str, Hashable], list[float]]:
    """(method label, budget label, cell) -> metric differences, method minus budget run, one per seed."""
    runs = list(runs)
    budgets: dict[tuple, list[PairableRun]] = {}
    for run in runs:
        if run.budget is not None:
            budgets.setdefault((run.cell, run.seed, run.budget), []).append(run)
    pairs: dict[tuple[str, str, Hashable], list[float]] = {}
    for run in runs:
        if run.budget is None:
            for matched in budgets.get((run.cell, run.seed, run.trained), []):
                if matched.epochs is not None and matched.epochs != run.epochs:
                    continue  # its LR at each step was another epoch plan's
                pairs.setdefault((run.label, matched.label, run.cell), []).append(run.metric - matched.metric)
    return pairs


#: The end of a budget-matched run's label when it ran its own LR schedule instead of the matched run's.
OWN_SCHEDULE = "[own LR schedule]"
#: The end of a budget-matched run's label when its schedule was planned for the budget (linear decay to 0).
PLANNED_SCHEDULE = "[planned: linear to 0]"


def plot_series(points: dict[str, list[tuple[float, float, float]]]) -> dict[str, list[tuple[float, float, float]]]:
    """The plot's series: each method's own, and the budget-matched points (each full data cut to some count,
    whichever run set it) joined into one curve per kind of schedule: `budget` (the matched run's LR at every
    step), `budget own` (its own LR schedule), `budget planned` (a schedule planned for the budget)."""
    def schedule_of(method: str) -> str:
        return ("budget own" if method.endswith(OWN_SCHEDULE) else
                "budget planned" if method.endswith(PLANNED_SCHEDULE) else "budget")

    curves = {}
    for name in ("budget", "budget own", "budget planned"):
        series = sorted(p for method, s in points.items()
                        if method.startswith("budget_") and schedule_of(method) == name for p in s)
        if series:
            curves[name] = series
    return {**curves, **{m: s for m, s in points.items() if not m.startswith("budget_")}}


def plot_metric_vs_forwarded(path: Path, title: str, ylabel: str,
                             points: dict[str, list[tuple[float, float, float]]]) -> bool:
    """`points`: method label -> [(forwarded, metric mean, metric std)]. False when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return False
    points = plot_series(points)
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
                        label="full data cut to N examples (budget-matched)"
                        if "budget own" not in points and "budget planned" not in points
                        else "full data cut to N, the matched run's LR at every step")
        elif method == "budget own":
            ax.errorbar(x, y, yerr=e, fmt="s:", color="grey", markerfacecolor="none", capsize=3,
                        label="full data cut to N, its own LR schedule")
        elif method == "budget planned":
            ax.errorbar(x, y, yerr=e, fmt="D--", color="black", markerfacecolor="none", capsize=3,
                        label="full data cut to N, LR planned for N (linear to 0)")
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


# ------------------------------------------------------------------------------ reading runs
def _metric_of(folder: Path, name: str | None) -> tuple[str, float] | None:
    results = folder / "eval_results.json"
    if results.is_file():
        values = json.loads(results.read_text())
        if name is None:
            skip = ("loss", "runtime", "per_second", "samples", "epoch", "steps")
            candidates = [k for k in values if k.startswith("eval_") and not any(s in k for s in skip)
                          and isinstance(values[k], (int, float))]
            preferred = [k for k in candidates if k.endswith(("combined_score", "accuracy", "matthews_correlation",
                                                                "pearson"))]
            name = (preferred or candidates or [None])[0]
        if name is not None and isinstance(values.get(name), (int, float)):
            return name, float(values[name])
    metrics = folder / "metrics.json"
    if metrics.is_file():
        final = json.loads(metrics.read_text()).get("final") or {}
        key = name or "test_acc"
        if isinstance(final.get(key), (int, float)):
            return key, float(final[key])
    return None


def _arm_of(report: dict[str, Any]) -> str:
    settings = dict(report.get("settings", {}))
    method = report.get("method", settings.get("method", "?"))
    budget = report.get("budget_examples", settings.get("budget_examples"))
    if budget is not None:
        return f"full @ {int(budget):,} examples"
    if method == "full":
        return "full"
    defaults = PruningConfig(method=method).to_dict() if method in _known_methods() else {}
    ignore = {"method", "prune", "pruning_seed", "static_scores_file", "nonfinite_tolerance", "budget_examples"}
    extra = [f"{k}={v}" for k, v in sorted(settings.items()) if k not in ignore and k in defaults and
             defaults[k] != v]
    return " ".join([method, f"{settings.get('prune', '?')}", *extra])


def _known_methods() -> set[str]:
    from .core.policies import POLICIES

    return set(POLICIES)


def find_runs(paths: Iterable[str | Path], metric: str | None = None) -> tuple[list[Run], str | None]:
    """Every run folder under `paths` with a report and an evaluation; the metric's name as found."""
    runs, name = [], metric
    folders: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise ValueError(f"{path} does not exist.")
        folders += [p.parent for p in sorted(path.rglob("pruning_report.json"))] if path.is_dir() else []
    for folder in dict.fromkeys(folders):
        found = _metric_of(folder, name)
        if found is None:
            continue
        name, value = found
        report = json.loads((folder / "pruning_report.json").read_text())
        settings = report.get("settings", {})
        seed = settings.get("pruning_seed")
        runs.append(Run(folder, _arm_of(report), None if seed is None else int(seed), value,
                        int(report["forwarded_examples"]), report.get("budget_examples"), report.get("method", "?")))
    return runs, name


# ------------------------------------------------------------------------------ the comparison
def arms(runs: Sequence[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for run in runs:
        out.setdefault(run.arm, []).append(run)
    return out


def pairings(runs: Sequence[Run]) -> dict[tuple[str, str], list[float]]:
    """(arm, baseline) -> metric differences, arm minus baseline, one per seed: each pruned run against the budget
    run of the same seed that forwarded as many examples, and against full data of the same seed."""
    budget = {(r.seed, r.budget): r for r in runs if r.budget is not None}
    full = {r.seed: r for r in runs if r.arm == "full"}
    out: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        if run.budget is not None or run.arm == "full":
            continue
        twin = budget.get((run.seed, run.forwarded))
        if twin is not None:
            out.setdefault((run.arm, "budget-matched"), []).append(run.metric - twin.metric)
        if run.seed in full:
            out.setdefault((run.arm, "full data"), []).append(run.metric - full[run.seed].metric)
    return out


def render(runs: Sequence[Run], metric: str | None, scale: float = 100.0) -> str:
    lines = [f"Metric: `{metric}` (x{scale:g}). ± is the standard deviation over seeds; [..] the 95% confidence "
             "interval of the mean (Student's t); paired differences are arm minus baseline, seed by seed, with "
             "wins/ties/losses and the exact two-sided sign test.", "",
             "| arm | seeds | mean ± sd | 95% CI | examples forwarded |", "|---|---:|---:|---:|---:|"]
    grouped = arms(runs)
    for arm in sorted(grouped, key=lambda a: (a != "full", a.startswith("full @"), a)):
        members = grouped[arm]
        s = summarise([r.metric * scale for r in members])
        forwarded = statistics.fmean(r.forwarded for r in members)
        interval = f"[{s.low:.2f}, {s.high:.2f}]" if s.n > 1 else "–"
        lines.append(f"| {arm} | {s.n} | {s.mean:.2f} ± {s.sd:.2f} | {interval} | {forwarded:,.0f} |")
    pairs = pairings(runs)
    if pairs:
        lines += ["", "| arm | minus | paired difference [95% CI] (W/T/L, sign p, n) |", "|---|---|---|"]
        for (arm, baseline), diffs in sorted(pairs.items()):
            lines.append(f"| {arm} | {baseline} | {describe_differences(diffs, scale)} |")
    return "\n".join(lines) + "\n"


def plot(runs: Sequence[Run], metric: str | None, path: str | Path, scale: float = 100.0) -> bool:
    """The metric against the examples forwarded (`plot_metric_vs_forwarded`); False without matplotlib."""
    points: dict[str, list[tuple[float, float, float]]] = {}
    for arm, members in arms(runs).items():
        values = [r.metric * scale for r in members]
        label = "budget_full" if arm.startswith("full @") else arm
        points.setdefault(label, []).append((statistics.fmean(r.forwarded for r in members), statistics.fmean(values),
                                             statistics.stdev(values) if len(values) > 1 else 0.0))
    return plot_metric_vs_forwarded(Path(path), "metric against training cost",
                                    f"{metric} (x{scale:g}; mean ± sd over seeds)", points)


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import ArgumentParser

    parser = ArgumentParser(prog="python -m emp_hf.compare", description=__doc__)
    parser.add_argument("runs", nargs="+", help="run folders, or folders holding run folders")
    parser.add_argument("--metric", default=None, help="the evaluation key (unset: the task's main metric)")
    parser.add_argument("--scale", type=float, default=100.0, help="multiply the metric (100: points)")
    parser.add_argument("--plot", default=None, help="write the plot to this PNG file")
    parser.add_argument("--json", default=None, help="write the arms and pairings to this JSON file")
    a = parser.parse_args(argv)
    try:
        runs, metric = find_runs(a.runs, a.metric)
    except ValueError as error:
        parser.error(str(error))
    if not runs:
        parser.error("no run folder with pruning_report.json and an evaluation (eval_results.json or metrics.json) "
                     f"under {a.runs}" + (f" holding {a.metric!r}" if a.metric else ""))
    print(render(runs, metric, a.scale), end="")
    if a.plot:
        drawn = plot(runs, metric, a.plot, a.scale)
        print(f"\nplot: {a.plot}" if drawn else "\nno plot: matplotlib is not installed (pip install matplotlib)")
    if a.json:
        data = {"metric": metric,
                "arms": {arm: [{"folder": str(r.folder), "seed": r.seed, "metric": r.metric,
                                "forwarded": r.forwarded} for r in members] for arm, members in arms(runs).items()},
                "pairings": [{"arm": arm, "minus": base, **{k: v for k, v in summarise(d).__dict__.items()}}
                             for (arm, base), d in pairings(runs).items()]}
        Path(a.json).write_text(json.dumps(data, indent=1, default=list) + "\n")
    return 0


if __name__ == "__main__":
    from .cli import guard

    with guard("python -m emp_hf.compare"):
        sys.exit(main())
