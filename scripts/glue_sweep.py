#!/usr/bin/env python
"""Run a grid of GLUE runs (tasks x methods x prune ratios x seeds), resumably, and record it as a study.

    python scripts/glue_sweep.py --name minilm-cpu --tasks rte mrpc stsb cola \
        --methods full random infobatch emp --prunes 0.7 --seeds 1 2 3 \
        -- --data_dir data/glue --model_name_or_path /path/to/model --num_train_epochs 4

Everything after `--` goes to scripts/glue.py unchanged. Each run writes into its own folder under the raw
folder `runs/glue/<name>/` (not tracked: logs, weights); after each run the study is condensed into
`glue_runs/<name>.jsonl` (`emp_hf.studies`), and at the end the tables and plots of every study are rendered
(scripts/glue_table.py). A run already recorded (raw or condensed) is skipped, so an interrupted sweep
continues where it stopped. Model weights and checkpoints are deleted after each run (`--keep_models` keeps
them). `--launcher "accelerate launch --num_processes 4"` runs each job under a launcher.
"""

from __future__ import annotations

import json
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from emp_hf.cli import ArgumentParser, guard
from emp_hf.studies import condense, load_study, parse_variants, record_invocation

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT / "scripts" / "glue.py"
KEEP = {"eval_results.json", "all_results.json", "train_results.json", "pruning_report.json", "run.json",
        "trainer_state.json", "run.log"}


def run_dir(base: Path, task: str, method: str, prune: float, seed: int, variant: str = "") -> Path:
    label = "full" if method == "full" else f"{method}-{prune}"
    return base / task / (label + (f"-{variant}" if variant else "")) / f"seed{seed}"


def recorded(folder: Path, base: Path, study) -> dict | None:
    """The pruning report of a finished run, from its raw folder or the condensed study; None if unfinished."""
    if (folder / "eval_results.json").is_file() and (folder / "pruning_report.json").is_file():
        return json.loads((folder / "pruning_report.json").read_text())
    run = study.run(folder.relative_to(base).as_posix()) if study is not None else None
    if run is not None and run.get("eval_results.json") is not None:
        return run.get("pruning_report.json")
    return None


def main() -> None:
    argv = sys.argv[1:]
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = ArgumentParser(prog="glue_sweep.py", description=__doc__)
    parser.add_argument("--name", required=True, help="Sweep name: results go to <runs_dir>/<name>/.")
    parser.add_argument("--runs_dir", default=str(ROOT / "runs" / "glue"),
                        help="Raw run folders (logs, weights): not tracked.")
    parser.add_argument("--results_dir", default=str(ROOT / "glue_runs"),
                        help="Where the condensed study (<name>.jsonl) and RESULTS.md go.")
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--methods", nargs="+", default=["full", "random", "infobatch", "emp"])
    parser.add_argument("--prunes", nargs="+", type=float, default=[0.7])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--launcher", default="", help="Command prefix, e.g. 'accelerate launch'.")
    parser.add_argument("--keep_models", action="store_true")
    parser.add_argument("--budget_match", default=None, metavar="METHOD",
                        help="Also run the budget-matched full-data baseline for each prune ratio and seed: all "
                             "data, cut to the examples METHOD's run forwarded (run after it).")
    parser.add_argument("--variants", nargs="+", default=[], metavar="LABEL:FLAGS",
                        help="Ablations: run every job once per variant with extra glue.py flags, e.g. "
                             "'beta0:--beta 0' 'noanneal:--anneal 0'; the label goes into the method's name.")
    parser.add_argument("--machine", default=f"{platform.machine()} {platform.node()}",
                        help="Free text recorded with the results (what the runs ran on).")
    args = parser.parse_args(own)
    from emp_hf.core import POLICIES
    from emp_hf.glue import get_task

    for task in args.tasks:
        get_task(task)
    unknown = [m for m in args.methods if m not in POLICIES]
    if unknown:
        parser.error(f"unknown --methods {unknown}; known: {', '.join(sorted(POLICIES))}")
    variants = parse_variants(parser, args.variants)
    results_dir = Path(args.results_dir)
    legacy = results_dir / args.name  # a study begun when raw runs lived beside the results
    raw_root = legacy.parent if (legacy / "sweep.json").is_file() and not (Path(args.runs_dir) / args.name).exists() \
        else Path(args.runs_dir)
    base = record_invocation(raw_root / args.name, "glue_sweep.py", argv, args.machine)
    study = load_study(args.name, results_dir)

    variants = variants or [("", "")]
    jobs = [(t, m, p, s, v) for t in args.tasks for v in variants for m in args.methods
            for p in ([0.0] if m == "full" else args.prunes) for s in args.seeds]
    if args.budget_match:
        jobs += [(t, "budget", p, s, ("", "")) for t in args.tasks for p in args.prunes for s in args.seeds]
    for n, (task, method, prune, seed, (variant, flags)) in enumerate(jobs, 1):
        extra = shlex.split(flags)
        if method == "budget":  # the budget-matched baseline of `--budget_match`'s run with this ratio and seed
            matched = run_dir(base, task, args.budget_match, prune, seed)
            matched_report = recorded(matched, base, study)
            if matched_report is None:
                print(f"[{n}/{len(jobs)}] skip budget-{args.budget_match}-{prune} seed{seed}: "
                      f"{matched.relative_to(base)} is not complete", flush=True)
                continue
            budget = matched_report["forwarded_examples"]
            folder = base / task / f"budget_{args.budget_match}-{prune}" / f"seed{seed}"
            label, glue_method, extra = f"budget_{args.budget_match}", "full", ["--budget_examples", str(budget)]
        else:
            folder = run_dir(base, task, method, prune, seed, variant)
            label, glue_method = method + (f" [{variant}]" if variant else ""), method
        if recorded(folder, base, study) is not None:
            print(f"[{n}/{len(jobs)}] skip (complete) {folder.relative_to(base)}", flush=True)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [*shlex.split(args.launcher), *([] if args.launcher else [sys.executable]), str(GLUE),
               "--task", task, "--method", glue_method, "--prune", str(prune), "--seed", str(seed),
               "--output_dir", str(folder), *passthrough, *extra]
        (folder / "run.json").write_text(json.dumps({"command": cmd, "task": task, "method": label,
                                                     "prune": prune, "seed": seed}, indent=2) + "\n")
        print(f"[{n}/{len(jobs)}] run {folder.relative_to(base)}", flush=True)
        t0 = time.time()
        with (folder / "run.log").open("w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        if proc.returncode != 0:
            print(f"    failed (exit {proc.returncode}); see {folder / 'run.log'}", flush=True)
            continue
        summary = [line for line in (folder / "run.log").read_text().splitlines() if line.startswith("[emp-hf]")]
        print(f"    {summary[-1] if summary else 'done'} ({time.time() - t0:.0f}s)", flush=True)
        if not args.keep_models:
            for item in folder.iterdir():
                if item.name not in KEEP:
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
        condense(base, results_dir)
    condense(base, results_dir)
    # The tables and plots follow from the condensed runs; rendering them here makes the grid one command.
    subprocess.run([sys.executable, str(ROOT / "scripts" / "glue_table.py"), "--results_dir", str(results_dir),
                    "--raw_dir", str(raw_root)], check=True)


if __name__ == "__main__":
    with guard("glue_sweep.py"):
        main()
