"""GLUE tasks for the runner: columns, labels, local or Hub data, and metrics computed locally.

Metrics use scikit-learn and scipy (evaluate's GLUE metric needs the Hub).
Local data: `<data_dir>/<task>/<split>.jsonl` (Hugging Face column names) or
the original GLUE TSV folders (`<data_dir>/CoLA/train.tsv`, `dev.tsv`, ...).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@dataclass(frozen=True)
class GlueTask:
    name: str
    keys: tuple[str, str | None]
    num_labels: int  # 1 = regression
    eval_splits: tuple[str, ...]
    tsv_dir: str
    tsv_eval_files: tuple[str, ...]
    label_names: tuple[str, ...] = ()  # the Hub's names of label ids 0, 1, ... (none for a regression)
    label_range: tuple[float, float] | None = None  # regression: the scale's ends

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask("cola", ("sentence", None), 2, ("validation",), "CoLA", ("dev.tsv",), ("unacceptable", "acceptable")),
        GlueTask("sst2", ("sentence", None), 2, ("validation",), "SST-2", ("dev.tsv",), ("negative", "positive")),
        GlueTask("mrpc", ("sentence1", "sentence2"), 2, ("validation",), "MRPC", ("dev.tsv",),
                 ("not_equivalent", "equivalent")),
        GlueTask("qqp", ("question1", "question2"), 2, ("validation",), "QQP", ("dev.tsv",),
                 ("not_duplicate", "duplicate")),
        GlueTask("stsb", ("sentence1", "sentence2"), 1, ("validation",), "STS-B", ("dev.tsv",), label_range=(0.0, 5.0)),
        GlueTask("mnli", ("premise", "hypothesis"), 3, ("validation_matched", "validation_mismatched"), "MNLI",
                 ("dev_matched.tsv", "dev_mismatched.tsv"), ("entailment", "neutral", "contradiction")),
        GlueTask("qnli", ("question", "sentence"), 2, ("validation",), "QNLI", ("dev.tsv",),
                 ("entailment", "not_entailment")),
        GlueTask("rte", ("sentence1", "sentence2"), 2, ("validation",), "RTE", ("dev.tsv",),
                 ("entailment", "not_entailment")),
        GlueTask("wnli", ("sentence1", "sentence2"), 2, ("validation",), "WNLI", ("dev.tsv",),
                 ("not_entailment", "entailment")),
    )
}

# The Hub's label ids for the tasks whose TSV files hold label names.
_NAMED_LABELS = {
    "mnli": {"entailment": 0, "neutral": 1, "contradiction": 2},
    "qnli": {"entailment": 0, "not_entailment": 1},
    "rte": {"entailment": 0, "not_entailment": 1},
}


def get_task(name: str) -> GlueTask:
    if name not in TASKS:
        raise ValueError(f"Unknown GLUE `task` {name!r}; known tasks: {', '.join(TASKS)}.")
    return TASKS[name]


# ------------------------------------------------------------------ data
def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line of a text file; bytes that are not UTF-8 refuse the file,
    naming the line."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}, line {number}: not UTF-8 ({error.reason} at byte {error.start}).") from None
            if line.strip():
                yield number, line


def _read_tsv(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line of a GLUE TSV file (tab-separated, no quoting)."""
    return [(number, line.rstrip("\r\n").split("\t")) for number, line in _numbered_lines(path)]


def _tsv_label(task: GlueTask, raw: str, at: str) -> Any:
    try:
        if task.is_regression:
            return float(raw)
        if task.name in _NAMED_LABELS:
            return _NAMED_LABELS[task.name][raw]
        return int(raw)
    except (ValueError, KeyError):
        allowed = ("a number" if task.is_regression else
                   " or ".join(map(repr, _NAMED_LABELS[task.name])) if task.name in _NAMED_LABELS else "an integer")
        raise ValueError(f"{at}: label {raw!r} is not {allowed}.") from None


def _tsv_rows(task: GlueTask, path: Path) -> list[dict[str, Any]]:
    """Rows of an original GLUE TSV file, with the Hub's column names and label ids; every line is read, or the
    file is refused naming the line."""
    rows = _read_tsv(path)
    a, b = task.keys
    if task.name == "cola":  # no header: source, label, original label, sentence
        out = []
        for number, r in rows:
            at = f"{path}, line {number}"
            if len(r) != 4:
                raise ValueError(f"{at}: {len(r)} tab-separated field(s); CoLA's files have 4 (source, label, "
                                 "original label, sentence).")
            out.append({a: r[3], "label": _tsv_label(task, r[1], at), "_line": number})
        return out
    if not rows:
        raise ValueError(f"{path}: no rows.")
    (_, header), body = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    source = {
        "sst2": ("sentence", None, "label"),
        "mrpc": ("#1 String", "#2 String", "Quality"),
        "qqp": ("question1", "question2", "is_duplicate"),
        "stsb": ("sentence1", "sentence2", "score"),
        "mnli": ("sentence1", "sentence2", "gold_label"),
        "qnli": ("question", "sentence", "label"),
        "rte": ("sentence1", "sentence2", "label"),
        "wnli": ("sentence1", "sentence2", "label"),
    }[task.name]
    missing = [c for c in source if c is not None and c not in col]
    if missing:
        raise ValueError(f"{path}: expected columns {[c for c in source if c]} in the header, missing {missing}.")
    out = []
    for number, r in body:
        at = f"{path}, line {number}"
        if len(r) != len(header):
            raise ValueError(f"{at}: {len(r)} tab-separated field(s) where the header has {len(header)}.")
        row = {a: r[col[source[0]]], "label": _tsv_label(task, r[col[source[2]]], at), "_line": number}
        if b is not None:
            row[b] = r[col[source[1]]]
        out.append(row)
    return out


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file; each row remembers its line (`_line`) for error messages."""
    rows = []
    for number, line in _numbered_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg}, col {error.colno}).") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {number}: a JSON object per line is needed, got {type(row).__name__}.")
        rows.append({**row, "_line": number})
    return rows


def local_split_files(task: GlueTask, data_dir: str | Path) -> dict[str, Path]:
    """The files for train and each evaluation split, from either local layout."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"`data_dir` {str(root)!r} is not a folder.")
    for folder in (root / task.name, root):
        if (folder / "train.jsonl").is_file() or any(folder.glob("*.jsonl")):
            files = {s: folder / f"{s}.jsonl" for s in ("train", *task.eval_splits)}
            break
    else:
        folder = root / task.tsv_dir if (root / task.tsv_dir).is_dir() else root
        files = {"train": folder / "train.tsv"}
        files.update({s: folder / f for s, f in zip(task.eval_splits, task.tsv_eval_files)})
    absent = [f"{split}: {path}" for split, path in files.items() if not path.is_file()]
    if absent:
        raise ValueError(
            f"`data_dir` lacks files for task {task.name!r}: " + "; ".join(absent)
            + f". Expected {root}/{task.name}/<split>.jsonl or the GLUE TSV folder {root}/{task.tsv_dir}/."
        )
    return files


def _csv_rows(task: GlueTask, path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV file with a header (run_glue's --train_file layout); labels parsed as numbers."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 ({error.reason} at byte {error.start}).") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    out = []
    for row in reader:
        number = reader.line_num
        if None in row or None in row.values():
            fields = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
            raise ValueError(f"{path}, line {number}: {fields} field(s) where the header has "
                             f"{len(reader.fieldnames or [])}.")
        label = row.get("label")
        try:
            parsed: Any = float(label) if task.is_regression else int(label)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            parsed = label
        out.append({**row, "label": parsed, "_line": number})
    return out


def _read_split(task: GlueTask, path: Path) -> list[dict[str, Any]]:
    """One split file (JSON Lines, CSV with a header, or an original GLUE TSV), validated; rows as dicts."""
    if path.suffix in (".json", ".jsonl"):
        rows = _jsonl_rows(path)
    elif path.suffix == ".csv":
        rows = _csv_rows(task, path)
    else:
        rows = _tsv_rows(task, path)
    validate_rows(task, rows, str(path))
    return [{k: v for k, v in row.items() if k != "_line"} for row in rows]


def load_files(task: GlueTask, files: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Splits from files named on the command line (run_glue's --train_file/--validation_file): .csv with a
    header, or .json/.jsonl with one object per line; columns as on the Hub (e.g. sentence1, sentence2, label)."""
    for split, name in files.items():
        if not Path(name).is_file():
            raise ValueError(f"--{split}_file {name!r} does not exist.")
        if Path(name).suffix not in (".csv", ".json", ".jsonl"):
            raise ValueError(f"--{split}_file {name!r}: use a .csv, .json or .jsonl file.")
    return {split: _read_split(task, Path(name)) for split, name in files.items()}


def load_local(task: GlueTask, data_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    return {split: _read_split(task, path) for split, path in local_split_files(task, data_dir).items()}


def validate_rows(task: GlueTask, rows: list[dict[str, Any]], where: str) -> None:
    """Refuse a file with missing columns or out-of-range labels before any training."""
    if not rows:
        raise ValueError(f"{where}: no rows.")
    texts = [k for k in task.keys if k is not None]
    expected = texts + ["label"]
    for i, row in enumerate(rows):
        at = f"{where}, line {row['_line']}" if "_line" in row else f"{where}: row {i}"
        missing = [k for k in expected if k not in row]
        if missing:
            raise ValueError(f"{at} lacks column(s) {missing}; task {task.name!r} expects {expected}.")
        bad_text = [k for k in texts if not isinstance(row[k], str)]
        if bad_text:
            raise ValueError(f"{at}: column {bad_text[0]!r} is {row[bad_text[0]]!r}; text columns must be strings.")
        label = row["label"]
        if task.is_regression:
            low, high = task.label_range or (-math.inf, math.inf)
            ok = isinstance(label, (int, float)) and not isinstance(label, bool) and math.isfinite(label) \
                and low <= label <= high
            allowed = f"a number in [{low:g}, {high:g}]" if task.label_range else "a finite number"
        else:
            ok = isinstance(label, int) and not isinstance(label, bool) and 0 <= label < task.num_labels
            allowed = f"an integer in [0, {task.num_labels})"
        if not ok:
            raise ValueError(f"{at} has label {label!r}; task {task.name!r} needs {allowed}.")


# --------------------------------------------------------------- metrics
def compute_glue_metrics(task: GlueTask, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The GLUE metrics of `task` from model outputs (logits are arg-maxed); `combined_score` is their mean
    where there are several, as in transformers' run_glue.py. Computed through the `evaluate` module shipped
    in `emp_hf/metrics/glue`, loaded from its folder (no Hub)."""
    predictions = np.asarray(predictions)
    if task.is_regression:
        predictions = predictions.reshape(-1)
    elif predictions.ndim > 1:
        predictions = predictions.argmax(-1)
    out = _glue_metric(task.name).compute(predictions=predictions, references=np.asarray(labels))
    if len(out) > 1:
        out["combined_score"] = float(np.mean(list(out.values())))
    return out


@functools.lru_cache(maxsize=None)
def _glue_metric(task_name: str):
    """The `evaluate` module for one task, loaded (copied and imported) once per process, not per evaluation."""
    import evaluate

    from ..metrics import GLUE_METRIC

    return evaluate.load(GLUE_METRIC, task_name)


def glue_metric_values(task: GlueTask, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The metric values of the Hub's `glue` metric for `task`, from class ids (scores for STS-B)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    predictions = np.asarray(predictions)
    if task.is_regression:
        preds = predictions.reshape(-1).astype(np.float64)
        out = {"pearson": float(pearsonr(preds, labels)[0]), "spearmanr": float(spearmanr(preds, labels)[0])}
    else:
        preds = predictions
        if task.name == "cola":
            out = {"matthews_correlation": float(matthews_corrcoef(labels, preds))}
        elif task.name in ("mrpc", "qqp"):
            out = {"accuracy": float(accuracy_score(labels, preds)), "f1": float(f1_score(labels, preds))}
        else:
            out = {"accuracy": float(accuracy_score(labels, preds))}
    return out


def main_metric(task: GlueTask) -> str:
    if task.is_regression or task.name in ("mrpc", "qqp"):
        return "combined_score"
    return "matthews_correlation" if task.name == "cola" else "accuracy"
