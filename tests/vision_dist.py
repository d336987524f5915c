"""Run by test_vision.py under `accelerate launch --multi_gpu --num_processes 2` (CPU, gloo)."""

import json
import os
import sys

import torch.distributed as dist

from emp_hf import PruningConfig
from emp_hf.core.distributed import shutdown
from emp_hf.vision import VisionArguments, train

out, method = sys.argv[1], sys.argv[2]
vargs = VisionArguments(dataset="digits", model="resnet10", width=4, epochs=4, batch_size=32, optimizer="adam",
                        max_train_samples=300, output_dir=out, cpu=True, progress=False)
result = train(vargs, PruningConfig(method=method, prune=0.5))
store = result.pruner.store
with open(os.path.join(out, f"rank{dist.get_rank()}.json"), "w") as f:
    json.dump({"world": dist.get_world_size(), "per_epoch": result.pruner.summary()["per_epoch"],
               "store": {k: getattr(store, k).tolist() for k in ("loss", "times_trained", "times_selected")},
               "weights": float(sum(p.detach().double().sum() for p in result.model.parameters())),
               "full_epochs": sum(result.pruner.schedule.is_full(e) for e in range(4))}, f)
shutdown()
