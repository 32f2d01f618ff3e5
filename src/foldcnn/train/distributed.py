"""Data-parallel training over processes (DistributedDataParallel): gloo on CPU, nccl on GPU.

Every rank holds the whole data set and draws the same fold groups (same seed); each step's
groups are dealt out round-robin, so the ranks see disjoint shards and together exactly the
images a single process would see in that step. Losses are scaled so that DDP's gradient
average equals the single-process gradient of the whole step. Only rank 0 writes files and
shows progress. Start with ``torchrun --nproc-per-node N -m foldcnn train ...``,
``foldcnn train --nproc N ...`` or :func:`launch`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable

import torch

from foldcnn.errors import FoldcnnError, UsageError

__all__ = ["DistInfo", "DistributedError", "dist_info", "backend_for", "init_from_env", "shutdown",
           "free_port", "launch", "shard_groups", "all_reduce_sum", "broadcast_floats"]


class DistributedError(FoldcnnError, RuntimeError):
    """A rank of a multi-process run failed; the message carries that rank's error."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def dist_info() -> DistInfo:
    """This process's place in the process group (rank 0 of 1 when there is none)."""
    if not _initialized():
        return DistInfo()
    d = torch.distributed
    return DistInfo(rank=d.get_rank(), world_size=d.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", d.get_rank())), backend=d.get_backend())


def backend_for(device: str | torch.device) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_env(device: str = "cpu") -> DistInfo:
    """Join the process group that torchrun (or :func:`launch`) described in the environment.

    Does nothing when ``WORLD_SIZE`` is unset or 1. On CUDA each rank uses GPU ``LOCAL_RANK``.
    """
    if _initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return dist_info()
    if not torch.distributed.is_available():
        raise DistributedError("this torch build has no torch.distributed; train with one process")
    if torch.device(device).type == "cuda":
        if not torch.cuda.is_available():
            raise DistributedError("device cuda was asked for but no CUDA GPU is visible; use --device cpu")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend=backend_for(device))
    return dist_info()


def shutdown() -> None:
    if _initialized():
        torch.distributed.destroy_process_group()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable, args: tuple, world: int, port: int, device: str, threads: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    if threads:
        torch.set_num_threads(threads)
    init_from_env(device)
    try:
        fn(*args)
    finally:
        shutdown()


def launch(fn: Callable, nprocs: int, args: tuple = (), *, device: str = "cpu", threads: int = 0) -> None:
    """Run ``fn(*args)`` in ``nprocs`` new processes that form one process group on this machine.

    ``fn`` must be importable (a module-level function). ``threads=0`` gives each process an
    equal share of the CPU cores. A failing rank raises :class:`DistributedError` here with
    its last error line.
    """
    import torch.multiprocessing as mp

    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise UsageError(f"nprocs must be an int >= 1, got {nprocs!r}")
    if torch.device(device).type == "cuda" and torch.cuda.device_count() < nprocs:
        raise DistributedError(f"{nprocs} processes on CUDA need {nprocs} GPUs; {torch.cuda.device_count()} visible")
    threads = threads or max(1, (os.cpu_count() or 1) // nprocs)
    try:
        mp.start_processes(_entry, args=(fn, args, nprocs, free_port(), device, threads), nprocs=nprocs,
                           start_method="spawn")
    except mp.ProcessRaisedException as e:
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        raise DistributedError(f"rank {e.error_index} failed: {lines[-1] if lines else e}") from None
    except mp.ProcessExitedException as e:
        raise DistributedError(f"rank {e.error_index} died ({e}); see its output above") from None


def shard_groups(chunk: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's share of one step's fold groups (G, f): every ``world``-th group from ``rank``.

    A rank left without a group gets one all-padding group (-1), so that every rank runs the
    same forward and backward passes (DDP needs them in lockstep); its loss is zero.
    """
    if world == 1:
        return chunk
    mine = chunk[rank::world]
    return mine if len(mine) else torch.full((1, chunk.shape[1]), -1, dtype=chunk.dtype)


def all_reduce_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Sum ``values`` over all ranks (identity without a process group)."""
    if not _initialized() or torch.distributed.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def broadcast_floats(values: list[float], device: torch.device | str = "cpu", src: int = 0) -> list[float]:
    """Rank ``src``'s ``values`` on every rank (identity without a process group)."""
    if not _initialized() or torch.distributed.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.broadcast(t, src)
    return t.tolist()


def broadcast_buffers_(model: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank, in place.

    DDP keeps parameters equal but each rank updates running statistics from its own shard;
    this makes them equal before they are validated, saved or fused. No-op without a group.
    """
    if not _initialized() or torch.distributed.get_world_size() == 1:
        return
    with torch.no_grad():
        for buf in model.buffers():
            torch.distributed.broadcast(buf, src)
