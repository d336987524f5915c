"""Nothing silent, nothing executable, nothing lost: each probe gets a clear error or the correct result.

One test (or parametrised case) per row of the README's reliability table.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil

import pytest
import torch
from test_vision import args as vision_args
from test_vision import synthetic
from tiny import make_trainer

from emp_hf import PruningArguments, PruningConfig
from emp_hf.core import DataPruner
from emp_hf.core.state_file import DamagedStateError, load_state_file, save_state_file, write_manifest
from emp_hf.glue import TASKS, load_local
from emp_hf.trainer import STATE_FILE
from emp_hf.vision import train as vision_train
from emp_hf.vision.data import read_cifar_pickle

EMP = PruningArguments(method="emp", prune=0.5, anneal=0.25)


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def trainer(tmp_path, pruning=EMP, n=24, **overrides):
    return make_trainer(tmp_path, pruning=pruning, n=n, **{**dict(num_train_epochs=4, save_strategy="steps",
                                                                   save_steps=3), **overrides})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 4-epoch EMP run at 0.5 with a checkpoint every 3 steps (24/12/12/24 examples, batch 4: 6/3/3/6 steps)."""
    out = tmp_path_factory.mktemp("run")
    run = trainer(out)
    run.train()
    return out, run


def copy_run(finished_run, tmp_path):
    out, _ = finished_run
    dest = tmp_path / "run"
    shutil.copytree(out, dest)
    return dest


# ------------------------------------------------------------- 1. nothing executable
def test_crafted_vision_state_is_refused_and_does_not_run(tmp_path):
    vision_train(vision_args(tmp_path, epochs=2, save_every=1), PruningConfig(method="emp", prune=0.5),
                 data=synthetic())
    marker = tmp_path / "ran"
    with open(tmp_path / "checkpoint-epoch1" / "state.pt", "wb") as f:
        pickle.dump({"model": Payload(marker)}, f)
    with pytest.raises(DamagedStateError, match=r"checkpoint-epoch1/state.pt is damaged or unsafe.*nothing in it was run"):
        vision_train(vision_args(tmp_path, epochs=3, resume_from_checkpoint=str(tmp_path / "checkpoint-epoch1")),
                     PruningConfig(method="emp", prune=0.5), data=synthetic())
    assert not marker.exists()


def test_cifar_batches_load_through_a_restricted_unpickler(tmp_path):
    np = pytest.importorskip("numpy")
    good = tmp_path / "data_batch_1"
    with open(good, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 1], b"filenames": [b"a", b"b"]}, f)
    assert read_cifar_pickle(good)[b"labels"] == [0, 1]
    bad = tmp_path / "data_batch_2"
    marker = tmp_path / "ran"
    with open(bad, "wb") as f:
        pickle.dump({b"data": Payload(marker)}, f)
    with pytest.raises(ValueError, match=r"data_batch_2 is not a CIFAR python-pickle batch .*open is not "
                                         r"allowed.*nothing in it was run"):
        read_cifar_pickle(bad)
    assert not marker.exists()


# ----------------------------------------------------- 2. resume with changed settings
@pytest.mark.parametrize("change,expected", [
    (dict(pruning=PruningArguments(method="emp", prune=0.7, anneal=0.25)), "prune: checkpoint 0.5, now 0.7"),
    (dict(per_device_train_batch_size=2), "per_device_train_batch_size: checkpoint 4, now 2"),
    (dict(num_train_epochs=2), "num_epochs: checkpoint 4, now 2"),
    (dict(gradient_accumulation_steps=2), "gradient_accumulation_steps: checkpoint 1, now 2"),
    (dict(pruning=PruningArguments(method="emp", prune=0.5, anneal=0.25, beta=1.0)), "beta: checkpoint 5.0, now 1.0"),
    (dict(seed=3), "pruning_seed: checkpoint 0, now 3"),
    (dict(n=20), "num_examples: checkpoint 24, now 20"),
])
def test_trainer_resume_with_changed_settings_is_refused_by_name(finished_run, tmp_path, change, expected):
    out = copy_run(finished_run, tmp_path)
    again = trainer(out, **change)
    with pytest.raises(ValueError, match=f"Cannot resume from .*pruning_state.pt.*{expected}"):
        again.train(resume_from_checkpoint=str(out / "checkpoint-9"))


def test_vision_resume_with_changed_settings_is_refused_by_name(tmp_path):
    pruning = PruningConfig(method="emp", prune=0.5)
    vision_train(vision_args(tmp_path, epochs=3, save_every=1), pruning, data=synthetic())
    for change, expected in ((dict(epochs=1), "num_epochs: checkpoint 3, now 1"),
                             (dict(batch_size=8), "batch_size: checkpoint 16, now 8")):
        with pytest.raises(ValueError, match=f"Cannot resume from .*state.pt.*{expected}"):
            vision_train(vision_args(tmp_path, resume_from_checkpoint="latest", **{"epochs": 3, **change}),
                         pruning, data=synthetic())
    with pytest.raises(ValueError, match="prune: checkpoint 0.5, now 0.7"):
        vision_train(vision_args(tmp_path, epochs=3, resume_from_checkpoint="latest"),
                     PruningConfig(method="emp", prune=0.7), data=synthetic())


def test_a_pruning_state_from_another_step_is_refused(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path)
    shutil.copy(out / "checkpoint-6" / STATE_FILE, out / "checkpoint-9" / STATE_FILE)
    with pytest.raises(ValueError, match="checkpoint-9/pruning_state.pt is damaged: it has .* bytes where the save"):
        trainer(out).train(resume_from_checkpoint=str(out / "checkpoint-9"))
    write_manifest(out / "checkpoint-9", 9)  # a manifest sealed over the mixed folder: the step still tells
    with pytest.raises(ValueError, match="belongs to step 6, but its checkpoint's trainer_state.json is at step 9"):
        trainer(out).train(resume_from_checkpoint=str(out / "checkpoint-9"))


def test_resume_with_the_same_settings_still_works(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path)
    again = trainer(out)
    again.train(resume_from_checkpoint=str(out / "checkpoint-9"))
    assert again.pruner.summary()["per_epoch"] == finished_run[1].pruner.summary()["per_epoch"]


# ------------------------------------------------------------------ 3. divergence
def test_divergence_stops_the_run_with_its_likely_causes(tmp_path):
    run = trainer(tmp_path, save_strategy="no")
    with torch.no_grad():
        run.model.classifier.weight[0, 0] = float("nan")  # every loss NaN, as after a blow-up
    with pytest.raises(RuntimeError, match=r"Training diverged: the model's weights hold NaN or inf.*learning rate"
                                           r".*fp16"):
        run.train()


def test_nonfinite_scores_beyond_the_tolerance_stop_the_run(caplog):
    pruner = DataPruner(10, 3, PruningConfig(method="emp", prune=0.5, nonfinite_tolerance=2))
    pruner.set_epoch(0)
    losses = torch.arange(10.0)
    losses[[2, 5]] = float("nan")
    pruner.update(torch.arange(10), losses)
    with caplog.at_level(logging.WARNING, logger="emp_hf"):
        pruner.set_epoch(1)
    assert "Epoch 0: 2 of 10 per-example losses were NaN or inf" in caplog.text and "2 of nonfinite_tolerance=2" \
        in caplog.text
    pruner = DataPruner(10, 3, PruningConfig(method="emp", prune=0.5))  # the default tolerance is 0
    pruner.set_epoch(0)
    losses[:1] = float("inf")
    pruner.update(torch.arange(10), losses)
    with pytest.raises(RuntimeError, match="3 of 10 per-example losses.*more than nonfinite_tolerance=0"):
        pruner.set_epoch(1)


@pytest.mark.parametrize("method", ["emp", "uncertainty", "ucb", "eps_greedy"])
def test_ties_are_drawn_by_seed_never_a_prefix(method):
    picks = []
    for seed in (0, 1):
        pruner = DataPruner(1000, 3, PruningConfig(method=method, prune=0.7), seed=seed)
        pruner.set_epoch(0)
        pruner.update(torch.arange(1000), torch.ones(1000))  # constant scores: all tied
        pruner.set_epoch(1)
        chosen = pruner.selection.indices
        assert chosen.numel() == 300 and chosen.max() > 400  # not the first 300
        again = DataPruner(1000, 3, PruningConfig(method=method, prune=0.7), seed=seed)
        again.set_epoch(0)
        again.update(torch.arange(1000), torch.ones(1000))
        again.set_epoch(1)
        assert torch.equal(again.selection.indices, chosen)  # a function of the seed
        picks.append(chosen)
    assert not torch.equal(picks[0], picks[1])


# ------------------------------------------------- 4. atomic saves and `latest`
def test_latest_skips_a_partial_checkpoint_and_says_why(finished_run, tmp_path, caplog):
    out = copy_run(finished_run, tmp_path)
    partial = out / "checkpoint-30"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 10)  # a save cut short: no trainer_state.json
    with caplog.at_level(logging.WARNING, logger="emp_hf"):
        again = trainer(out)
        again.train(resume_from_checkpoint="latest")
    assert "Skipping checkpoint" in caplog.text and "checkpoint-30: no trainer_state.json" in caplog.text
    assert "Resuming from" in caplog.text and "checkpoint-18" in caplog.text
    with pytest.raises(ValueError, match="no complete checkpoint in"):
        trainer(tmp_path / "empty").train(resume_from_checkpoint=True)


def test_vision_latest_skips_a_truncated_state(tmp_path, caplog):
    pruning = PruningConfig(method="emp", prune=0.5)
    vision_train(vision_args(tmp_path, epochs=3, save_every=1), pruning, data=synthetic())
    state = tmp_path / "checkpoint-epoch2" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="emp_hf"):
        result = vision_train(vision_args(tmp_path, epochs=3, resume_from_checkpoint="latest"), pruning,
                              data=synthetic())
    assert "checkpoint-epoch2" in caplog.text and "is damaged" in caplog.text
    assert [h["epoch"] for h in result.history] == [0, 1, 2]  # resumed after epoch 1, ran epoch 2
    with pytest.raises(ValueError, match="no complete checkpoint"):
        vision_train(vision_args(tmp_path / "none", epochs=3, resume_from_checkpoint="latest"), pruning,
                     data=synthetic())


def test_state_files_are_written_atomically(tmp_path):
    path = tmp_path / "s.pt"
    save_state_file({"a": torch.ones(3)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # no temporary left behind
    assert torch.equal(load_state_file(path)["a"], torch.ones(3))


# ------------------------------------------------------------ 5. damaged input
@pytest.mark.parametrize("content", [b"", b"garbage that is not a torch file", "truncate"])
def test_damaged_state_files_are_named(finished_run, tmp_path, content):
    out = copy_run(finished_run, tmp_path)
    state = out / "checkpoint-9" / STATE_FILE
    state.write_bytes(state.read_bytes()[:200] if content == "truncate" else content)
    with pytest.raises(DamagedStateError, match=r"checkpoint-9/pruning_state.pt is damaged"):
        trainer(out).train(resume_from_checkpoint=str(out / "checkpoint-9"))


def test_a_state_missing_a_field_is_named_damaged(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path)
    path = out / "checkpoint-9" / STATE_FILE
    state = load_state_file(path)
    del state["store"]["ema"]
    save_state_file(state, path)
    write_manifest(out / "checkpoint-9", 9)
    with pytest.raises(DamagedStateError, match=r"pruning_state.pt is damaged: KeyError: 'ema'"):
        trainer(out).train(resume_from_checkpoint=str(out / "checkpoint-9"))


@pytest.mark.parametrize("line,expected", [
    (b'{"sentence1": "a", "sentence2": "b", "label": 0\n', r"train.jsonl, line 2: not valid JSON"),
    (b'{"sentence1": "\xff\xfe", "sentence2": "b", "label": 0}\n', r"train.jsonl, line 2: not UTF-8"),
    (b'{"sentence1": null, "sentence2": "b", "label": 0}\n', r"train.jsonl, line 2: column 'sentence1' is None"),
    (b'[1, 2]\n', r"train.jsonl, line 2: a JSON object per line"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, line, expected):
    folder = tmp_path / "rte"
    folder.mkdir()
    good = b'{"sentence1": "a", "sentence2": "b", "label": 0}\n'
    (folder / "train.jsonl").write_bytes(good + line)
    (folder / "validation.jsonl").write_bytes(good)
    with pytest.raises(ValueError, match=expected):
        load_local(TASKS["rte"], tmp_path)


def test_static_scores_file_is_read_only_for_the_static_method(tmp_path, caplog):
    bad = tmp_path / "scores.txt"
    bad.write_text("1\n2\n")  # the wrong length: an error for `static`, ignored (with a warning) otherwise
    with caplog.at_level(logging.WARNING, logger="emp_hf"):
        DataPruner(10, 2, PruningConfig(method="emp", static_scores_file=str(bad)))
    assert "`static_scores_file` is ignored: method 'emp'" in caplog.text
    with pytest.raises(ValueError, match="2 entries but the dataset has 10"):
        DataPruner(10, 2, PruningConfig(method="static", static_scores_file=str(bad)))


# ----------------------------------------------------------------- 6. small losses
def test_vision_metrics_are_written_after_every_epoch(tmp_path, monkeypatch):
    import emp_hf.vision.loop as loop

    calls = {"n": 0}
    real = loop.evaluate

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C during epoch 2
        return real(*a, **k)

    monkeypatch.setattr(loop, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vision_train(vision_args(tmp_path, epochs=4), PruningConfig(method="emp", prune=0.5), data=synthetic())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1] and metrics["final"] is None
