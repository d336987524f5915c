#!/usr/bin/env python
"""Render glue_runs/RESULTS.md from the condensed studies (never typed by hand).

    python scripts/glue_table.py [--results_dir glue_runs] [--raw_dir runs/glue]

Layout of the EMP paper's Table 3: one row per method and prune ratio, one
column per task, mean ± std over seeds of the task's main metric (x100).
A second table gives examples forwarded and training wall time per run.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from emp_hf.cli import ArgumentParser, guard
from emp_hf.compare import PairableRun, budget_pairs, describe_differences, plot_metric_vs_forwarded
from emp_hf.glue import TASKS, main_metric
from emp_hf.studies import Study, load_studies

ROOT = Path(__file__).resolve().parents[1]
PAPER_ORDER = ["rte", "cola", "sst2", "stsb", "mrpc", "qnli", "mnli", "qqp", "wnli"]
METHOD_ORDER = ["full", "random", "static_random", "infobatch", "uncertainty", "eps_greedy", "ucb", "elfl", "emp"]


def collect(study: Study) -> list[dict]:
    runs = []
    for run in study.runs:
        meta, results, report = (run.get(n) for n in ("run.json", "eval_results.json", "pruning_report.json"))
        if meta is None or results is None or report is None:
            continue
        metric = f"eval_{main_metric(TASKS[meta['task']])}"
        # A static run's scoring pays for its scores before training: it counts on the compute axis.
        runs.append({**meta, "metric": results[metric], "scoring": report.get("scoring_forwarded_examples", 0),
                     "forwarded": report["forwarded_examples"] + report.get("scoring_forwarded_examples", 0),
                     "trained": report["forwarded_examples"], "budget": report.get("budget_examples"),
                     "full_data": report["full_data_examples"], "saved": report["saved_fraction"],
                     "wall": report.get("train_wall_time_s"), "epochs": report["epochs_run"],
                     "n": report["num_examples"]})
    return runs


def fmt(values: list[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.mean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f} (n={len(values)})"


def method_rank(method: str) -> float:
    """Table order: full, the budget-matched baseline, then the methods as in the EMP paper; ablations last."""
    if method.startswith("budget_"):
        return 0.5
    base = method.split(" [")[0]
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else 99) + (50 if "[" in method else 0)


def plot_task(folder: Path, title: str, task: str, groups) -> str | None:
    """Metric against examples forwarded for one task (`emp_hf.compare`); the PNG's name, or None."""
    by_method: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for (method, prune), per_task in sorted(groups.items(), key=lambda kv: (method_rank(kv[0][0]), kv[0])):
        rows = per_task.get(task, [])
        if rows:
            values = [100 * r["metric"] for r in rows]
            by_method[method].append((statistics.mean(r["forwarded"] for r in rows), statistics.mean(values),
                                      statistics.stdev(values) if len(values) > 1 else 0.0))
    name = f"{task}.png"
    ylabel = f"{main_metric(TASKS[task])} x100 (mean ± std over seeds)"
    folder.mkdir(parents=True, exist_ok=True)
    ok = plot_metric_vs_forwarded(folder / name, f"{title}: {task.upper()}", ylabel, by_method)
    return name if ok else None


def paired_with_budget(runs: list[dict], tasks: list[str]) -> list[str]:
    """Each method minus the budget-matched run of the same seed that trained on as many examples
    (`emp_hf.compare.budget_pairs`): the direct answer to "does pruning beat simply training less?"."""
    pairs = budget_pairs(PairableRun(r["method"], (r["task"], r["prune"]), r["seed"], r["metric"], r["trained"],
                                     r["budget"]) for r in runs)
    rows = sorted({(label, budget, prune) for label, budget, (_, prune) in pairs},
                  key=lambda row: (row[2], row[1], method_rank(row[0]), row[0]))
    lines = []
    for label, budget, prune in rows:
        cells = [describe_differences(pairs[(label, budget, (t, prune))], 100.0)
                 if (label, budget, (t, prune)) in pairs else "–" for t in tasks]
        lines.append(f"| {label} − {budget} | {prune:g} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    return ["", "Paired by seed, x100: each pruned run minus the full-data run of the same seed cut to the examples "
            "it forwarded (`budget_X` was cut to X's count; methods that forwarded the same count share it). Each "
            "cell (`emp_hf.compare`): the mean difference [its 95% confidence interval, Student's t] (wins/ties/"
            "losses, the exact two-sided sign test's p, pairs):",
            "", "| difference | prune | " + " | ".join(t.upper() for t in tasks) + " |",
            "|---|---|" + "---|" * len(tasks), *lines]


def render_sweep(study: Study, results_dir: Path) -> str:
    runs = collect(study)
    meta = study.meta
    tasks = [t for t in PAPER_ORDER if any(r["task"] == t for r in runs)]
    groups: dict[tuple[str, float], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        groups[(r["method"], r["prune"])][r["task"]].append(r)
    keys = sorted(groups, key=lambda k: (k[1], method_rank(k[0]), k[0]))

    out = [f"## {study.name}", ""]
    for inv in meta.get("invocations", []):
        out += [f"- Machine: {inv['machine']}; started {inv['started']}", f"  - Command: `{inv['command']}`"]
    if not runs:
        return "\n".join(out + ["", "No complete runs yet.", ""])
    out += ["", "Main metric x100, mean ± std over seeds: " + ", ".join(
        f"{t.upper()} {main_metric(TASKS[t])}" for t in tasks) + ".", ""]
    out += ["| method | prune | " + " | ".join(t.upper() for t in tasks) + " |",
            "|---|---|" + "---|" * len(tasks)]
    for method, prune in keys:
        cells = [fmt([r["metric"] for r in groups[(method, prune)].get(t, [])]) for t in tasks]
        out.append(f"| {method} | {prune:g} | " + " | ".join(cells) + " |")
    out += ["", "Examples forwarded (of full-data training; for static scores including the scoring run's) and "
            "training wall time, mean over seeds:", "",
            "| method | prune | " + " | ".join(t.upper() for t in tasks) + " |",
            "|---|---|" + "---|" * len(tasks)]
    for method, prune in keys:
        cells = []
        for t in tasks:
            rows = groups[(method, prune)].get(t, [])
            if not rows:
                cells.append("–")
                continue
            fwd = statistics.mean(r["forwarded"] for r in rows)
            wall = statistics.mean(r["wall"] for r in rows if r["wall"] is not None)
            scoring = statistics.mean(r["scoring"] for r in rows)
            cells.append(f"{fwd:,.0f} / {rows[0]['full_data']:,} ({wall:.0f} s)"
                         + (f", of which scoring {scoring:,.0f}" if scoring else ""))
        out.append(f"| {method} | {prune:g} | " + " | ".join(cells) + " |")
    out += paired_with_budget(runs, tasks)
    plots = [(t, plot_task(results_dir / study.name, study.name, t, groups)) for t in tasks]
    out += [""] + [f"![{t.upper()}: metric against examples forwarded]({study.name}/{png})" for t, png in plots if png]
    if runs:
        ns = sorted({(r["task"], r["n"], r["epochs"]) for r in runs if not r["method"].startswith("budget_")})
        out += ["", "Training rows and epochs per task: " + "; ".join(f"{t} {n} rows x {e} epochs" for t, n, e in ns)
                + "."]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = ArgumentParser(prog="glue_table.py", description=__doc__)
    parser.add_argument("--results_dir", default=str(ROOT / "glue_runs"),
                        help="The condensed studies (<study>.jsonl) and where RESULTS.md goes.")
    parser.add_argument("--raw_dir", default=str(ROOT / "runs" / "glue"),
                        help="Raw run folders of studies still running (merged over their condensed runs).")
    args = parser.parse_args()
    results_dir = Path(args.results_dir)
    parts = ["# GLUE results", "",
             "Generated by `python scripts/glue_table.py` from the condensed studies (`glue_runs/<study>.jsonl`: "
             "each run's command, settings, pruning report and evaluation); do not edit by hand.", ""]
    for study in load_studies(results_dir, Path(args.raw_dir)):
        parts.append(render_sweep(study, results_dir))
        if study.notes:
            parts.append(study.notes)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "RESULTS.md").write_text("\n".join(parts))
    print(f"wrote {results_dir / 'RESULTS.md'}")


if __name__ == "__main__":
    with guard("glue_table.py"):
        main()
