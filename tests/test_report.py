import json

import torch

from emp_hf.core import DataPruner, PruningConfig, save_json


def test_report_counts_split_and_per_class(tmp_path):
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    p = DataPruner(8, 3, PruningConfig(method="emp", prune=0.5, anneal=0.0), labels=labels)
    p.set_epoch(0)
    p.update(torch.arange(8), torch.tensor([9.0, 8.0, 7.0, 0.0, 0.0, 0.0, 6.0, 0.0]), torch.zeros(8))
    for epoch in (1, 2):
        p.set_epoch(epoch)
        order = p.epoch_order()
        p.update(order, torch.ones(order.numel()), torch.zeros(order.numel()))
    r = p.summary(wall_time_s=1.5)
    assert r["forwarded_examples"] == 8 + 4 + 4 and r["full_data_examples"] == 24
    assert r["saved_fraction"] == 1 - 16 / 24
    assert r["per_epoch"][1]["class_kept_fraction"] == {"0": 0.75, "1": 0.25}
    # epoch 1 picks {0,1,2,6}; their loss becomes 1, so epoch 2 picks the unchanged-or-higher top 4
    assert r["pruning_epochs_run"] == 2
    split = r["selection_split"]
    assert split["always"] + split["sometimes"] + split["never"] == 8
    hist = r["selection_count_histogram"]
    assert sum(hist) == 8 and sum(i * c for i, c in enumerate(hist)) == 8  # 2 pruning epochs x 4 kept
    assert r["wall_time_s"] == 1.5
    save_json(r, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["method"] == "emp"
