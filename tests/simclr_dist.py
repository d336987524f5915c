"""Run by test_simclr.py as two real CPU processes (gloo).

`loss` mode: NT-Xent terms and gradients of each rank's half of a fixed batch, with negatives gathered
from both ranks. `train` mode: a short pruned SimCLR run; each rank writes what it selected and learned.
"""

import json
import os
import sys

import torch
import torch.distributed as dist

from emp_hf import PruningConfig
from emp_hf.core.contrastive import nt_xent_terms
from emp_hf.core.distributed import shutdown

out, mode = sys.argv[1], sys.argv[2]
if mode == "loss":
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)  # the combined batch
    rows = slice(rank * 4, rank * 4 + 4)
    a, b = z_a[rows].clone().requires_grad_(), z_b[rows].clone().requires_grad_()
    terms = nt_xent_terms(a, b, 0.5)
    terms.mean().backward()
    result = {"terms": terms.tolist(), "grad_a": (a.grad / world).tolist(), "grad_b": (b.grad / world).tolist()}
else:
    from emp_hf.vision.simclr import SimCLRArguments, pretrain_and_evaluate

    args = SimCLRArguments(dataset="digits", model="resnet10", width=4, epochs=4, batch_size=32, eval="none",
                           max_train_samples=256, output_dir=out, cpu=True, progress=False)
    run = pretrain_and_evaluate(args, PruningConfig(method=mode, prune=0.5))
    rank, world = dist.get_rank(), dist.get_world_size()
    store = run.pruner.store
    result = {"world": world, "per_epoch": run.pruner.summary()["per_epoch"],
              "store": {k: getattr(store, k).tolist() for k in ("loss", "entropy", "times_trained", "times_selected")},
              "weights": float(sum(p.detach().double().sum() for p in run.model.parameters()))}
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump(result, f)
shutdown()
