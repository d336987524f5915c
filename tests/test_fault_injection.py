"""A real training process is SIGKILLed at random points and inside checkpoint writes; each time it is
resumed from its newest complete checkpoint, and it must end with exactly the uninterrupted run's
weights and pruning report."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "fault_train.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run(out: Path, fault: str | None = None, kill_after: float | None = None) -> str:
    """Run fault_train.py; `fault` makes it kill itself inside a save, `kill_after` SIGKILLs it from outside
    that many seconds after training starts. Returns 'done' or 'killed'."""
    env = {**ENV, **({"FAULT": fault} if fault else {})}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    started = proc.stdout.readline()
    assert started.startswith("TRAINING"), started
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()
    code = proc.wait(timeout=120)
    if code == -signal.SIGKILL:
        return "killed"
    assert code == 0 and "DONE" in rest, (code, rest[-2000:])
    return "done"


def outcome(out: Path):
    report = json.loads((out / "pruning_report.json").read_text())
    weights = torch.load(out / "final_weights.pt", weights_only=True)
    return weights, {k: report[k] for k in ("per_epoch", "forwarded_examples", "saved_fraction", "optimizer_steps")}


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_latest_ends_like_the_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    start = time.time()
    assert run(reference) == "done"
    training_time = time.time() - start - 3.0  # the part after start-up, roughly
    ref_weights, ref_report = outcome(reference)

    out = tmp_path / "interrupted"
    rng = random.Random(0)
    kills = [("state:7", None), ("rng:12", None)]  # torn pruning state; Trainer save without trainer_state.json
    kills += [(None, rng.uniform(0.2, max(0.5, training_time))) for _ in range(2)]  # anywhere, from outside
    results = [run(out, fault, after) for fault, after in kills]
    assert results[:2] == ["killed", "killed"]
    while run(out) != "done":  # resume from the newest complete checkpoint until finished
        pass
    weights, report = outcome(out)
    assert report == ref_report
    assert weights.keys() == ref_weights.keys()
    for name, value in ref_weights.items():
        assert torch.equal(weights[name], value), name


@pytest.mark.slow
def test_sigterm_with_the_jit_checkpoint_is_an_interruption_that_resumes_exactly(tmp_path):
    """transformers' `enable_jit_checkpoint` saves a checkpoint on SIGTERM (before the optimizer step of the window
    in flight) and stops early: the run must end non-zero as interrupted, write nothing that looks finished, and
    resume to the uninterrupted run's counts and weights."""
    jit = {**ENV, "JIT": "1"}
    reference = tmp_path / "reference"
    done = subprocess.run([sys.executable, str(SCRIPT), str(reference)], env=jit, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    ref_weights, ref_report = outcome(reference)

    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(out)], env={**jit, "SLOW": "0.3"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("TRAINING")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Training was interrupted (SIGTERM) at step" in err, err[-2000:]
    assert not (out / "final_weights.pt").exists() and not (out / "pruning_report.json").exists()
    assert any(out.glob("checkpoint-*/emp_hf_checkpoint.json"))
    resumed = subprocess.run([sys.executable, str(SCRIPT), str(out)], env=jit, capture_output=True, text=True)
    assert resumed.returncode == 0 and "TRAINING resume" in resumed.stdout, resumed.stderr[-2000:]
    weights, report = outcome(out)
    assert report == ref_report
    for name, value in ref_weights.items():
        assert torch.equal(weights[name], value), name
