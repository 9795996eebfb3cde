"""Data-parallel training across processes: PyTorch's own engine (torch.distributed, DDP), launched by torchrun.

A trainer asks one small object, Ranks, everything it needs to know about the other processes.
The default is one process (world 1): every helper is then the identity or a no-op, so a
single-process run takes exactly the path it always took, with no extra sync.

How a step stays the single-process step: every rank draws the same global batch (same seed,
same generator), takes its contiguous slice (shard), and divides its loss by the denominator of
the WHOLE global batch times world_size. DDP averages the gradients over the ranks, which undoes
the world_size, so each rank steps with the gradient one process would have computed on the
global batch, and the weights stay identical on every rank.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    """True inside a torchrun worker of a job of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: one process, no process group

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the store, evaluates and judges."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @staticmethod
    def from_env(device: torch.device, timeout_s: float = 600.0) -> "Ranks":
        """The process group of the torchrun job this process is a worker of (RANK, WORLD_SIZE,
        LOCAL_RANK), or one process when there is none. nccl on GPUs (each rank on the GPU of its
        LOCAL_RANK), gloo on the CPU."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return Ranks(0, 1, device)
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s),
                                    **({"device_id": device} if backend == "nccl" else {}))
        return Ranks(rank, world, device, backend)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    # --- the batch and the model

    def check_batch(self, batch_size: int, what: str) -> None:
        """ValueError naming the batch when it does not split evenly over the ranks."""
        if batch_size % self.world_size:
            raise ValueError(f"{what}: batch size {batch_size} does not split evenly over {self.world_size} processes")

    def shard(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (rows); the whole batch for one process."""
        if not self.distributed:
            return t
        n = t.shape[0] // self.world_size
        return t[self.rank * n:(self.rank + 1) * n]

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around the module whose forward is a whole step's loss; the
        module itself for one process. Every parameter that trains must get a gradient each step
        (find_unused_parameters stays off: it costs a graph walk per step). Buffers are not
        broadcast every step: the brain's buffers are rotary tables, identical everywhere, and the
        talker's batch-norm running statistics, which every rank updates from the same global
        batch (TalkerModel._norm_as_batch)."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # newer torch renamed the flag (and syncs buffers once at init either way, which is fine here)
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
            return DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False)
        return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

    # --- collectives (each a no-op for one process)

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce in place: the sum over the ranks."""
        if self.distributed:
            if t.device != self._comm_device():
                buf = t.to(self._comm_device())
                dist.all_reduce(buf)
                t.copy_(buf)
            else:
                dist.all_reduce(t)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on at least one (e.g. a stop asked of any rank)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_ints(self, values: list[int], src: int = 0) -> list[int]:
        """src's list of ints on every rank; every rank passes a list of the same length. Through a
        tensor: no pickled objects cross between processes."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.int64, device=self._comm_device())
        dist.broadcast(t, src)
        return [int(v) for v in t.tolist()]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


ONE_PROCESS = Ranks()
