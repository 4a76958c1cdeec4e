"""The torch.distributed facts the cache fill needs: this process's rank, the world size, a barrier.

Under torchrun (``WORLD_SIZE`` > 1) with no process group yet, the first fill starts one through accelerate
(gloo on CPU, NCCL on GPUs), as the trainer would later, so every entry point (train.py, evaluate.py's
corpus pass) splits its encoding over the ranks without wiring of its own.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def ensure_process_group() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())  # cpu=True: accelerate sees a CPU gloo run at all


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group, ``(0, 1)`` without one."""
    ensure_process_group()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
