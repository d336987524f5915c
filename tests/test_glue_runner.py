"""scripts/glue.py end to end on CPU with a tiny BERT built here."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
from glue_fixtures import REPO_GLUE, glue_texts, write_tiny_model
from launch import LAUNCHERS, launch_two

from emp_hf.glue import TASKS, load_local

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "glue.py"
COMMON = ["--max_eval_samples", "16", "--num_train_epochs", "3", "--per_device_train_batch_size", "8",
          "--use_cpu", "--prune", "0.5", "--save_strategy", "epoch"]


def run_glue(argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def glue_error(argv: list[str], monkeypatch, capsys, code: int = 1) -> str:
    """Run glue.py expecting it to refuse: its exit status, and its one stderr line (no traceback)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_glue(argv, monkeypatch)
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("glue.py: error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def check_outputs(out: Path, metric: str, method: str = "emp") -> dict:
    for name in ("config.json", "model.safetensors", "eval_results.json", "all_results.json", "README.md",
                 "pruning_report.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "pruning_report.json").read_text())
    assert report["method"] == method
    assert report["forwarded_examples"] == sum(report["planned_examples_per_epoch"])  # plan is exact for emp
    assert [r["forwarded"] for r in report["per_epoch"]] == report["planned_examples_per_epoch"]
    results = json.loads((out / "eval_results.json").read_text())
    assert metric in results
    card = (out / "README.md").read_text()
    assert "## Data pruning" in card and "| pruning_seed |" in card and "(pruning.png)" in card
    assert (out / "pruning.png").stat().st_size > 1000
    for section in ("## Model description", "## Training and evaluation data"):
        body = card.split(section, 1)[1].split("\n## ", 1)[0]
        assert "More information needed" not in body and "emp-hf" in card, section
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints and (checkpoints[-1] / "pruning_state.pt").is_file()
    return report


@pytest.mark.parametrize(
    "task,metric",
    [("rte", "eval_accuracy"), ("sst2", "eval_accuracy"), ("stsb", "eval_combined_score")],
)
def test_real_glue_task(tmp_path, monkeypatch, task, metric):
    spec = TASKS[task]
    model = write_tiny_model(tmp_path / "model", glue_texts(task, spec.keys), num_labels=spec.num_labels)
    out = tmp_path / "out"
    run_glue(["--task", task, "--data_dir", str(REPO_GLUE), "--model_name_or_path", str(model),
              "--max_train_samples", "30", "--output_dir", str(out), *COMMON], monkeypatch)
    report = check_outputs(out, metric)
    assert report["num_examples"] == 30 and report["planned_examples_per_epoch"] == [30, 15, 30]
    config = json.loads((out / "config.json").read_text())
    if spec.label_names:  # the task's own label names, not LABEL_0/LABEL_1
        assert config["id2label"] == {str(i): name for i, name in enumerate(spec.label_names)}
    card = (out / "README.md").read_text()
    assert "the first 30 training rows" in card and f"truncated to {128} tokens" in card


def write_tsv_task(root: Path) -> list[str]:
    """MRPC in the original GLUE TSV layout, written here so the path is always covered."""
    folder = root / "MRPC"
    folder.mkdir(parents=True)
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    words = ["the cat sat", "a dog ran", "the bird sang", "my fish swam", "our cow slept", "a fox hid"]
    texts = []
    for split, n in (("train", 32), ("dev", 12)):
        lines = [header]
        for i in range(n):
            a, b = words[i % 6], words[(i * 5) % 6]
            lines.append(f"{int(a == b)}\t{i}\t{i + 100}\t{a} {i}\t{b}\n")
            texts += [a, b]
        (folder / f"{split}.tsv").write_text("".join(lines))
    return texts


def test_glue_tsv_layout_written_by_the_test(tmp_path, monkeypatch):
    data = tmp_path / "glue_data"
    model = write_tiny_model(tmp_path / "model", write_tsv_task(data))
    splits = load_local(TASKS["mrpc"], data)
    assert len(splits["train"]) == 32 and set(splits["train"][0]) == {"sentence1", "sentence2", "label"}
    out = tmp_path / "out"
    run_glue(["--task", "mrpc", "--data_dir", str(data), "--model_name_or_path", str(model),
              "--output_dir", str(out), "--method", "infobatch", *COMMON], monkeypatch)
    report = json.loads((out / "pruning_report.json").read_text())
    assert report["forwarded_examples"] == sum(r["kept"] for r in report["per_epoch"])
    results = json.loads((out / "eval_results.json").read_text())
    assert {"eval_accuracy", "eval_f1", "eval_combined_score"} <= set(results)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_glue_under_two_processes(tmp_path, launcher):
    data = tmp_path / "glue_data"
    model = write_tiny_model(tmp_path / "model", write_tsv_task(data))
    out = tmp_path / "out"
    proc = launch_two(SCRIPT, "--task", "mrpc", "--data_dir", data, "--model_name_or_path", model,
                      "--output_dir", out, *COMMON, "--per_device_train_batch_size", "4", launcher=launcher)
    report = json.loads((out / "pruning_report.json").read_text())
    assert report["world_size"] == 2
    # 32 and 16 examples fill whole global batches of 2 x 4: no padding, so forwarded equals the plan
    assert report["forwarded_examples"] == sum(report["planned_examples_per_epoch"]) == 32 + 16 + 32
    assert "world_size=2" in proc.stdout


def test_bad_input_is_refused_before_training(tmp_path, monkeypatch, capsys):
    assert "Unknown GLUE `task` 'mnlii'; known tasks: cola" in glue_error(["--task", "mnlii"], monkeypatch, capsys, 2)
    data = tmp_path / "d"
    (data / "rte").mkdir(parents=True)
    (data / "rte" / "train.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "label": 0}\n')
    with pytest.raises(ValueError, match=r"lacks files for task 'rte': validation: .*validation.jsonl"):
        load_local(TASKS["rte"], data)
    (data / "rte" / "validation.jsonl").write_text('{"sentence1": "a", "label": 0}\n')
    with pytest.raises(ValueError, match=r"validation.jsonl, line 1 lacks column\(s\) \['sentence2'\]"):
        load_local(TASKS["rte"], data)
    (data / "rte" / "validation.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "label": 2}\n')
    with pytest.raises(ValueError, match=r"line 1 has label 2; task 'rte' needs an integer in \[0, 2\)"):
        load_local(TASKS["rte"], data)
    with pytest.raises(ValueError, match="is not a folder"):
        load_local(TASKS["rte"], tmp_path / "nowhere")


def test_ordinary_trainer_script_resumes_exactly(tmp_path, monkeypatch):
    """glue.py is an ordinary Trainer script (tokenised datasets.Dataset, DataCollatorWithPadding, eval and
    save each epoch, gradient accumulation): resuming it from a checkpoint ends where the uninterrupted run does."""
    data = tmp_path / "glue_data"
    model = write_tiny_model(tmp_path / "model", write_tsv_task(data))
    common = ["--task", "mrpc", "--data_dir", str(data), "--model_name_or_path", str(model), "--use_cpu",
              "--num_train_epochs", "4", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "3",
              "--prune", "0.5", "--save_strategy", "epoch", "--save_total_limit", "10", "--learning_rate", "1e-3"]
    run_glue([*common, "--output_dir", str(tmp_path / "a")], monkeypatch)
    # 32 / 16 / 16 / 32 examples -> 8 / 4 / 4 / 8 batches -> 3 / 2 / 2 / 3 steps; checkpoint-5 ends epoch 1
    assert sorted(p.name for p in (tmp_path / "a").glob("checkpoint-*")) == [
        "checkpoint-10", "checkpoint-3", "checkpoint-5", "checkpoint-7"]
    run_glue([*common, "--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint",
              str(tmp_path / "a" / "checkpoint-5")], monkeypatch)
    a, b = (json.loads((tmp_path / d / "eval_results.json").read_text()) for d in ("a", "b"))
    assert a["eval_loss"] == b["eval_loss"] and a["eval_combined_score"] == b["eval_combined_score"]
    ra, rb = (json.loads((tmp_path / d / "pruning_report.json").read_text()) for d in ("a", "b"))
    assert ra["per_epoch"] == rb["per_epoch"] and ra["optimizer_steps"] == rb["optimizer_steps"] == 10


def test_default_output_folder_and_resume_latest(tmp_path, monkeypatch, capsys):
    """Without --output_dir each run gets its own folder (not transformers' shared `trainer_output`), and
    `--resume_from_checkpoint latest` resumes the newest complete checkpoint there."""
    data = tmp_path / "glue_data"
    model = write_tiny_model(tmp_path / "model", write_tsv_task(data))
    monkeypatch.chdir(tmp_path)
    common = ["--task", "mrpc", "--data_dir", str(data), "--model_name_or_path", str(model), *COMMON]
    run_glue(common, monkeypatch)
    out = tmp_path / "output" / "mrpc-emp-0.5-seed42"
    first = json.loads((out / "pruning_report.json").read_text())
    assert not (tmp_path / "trainer_output").exists()
    run_glue([*common, "--resume_from_checkpoint", "latest"], monkeypatch)
    again = json.loads((out / "pruning_report.json").read_text())
    assert again["per_epoch"] == first["per_epoch"]
    assert "no complete checkpoint in" in glue_error(
        [*common, "--output_dir", str(tmp_path / "fresh"), "--resume_from_checkpoint", "latest"], monkeypatch, capsys)
    assert not (tmp_path / "fresh").exists()  # the failed run leaves no empty folder


@pytest.mark.slow
def test_a_misspelt_flag_is_one_line_with_the_closest_match():
    import subprocess

    proc = subprocess.run([sys.executable, str(SCRIPT), "--task", "sst2", "--prnue", "0.7"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "glue.py: error: unknown flag --prnue; did you mean --prune?"
    assert "Traceback" not in proc.stderr
    help_text = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                               timeout=120).stdout
    first_flags = [line.split()[0] for line in help_text.split("options:")[1].splitlines()[1:12] if line.strip()]
    assert "example" in help_text.split("options:")[0] and "--method" in first_flags and "--prune" in first_flags


def test_train_and_validation_files_like_run_glue(tmp_path, monkeypatch, capsys):
    """run_glue's --train_file/--validation_file (csv and jsonl), and --ignore_mismatched_sizes for a checkpoint
    with another number of labels."""
    rows = [{"sentence1": f"a b c {i}", "sentence2": f"c d {i % 3}", "label": i % 2} for i in range(24)]
    csv_file = tmp_path / "train.csv"
    csv_file.write_text("sentence1,sentence2,label\n" + "".join(f"{r['sentence1']},{r['sentence2']},{r['label']}\n"
                                                                 for r in rows))
    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    model = write_tiny_model(tmp_path / "model", [r["sentence1"] + " " + r["sentence2"] for r in rows], num_labels=3)
    out = tmp_path / "out"
    common = ["--task", "rte", "--train_file", str(csv_file), "--validation_file", str(jsonl), "--model_name_or_path",
              str(model), "--output_dir", str(out), "--use_cpu", "--num_train_epochs", "2", "--save_strategy", "no",
              "--per_device_train_batch_size", "8"]
    with pytest.raises(RuntimeError, match="size mismatch|ignore_mismatched_sizes"):
        run_glue(common, monkeypatch)  # a 3-label head for a 2-label task
    run_glue([*common, "--ignore_mismatched_sizes"], monkeypatch)
    report = json.loads((out / "pruning_report.json").read_text())
    assert report["num_examples"] == 24 and "eval_accuracy" in json.loads((out / "eval_results.json").read_text())
    assert "Pass both --train_file and --validation_file" in glue_error(
        ["--task", "rte", "--train_file", str(csv_file)], monkeypatch, capsys, 2)


def test_budget_matched_full_data_baseline(tmp_path, monkeypatch, capsys):
    """--budget_examples: all data, no pruning, cut to the pruned run's examples, with its own LR horizon."""
    data = tmp_path / "data" / "sst2"
    data.mkdir(parents=True)
    rows = [{"sentence": f"text {i} {'good' if i % 2 else 'bad'}", "label": i % 2, "idx": i} for i in range(30)]
    for split in ("train", "validation"):
        (data / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    model = write_tiny_model(tmp_path / "model", [r["sentence"] for r in rows], num_labels=2)
    out = tmp_path / "out"
    # a 3-epoch EMP run at 0.5 forwards 30 + 15 + 30 = 75 examples: 9.4 batches of 8 -> 10 steps
    run_glue(["--task", "sst2", "--data_dir", str(tmp_path / "data"), "--model_name_or_path", str(model),
              "--output_dir", str(out), "--method", "full", "--budget_examples", "75", *COMMON], monkeypatch)
    report = json.loads((out / "pruning_report.json").read_text())
    state = json.loads((out / "trainer_state.json").read_text())
    assert report["method"] == "full" and report["budget_examples"] == 75
    assert report["optimizer_steps"] == state["global_step"] == state["max_steps"] == 10
    # 2 full epochs (4 batches of 8 each) and a third cut to 15 examples (2 batches): exactly the budget
    assert report["forwarded_examples"] == 75 and report["full_data_examples"] == 90
    assert report["planned_examples_per_epoch"] == [30, 30, 15]
    assert "use it with method 'full', not 'emp'" in glue_error(
        ["--task", "sst2", "--data_dir", str(tmp_path / "data"), "--model_name_or_path", str(model),
         "--output_dir", str(tmp_path / "o2"), "--method", "emp", "--budget_examples", "75", *COMMON],
        monkeypatch, capsys, 2)


def test_a_seeded_random_training_subset(tmp_path, monkeypatch, capsys):
    """--train_subset_seed: N rows drawn with the seed (file order kept), the same for every run of that seed;
    without it the first N, as run_glue.py takes them; refused without --max_train_samples."""
    glue = runpy.run_path(str(SCRIPT))  # the module's functions, without running main
    rows = glue["train_rows"]
    first, drawn, again = rows(100, 10, None), rows(100, 10, 0), rows(100, 10, 0)
    assert first == list(range(10)) and drawn == again == sorted(set(drawn)) and len(drawn) == 10
    assert drawn != first and max(drawn) >= 10 and drawn != rows(100, 10, 1)
    assert rows(5, 10, 0) == [0, 1, 2, 3, 4]
    assert "--train_subset_seed draws the --max_train_samples rows at random" in glue_error(
        ["--task", "sst2", "--train_subset_seed", "0"], monkeypatch, capsys, 2)
