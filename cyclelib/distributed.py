"""Data parallelism over processes: DistributedDataParallel under torchrun.

``torchrun --nproc_per_node N -m cyclelib train cyclegan ...`` starts N copies of the
command with RANK, WORLD_SIZE and LOCAL_RANK in their environment. :func:`setup` joins
them into one process group (NCCL between GPUs, Gloo on CPU); every rank then trains on
its own share of each epoch, and DistributedDataParallel averages the gradients. N ranks
with batch B therefore take the step that one process takes with batch N x B, exactly so
when the losses are means over independent samples (instance norm; an empty image pool,
since each rank keeps its own pool). Only rank 0 writes files. A plain run (no
WORLD_SIZE, or WORLD_SIZE=1) starts none of this.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .names import BATCH_NORMS
from .runtime import Precision, pick_device

# The group for host-side flags (see any_rank): Gloo, so that agreeing on a flag costs no
# GPU synchronisation; None means the default group (already Gloo on CPU).
_flag_group = None


@dataclass(frozen=True)
class RunContext:
    """Where a run computes, resolved once (:func:`run_context`) and passed down: the device
    (under torchrun, this rank's GPU), the rank and the number of ranks. Every device-dependent
    choice of the run (the precision ``amp="auto"`` picks, channels_last, where stage networks
    are loaded and evaluated) reads it, not the ``device`` option again."""

    device: torch.device
    rank: int = 0
    world: int = 1

    def precision(self, amp: str, fast: bool = True) -> Precision:
        """The mixed precision ``amp`` means on this run's device (see :class:`~cyclelib.runtime.Precision`)."""
        return Precision(amp, self.device, fast)


def run_context(device: str | torch.device | None = None) -> RunContext:
    """The :class:`RunContext` of the option ``device`` (:func:`~cyclelib.runtime.pick_device`),
    in this process's torchrun job when there is one (:func:`setup`)."""
    rank, world, resolved = setup(pick_device(device))
    return RunContext(resolved, rank, world)


def launched() -> tuple[int, int]:
    """``(rank, world_size)`` that torchrun gave this process; ``(0, 1)`` without torchrun.
    Read from the environment, so it answers before :func:`setup` has joined the group."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> tuple[int, int, torch.device]:
    """Join this process's torchrun job (once); returns ``(rank, world_size, device)``.

    A CUDA rank gets the GPU of its LOCAL_RANK. Without torchrun: ``(0, 1, device)``.
    A one-process torchrun job (``--nproc_per_node 1``) joins its group of one as well, so
    that it runs the collectives of a larger job, through NCCL on a GPU (`make gpu-check`
    tests NCCL this way); a plain run with WORLD_SIZE=1 joins none.
    """
    global _flag_group
    # torchrun sets TORCHELASTIC_RUN_ID in every process it starts; other launchers only
    # reach here with more than one rank.
    if launched()[1] == 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # env:// rendezvous: torchrun sets MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE.
        cuda = device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
        _flag_group = dist.new_group(backend="gloo") if cuda else None
        atexit.register(_shutdown)
    return dist.get_rank(), dist.get_world_size(), device


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_norm(norm: str, world_size: int, device: torch.device) -> None:
    """Refuse a normalisation that would not train as one process does: ``batch`` over several
    ranks (each would normalise by its own share of the batch, silently another model than the
    batch of the whole step), and ``syncbatch`` over several CPU ranks (torch's SyncBatchNorm
    synchronises over GPUs only: its forward refuses CPU tensors). ``syncbatch`` in one process
    is plain batch norm, and over GPU ranks :func:`sync_batch_norm` converts it."""
    if world_size == 1 or norm not in BATCH_NORMS:
        return
    if norm == "batch":
        raise ValueError(f"norm 'batch' under torchrun ({world_size} processes) would normalise each process's "
                         "share of the batch by its own statistics: use norm 'syncbatch' (--norm syncbatch) to "
                         "share them over the processes (GPUs), or 'instance'")
    if device.type != "cuda":
        raise ValueError(f"norm 'syncbatch' shares batch statistics over GPUs only (torch.nn.SyncBatchNorm), and "
                         f"these {world_size} processes run on the {device.type}: use norm 'instance', or one "
                         "process with norm 'batch'")


def sync_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm layer replaced by a SyncBatchNorm holding the same weights and
    statistics (the state_dict keeps its keys, so checkpoints of ``batch`` and ``syncbatch`` runs are alike)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` under DistributedDataParallel: its parameters' gradients are averaged over
    the ranks during backward. Call its forward once per backward."""
    return nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


def sync_replica(module: nn.Module) -> None:
    """Keep the copies of ``module`` that the ranks train alike, without DistributedDataParallel:
    call it after backward, before the optimiser step. Each parameter's gradient becomes the mean
    over the ranks (one all-reduce), and every rank takes rank 0's buffers (BatchNorm's running
    statistics), as DDP's ``broadcast_buffers`` does. Identity without a process group.

    For a network trained beside the units DDP wraps, read in between without gradient to its
    weights (CyCADA's online semantic judge): DDP needs one forward of the wrapped module per backward."""
    if not dist.is_initialized():
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if grads:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)  # a sum: Gloo has no average
        flat /= dist.get_world_size()
        for grad, mean in zip(grads, flat.split([g.numel() for g in grads])):
            grad.copy_(mean.view_as(grad))
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each scalar of ``values`` averaged over the ranks (identity without a process group).

    One all-reduce, queued on the device like any kernel, so it adds no host sync. Every
    rank gets the same numbers, so decisions taken on them (a NaN check) agree.
    """
    if not dist.is_initialized() or not values:
        return values
    stacked = torch.stack([v.float() for v in values.values()])  # [terms]
    dist.all_reduce(stacked)  # a sum: Gloo has no average
    return dict(zip(values, stacked / dist.get_world_size()))


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on at least one rank (every rank must call this at the same point).

    Used to stop every rank at the same step when a signal reached only some of them: a
    rank that stopped alone would leave the others waiting in their next all-reduce.
    """
    if not dist.is_initialized():
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_flag_group)
    return bool(t.item())
