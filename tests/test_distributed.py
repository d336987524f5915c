"""gather_updates with two real gloo processes (torch.multiprocessing, CPU)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from emp_hf.core import DataPruner, PruningConfig, PruningSampler, gather_updates


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pruner = DataPruner(20, 4, PruningConfig(method="emp", prune=0.5, anneal=0.0), seed=5)
        sampler = PruningSampler(pruner)
        orders = []
        for epoch in range(4):
            sampler.set_epoch(epoch)
            order = list(sampler)
            orders.append(order)
            mine = torch.tensor(order[rank::world])  # this rank's shard, different sizes on purpose
            losses = (mine.float() * 0.37 + epoch) % 3.0
            idx, loss, ent = gather_updates(mine, losses, losses / 10)
            pruner.update(idx, loss, ent)
        torch.save({"orders": orders, "store": pruner.store.state_dict()}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_keep_identical_stores_and_selections(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in (0, 1))
    assert a["orders"] == b["orders"]
    assert len(a["orders"][1]) == 10
    for key, value in a["store"].items():
        assert torch.equal(value, b["store"][key]) if torch.is_tensor(value) else value == b["store"][key]
    assert int(a["store"]["times_trained"].sum()) == 20 + 10 + 10 + 10  # every rank's rows arrived


def test_single_process_is_a_no_op():
    idx, val = gather_updates(torch.tensor([3, 1]), torch.tensor([0.5, 0.25]))
    assert idx.tolist() == [3, 1] and val.tolist() == [0.5, 0.25]
