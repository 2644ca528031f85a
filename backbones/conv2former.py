"""Conv2Former (Hou et al., "Conv2Former: A Simple Transformer-Style ConvNet for Visual Recognition").

Parameter names follow the official HVision-NKU/Conv2Former code, so its checkpoints (the timm-style
saver's ``state_dict`` / ``state_dict_ema``) load unchanged; the classifier (``head.*``, ``pred.*``) is
dropped. Sizes: N (kernel 7), T/S/B/L (kernel 11) and the ImageNet-22K B whose kernel is 7 (``b_22k``).

The stem holds BatchNorm (GELU before BN, as in the official code): with 2 images per GPU use
``norm_eval=True`` (the shipped configs do) or SyncBN.

Speed (same outputs as the official code, both paths tested at 1e-5): the blocks compute in NHWC on
channels_last memory, the official 1x1 convolutions applied as GEMMs over channels (their weights viewed as
matrices) and the layer scales folded into ``proj`` / ``fc2``; in training ``att[0]`` and ``v`` share one
GEMM and the 11x11 depthwise weight gradient runs as a convolution (:class:`~backbones.layers.DepthwiseConv2d`);
the stem's BatchNorms run on a wide view of their channels_last maps (:class:`~backbones.layers.BatchNorm2d`);
in CPU float32 inference oneDNN's
fused kernels take GEMM + GELU, GEMM x v, GEMM + residual and dw3x3 + GELU. Measured against timm's
ConvNeXt-T: docs/speed.md.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import MultiScaleBackbone
from .layers import BatchNorm2d, DepthwiseConv2d, LayerNorm2d, maybe_drop_path, use_fused_cpu
from .registry import register_family

Tensor = torch.Tensor


def _pointwise(conv: nn.Conv2d) -> Tuple[Tensor, Optional[Tensor]]:
    """A 1x1 convolution's weights as a Linear's: ``(out, in)`` (a view) and the bias."""
    return conv.weight.flatten(1), conv.bias


def _scaled(conv: nn.Conv2d, scale: Tensor) -> Tuple[Tensor, Tensor]:
    """A 1x1 convolution followed by a per-channel scale, as one Linear: ``diag(s) W``, ``s * b``."""
    w, b = _pointwise(conv)
    return w * scale[:, None], b * scale


class ConvMod(nn.Module):
    """Convolutional modulation: ``proj( dwKxK(GELU(conv1x1(LN x))) * conv1x1(LN x) )`` (official ``attn``).

    Runs on NHWC tensors (see :class:`Conv2FormerBlock`); the 1x1 convolutions are applied as Linear
    layers on the channel axis (the official ``nn.Conv2d`` parameters, viewed as matrices)."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.att = nn.Sequential(
            nn.Conv2d(dim, dim, 1),
            nn.GELU(),
            DepthwiseConv2d(dim, kernel_size))
        self.v = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, scale: Tensor) -> Tensor:
        """``scale * attn(x)`` for an NHWC ``x`` (the block's layer scale folded into ``proj``)."""
        y = F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        # att[0] and v in one GEMM (C -> 2C): 3-5 % off a Conv2Former-T training step on CPU
        w = torch.cat([self.att[0].weight.flatten(1), self.v.weight.flatten(1)])
        a, v = F.linear(y, w, torch.cat([self.att[0].bias, self.v.bias])).chunk(2, dim=-1)
        a = self.att[2](F.gelu(a).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # depthwise on a channels_last view
        return F.linear(a * v, *_scaled(self.proj, scale))

    def forward_fused(self, x: Tensor, scale: Tensor) -> Tensor:
        """``x + scale * attn(x)`` with oneDNN's fused GEMMs (CPU float32 inference)."""
        n, h, w, c = x.shape
        lin = torch.ops.mkldnn._linear_pointwise  # present: layers.use_fused_cpu() checked it
        y = F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias,
                         self.norm.eps).reshape(-1, c)
        a = lin(y, *_pointwise(self.att[0]), 'gelu', [], 'none')  # GEMM + bias + exact GELU
        dw = self.att[2]
        a = dw(a.reshape(n, h, w, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(-1, c)
        a = lin.binary(y, a, *_pointwise(self.v), 'mul')  # GEMM + bias, times the attention
        return lin.binary(a, x.reshape(-1, c), *_scaled(self.proj, scale), 'add').reshape(n, h, w, c)


class ConvMlp(nn.Module):
    """LN -> 1x1 (C->rC) -> GELU -> h + GELU(dw3x3 h) -> 1x1 (rC->C) (official ``mlp``), on NHWC tensors."""

    def __init__(self, dim: int, mlp_ratio: int = 4):
        super().__init__()
        hidden = dim * mlp_ratio
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.pos = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: Tensor, scale: Tensor) -> Tensor:
        """``scale * mlp(x)`` for an NHWC ``x`` (the block's layer scale folded into ``fc2``)."""
        y = F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        h = F.gelu(F.linear(y, *_pointwise(self.fc1)))
        h = h + F.gelu(self.pos(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))  # dw3x3 on a channels_last view
        return F.linear(h, *_scaled(self.fc2, scale))

    def forward_fused(self, x: Tensor, scale: Tensor) -> Tensor:
        """``x + scale * mlp(x)`` with oneDNN's fused GEMMs and convolution (CPU float32 inference)."""
        n, h, w, c = x.shape
        lin = torch.ops.mkldnn._linear_pointwise  # present: layers.use_fused_cpu() checked it
        y = F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias,
                         self.norm.eps).reshape(-1, c)
        hid = lin(y, *_pointwise(self.fc1), 'gelu', [], 'none')
        hc = hid.reshape(n, h, w, -1).permute(0, 3, 1, 2)  # channels_last NCHW view
        p = self.pos
        g = torch.ops.mkldnn._convolution_pointwise(hc, p.weight, p.bias, p.padding, p.stride, p.dilation, p.groups, 'gelu', [], 'none')
        hid = hid.add_(g.permute(0, 2, 3, 1).reshape(hid.shape))
        return lin.binary(hid, x.reshape(-1, c), *_scaled(self.fc2, scale), 'add').reshape(n, h, w, c)


class _Stem(nn.Sequential):
    """The BN stem (an ``nn.Sequential``: official keys), run on a channels_last copy of the 3-channel input:
    oneDNN's convolutions are faster in that layout (stem fwd+bwd 240 -> 195 ms at 512x768) and the blocks
    then start in NHWC without a copy. Its BatchNorms are :class:`~backbones.layers.BatchNorm2d`, whose
    channels_last CPU path is 4x aten's for these 36-channel maps (stem fwd+bwd 142 -> 71 ms, 2 threads)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.contiguous(memory_format=torch.channels_last))


class Conv2FormerBlock(nn.Module):
    def __init__(self, dim: int, kernel_size: int, mlp_ratio: int = 4, drop_path: float = 0.0,
                 layer_scale_init: float = 1e-6):
        super().__init__()
        self.attn = ConvMod(dim, kernel_size)
        self.mlp = ConvMlp(dim, mlp_ratio)
        self.drop_path = maybe_drop_path(drop_path)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), layer_scale_init))

    def forward(self, x: Tensor) -> Tensor:
        """NCHW in (any memory format), NCHW out in channels_last memory (the blocks compute in NHWC)."""
        xh = x.permute(0, 2, 3, 1)
        if not xh.is_contiguous():  # the stem's output: once per forward
            xh = xh.contiguous()
        if use_fused_cpu(self, xh):
            xh = self.attn.forward_fused(xh, self.layer_scale_1)
            xh = self.mlp.forward_fused(xh, self.layer_scale_2)
        else:
            xh = xh + self.drop_path(self.attn(xh, self.layer_scale_1))
            xh = xh + self.drop_path(self.mlp(xh, self.layer_scale_2))
        return xh.permute(0, 3, 1, 2)


@register_family
class Conv2Former(MultiScaleBackbone):
    """Conv2Former as a 4-stage feature-pyramid backbone (see :mod:`backbones.base` for the contract).

    ``arch``: ``'n'``, ``'t'``, ``'s'``, ``'b'``, ``'b_22k'``, ``'l'`` (or ``'tiny'``, ``'conv2former_t'``
    ...) or ``dict(depths=[...], dims=[...], kernel_size=k, mlp_ratio=4)``.
    """
    family = 'conv2former'
    default_arch = 't'
    arch_settings = {
        'n': dict(depths=[2, 2, 8, 2], dims=[64, 128, 256, 512], kernel_size=7),
        't': dict(depths=[3, 3, 12, 3], dims=[72, 144, 288, 576], kernel_size=11),
        's': dict(depths=[4, 4, 32, 4], dims=[72, 144, 288, 576], kernel_size=11),
        'b': dict(depths=[4, 4, 34, 4], dims=[96, 192, 384, 768], kernel_size=11),
        'b_22k': dict(depths=[4, 4, 34, 4], dims=[96, 192, 384, 768], kernel_size=7),
        'l': dict(depths=[4, 4, 48, 4], dims=[128, 256, 512, 1024], kernel_size=11),
    }
    arch_aliases = {'nano': 'n', 'tiny': 't', 'small': 's', 'base': 'b', 'large': 'l',
                    'base_22k': 'b_22k', 'b22k': 'b_22k'}
    arch_defaults = dict(kernel_size=7, mlp_ratio=4, layer_scale_init=1e-6)
    classifier_prefixes = ('head.', 'pred.')

    def _build(self, arch: dict, in_channels: int, dpr: List[float]) -> None:
        dims, depths, k = arch['dims'], arch['depths'], arch['kernel_size']
        half = dims[0] // 2
        stem = _Stem(  # keys downsample_layers.0.{0,2,3,5,6}
            nn.Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False),
            nn.GELU(),
            BatchNorm2d(half),
            nn.Conv2d(half, half, 3, stride=1, padding=1, bias=False),
            nn.GELU(),
            BatchNorm2d(half),
            nn.Conv2d(half, dims[0], 2, stride=2, bias=False))
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(dims[i], eps=1e-6), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2)))
        self.stages = self.make_stages(depths, dpr, lambda i, j, dp: Conv2FormerBlock(
            dims[i], k, arch['mlp_ratio'], dp, arch['layer_scale_init']))
        self.apply(self._init_module)
