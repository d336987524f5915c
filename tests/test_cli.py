"""Every script's command-line mistakes: one line on stderr naming the argument (no traceback), a non-zero
exit, before any data or model loads, and no output folder left behind."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from emp_hf.cli import ArgumentParser, DataclassParser, guard

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def refusal(script: str, argv: list[str], capsys, tmp_path) -> tuple[int, str]:
    """Run `script`'s main in this process with `argv` and an output folder under tmp_path; return the exit
    status and its one stderr line, after checking there is no traceback and no folder was left."""
    main = runpy.run_path(str(SCRIPTS / script))["main"]
    out = tmp_path / "out"
    flag = {"static_scores.py": "--scores_dir"}.get(script, "--output_dir")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, flag, str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and err[0].startswith(f"{script}: error: ")
    assert not out.exists()
    return exit_info.value.code, err[0]


NO_DATA = ["--data_dir", "/nonexistent/glue", "--model_name_or_path", "/nonexistent/model"]


@pytest.mark.parametrize("argv,named", [
    (["--task", "sst2", "--prune", "1.5"], "`prune` must be in [0.0, 1.0), got 1.5"),
    (["--task", "sst2", "--method", "foo"], "foo"),
    (["--task", "nope"], "Unknown GLUE `task` 'nope'; known tasks: cola"),
    (["--task", "sst2", "--beta", "-1"], "beta"),
    (["--task", "sst2", "--prnue", "0.7"], "unknown flag --prnue; did you mean --prune?"),
    (["--task", "sst2", "--max_steps", "10"], "`max_steps=10` conflicts with pruning"),
    (["--task", "sst2", "--num_train_epochs", "1.5"], "`num_train_epochs` must be a whole number"),
    (["--task", "sst2", "--per_device_train_batch_size", "x"], "--per_device_train_batch_size"),
])
def test_glue_argument_mistakes_are_one_line_before_loading(argv, named, capsys, tmp_path):
    """NO_DATA names paths that do not exist: each error is about the argument, so nothing was loaded."""
    code, line = refusal("glue.py", [*argv, *NO_DATA], capsys, tmp_path)
    assert code == 2 and named in line


def test_glue_missing_paths_are_named(capsys, tmp_path):
    code, line = refusal("glue.py", ["--task", "sst2", *NO_DATA], capsys, tmp_path)
    assert code == 1 and "`data_dir` '/nonexistent/glue' is not a folder" in line
    repo_glue = str(Path(__file__).resolve().parents[1] / "data" / "glue")
    code, line = refusal("glue.py", ["--task", "sst2", "--data_dir", repo_glue, "--max_train_samples", "8",
                                     "--model_name_or_path", "/nonexistent/model"], capsys, tmp_path)
    assert code == 1 and "`--model_name_or_path` '/nonexistent/model': no such folder" in line


@pytest.mark.parametrize("script,argv,named", [
    ("vision.py", ["--prnue", "0.5"], "unknown flag --prnue; did you mean --prune?"),
    ("vision.py", ["--dataset", "imagenet"], "Unknown `dataset` 'imagenet'"),
    ("vision.py", ["--prune", "1.5"], "`prune` must be in [0.0, 1.0), got 1.5"),
    ("simclr.py", ["--ssl_score", "loss_h"], "Unknown `ssl_score` 'loss_h'; allowed: loss_f, loss_g"),
    ("simclr.py", ["--epochs", "0"], "`epochs` must be >= 1"),
    ("static_scores.py", ["--scores", "el3n"], "Unknown static `scores` ['el3n']"),
    ("static_scores.py", ["--front_end", "audio"], "--front_end: invalid choice: 'audio'"),
])
def test_other_scripts_argument_mistakes_are_one_line(script, argv, named, capsys, tmp_path):
    code, line = refusal(script, argv, capsys, tmp_path)
    assert code == 2 and named in line


def test_vision_missing_data_is_one_line(capsys, tmp_path):
    code, line = refusal("vision.py", ["--dataset", "fashion_mnist", "--data_dir", str(tmp_path), "--cpu"],
                         capsys, tmp_path)
    assert code == 1 and "Fashion-MNIST folder" in line and "lacks train-images-idx3-ubyte" in line


def test_sweep_and_compare_mistakes(capsys, tmp_path):
    main = runpy.run_path(str(SCRIPTS / "glue_sweep.py"))["main"]
    with pytest.raises(SystemExit) as exit_info:
        sys.argv = ["glue_sweep.py", "--name", "x", "--tasks", "sst2", "--metods", "emp"]
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "glue_sweep.py: error: unknown flag --metods; did you mean --methods?"


def test_guard_keeps_the_traceback_of_a_bug(tmp_path):
    """An error that is not about the input (a bug inside a library) keeps its traceback."""
    with pytest.raises(KeyError), guard("x.py"):
        {}["missing"]


def test_guard_removes_only_a_folder_it_created_and_left_empty(tmp_path, capsys):
    kept = tmp_path / "kept"
    kept.mkdir()
    for folder, survives in ((kept, True), (tmp_path / "new", False)):
        with pytest.raises(SystemExit), guard("x.py") as run:
            run.output_dir = folder
            folder.mkdir(exist_ok=True)
            raise ValueError("bad\nvalue")
        assert folder.exists() == survives
    assert capsys.readouterr().err.splitlines() == ["x.py: error: bad value"] * 2
    written = tmp_path / "written"
    with pytest.raises(SystemExit), guard("x.py") as run:
        run.output_dir = written
        written.mkdir()
        (written / "result.json").write_text("{}")
        raise ValueError("late")
    assert (written / "result.json").is_file()


def test_parsers_show_defaults_and_take_json(tmp_path, capsys):
    from dataclasses import dataclass, field

    @dataclass
    class Args:
        rate: float = field(default=0.5, metadata={"help": "a rate"})

        def __post_init__(self):
            if not 0 < self.rate < 1:
                raise ValueError(f"`rate` must be in (0, 1), got {self.rate}")

    parser = DataclassParser(Args, prog="p.py", description="what it does\n\nexample:\n  p.py --rate 0.1")
    assert "(default: 0.5)" in parser.format_help() and "example:\n  p.py --rate 0.1" in parser.format_help()
    (tmp_path / "a.json").write_text('{"rate": 0.25}')
    assert parser.parse([str(tmp_path / "a.json")])[0].rate == 0.25
    with pytest.raises(SystemExit):
        parser.parse(["--rate", "2"])
    assert capsys.readouterr().err.strip() == "p.py: error: `rate` must be in (0, 1), got 2.0"
    plain = ArgumentParser(prog="s.py")
    plain.add_argument("--seeds", type=int, nargs="+", default=[1])
    with pytest.raises(SystemExit):
        plain.parse_args(["--seed", "x"])
    assert capsys.readouterr().err.strip() == "s.py: error: argument --seeds: invalid int value: 'x'"


@pytest.mark.slow
def test_a_script_run_from_the_shell_is_one_line_with_exit_status():
    proc = subprocess.run([sys.executable, str(SCRIPTS / "vision.py"), "--prnue", "0.5"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "vision.py: error: unknown flag --prnue; did you mean --prune?"
