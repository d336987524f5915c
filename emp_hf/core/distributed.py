"""Keep every rank's score store identical by gathering all ranks' observations.

Indices (int64) and values (float32) travel as separate tensors so that large
indices keep their exact value. Works with any torch.distributed backend; under
NCCL the tensors travel on the current CUDA device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def shutdown() -> None:
    """End a multi-process run: wait for every rank, then destroy the process group.

    A gloo group still alive at interpreter exit aborts the process (PLATFORM.md). Collect garbage
    first so that no DDP reducer is left holding the group: freed from the reducer's destructor,
    the group's worker thread waits for the GIL that destructor holds, and the process deadlocks.
    """
    import gc

    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_updates(indices: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
    """All ranks' (indices, *values), concatenated in rank order, on the CPU.

    Two collectives whatever the number of fields: the row counts, then one float64 block holding the
    indices (exact below 2^53) and the values. Without an initialised process group (or with one process)
    the inputs are returned unchanged (on the CPU). Ranks may contribute different numbers of rows.
    """
    indices = indices.detach().reshape(-1).to(torch.int64)
    flat_values = [v.detach().reshape(-1).to(torch.float32) for v in values]
    if world_size() == 1:
        return (indices.cpu(), *(v.cpu() for v in flat_values))
    device = _comm_device()
    count = torch.tensor([indices.numel()], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    block = torch.zeros(1 + len(flat_values), max(sizes), dtype=torch.float64, device=device)
    block[0, : indices.numel()] = indices.to(device, torch.float64)
    for row, v in enumerate(flat_values, start=1):
        block[row, : v.numel()] = v.to(device, torch.float64)
    gathered = [torch.empty_like(block) for _ in sizes]
    dist.all_gather(gathered, block)
    joined = torch.cat([g[:, :n] for g, n in zip(gathered, sizes)], dim=1).cpu()
    return (joined[0].to(torch.int64), *(row.to(torch.float32) for row in joined[1:]))


def max_across_ranks(value: Tensor) -> Tensor:
    """The element-wise maximum of `value` over all ranks (one collective; unchanged with one process), so that
    every rank reaches the same verdict on a check and none waits for a rank that stopped."""
    if world_size() == 1:
        return value
    device = _comm_device()
    reduced = value.detach().to(device, torch.float32).clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
    return reduced.to(value.device)
