#!/usr/bin/env python
"""Run a grid of vision runs into vision_runs/<name>/ (resumable) and render vision_runs/RESULTS.md.

    python scripts/vision_sweep.py --name fmnist-cpu --methods full random infobatch emp \
        --prunes 0.3 0.5 0.7 --noise_prunes 0.7 -- --dataset fashion_mnist --model resnet10 --epochs 8 --cpu

Everything after `--` goes to scripts/vision.py. `--noise_prunes` adds runs with
`--label_noise` (default 0.2) at those ratios (and a full-data noisy run).
A run folder with metrics.json is complete and skipped; checkpoints are
deleted after each run. The table is built from the runs' JSON files only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render(base: Path) -> str:
    meta = json.loads((base / "sweep.json").read_text())
    rows = []
    for metrics_file in sorted(base.glob("*/metrics.json")):
        m = json.loads(metrics_file.read_text())
        r = json.loads((metrics_file.parent / "pruning_report.json").read_text())
        rows.append((m["arguments"]["label_noise"], m["pruning"]["prune"] if m["pruning"]["method"] != "full" else 0.0,
                     m["pruning"]["method"], m["final"]["test_acc"], max(e["test_acc"] for e in m["epochs"]),
                     r["forwarded_examples"], r["full_data_examples"], m["final"]["train_time_s"]))
    order = {"full": 0, "random": 1, "infobatch": 2, "emp": 3}
    rows.sort(key=lambda x: (x[0], x[1], order.get(x[2], 9)))
    full_wall = {noise: wall for noise, prune, method, *_, wall in rows if method == "full"}
    lines = [f"## {base.name}", "",
             "Train time: selection, training steps and score updates, without the per-epoch evaluation.", ""]
    for inv in meta["invocations"]:
        lines += [f"- Machine: {inv['machine']}; started {inv['started']}", f"  - Command: `{inv['command']}`"]
    lines += ["", "| label noise | prune | method | final test acc | best test acc | forwarded / full | saved | "
              "train s | train time / full-data train time | achieved / ideal saving |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for noise, prune, method, acc, best, fwd, full, wall in rows:
        ratio = wall / full_wall[noise] if noise in full_wall else None
        saved = 1 - fwd / full
        eff = f"{(1 - ratio) / saved:.3f}" if ratio is not None and saved > 0 else "–"
        lines.append(f"| {noise:g} | {prune:g} | {method} | {100 * acc:.2f} | {100 * best:.2f} | {fwd:,} / {full:,} | "
                     f"{saved:.3f} | {wall:.0f} | {'–' if ratio is None else f'{ratio:.3f}'} | {eff} |")
    notes = base / "NOTES.md"
    if notes.is_file():
        lines += ["", notes.read_text()]
    return "\n".join(lines) + "\n"


def record_invocation(base: Path, script: str, argv: list[str], machine: str, kind: str | None = None) -> Path:
    """Append this command, the machine and the time to `base`/sweep.json (made with `kind` if new)."""
    base.mkdir(parents=True, exist_ok=True)
    meta_path = base / "sweep.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {
        **({"kind": kind} if kind else {}), "invocations": []}
    meta["invocations"].append({"command": f"python scripts/{script} " + " ".join(map(shlex.quote, argv)),
                                "machine": machine,
                                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return base


def main() -> None:
    argv = sys.argv[1:]
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=None)
    parser.add_argument("--runs_dir", default=str(ROOT / "vision_runs"))
    parser.add_argument("--methods", nargs="+", default=["full", "random", "infobatch", "emp"])
    parser.add_argument("--prunes", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--noise_prunes", nargs="*", type=float, default=[])
    parser.add_argument("--label_noise", type=float, default=0.2)
    parser.add_argument("--machine", default="unspecified")
    parser.add_argument("--render_only", action="store_true", help="Only rebuild vision_runs/RESULTS.md.")
    args = parser.parse_args(own)
    if args.render_only:
        write_results(Path(args.runs_dir))
        return
    if args.name is None:
        parser.error("--name is required (unless --render_only)")
    base = record_invocation(Path(args.runs_dir) / args.name, "vision_sweep.py", argv, args.machine)

    jobs = []
    for noise, prunes in ((0.0, args.prunes), (args.label_noise, args.noise_prunes)):
        if noise > 0 and not prunes:
            continue
        for method in args.methods:
            for prune in [0.0] if method == "full" else prunes:
                jobs.append((noise, method, prune))
    for n, (noise, method, prune) in enumerate(jobs, 1):
        folder = base / (f"{method}" + ("" if method == "full" else f"-{prune}") + (f"-noise{noise}" if noise else ""))
        if (folder / "metrics.json").is_file():
            print(f"[{n}/{len(jobs)}] skip (complete) {folder.name}", flush=True)
            continue
        cmd = [sys.executable, str(ROOT / "scripts" / "vision.py"), "--method", method, "--prune", str(prune),
               "--label_noise", str(noise), "--output_dir", str(folder), "--progress", "false", *passthrough]
        print(f"[{n}/{len(jobs)}] run {folder.name}", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "run.log").open("w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        summary = [x for x in (folder / "run.log").read_text().splitlines() if x.startswith("[emp-hf]")]
        print("    " + (summary[-1] if proc.returncode == 0 and summary else f"failed (exit {proc.returncode})"),
              flush=True)
        for ckpt in folder.glob("checkpoint-*"):
            shutil.rmtree(ckpt)
    write_results(Path(args.runs_dir))


def write_results(runs_dir: Path) -> None:
    parts = ["# Vision results", "", "Generated by `python scripts/vision_sweep.py` from the runs' JSON files.", ""]
    for base in sorted(runs_dir.iterdir()):
        if not (base / "sweep.json").is_file():
            continue
        if json.loads((base / "sweep.json").read_text()).get("kind") == "simclr":
            sys.path.insert(0, str(ROOT / "scripts"))
            from simclr_sweep import render as render_simclr

            parts.append(render_simclr(base))
        else:
            parts.append(render(base))
    (runs_dir / "RESULTS.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
