"""Training under ``torchrun``: which streams a rank trains on and how the ranks agree.

Every helper is a no-op with one process. With several, each rank trains its own rows of the
streams; checkpoints gather every row's carried state (so a resume may use another number of
ranks), and decisions that end in a collective (save, stop, which value is best) are agreed,
since a rank that takes another branch would deadlock the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from lstmscope.errors import LstmscopeError


@dataclass(frozen=True)
class Dist:
    """This process's place among the ``torchrun`` processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def setup(device: torch.device, batch_size: int) -> tuple[torch.device, Dist, slice]:
    """``(device, dist, rows)``: this rank's device and which of the ``batch_size`` streams
    it trains; under torchrun each rank takes an equal contiguous share."""
    d = init_distributed(device)
    if d.world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", d.rank)))
        torch.cuda.set_device(device)
    if batch_size % d.world:
        raise LstmscopeError(f"--batch {batch_size} must divide by the {d.world} processes")
    per_rank = batch_size // d.world
    return device, d, slice(d.rank * per_rank, (d.rank + 1) * per_rank)


def gather_state(state: list, d: Dist) -> list:
    """The carried state of every stream (all ranks), so a checkpoint can resume anywhere."""
    if d.world == 1 or state is None:
        return state
    import torch.distributed as dist

    out = []
    for s in state:
        parts = s if isinstance(s, tuple) else (s,)
        full = []
        for t in parts:
            bufs = [torch.empty_like(t) for _ in range(d.world)]
            dist.all_gather(bufs, t.contiguous())
            full.append(torch.cat(bufs, dim=1))
        out.append(tuple(full) if isinstance(s, tuple) else full[0])
    return out


def slice_state(state: list | None, rows: slice, device) -> list | None:
    """This rank's ``rows`` of a carried state saved with every stream (``gather_state``)."""
    if state is None:
        return None
    cut = [tuple(t[:, rows].to(device) for t in s) if isinstance(s, tuple)
           else s[:, rows].to(device) for s in state]  # fmt: skip
    return cut


def agree(d: Dist, device: torch.device, *flags: bool) -> tuple[bool, ...]:
    """Each flag true on any rank is true on all: every rank stops (or saves) at the same step,
    or the collectives deadlock. The tensor lives on ``device``: NCCL reduces only CUDA
    tensors."""
    if d.world == 1:
        return flags
    import torch.distributed as dist

    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t)
    return tuple(bool(x > 0) for x in t.tolist())


def rank0_value(d: Dist, device: torch.device, value: float) -> float:
    """``value`` as rank 0 has it, on every rank."""
    if d.world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def finish(d: Dist) -> None:
    """Wait for every rank, then leave: a clean exit, no rank aborts on a peer's closed socket."""
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
