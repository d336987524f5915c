import json

import torch

from emp_hf.core import DataPruner, PruningConfig, save_json


def test_report_counts_split_and_per_class(tmp_path):
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    p = DataPruner(8, 3, PruningConfig(method="emp", prune=0.5, anneal=0.0), labels=labels)
    p.set_epoch(0)
    p.update(torch.arange(8), torch.tensor([9.0, 8.0, 7.0, 0.0, 0.0, 0.0, 6.0, 0.0]), torch.zeros(8))
    picked = torch.zeros(8, dtype=torch.int64)  # times each example was selected, counted here
    for epoch in (1, 2):
        p.set_epoch(epoch)
        order = p.epoch_order()
        picked[order] += 1
        p.update(order, torch.ones(order.numel()), torch.zeros(order.numel()))
    r = p.summary(wall_time_s=1.5)
    assert r["forwarded_examples"] == 8 + 4 + 4 and r["full_data_examples"] == 24
    assert r["saved_fraction"] == 1 - 16 / 24
    assert r["per_epoch"][1]["class_kept_fraction"] == {"0": 0.75, "1": 0.25}
    # epoch 1 picks {0,1,2,6}; their loss becomes 1, so epoch 2 picks the unchanged-or-higher top 4
    assert r["pruning_epochs_run"] == 2
    # the report's split and histogram against the selections counted above
    assert r["selection_split"] == {"always": int((picked == 2).sum()), "sometimes": int((picked == 1).sum()),
                                    "never": int((picked == 0).sum())}
    assert r["selection_count_histogram"] == torch.bincount(picked, minlength=3).tolist()
    # by hand: epoch 1 keeps the top 4 losses {0, 1, 2, 6}; their new loss 1 still beats the others' 0 in epoch 2
    assert picked.tolist() == [2, 2, 2, 0, 0, 0, 2, 0] and r["selection_split"]["always"] == 4
    assert r["wall_time_s"] == 1.5
    save_json(r, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["method"] == "emp"
