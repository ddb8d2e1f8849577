"""Multi-process training: torch DDP under torchrun or `--num-gpus N` (gloo on CPU, nccl on CUDA)."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's rank among `world` processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process logs, validates and writes checkpoints."""
        return self.rank == 0


def from_env() -> DistInfo:
    """Rank and world size set by torchrun (or by `launch`); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group (no-op for one process)."""
    if info.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=info.rank, world_size=info.world)


def barrier(info: DistInfo) -> None:
    """Wait for every process."""
    if info.world > 1 and dist.is_initialized():
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group."""
    if info.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def mean_across(info: DistInfo, value: float) -> float:
    """Average a scalar over processes."""
    if info.world <= 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world


def _free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    """Entry of a spawned process: set torchrun's variables, then run fn."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    fn(*args)


def launch(world: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run fn(*args) in `world` processes on this machine (like torchrun --nproc-per-node world)."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(world, _free_port(), fn, args), nprocs=world, join=True)
