"""Start a script as two real CPU processes (gloo), the way users launch multi-GPU runs.

`accelerate launch --cpu --num_processes 2` silently starts one process (PLATFORM.md), hence
`--multi_gpu` with ACCELERATE_USE_CPU=1.
"""

from __future__ import annotations

import os
import subprocess
import sys

LAUNCHERS = {
    "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"],
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
}


def launch_two(script: str, *args: str, launcher: str = "accelerate", timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, *LAUNCHERS[launcher], str(script), *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
