"""Two real processes under `accelerate launch` (gloo on CPU): same subsets, every example once, same scores."""

import json
from pathlib import Path

import pytest
from launch import launch_two

HERE = Path(__file__).parent


@pytest.mark.slow
@pytest.mark.parametrize("method,ga", [("emp", 2), ("infobatch", 1)])
def test_two_processes_select_the_same_subset_and_share_scores(tmp_path, method, ga):
    launch_two(HERE / "dist_train.py", tmp_path, method, ga, timeout=120)
    a, b = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert a["world_size"] == b["world_size"] == 2
    assert a["per_epoch"] == b["per_epoch"]  # same selections, counts and forwarded totals on both ranks
    assert a["store"] == b["store"]  # scores gathered from both ranks: identical stores
    assert a["weights_sum"] == b["weights_sum"]
    assert a["global_step"] == b["global_step"] == a["max_steps"]
    assert a["final_lr"] == 0.0
    # scores stay on each rank's device during an epoch: emp-hf issues 2 collectives per epoch (row counts,
    # then one block of indices and scores), none per step
    assert a["collectives_per_epoch"] == b["collectives_per_epoch"] == [2, 2, 2, 2]
    for epoch, record in enumerate(a["per_epoch"]):
        trained = a["local_seen"][str(epoch)] + b["local_seen"][str(epoch)]
        distinct = set(trained)
        assert len(distinct) == record["kept"]  # every selected example trained in the epoch...
        assert len(trained) - len(distinct) < 2 * 3  # ...once, but for even_batches padding (< one batch/rank)
        assert record["forwarded"] == len(trained)  # the report counts what both ranks really forwarded
    # Scores from both ranks arrived: every kept example was scored; padding repeats may add a few.
    total_trained = sum(len(v) for r in (a, b) for v in r["local_seen"].values())
    assert sum(r["kept"] for r in a["per_epoch"]) <= sum(a["store"]["times_trained"]) <= total_trained
