"""Recorded studies: a sweep's runs condensed into one JSON Lines file, the evidence the results pages come from.

A sweep (scripts/glue_sweep.py, vision_sweep.py, simclr_sweep.py) writes each run into its own folder
under an ignored raw folder (`runs/`); after every run it condenses the study into
`<results_dir>/<study>.jsonl`: a first line with the study's invocations (command, machine, start time),
then one line per run holding its relative folder and the JSON files the tables read (the run's command
and settings, its pruning report, its evaluation). Logs, checkpoints, model weights and per-run plots stay
in the raw folder. The rendered RESULTS page reads the condensed files, so a clone holds every recorded
number in a few files per study; hand-written notes sit beside them as `<study>.md`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The JSON files of a run folder that the tables read (the rest stays in the raw folder).
RUN_FILES = ("run.json", "pruning_report.json", "eval_results.json", "train_results.json", "metrics.json",
             "ssl_results.json")


@dataclass
class RunFiles:
    """One run: its folder relative to the study, and its JSON files, parsed."""

    path: str
    files: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def get(self, file: str) -> Any:
        return self.files.get(file)


@dataclass
class Study:
    name: str
    meta: dict[str, Any] = field(default_factory=dict)  # "invocations" (and "kind" for SimCLR sweeps)
    runs: list[RunFiles] = field(default_factory=list)
    notes: str | None = None

    def run(self, path: str) -> RunFiles | None:
        return next((r for r in self.runs if r.path == path), None)


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


def parse_variants(parser: argparse.ArgumentParser, values: list[str]) -> list[tuple[str, str]]:
    """`LABEL:FLAGS` strings as (label, flags); a label that cannot name a folder is a usage error."""
    variants = [(v.partition(":")[0], v.partition(":")[2]) for v in values]
    bad = [label for label, _ in variants if not label.isidentifier()]
    if bad:
        parser.error(f"--variants labels must be letters, digits and '_' (they name folders); got {bad}")
    return variants


# ---------------------------------------------------------------------------------- reading
def read_raw(folder: Path) -> Study:
    """A study from its raw folder: every folder below it holding any of `RUN_FILES`."""
    meta_path = folder / "sweep.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    runs = []
    for run_dir in sorted({p.parent for name in RUN_FILES for p in folder.rglob(name)}):
        files = {}
        for name in RUN_FILES:
            path = run_dir / name
            if path.is_file():
                try:
                    files[name] = json.loads(path.read_text())
                except ValueError:
                    continue  # being written by a live run
        runs.append(RunFiles(run_dir.relative_to(folder).as_posix(), files))
    notes = folder / "NOTES.md"
    return Study(folder.name, meta, runs, notes.read_text() if notes.is_file() else None)


def read_condensed(path: Path) -> Study:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not lines or lines[0].get("study") != path.stem:
        raise ValueError(f"{path} is not a condensed study (its first line names no study {path.stem!r}).")
    head, rows = lines[0], lines[1:]
    notes = path.with_suffix(".md")
    return Study(path.stem, head.get("meta", {}), [RunFiles(r["path"], r["files"]) for r in rows],
                 notes.read_text() if notes.is_file() else None)


def write_condensed(study: Study, results_dir: Path) -> Path:
    """`<results_dir>/<study>.jsonl` (and its notes as `<study>.md` when the study has them)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{study.name}.jsonl"
    lines = [json.dumps({"study": study.name, "meta": study.meta}, sort_keys=True)]
    lines += [json.dumps({"path": r.path, "files": r.files}, sort_keys=True)
              for r in sorted(study.runs, key=lambda r: r.path)]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    if study.notes is not None:
        path.with_suffix(".md").write_text(study.notes)
    return path


def merge(old: Study | None, new: Study) -> Study:
    """The runs of both (a run in `new` replaces the same folder's in `old`) and the invocations of both."""
    if old is None:
        return new
    runs = {r.path: r for r in old.runs}
    runs.update({r.path: r for r in new.runs})
    meta = {**old.meta, **new.meta}
    invocations = [*old.meta.get("invocations", []), *new.meta.get("invocations", [])]
    if invocations:  # a resumed sweep's raw folder may hold only its newest invocations
        meta["invocations"] = list({(i["started"], i["command"]): i for i in invocations}.values())
    return Study(new.name, meta, list(runs.values()), new.notes if new.notes is not None else old.notes)


def condense(raw: Path, results_dir: Path) -> Path:
    """Merge the raw study folder into its condensed file."""
    existing = results_dir / f"{raw.name}.jsonl"
    old = read_condensed(existing) if existing.is_file() else None
    return write_condensed(merge(old, read_raw(raw)), results_dir)


def load_studies(results_dir: Path, raw_dir: Path | None = None) -> list[Study]:
    """Every study of `results_dir`: its condensed files, merged with the raw folders of studies still running
    (under `raw_dir`, or folders of run folders left in `results_dir` itself by an older layout)."""
    studies: dict[str, Study] = {}
    if results_dir.is_dir():
        for path in sorted(results_dir.glob("*.jsonl")):
            studies[path.stem] = read_condensed(path)
    for root in [d for d in (raw_dir, results_dir) if d is not None and d.is_dir()]:
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "sweep.json").is_file()):
            studies[folder.name] = merge(studies.get(folder.name), read_raw(folder))
    return [studies[name] for name in sorted(studies)]


def load_study(name: str, results_dir: Path, raw_dir: Path | None = None) -> Study | None:
    return next((s for s in load_studies(results_dir, raw_dir) if s.name == name), None)


def iter_runs(studies: Iterable[Study]) -> Iterable[tuple[Study, RunFiles]]:
    for study in studies:
        for run in study.runs:
            yield study, run
