#!/usr/bin/env python
"""Run a grid of vision runs (resumable), record it as a study and render vision_runs/RESULTS.md.

    python scripts/vision_sweep.py --name fmnist-cpu --methods full random infobatch emp \
        --prunes 0.3 0.5 0.7 --noise_prunes 0.7 -- --dataset fashion_mnist --model resnet10 --epochs 8 --cpu

Everything after `--` goes to scripts/vision.py. `--noise_prunes` adds runs with
`--label_noise` (default 0.2) at those ratios (and a full-data noisy run).
`--variants 'beta0:--beta 0' 'noanneal:--anneal 0'` runs every (non-budget)
job once per variant with those extra vision.py flags (folders `emp+beta0-...`).
Runs write into raw folders under `runs/vision/<name>/` (not tracked); after each run the study is
condensed into `vision_runs/<name>.jsonl` (`emp_hf.studies`), from which the tables are built. A run
already recorded (raw or condensed) is skipped; checkpoints are deleted after each run.
"""

from __future__ import annotations

import json
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from emp_hf.cli import ArgumentParser, guard
from emp_hf.compare import (
    OWN_SCHEDULE,
    PLANNED_SCHEDULE,
    PairableRun,
    budget_pairs,
    describe_differences,
    plot_metric_vs_forwarded,
)
from emp_hf.studies import Study, condense, load_studies, load_study, parse_variants, record_invocation

ROOT = Path(__file__).resolve().parents[1]


def render(study: Study, results_dir: Path) -> str:
    """The sweep's table (mean ± std over seeds where a configuration has several) and its plot."""

    def budget_of(m):  # the pruning dataclass holds it now; recorded runs have it among the vision arguments
        return m["pruning"].get("budget_examples", m["arguments"].get("budget_examples"))

    meta = study.meta
    groups: dict[tuple[float, float, str], list[tuple[dict, dict]]] = {}
    for run in sorted(study.runs, key=lambda run: run.path):
        m, r = run.get("metrics.json"), run.get("pruning_report.json")
        if m is None or m["final"] is None or r is None:
            continue  # a run still going (metrics.json is written after every epoch)
        method = m["pruning"]["method"]
        variant = run.name.split("-")[0].partition("+")[2]  # `--variants` label, if any
        if budget_of(m) is not None:
            method = "budget_" + run.name.split("-")[0].removeprefix("budget_").partition("+")[0]
            if m["arguments"].get("schedule") == "linear" and variant == "planned":
                method += f" {PLANNED_SCHEDULE}"
            elif m["arguments"].get("budget_schedule_examples") is None:  # not the matched run's LR at each step
                method += f" {OWN_SCHEDULE}"
            prune = float(run.name.split("-")[1])
        else:
            prune = m["pruning"]["prune"] if method != "full" else 0.0
            if method == "static" and r.get("static_scores"):
                method = f"static [{r['static_scores']['score']}]"
            if variant:
                method = f"{method} [{variant}]"
        groups.setdefault((m["arguments"]["label_noise"], prune, method), []).append((m, r))
    order = {"full": 0, "random": 2, "infobatch": 3, "eps_greedy": 4, "ucb": 5, "emp": 6}
    keys = sorted(groups, key=lambda k: (k[0], k[1], 1 if k[2].startswith("budget_") else order.get(k[2], 9),
                                         k[2]))

    def mean(values):
        return statistics.mean(values)

    def acc(values):
        values = [100 * v for v in values]
        return f"{mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")

    full_wall = {k[0]: mean(m["final"]["train_time_s"] for m, _ in groups[k]) for k in keys if k[2] == "full"}
    lines = [f"## {study.name}", "",
             "Train time: selection, training steps and score updates, without the per-epoch evaluation. "
             "Accuracy: mean ± std over seeds.", ""]
    for inv in meta["invocations"]:
        lines += [f"- Machine: {inv['machine']}; started {inv['started']}", f"  - Command: `{inv['command']}`"]
    lines += ["", "Forwarded and train s: in training plus, for static scores, in the scoring run.", "",
              "| label noise | prune | method | seeds | final test acc | best test acc | forwarded / full | "
              "saved | train s | train time / full-data train time | achieved / ideal saving |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    points: dict[str, list[tuple[float, float, float]]] = {}
    for key in keys:
        noise, prune, method = key
        runs = groups[key]
        finals = [m["final"]["test_acc"] for m, _ in runs]
        fwd = mean(r["forwarded_examples"] + r.get("scoring_forwarded_examples", 0) for _, r in runs)  # compute
        full = runs[0][1]["full_data_examples"] if not method.startswith("budget_") else None
        full = full or mean(r["num_examples"] for _, r in runs) * runs[0][0]["arguments"]["epochs"]
        wall = mean(m["final"]["train_time_s"] + r.get("scoring_wall_time_s", 0.0) for m, r in runs)
        ratio = wall / full_wall[noise] if noise in full_wall else None
        saved = 1 - fwd / full
        eff = f"{(1 - ratio) / saved:.3f}" if ratio is not None and saved > 0 else "–"
        if method.startswith("static"):
            eff = "–"  # its scoring pass forwards without a backward: time and examples do not scale alike
        best = acc([max(e["test_acc"] for e in m["epochs"]) for m, _ in runs])
        lines.append(f"| {noise:g} | {prune:g} | {method} | {len(runs)} | {acc(finals)} | {best} | "
                     f"{fwd:,.0f} / {full:,.0f} | {saved:.3f} | {wall:.0f} | "
                     f"{'–' if ratio is None else f'{ratio:.3f}'} | {eff} |")
        if noise == 0:
            values = [100 * v for v in finals]
            points.setdefault(method, []).append((fwd, mean(values), statistics.stdev(values) if len(values) > 1
                                                  else 0.0))
    def epoch_plan(m, r):
        if budget_of(m) is not None:
            plan = m["arguments"].get("budget_schedule_examples")
            return None if plan is None else tuple(plan)
        return tuple(e["forwarded"] for e in r["per_epoch"])

    pairs = budget_pairs(PairableRun(method, (noise, prune), m["arguments"]["seed"], m["final"]["test_acc"],
                                     r["forwarded_examples"], budget_of(m), epoch_plan(m, r))
                         for (noise, prune, method) in keys for m, r in groups[(noise, prune, method)])
    paired = [f"| {noise:g} | {prune:g} | {label} − {budget} | {len(diffs)} | {acc(diffs)} | "
              f"{describe_differences(diffs, 100.0)} |"
              for (label, budget, (noise, prune)), diffs in sorted(
                  pairs.items(), key=lambda kv: (kv[0][2], kv[0][1], order.get(kv[0][0], 9), kv[0][0]))]
    if paired:
        lines += ["", ("Paired by seed, final test accuracy x100: each pruned run minus the full-data run of the "
                       "same seed cut to the examples it forwarded (`budget_X` was cut to X's count; methods that "
                       "forwarded the same count share it; `budget_X` took X's LR at every step, so it pairs only "
                       "with runs of X's epoch sizes, `[own LR schedule]` ran its own schedule):"), "",
                  "| label noise | prune | difference | pairs | mean ± std | mean [95% CI] (wins/ties/losses, sign "
                  "p, pairs) |", "|---|---|---|---|---|---|", *paired]
    plots = results_dir / study.name
    plots.mkdir(parents=True, exist_ok=True)
    if points and plot_metric_vs_forwarded(plots / "accuracy_vs_forwarded.png", study.name,
                                           "final test accuracy % (mean ± std over seeds)", points):
        lines += ["", f"![{study.name}: accuracy against examples forwarded]({study.name}/accuracy_vs_forwarded.png)"]
    if study.notes:
        lines += ["", study.notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    argv = sys.argv[1:]
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = ArgumentParser(prog="vision_sweep.py", description=__doc__)
    parser.add_argument("--name", default=None)
    parser.add_argument("--runs_dir", default=str(ROOT / "runs" / "vision"),
                        help="Raw run folders (logs, checkpoints, per-run plots): not tracked.")
    parser.add_argument("--results_dir", default=str(ROOT / "vision_runs"),
                        help="Where the condensed study (<name>.jsonl) and RESULTS.md go.")
    parser.add_argument("--methods", nargs="+", default=["full", "random", "infobatch", "emp"])
    parser.add_argument("--prunes", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--noise_prunes", nargs="*", type=float, default=[])
    parser.add_argument("--label_noise", type=float, default=0.2)
    parser.add_argument("--machine", default="unspecified")
    parser.add_argument("--render_only", action="store_true", help="Only rebuild vision_runs/RESULTS.md.")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="Seeds (folders get -seed<S>); default: one run with scripts/vision.py's seed.")
    parser.add_argument("--budget_match", default=None, metavar="METHOD",
                        help="Also run the budget-matched full-data baseline of each METHOD run (after it).")
    parser.add_argument("--budget_schedule", choices=("matched", "own", "planned"), default="matched",
                        help="matched: the budget run takes the METHOD run's LR at every step (only the data "
                             "differ); own: its schedule spans its own epochs (folders budget_METHOD+own-...); "
                             "planned: a schedule planned for the budget, linear decay to 0 over its steps "
                             "(folders budget_METHOD+planned-...).")
    parser.add_argument("--variants", nargs="+", default=[], metavar="LABEL:FLAGS",
                        help="Ablations: run every job once per variant with extra vision.py flags, e.g. "
                             "'beta0:--beta 0' 'noanneal:--anneal 0'; the label goes into the method's name.")
    args = parser.parse_args(own)
    results_dir, raw_dir = Path(args.results_dir), Path(args.runs_dir)
    if args.render_only:
        write_results(results_dir, raw_dir)
        return
    if args.name is None:
        parser.error("--name is required (unless --render_only)")
    variants = parse_variants(parser, args.variants)
    base = record_invocation(raw_dir / args.name, "vision_sweep.py", argv, args.machine)
    study = load_study(args.name, results_dir)

    def finished(folder: Path) -> tuple[dict, dict] | None:
        """(metrics, report) of a finished run, from its raw folder or the condensed study."""
        if (folder / "metrics.json").is_file() and (folder / "pruning_report.json").is_file():
            m = json.loads((folder / "metrics.json").read_text())
            if m["final"]:
                return m, json.loads((folder / "pruning_report.json").read_text())
        run = study.run(folder.name) if study is not None else None
        if run is not None and run.get("metrics.json") and run.get("metrics.json")["final"]:
            return run.get("metrics.json"), run.get("pruning_report.json")
        return None

    seeds = args.seeds or [None]
    variants = variants or [("", "")]
    jobs = []
    for noise, prunes in ((0.0, args.prunes), (args.label_noise, args.noise_prunes)):
        if noise > 0 and not prunes:
            continue
        for variant in variants:
            for method in args.methods:
                for prune in [0.0] if method == "full" else prunes:
                    jobs += [(noise, method, prune, seed, variant) for seed in seeds]
        if args.budget_match and noise == 0:
            jobs += [(noise, "budget", prune, seed, ("", "")) for prune in prunes for seed in seeds]

    def folder_of(noise, method, prune, seed, variant=""):
        return base / (method + (f"+{variant}" if variant else "") + ("" if method == "full" else f"-{prune}")
                       + (f"-noise{noise}" if noise else "") + ("" if seed is None else f"-seed{seed}"))

    for n, (noise, method, prune, seed, (variant, flags)) in enumerate(jobs, 1):
        extra = shlex.split(flags)
        if method == "budget":
            matched = finished(folder_of(noise, args.budget_match, prune, seed))
            if matched is None:
                print(f"[{n}/{len(jobs)}] skip budget-{prune}: {folder_of(noise, args.budget_match, prune, seed).name}"
                      " is not complete", flush=True)
                continue
            report = matched[1]
            schedule = args.budget_schedule
            folder = folder_of(noise, f"budget_{args.budget_match}", prune, seed,
                               "" if schedule == "matched" else schedule)
            run_method, extra = "full", ["--budget_examples", str(report["forwarded_examples"])]
            if schedule == "matched":  # the matched run's epochs carry its LR over: same LR at every step
                extra += ["--budget_schedule_examples", *(str(e["forwarded"]) for e in report["per_epoch"])]
            elif schedule == "planned":  # the strong baseline of budgeted training: linear decay to 0
                extra += ["--schedule", "linear"]
        else:
            folder, run_method = folder_of(noise, method, prune, seed, variant), method
        if finished(folder) is not None:
            print(f"[{n}/{len(jobs)}] skip (complete) {folder.name}", flush=True)
            continue
        cmd = [sys.executable, str(ROOT / "scripts" / "vision.py"), "--method", run_method, "--prune", str(prune),
               "--label_noise", str(noise), "--output_dir", str(folder), "--progress", "false", *passthrough, *extra]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        run_job(cmd, folder, f"[{n}/{len(jobs)}]")
        condense(base, results_dir)
    condense(base, results_dir)
    write_results(results_dir, raw_dir)


def run_job(cmd: list[str], folder: Path, tag: str) -> None:
    """Run one grid point into `folder` (its output in run.log), print its summary line, drop checkpoints."""
    print(f"{tag} run {folder.name}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "run.log").open("w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    summary = [x for x in (folder / "run.log").read_text().splitlines() if x.startswith("[emp-hf]")]
    print("    " + (summary[-1] if proc.returncode == 0 and summary else f"failed (exit {proc.returncode})"),
          flush=True)
    for ckpt in folder.glob("checkpoint-*"):
        shutil.rmtree(ckpt)


def write_results(results_dir: Path, raw_dir: Path | None = None) -> None:
    """vision_runs/RESULTS.md from every condensed study (and the raw folders of studies still running)."""
    from simclr_sweep import render as render_simclr

    parts = ["# Vision results", "", "Generated by `python scripts/vision_sweep.py --render_only` from the condensed "
             "studies (`vision_runs/<study>.jsonl`: each run's settings, pruning report and metrics).", ""]
    for study in load_studies(results_dir, raw_dir):
        parts.append(render_simclr(study) if study.meta.get("kind") == "simclr" else render(study, results_dir))
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "RESULTS.md").write_text("\n".join(parts))


if __name__ == "__main__":
    with guard("vision_sweep.py"):
        main()
