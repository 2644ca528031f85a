"""Synchronised BatchNorm for CPU process groups (gloo).

torch's ``nn.SyncBatchNorm`` (the layer behind ``norm_cfg=dict(type='SyncBN')``) refuses CPU tensors once a
process group exists ("SyncBatchNorm expected input tensor to be on GPU ...", torch 2.12), and mmcv's
``MMSyncBN`` is a CUDA kernel. :class:`CPUSyncBatchNorm` gives the same semantics on CPU: in training, with
an initialised process group of more than one rank, the batch mean and variance are taken over the inputs of
every rank (two all-reduces: sum and count, then the sum of squared deviations from the global mean, which
is as stable as a one-process BatchNorm's two-pass statistics). The all-reduce is an autograd function whose
backward all-reduces the incoming gradient, so each rank's input gradient is the gradient of the sum of all
ranks' losses; DistributedDataParallel's averaging then gives exactly the gradient a single process would
compute on the concatenated batch (with a loss that is a mean over images). Running statistics are updated
with the global statistics (unbiased variance over the global count), identically on every rank.

Outside that case (eval mode, no process group, one rank) it is ``nn.BatchNorm2d``; the parameter and buffer
names are those of BatchNorm, so checkpoints move freely between SyncBN, BN and this layer. It works for any
input ``(N, C, ...)``.

``glue.runtime.adapt_to_cpu`` puts it in place of SyncBN / MMSyncBN for distributed CPU runs (``type=
'CPUSyncBN'``, registered in mmengine's root MODELS registry, which mmcv's ``build_norm_layer`` falls back
to); single-process CPU runs get plain BN, which is the same thing there.
"""
import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ['CPUSyncBatchNorm', 'register_cpu_sync_bn', 'CPU_SYNC_BN']

CPU_SYNC_BN = 'CPUSyncBN'


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks of the group; the gradient of each rank's input is the sum of the ranks' gradients
    (every rank's loss depends on every rank's contribution)."""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def _world_size(group) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics are taken over all ranks of ``process_group`` (default: the
    world). Same arguments as ``nn.SyncBatchNorm``."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f'expected at least 2D input (got {input.dim()}D input)')

    def forward(self, input):
        self._check_input_dim(input)
        if not self.training or _world_size(self.process_group) == 1:
            return super().forward(input)
        group = self.process_group
        c = input.shape[1]
        dims = [0] + list(range(2, input.dim()))
        shape = [1, c] + [1] * (input.dim() - 2)
        count = torch.full((1,), input.numel() // max(c, 1), dtype=input.dtype, device=input.device)
        total = _AllReduceSum.apply(torch.cat([input.sum(dims), count]), group)
        n = total[-1].detach()
        if n.item() <= 1:
            raise ValueError(f'Expected more than 1 value per channel over all ranks when training, '
                             f'got input size {list(input.shape)} on each of {_world_size(group)} ranks')
        mean = total[:-1] / n
        centred = input - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims), group) / n  # biased, for normalising
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                            else self.momentum)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(var.detach() * (n / (n - 1)), alpha=momentum)
        return out


def register_cpu_sync_bn() -> None:
    """Make ``norm_cfg=dict(type='CPUSyncBN')`` buildable in every OpenMMLab scope (idempotent)."""
    from mmengine.registry import MODELS

    if MODELS.module_dict.get(CPU_SYNC_BN) is not CPUSyncBatchNorm:
        MODELS.register_module(name=CPU_SYNC_BN, module=CPUSyncBatchNorm, force=True)
