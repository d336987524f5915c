"""The sweep driver runs a grid, skips recorded runs on a second call, condenses the study, and the table is built
from the condensed runs alone (the raw folders may be gone)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from glue_fixtures import write_tiny_model
from test_glue_runner import write_tsv_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sweep_is_resumable_and_table_comes_from_the_runs(tmp_path):
    data = tmp_path / "glue_data"
    model = write_tiny_model(tmp_path / "model", write_tsv_task(data))
    runs, results = tmp_path / "runs", tmp_path / "results"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "scripts" / "glue_sweep.py"), "--name", "tiny", "--runs_dir", str(runs),
           "--results_dir", str(results),
           "--tasks", "mrpc", "--methods", "full", "emp", "--prunes", "0.5", "--seeds", "1", "2",
           "--budget_match", "emp", "--",
           "--data_dir", str(data), "--model_name_or_path", str(model), "--num_train_epochs", "2",
           "--per_device_train_batch_size", "8", "--eval_strategy", "no", "--save_strategy", "no", "--use_cpu"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("] run ") == 6 and "failed" not in first.stdout
    folder = runs / "tiny" / "mrpc" / "emp-0.5" / "seed2"
    assert {p.name for p in folder.iterdir()} >= {"eval_results.json", "pruning_report.json", "run.json"}
    assert not list(folder.glob("*.safetensors"))  # weights dropped after the run
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.stdout.count("skip (complete)") == 6 and "] run " not in second.stdout
    emp_report = json.loads((folder / "pruning_report.json").read_text())
    budget = json.loads((runs / "tiny" / "mrpc" / "budget_emp-0.5" / "seed2" / "pruning_report.json").read_text())
    assert budget["method"] == "full" and budget["budget_examples"] == emp_report["forwarded_examples"]
    assert budget["forwarded_examples"] == emp_report["forwarded_examples"]  # exactly: the last epoch is cut
    assert len(json.loads((runs / "tiny" / "sweep.json").read_text())["invocations"]) == 2
    rendered_by_sweep = (results / "RESULTS.md").read_text()  # the sweep renders its tables itself
    (results / "RESULTS.md").unlink()
    condensed = [json.loads(line) for line in (results / "tiny.jsonl").read_text().splitlines()]
    assert condensed[0]["study"] == "tiny" and len(condensed[0]["meta"]["invocations"]) == 2
    assert len(condensed) == 1 + 6 and all(set(r["files"]) >= {"run.json", "pruning_report.json",
                                                               "eval_results.json"} for r in condensed[1:])
    import shutil

    shutil.copytree(runs, tmp_path / "raw-kept")  # the table needs no raw folder
    shutil.rmtree(runs)
    runs = tmp_path / "raw-kept"
    folder = runs / "tiny" / "mrpc" / "emp-0.5" / "seed2"

    table = subprocess.run([sys.executable, str(ROOT / "scripts" / "glue_table.py"), "--results_dir", str(results),
                            "--raw_dir", str(tmp_path / "no-raw")], env=env, capture_output=True, text=True,
                           timeout=120)
    assert table.returncode == 0, table.stderr
    text = (results / "RESULTS.md").read_text()
    score = 100 * json.loads((folder / "eval_results.json").read_text())["eval_combined_score"]
    other = 100 * json.loads((folder.parent / "seed1" / "eval_results.json").read_text())["eval_combined_score"]
    assert f"| emp | 0.5 | {(score + other) / 2:.2f} ± " in text
    assert "| full | 0 |" in text and "(n=2)" in text and "python scripts/glue_sweep.py" in text
    assert "| budget_emp | 0.5 |" in text and "![MRPC: metric against examples forwarded](tiny/mrpc.png)" in text
    assert (results / "tiny" / "mrpc.png").is_file() and text == rendered_by_sweep
    budget_dir = runs / "tiny" / "mrpc" / "budget_emp-0.5"
    diffs = [100 * (json.loads((folder.parent / s / "eval_results.json").read_text())["eval_combined_score"]
                    - json.loads((budget_dir / s / "eval_results.json").read_text())["eval_combined_score"])
             for s in ("seed1", "seed2")]
    assert f"| emp − budget_emp | 0.5 | {(diffs[0] + diffs[1]) / 2:+.2f} [" in text and ", n=2)" in text


def test_sweep_refuses_a_variant_label_that_cannot_name_a_folder(tmp_path):
    runs = tmp_path / "runs"
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "glue_sweep.py"), "--name", "x", "--runs_dir",
                          str(runs), "--tasks", "sst2", "--variants", "beta/0:--beta 0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--variants labels" in bad.stderr and "beta/0" in bad.stderr
    assert not runs.exists()
