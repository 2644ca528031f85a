"""Conv2Former (Hou et al., "Conv2Former: A Simple Transformer-Style ConvNet for Visual Recognition").

Parameter names follow the official HVision-NKU/Conv2Former code, so its checkpoints (the timm-style
saver's ``state_dict`` / ``state_dict_ema``) load unchanged; the classifier (``head.*``, ``pred.*``) is
dropped. Sizes: N (kernel 7), T/S/B/L (kernel 11) and the ImageNet-22K B whose kernel is 7 (``b_22k``).

The stem holds BatchNorm (GELU before BN, as in the official code): with 2 images per GPU use
``norm_eval=True`` (the shipped configs do) or SyncBN.

Speed (same outputs as the official code, both paths tested at 1e-5): the blocks compute in NHWC on
channels_last memory, the official 1x1 convolutions applied as GEMMs over channels (their weights viewed as
matrices) and the layer scales folded into ``proj`` / ``fc2``; in training ``att[0]`` and ``v`` share one
GEMM (the autograd path), the 11x11 depthwise weight gradient runs as a convolution
(:class:`~backbones.layers.DepthwiseConv2d`) and, in CPU float32, the token mixer and the MLP after their
LayerNorms are each one autograd Function (:class:`_ConvModFunction`, :class:`_ConvMlpFunction`) that saves
fewer maps, recomputes two GELUs and runs its forward and input-gradient GEMMs through oneDNN
(:func:`~backbones.layers.linear_cpu`; weight gradients stay on aten's ``mm``), the MLP's maps of 32 MiB and
more written into spare buffers instead (:func:`~backbones.layers.spare_empty`: no fresh pages to fault in at
detection sizes); the stem's GELU -> BatchNorm
pairs are one node (:meth:`~backbones.layers.BatchNorm2d.forward_gelu`); the stem's BatchNorms run on a wide
view of their channels_last maps (:class:`~backbones.layers.BatchNorm2d`); the weight gradients of the stem's
3x3 and 2x2 convolutions and of the downsampling convolutions are GEMMs
(:class:`~backbones.layers.GemmGradConv2d`); in CPU float32 inference oneDNN's fused kernels take GEMM + GELU
(:func:`~backbones.layers.linear_gelu_cpu`), GEMM x v, GEMM + residual and dw3x3 + GELU. Measured against
timm's ConvNeXt-T: docs/speed.md.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import MultiScaleBackbone
from .layers import (BatchNorm2d, DepthwiseConv2d, GemmGradConv2d, LayerNorm2d, depthwise3x3_input_grad_add_,
                     depthwise3x3_into, depthwise_weight_grad, gelu_into, linear_cpu, linear_gelu_cpu, linear_into,
                     maybe_drop_path, spare_empty, spare_give, use_fused_cpu, use_fused_cpu_training)
from .registry import register_family

Tensor = torch.Tensor


def _pointwise(conv: nn.Conv2d) -> Tuple[Tensor, Optional[Tensor]]:
    """A 1x1 convolution's weights as a Linear's: ``(out, in)`` (a view) and the bias."""
    return conv.weight.flatten(1), conv.bias


def _scaled(conv: nn.Conv2d, scale: Tensor) -> Tuple[Tensor, Tensor]:
    """A 1x1 convolution followed by a per-channel scale, as one Linear: ``diag(s) W``, ``s * b``."""
    w, b = _pointwise(conv)
    return w * scale[:, None], b * scale


def _nchw(t: Tensor, shape: Tuple[int, int, int]) -> Tensor:
    """``(m, c)`` NHWC rows as an ``(n, c, h, w)`` channels_last view."""
    n, h, w = shape
    return t.view(n, h, w, -1).permute(0, 3, 1, 2)


def _rows(t: Tensor) -> Tensor:
    """An ``(n, c, h, w)`` map as ``(n*h*w, c)`` NHWC rows (a view when it is channels_last)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _dw_backward(grad: Tensor, x: Tensor, weight: Tensor, need_x: bool, need_w: bool, need_b: bool):
    """Input, weight and bias gradients of a stride-1, 'same'-padded depthwise convolution (``None`` where not
    needed); kernels of 5 and more take the weight gradient from :func:`~backbones.layers.depthwise_weight_grad`."""
    c, k = weight.shape[0], weight.shape[-1]
    pad = [k // 2, k // 2]
    big = k >= 5
    gx, gw, gb = torch.ops.aten.convolution_backward(
        grad, x, weight, [c], [1, 1], pad, [1, 1], False, [0, 0], c,
        [need_x, need_w and not big, need_b and not big])
    if big and need_w:
        gw = depthwise_weight_grad(x, grad, pad)
    if big and need_b:
        gb = grad.sum((0, 2, 3))
    return gx, gw, gb


class _ConvModFunction(torch.autograd.Function):
    """:meth:`ConvMod.forward` after the LayerNorm, ``proj(dwKxK(GELU(a)) * v)`` with ``a = att[0](y)`` and
    ``v = v(y)``, as one autograd node for CPU float32 training. Same ops and values as the autograd path; it keeps 4 maps
    of ``C`` channels per pixel for the backward (``y``, ``a``, ``v``, the dwKxK output) instead of 6, and
    recomputes ``GELU(a)`` and the modulated map there (one elementwise pass each). ``a`` and ``v`` come from
    two GEMMs into separate contiguous maps: elementwise ops on the halves of one ``(m, 2C)`` GEMM output
    (strided rows, the autograd path) ran 4-6x slower per element than on contiguous maps."""

    @staticmethod
    def forward(ctx, y: Tensor, w_a: Tensor, b_a: Tensor, w_v: Tensor, b_v: Tensor, w_dw: Tensor, b_dw: Tensor,
                w_p: Tensor, b_p: Tensor):
        n, h, w, c = y.shape
        y2 = y.reshape(-1, c)
        a, v = linear_cpu(y2, w_a, b_a), linear_cpu(y2, w_v, b_v)
        att = _rows(F.conv2d(_nchw(F.gelu(a), (n, h, w)), w_dw, b_dw, padding=w_dw.shape[-1] // 2, groups=c))
        out = linear_cpu(att * v, w_p, b_p)
        ctx.save_for_backward(y2, a, v, att, w_a, w_v, w_dw, w_p)
        ctx.shape = (n, h, w)
        return out.view(n, h, w, c)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dz: Tensor):
        y2, a, v, att, w_a, w_v, w_dw, w_p = ctx.saved_tensors
        need = ctx.needs_input_grad
        m, c = y2.shape
        dz2 = dz.reshape(m, c)
        g_wp = dz2.t().mm(att * v) if need[7] else None
        g_bp = dz2.sum(0) if need[8] else None
        dp = linear_cpu(dz2, w_p.t())  # d(att * v); ours to overwrite (never the incoming gradient)
        dv = dp * att
        datt = dp.mul_(v)
        ga = _nchw(F.gelu(a), ctx.shape) if need[5] else _nchw(datt, ctx.shape)  # the input only gives sizes
        gin, g_wdw, g_bdw = _dw_backward(_nchw(datt, ctx.shape), ga, w_dw, True, need[5], need[6])
        da = _rows(gin)  # ours: the input gradient of the dwKxK convolution, overwritten by d a
        torch.ops.aten.gelu_backward.grad_input(da, a, grad_input=da)
        g_y = linear_cpu(dv, w_v.t(), add=linear_cpu(da, w_a.t())).view(dz.shape) if need[0] else None
        g_wa = da.t().mm(y2) if need[1] else None
        g_ba = da.sum(0) if need[2] else None
        g_wv = dv.t().mm(y2) if need[3] else None
        g_bv = dv.sum(0) if need[4] else None
        return g_y, g_wa, g_ba, g_wv, g_bv, g_wdw, g_bdw, g_wp, g_bp


class _ConvMlpFunction(torch.autograd.Function):
    """:meth:`ConvMlp.forward` after the LayerNorm, ``fc2(h + GELU(dw3x3 h))`` with ``h = GELU(fc1 y)``, as one
    autograd node for CPU float32 training. Same ops and values as the autograd path; per pixel it keeps
    ``y`` and three hidden-size maps (fc1's output, the dw3x3 output, fc2's input) for the backward instead of
    four, recomputing ``h`` there (one GELU pass), and writes its backward sums in place: the dw3x3's input
    gradient is added into fc2's (by oneDNN directly for big maps:
    :func:`~backbones.layers.depthwise3x3_input_grad_add_`).
    Its hidden-size temporaries (``h`` in the forward; fc2's input gradient, the dw3x3's output gradient and
    the recomputed ``h`` in the backward) go back to :func:`~backbones.layers.spare_give` when dead, and its
    big maps are written into :func:`~backbones.layers.spare_empty` buffers: fresh 35-70 MB maps are faulted
    in page by page (see :class:`~backbones.layers._Spares`)."""

    @staticmethod
    def forward(ctx, y: Tensor, w1: Tensor, b1: Tensor, w_pos: Tensor, b_pos: Tensor, w2: Tensor, b2: Tensor):
        n, h, w, c = y.shape
        y2 = y.reshape(-1, c)
        u = linear_into(y2, w1, b1)
        hid = gelu_into(u)
        d = _rows(depthwise3x3_into(_nchw(hid, (n, h, w)), w_pos, b_pos))
        s = gelu_into(d).add_(hid)
        spare_give(hid)
        out = linear_cpu(s, w2, b2)
        ctx.save_for_backward(y2, u, d, s, w1, w_pos, w2)
        ctx.shape = (n, h, w)
        return out.view(n, h, w, c)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dz: Tensor):
        y2, u, d, s, w1, w_pos, w2 = ctx.saved_tensors
        need = ctx.needs_input_grad
        m, c = y2.shape
        dz2 = dz.reshape(m, c)
        g_w2 = dz2.t().mm(s) if need[5] else None
        g_b2 = dz2.sum(0) if need[6] else None
        ds = linear_into(dz2, w2.t())  # ours to overwrite (never the incoming gradient)
        dd = torch.ops.aten.gelu_backward.grad_input(ds, d, grad_input=spare_empty(ds.shape, ds))
        hid = gelu_into(u) if need[3] else None
        _, g_wpos, g_bpos = _dw_backward(_nchw(dd, ctx.shape), _nchw(dd if hid is None else hid, ctx.shape), w_pos,
                                         False, need[3], need[4])  # the input only gives sizes without need[3]
        depthwise3x3_input_grad_add_(_nchw(ds, ctx.shape), _nchw(dd, ctx.shape), w_pos)  # ds is now d h
        du = torch.ops.aten.gelu_backward.grad_input(ds, u, grad_input=ds)
        g_y = linear_cpu(du, w1.t()).view(dz.shape) if need[0] else None
        g_w1 = du.t().mm(y2) if need[1] else None
        g_b1 = du.sum(0) if need[2] else None
        spare_give(ds, dd, hid)
        return g_y, g_w1, g_b1, g_wpos, g_bpos, g_w2, g_b2


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
        if use_fused_cpu_training(y):
            dw = self.att[2]
            return _ConvModFunction.apply(y, *_pointwise(self.att[0]), *_pointwise(self.v), dw.weight, dw.bias,
                                          *_scaled(self.proj, scale))
        # att[0] and v in one GEMM (C -> 2C): 3-5 % off a training step of this autograd path on CPU
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
        a = linear_gelu_cpu(y, *_pointwise(self.att[0]))  # GEMM + bias + exact GELU
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
        if use_fused_cpu_training(y):
            return _ConvMlpFunction.apply(y, *_pointwise(self.fc1), self.pos.weight, self.pos.bias,
                                          *_scaled(self.fc2, scale))
        h = F.gelu(F.linear(y, *_pointwise(self.fc1)))
        h = h + F.gelu(self.pos(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))  # dw3x3 on a channels_last view
        return F.linear(h, *_scaled(self.fc2, scale))

    def forward_fused(self, x: Tensor, scale: Tensor) -> Tensor:
        """``x + scale * mlp(x)`` with oneDNN's fused GEMMs and convolution (CPU float32 inference)."""
        n, h, w, c = x.shape
        lin = torch.ops.mkldnn._linear_pointwise  # present: layers.use_fused_cpu() checked it
        y = F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias,
                         self.norm.eps).reshape(-1, c)
        hid = linear_gelu_cpu(y, *_pointwise(self.fc1))
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
        x = x.contiguous(memory_format=torch.channels_last)
        mods, i = list(self), 0
        while i < len(mods):  # GELU then BatchNorm2d: one node where the BatchNorm's wide path applies
            gelu, bn = mods[i], mods[i + 1] if i + 1 < len(mods) else None
            if (isinstance(gelu, nn.GELU) and gelu.approximate == 'none' and isinstance(bn, BatchNorm2d)
                    and bn.wide_path(x)):
                x, i = bn.forward_gelu(x), i + 2
            else:
                x, i = gelu(x), i + 1
        return x


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
            GemmGradConv2d(half, half, 3, stride=1, padding=1, bias=False),
            nn.GELU(),
            BatchNorm2d(half),
            GemmGradConv2d(half, dims[0], 2, stride=2, bias=False))
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(dims[i], eps=1e-6), GemmGradConv2d(dims[i], dims[i + 1], 2, stride=2)))
        self.stages = self.make_stages(depths, dpr, lambda i, j, dp: Conv2FormerBlock(
            dims[i], k, arch['mlp_ratio'], dp, arch['layer_scale_init']))
        self.apply(self._init_module)
