#!/usr/bin/env python
"""Run a grid of SimCLR pre-training runs (resumable), record it as a study and render vision_runs/RESULTS.md.

    python scripts/simclr_sweep.py --name digits-simclr-cpu --methods full random infobatch emp \
        --prunes 0.7 --ssl_scores loss_f loss_g --seeds 0 1 2 -- --dataset digits --model resnet10 --epochs 20 --cpu

Everything after `--` goes to scripts/simclr.py. EMP runs once per `--ssl_scores` entry; the other methods
rank by the NT-Xent term alone, so they run once. Raw runs go to `runs/vision/<name>/` (not tracked), the
condensed study to `vision_runs/<name>.jsonl`; a recorded run is skipped; checkpoints are deleted after
each run. Tables give mean +- std over seeds, from the condensed runs.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from emp_hf.cli import ArgumentParser, guard
from emp_hf.studies import Study, condense, load_study, record_invocation

ROOT = Path(__file__).resolve().parents[1]

#: The paper's Table 4 (SimCLR, ResNet-50, fine-tuned accuracy) at prune 0.3 / 0.5 / 0.7, for reference.
PAPER_TABLE4 = {
    "CIFAR-10": {"no pruning": 84.67, "emp@0.7": 80.59, "infobatch@0.7": 79.05, "eps_greedy@0.7": 76.91,
                 "ucb@0.7": 71.85},
    "CIFAR-100": {"no pruning": 56.92, "emp@0.7": 48.21, "infobatch@0.7": 46.01, "eps_greedy@0.7": 42.72,
                  "ucb@0.7": 42.15},
}


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def render(study: Study) -> str:
    meta = study.meta
    groups: dict[tuple, list[dict]] = {}
    for run in sorted(study.runs, key=lambda run: run.path):
        res = run.get("ssl_results.json")
        if res is None:
            continue
        p = res["pruning"]
        prune = 0.0 if p["method"] == "full" else p["prune"]
        score = res["arguments"]["ssl_score"] if p["method"] == "emp" else "nt_xent"
        groups.setdefault((prune, p["method"], score), []).append(res)
    order = {"full": 0, "random": 1, "infobatch": 2, "eps_greedy": 3, "ucb": 4, "emp": 5}
    lines = [f"## {study.name} (SimCLR)", "",
             "Pre-training time: selection, training steps and score updates. Accuracy: the evaluation named in "
             "the command after pre-training, on the test split; mean ± std over seeds.", ""]
    for inv in meta["invocations"]:
        lines += [f"- Machine: {inv['machine']}; started {inv['started']}", f"  - Command: `{inv['command']}`"]
    lines += ["", "| prune | method | ranked by | seeds | test acc (%) | forwarded / full | saved | pre-train s |",
              "|---|---|---|---|---|---|---|---|"]
    for (prune, method, score), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9),
                                                                                 kv[0][2])):
        accs = [100 * r["evaluation"]["test_acc"] for r in runs if "test_acc" in r["evaluation"]]
        fwd = statistics.mean(r["pretrain"]["forwarded_examples"] for r in runs)
        full = statistics.mean(r["pretrain"]["forwarded_examples"] / (1 - r["pretrain"]["saved_fraction"])
                               for r in runs)
        ranked = {"nt_xent": "NT-Xent" if method not in ("full", "random") else "–",
                  "loss_f": "NT-Xent − β‖f_a − f_b‖", "loss_g": "NT-Xent − β‖g_a − g_b‖"}[score]
        lines.append(f"| {prune:g} | {method} | {ranked} | {len(runs)} | {_mean_std(accs) if accs else '–'} | "
                     f"{fwd:,.0f} / {full:,.0f} | {1 - fwd / full:.3f} | "
                     f"{statistics.mean(r['pretrain']['train_time_s'] for r in runs):.0f} |")
    if study.notes:
        lines += ["", study.notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    argv = sys.argv[1:]
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = ArgumentParser(prog="simclr_sweep.py", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--runs_dir", default=str(ROOT / "runs" / "vision"), help="Raw run folders: not tracked.")
    parser.add_argument("--results_dir", default=str(ROOT / "vision_runs"),
                        help="Where the condensed study (<name>.jsonl) and RESULTS.md go.")
    parser.add_argument("--methods", nargs="+", default=["full", "random", "infobatch", "emp"])
    parser.add_argument("--prunes", nargs="+", type=float, default=[0.7])
    parser.add_argument("--ssl_scores", nargs="+", default=["loss_f", "loss_g"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--machine", default="unspecified")
    args = parser.parse_args(own)
    from vision_sweep import run_job, write_results

    results_dir, raw_dir = Path(args.results_dir), Path(args.runs_dir)
    base = record_invocation(raw_dir / args.name, "simclr_sweep.py", argv, args.machine, kind="simclr")
    study = load_study(args.name, results_dir)

    jobs = []
    for seed in args.seeds:
        for method in args.methods:
            for prune in [0.0] if method == "full" else args.prunes:
                for score in args.ssl_scores if method == "emp" else [args.ssl_scores[0]]:
                    jobs.append((seed, method, prune, score))
    for n, (seed, method, prune, score) in enumerate(jobs, 1):
        name = method + ("" if method == "full" else f"-{prune}") + (f"-{score}" if method == "emp" else "")
        folder = base / f"{name}-seed{seed}"
        if (folder / "ssl_results.json").is_file() or (study is not None and study.run(folder.name) is not None
                                                        and study.run(folder.name).get("ssl_results.json")):
            print(f"[{n}/{len(jobs)}] skip (complete) {folder.name}", flush=True)
            continue
        cmd = [sys.executable, str(ROOT / "scripts" / "simclr.py"), "--method", method, "--prune", str(prune),
               "--ssl_score", score, "--seed", str(seed), "--output_dir", str(folder), "--progress", "false",
               *passthrough]
        run_job(cmd, folder, f"[{n}/{len(jobs)}]")
        condense(base, results_dir)
    condense(base, results_dir)
    write_results(results_dir, raw_dir)


if __name__ == "__main__":
    with guard("simclr_sweep.py"):
        main()
