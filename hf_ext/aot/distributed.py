"""Gathering per-sample values from every process, with gradients, so that AOT sorts the global batch."""

from __future__ import annotations

import torch
import torch.distributed as dist


__all__ = ["gather_across_processes"]


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllGather(torch.autograd.Function):
    """All-gather whose backward gives each rank the gradient of its own slice, summed over the ranks.

    The same semantics as `torch.distributed.nn.functional.all_gather` (deprecated in torch 2.13), with an
    all-reduce in the backward, which every backend supports (gloo has no reduce-scatter).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank = dist.get_rank()
        pieces = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(pieces, tensor.contiguous())
        return torch.stack(pieces)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank]


def gather_across_processes(tensor: torch.Tensor, *, differentiable: bool = True) -> torch.Tensor:
    """Concatenate the 1-D `tensor` of every process, in rank order; ranks may hold different lengths.

    With `differentiable=True` the gather is autograd-aware: its backward sends each rank the gradient of its own
    slice, summed over the ranks. When every rank computes the same loss from the gathered values, each local
    sample's gradient thus arrives multiplied by the world size, and DDP's averaging of the parameter gradients
    divides it back: the parameter gradients equal those of one process computing the loss on the concatenated
    batch. Do not rescale the loss.

    Without an initialised process group (a single process), returns `tensor` itself.
    """
    world_size = _world_size()
    if world_size == 1:
        return tensor
    if tensor.dim() != 1:
        raise ValueError(f"gather_across_processes expects a 1-D tensor; got shape {tuple(tensor.shape)}.")
    length = torch.tensor([tensor.shape[0]], device=tensor.device)
    lengths = [torch.zeros_like(length) for _ in range(world_size)]
    dist.all_gather(lengths, length)
    lengths = [int(n.item()) for n in lengths]
    padded = torch.nn.functional.pad(tensor, (0, max(lengths) - tensor.shape[0]))
    # Decided from state that every rank shares, so that all ranks run the same collectives, backward included.
    if differentiable and torch.is_grad_enabled():
        gathered = _AllGather.apply(padded)
    else:
        gathered = [torch.empty_like(padded) for _ in range(world_size)]
        dist.all_gather(gathered, padded.contiguous())
    return torch.cat([gathered[rank][:n] for rank, n in enumerate(lengths)])
