"""One process or many (torchrun / DDP): which device this process trains on and how ranks share a batch."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mrnet_utils.errors import MRNetError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global-batch tensor."""
        return tensor.chunk(self.world_size)[self.rank]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a per-rank value over all ranks (a collective: every rank must call it)."""
        if self.world_size > 1:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world_size
        return value

    def max(self, value: int, device: torch.device) -> int:
        """The largest of a per-rank integer over all ranks (a collective: every rank must call it)."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def init_distributed(batch_size: int) -> Distributed:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    if batch_size % world_size:
        raise MRNetError(
            f"batch_size={batch_size} is not divisible by the {world_size} processes; "
            "choose a global batch that is a multiple of the world size"
        )
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())


def process_device(requested: str | torch.device | None = None) -> torch.device:
    """This process's device: `requested` when given (one process only), else its GPU (torchrun's
    LOCAL_RANK), set as current before NCCL starts, else the CPU."""
    if requested is not None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise MRNetError(
                f"device={str(requested)!r} names one device, but this is one of several processes (torchrun); "
                "leave device unset: each process takes the GPU of its LOCAL_RANK",
                parameter="device",
            )
        device = torch.device(requested)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise MRNetError(f"device={str(requested)!r}: this machine has no GPU; use 'cpu' or leave it unset",
                                 parameter="device")
            device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
            torch.cuda.set_device(device)
        return device
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
