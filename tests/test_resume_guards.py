"""Issue 25: a resume goes on exactly as the uninterrupted run would, or refuses before any training.

Forged but well-typed pruning states, changed training data, two writers in one folder, half-rewritten
checkpoints, non-finite training, interrupted runs, bad input files and a full disk: each gets a test here.
"""

from __future__ import annotations

import pytest
import torch

from emp_hf import PruningConfig
from emp_hf.core import DataPruner
from emp_hf.core.state_file import DamagedStateError


def trained_pruner(method="emp", n=32, epochs=4):
    p = DataPruner(n, epochs, PruningConfig(method=method, prune=0.5, anneal=0.25), seed=3)
    p.set_epoch(0)
    p.update(torch.arange(n), torch.linspace(0.1, 3.0, n), torch.full((n,), 0.5))
    p.set_epoch(1)
    return p


def forged(mutate, method="emp"):
    state = trained_pruner(method).state_dict()
    mutate(state)
    return state


def fresh(method="emp"):
    return DataPruner(32, 4, PruningConfig(method=method, prune=0.5, anneal=0.25), seed=3)


@pytest.mark.parametrize("mutate, field", [
    (lambda s: s.update(epoch=-1), "'epoch' is -1"),
    (lambda s: s.update(epoch=99), "'epoch' is 99"),
    (lambda s: s.update(pruned_epoch=7), "'pruned_epoch' is 7"),
    (lambda s: s.update(seed=4), "'seed' is 4, but the plan's pruning_seed is 3"),
    (lambda s: s["store"]["loss"].__setitem__(5, float("inf")), "'store.loss' holds NaN or inf"),
    (lambda s: s["store"]["ema_var"].__setitem__(0, -1.0), "'store.ema_var' holds a negative variance"),
    (lambda s: s["store"]["times_trained"].__setitem__(0, -2), "'store.times_trained' holds a negative count"),
    (lambda s: s["store"]["last_epoch"].__setitem__(0, 9), "'store.last_epoch' holds an epoch outside"),
    (lambda s: s["selection"].update(indices=torch.zeros(16, dtype=torch.int64)),
     "'selection.indices' is not strictly ascending.*more than once"),
    (lambda s: s["selection"].update(indices=torch.arange(20, 36)), "'selection.indices' holds 20 .. 35, outside"),
    (lambda s: s["selection"].update(indices=torch.arange(16).float()), "'selection.indices' is not a 1-D tensor"),
    (lambda s: s["selection"].update(weight=float("nan")), "'selection.weight' is nan"),
])
def test_a_forged_but_well_typed_state_is_refused_naming_the_field(mutate, field):
    state = forged(mutate)
    with pytest.raises(DamagedStateError, match=rf"ckpt/pruning_state.pt is damaged: .*{field}"):
        fresh().load_state_dict(state, source="ckpt/pruning_state.pt")


def test_the_unforged_state_resumes_to_the_same_order():
    p = trained_pruner()
    q = fresh()
    q.load_state_dict(p.state_dict())
    assert torch.equal(q.epoch_order(), p.epoch_order())


def test_a_partial_selection_for_a_full_epoch_is_refused():
    def mutate(state):
        state["epoch"] = 0
    with pytest.raises(DamagedStateError, match="'selection' holds 16 of 32 examples for epoch 0"):
        fresh().load_state_dict(forged(mutate))


# ------------------------------------------------------------------------- the same data
def checkpointed_run(tmp_path, data):
    from tiny import tiny_args, tiny_bert

    from emp_hf import PruningArguments, PruningTrainer

    args = tiny_args(tmp_path, num_train_epochs=3, save_strategy="steps", save_steps=4)
    trainer = PruningTrainer(model=tiny_bert(), args=args, train_dataset=data,
                             pruning_args=PruningArguments(method="emp", prune=0.5))
    trainer.train()
    return tmp_path / "checkpoint-4"


def resume(tmp_path, data, checkpoint):
    from tiny import tiny_args, tiny_bert

    from emp_hf import PruningArguments, PruningTrainer

    args = tiny_args(tmp_path / "again", num_train_epochs=3, save_strategy="steps", save_steps=4)
    trainer = PruningTrainer(model=tiny_bert(), args=args, train_dataset=data,
                             pruning_args=PruningArguments(method="emp", prune=0.5))
    trainer.train(resume_from_checkpoint=str(checkpoint))
    return trainer


def base_rows(n=16):
    from tiny import tiny_dataset

    return tiny_dataset(n, seed=5).remove_columns(["text"])


@pytest.mark.parametrize("change, named", [
    (lambda d: d.shuffle(seed=1), "the order of the rows"),
    (lambda d: base_rows(32).select(range(16, 32)), "the inputs"),
    (lambda d: d.map(lambda r: {"label": 1 - r["label"]}), r"the labels \(column 'label'\)"),
    (lambda d: d.map(lambda r: {"input_ids": r["input_ids"][:5], "attention_mask": r["attention_mask"][:5]}),
     r"the inputs \(columns 'attention_mask', 'input_ids'.*tokenisation"),
    (lambda d: d.select(range(12)), "num_examples: checkpoint 16, now 12"),
])
def test_resume_onto_other_data_is_refused_naming_what_changed(tmp_path, change, named):
    data = base_rows()
    checkpoint = checkpointed_run(tmp_path, data)
    with pytest.raises(ValueError, match=named):
        resume(tmp_path, change(data), checkpoint)


def test_resume_onto_the_same_data_in_a_new_object_works(tmp_path):
    checkpoint = checkpointed_run(tmp_path, base_rows())
    trainer = resume(tmp_path, base_rows(), checkpoint)
    assert trainer.state.global_step == trainer.state.max_steps


def test_fingerprints_follow_the_rows_the_model_sees():
    from datasets import Dataset

    from emp_hf.data_identity import train_data_fingerprint

    rows = {"input_ids": [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]], "label": [0, 1, 0, 1], "score": [0.5, 1.0, 2.0, -1.0],
            "text": ["a", "bé", "c", "d"], "pixels": [[[1.0, 2.0]], [[3.0]], [[4.0, 5.0]], [[6.0], [7.0]]]}
    data = Dataset.from_dict(rows)
    same = Dataset.from_dict({k: list(v) for k, v in rows.items()})
    assert train_data_fingerprint(data) == train_data_fingerprint(same)
    # an index mapping (select) is applied: these are other rows in another order
    assert train_data_fingerprint(data.select([1, 0, 2, 3])).difference(train_data_fingerprint(data)) == \
        "the order of the rows (the same rows, shuffled or re-sorted)"
    moved = {**rows, "input_ids": [[1, 2], [3, 4, 5], [6], [7, 8, 9, 10]]}  # the same tokens, other boundaries
    assert "input_ids" in train_data_fingerprint(Dataset.from_dict(moved)).difference(train_data_fingerprint(data))
    nested = {**rows, "pixels": [[[1.0], [2.0]], [[3.0]], [[4.0, 5.0]], [[6.0], [7.0]]]}
    assert "'pixels'" in train_data_fingerprint(Dataset.from_dict(nested)).difference(train_data_fingerprint(data))
    text = {**rows, "text": ["a", "be", "c", "d"]}
    assert "'text'" in train_data_fingerprint(Dataset.from_dict(text)).difference(train_data_fingerprint(data))


def test_a_torch_dataset_is_fingerprinted_item_by_item():
    from emp_hf.data_identity import train_data_fingerprint

    class Items(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"input_ids": self.x[i], "labels": int(self.x[i, 0]) % 2}

    x = torch.randint(0, 50, (20, 6), generator=torch.Generator().manual_seed(0))
    assert train_data_fingerprint(Items(x)) == train_data_fingerprint(Items(x.clone()))
    assert train_data_fingerprint(Items(x.flip(0))).difference(train_data_fingerprint(Items(x))).startswith(
        "the order")
    y = x.clone()
    y[3, 2] += 1
    assert train_data_fingerprint(Items(y)) != train_data_fingerprint(Items(x))


def test_vision_resume_onto_other_images_is_refused(tmp_path):
    from test_vision import args as vision_args
    from test_vision import synthetic

    from emp_hf.vision import train as vision_train

    vision_train(vision_args(tmp_path, epochs=3, save_every=1), PruningConfig(method="emp", prune=0.5),
                 data=synthetic())
    other = synthetic()
    other.train_labels[:] = other.train_labels.flip(0)
    with pytest.raises(ValueError, match="the labels"):
        vision_train(vision_args(tmp_path, epochs=3, resume_from_checkpoint=str(tmp_path / "checkpoint-epoch1")),
                     PruningConfig(method="emp", prune=0.5), data=other)


# ---------------------------------------------------------------- one writer per folder
def test_a_second_run_into_a_held_folder_is_refused_naming_the_holder(tmp_path):
    import subprocess
    import sys

    from tiny import tiny_args, tiny_bert, tiny_dataset

    from emp_hf import PruningTrainer
    from emp_hf.core.run_lock import RunLockError

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from emp_hf.core.run_lock import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        trainer = PruningTrainer(model=tiny_bert(), args=tiny_args(tmp_path, num_train_epochs=1),
                                 train_dataset=tiny_dataset(8))
        with pytest.raises(RunLockError, match=rf"{tmp_path}.* is in use by another run: process {holder.pid} on"):
            trainer.train()
        assert not (tmp_path / "pruning_report.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock is stale, and the next run takes it over
    trainer = PruningTrainer(model=tiny_bert(), args=tiny_args(tmp_path, num_train_epochs=1),
                             train_dataset=tiny_dataset(8))
    trainer.train()
    assert (tmp_path / "pruning_report.json").exists()


def test_temporary_files_of_a_live_writer_are_never_swept(tmp_path):
    import os
    import subprocess
    import sys

    from emp_hf.core.state_file import save_state_file

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = tmp_path / f".s.pt.tmp-{live.pid}"
        theirs.write_bytes(b"in flight")
        dead = tmp_path / ".s.pt.tmp-999999999"
        dead.write_bytes(b"left by a killed process")
        save_state_file({"a": torch.ones(1)}, tmp_path / "s.pt")
        assert theirs.exists() and not dead.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([theirs.name, "s.pt"])
    finally:
        live.kill()
        live.wait()
    assert os.getpid() > 0


# ------------------------------------------------------------- complete means verified
def finished_run_with_checkpoints(tmp_path):
    from tiny import tiny_args, tiny_bert, tiny_dataset

    from emp_hf import PruningArguments, PruningTrainer

    args = tiny_args(tmp_path, num_train_epochs=3, save_strategy="steps", save_steps=3, save_total_limit=3)
    trainer = PruningTrainer(model=tiny_bert(), args=args, train_dataset=tiny_dataset(16),
                             pruning_args=PruningArguments(method="emp", prune=0.5))
    trainer.train()
    return trainer


def test_latest_skips_a_half_rewritten_checkpoint_and_says_why(tmp_path, caplog):
    import logging

    from emp_hf.trainer import checkpoint_pruning_state

    finished_run_with_checkpoints(tmp_path)
    newest = sorted(tmp_path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    # a resumed run killed while saving this folder again: its manifest removed first, optimizer.pt cut short
    (newest / "emp_hf_checkpoint.json").unlink()
    optimizer = newest / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    from emp_hf.core.state_file import newest_complete

    with caplog.at_level(logging.WARNING, logger="emp_hf"):
        found = newest_complete(tmp_path, "checkpoint-", checkpoint_pruning_state)
    assert found is not None and found[0] != newest
    assert f"Skipping checkpoint {newest}: no emp_hf_checkpoint.json" in caplog.text


def test_a_file_cut_short_after_the_save_is_named(tmp_path):
    from emp_hf.trainer import checkpoint_pruning_state

    finished_run_with_checkpoints(tmp_path)
    folder = sorted(tmp_path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    optimizer = folder / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    with pytest.raises(DamagedStateError, match=r"optimizer.pt is damaged: it has 100 bytes where the save wrote"):
        checkpoint_pruning_state(folder)


# --------------------------------------------------------------------- non-finite training
def test_late_divergence_stops_the_run_and_names_the_last_good_checkpoint(tmp_path):
    from tiny import tiny_args, tiny_bert, tiny_dataset
    from transformers import TrainerCallback

    from emp_hf import PruningArguments, PruningTrainer
    from emp_hf.trainer import TrainingDiverged

    class PoisonAt(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step == 10:  # late in the run (12 steps, checkpoints at 4, 8, 12): weights blow up
                with torch.no_grad():
                    model.classifier.weight.fill_(float("nan"))

    args = tiny_args(tmp_path, num_train_epochs=4, save_strategy="steps", save_steps=4)
    trainer = PruningTrainer(model=tiny_bert(), args=args, train_dataset=tiny_dataset(16), callbacks=[PoisonAt()],
                             pruning_args=PruningArguments(method="emp", prune=0.5))
    with pytest.raises(TrainingDiverged, match=r"weights hold NaN or inf, found before saving checkpoint-12.*The last "
                                               r"good checkpoint is .*checkpoint-8"):
        trainer.train()
    assert not (tmp_path / "pruning_report.json").exists()
    assert not (tmp_path / "checkpoint-12").exists()


def test_a_tolerated_nonfinite_batch_keeps_its_examples_last_finite_scores(tmp_path):
    from tiny import tiny_args, tiny_bert, tiny_dataset

    from emp_hf import PruningArguments, PruningTrainer

    seen_before = {}

    def scorer(outputs, inputs):
        loss = torch.nn.functional.cross_entropy(outputs.logits, inputs["labels"], reduction="none")
        return loss, torch.zeros_like(loss)

    class Trainer(PruningTrainer):
        def _checked_scores(self, step):
            loss, entropy, scorable = super()._checked_scores(step)
            if self.state.global_step == 8:  # a batch of the last epoch goes NaN, the weights stay finite
                seen_before.update({int(i): float(self.pruner.store.loss[int(i)]) for i in step.indices})
                loss = torch.full_like(loss, float("nan"))
            return loss, entropy, scorable

    data = tiny_dataset(16).remove_columns(["text"]).rename_column("label", "labels")
    trainer = Trainer(model=tiny_bert(), args=tiny_args(tmp_path, num_train_epochs=3), train_dataset=data,
                      scorer=scorer, pruning_args=PruningArguments(method="emp", prune=0.5, nonfinite_tolerance=4))
    trainer.train()
    assert trainer.pruner.store.nonfinite_count == 4
    assert all(float(trainer.pruner.store.loss[i]) == value for i, value in seen_before.items())
    assert bool(trainer.pruner.store.seen[list(seen_before)].all())


# ------------------------------------------------------------------------------ input files
def write_tsv(folder, task_dir, train, dev="ok"):
    folder = folder / task_dir
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_bytes(train)
    return folder


COLA_OK = b"src\t1\t\tA fine sentence .\nsrc\t0\t*\tSentence bad a .\n"


@pytest.mark.parametrize("train, expected", [
    (COLA_OK + b"src\t1\tonly three fields\n", r"CoLA/train.tsv, line 3: 3 tab-separated field\(s\); CoLA's files have 4"),
    (COLA_OK + b"src\tx\t\tA sentence .\n", r"CoLA/train.tsv, line 3: label 'x' is not an integer"),
    (COLA_OK + b"src\t1\t\tA \xff sentence .\n", r"CoLA/train.tsv, line 3: not UTF-8"),
    (COLA_OK + b"src\t2\t\tA sentence .\n", r"CoLA/train.tsv, line 3 has label 2; task 'cola' needs an integer in \[0, 2\)"),
])
def test_every_cola_tsv_row_is_read_or_the_file_is_refused_by_line(tmp_path, train, expected):
    from emp_hf.glue import _read_split, get_task

    folder = write_tsv(tmp_path, "CoLA", train)
    with pytest.raises(ValueError, match=expected):
        _read_split(get_task("cola"), folder / "train.tsv")


def test_a_good_cola_file_keeps_every_row(tmp_path):
    from emp_hf.glue import _read_split, get_task

    folder = write_tsv(tmp_path, "CoLA", COLA_OK * 32)
    assert len(_read_split(get_task("cola"), folder / "train.tsv")) == 64


STSB_HEAD = b"index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"


@pytest.mark.parametrize("row, expected", [
    (b"0\tmain\tf\t2012\t0\ts\ts\tA man .\tA person .\t50.0\n", r"line 2 has label 50.0; task 'stsb' needs a number in \[0, 5\]"),
    (b"0\tmain\tf\t2012\t0\ts\ts\tA man .\tA person .\t-0.5\n", r"line 2 has label -0.5"),
    (b"0\tmain\tf\t2012\tA man .\tA person .\t3.0\n", r"line 2: 7 tab-separated field\(s\) where the header has 10"),
    (b"0\tmain\tf\t2012\t0\ts\ts\tA man .\tA person .\tfive\n", r"line 2: label 'five' is not a number"),
])
def test_stsb_tsv_labels_are_range_checked_and_short_rows_named(tmp_path, row, expected):
    from emp_hf.glue import _read_split, get_task

    folder = write_tsv(tmp_path, "STS-B", STSB_HEAD + row)
    with pytest.raises(ValueError, match=rf"STS-B/train.tsv, {expected}"):
        _read_split(get_task("stsb"), folder / "train.tsv")


@pytest.mark.parametrize("content, expected", [
    (b"sentence1,sentence2,label\na,b,4.5\nc,d,7.0\n", r"t.csv, line 3 has label 7.0; task 'stsb' needs a number in"),
    (b"sentence1,sentence2,label\na,b,1\nc,d\n", r"t.csv, line 3: 2 field\(s\) where the header has 3"),
    (b"sentence1,sentence2,label\na,b,1\nc,\xff,1\n", r"t.csv, line 3: not UTF-8"),
])
def test_csv_and_jsonl_rows_are_checked_by_line(tmp_path, content, expected):
    from emp_hf.glue import get_task, load_files

    (tmp_path / "t.csv").write_bytes(content)
    with pytest.raises(ValueError, match=expected):
        load_files(get_task("stsb"), {"train": str(tmp_path / "t.csv")})
    (tmp_path / "t.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "label": 5.5}\n')
    with pytest.raises(ValueError, match=r"t.jsonl, line 1 has label 5.5"):
        load_files(get_task("stsb"), {"train": str(tmp_path / "t.jsonl")})


# ------------------------------------------------------------------------------ a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs (root only: skipped elsewhere, with the reason)."""
    import os
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_is_named_with_the_file_being_written(small_disk):
    from tiny import tiny_args, tiny_bert, tiny_dataset

    from emp_hf import PruningArguments, PruningTrainer

    model = tiny_bert()
    model.resize_token_embeddings(4000)  # about 260 kB of weights: the optimizer's 520 kB no longer fit
    args = tiny_args(small_disk / "run", num_train_epochs=2, save_strategy="steps", save_steps=2)
    trainer = PruningTrainer(model=model, args=args, train_dataset=tiny_dataset(8),
                             pruning_args=PruningArguments(method="emp", prune=0.5))
    with pytest.raises(OSError, match=r"No space left on device while writing .*checkpoint-\d+/[\w.]+: .*earlier "
                                      r"checkpoints are intact"):
        trainer.train()
    from emp_hf.core.state_file import save_state_file

    with pytest.raises(OSError, match=r"No space left on device while writing .*big.pt"):
        save_state_file({"x": torch.zeros(1 << 20)}, small_disk / "big.pt")
