"""MetaFormer baselines (Yu et al., "MetaFormer Baselines for Vision", TPAMI 2024): IdentityFormer, RandFormer,
PoolFormerV2, ConvFormer and CAFormer as multi-scale backbones.

One implementation serves the five families; they differ only in their token mixers and block norms:

=============== ============================================ =========================== ====================
family          token mixers (stages 1-4)                    block norms                 sizes
=============== ============================================ =========================== ====================
IdentityFormer  identity x4                                  over (H, W, C) jointly      s12 s24 s36 m36 m48
RandFormer      identity, identity, random mixing x2         over (H, W, C) jointly      s12 s24 s36 m36 m48
PoolFormerV2    pooling x4 (avg 3x3 minus identity)          over (H, W, C) jointly      s12 s24 s36 m36 m48
ConvFormer      SepConv x4                                   over C                      s18 s36 m36 b36
CAFormer        SepConv, SepConv, attention x2               over C                      s18 s36 m36 b36
=============== ============================================ =========================== ====================

Every block: ``x = res_scale1(x) + DropPath(mixer(norm1(x)))``, then the same with ``norm2`` and the MLP
(Linear C->4C -> StarReLU -> Linear 4C->C, no biases). Res scales (learnable [C], init 1) exist only in
stages 3-4; there is no layer scale. All block norms and the stem/downsample norms have a weight and no bias,
eps 1e-6; the stem (conv 7x7 s4 p2) normalises after its conv, the downsamplers (conv 3x3 s2 p1) before it,
both over C. The blocks run NHWC as in the official code (``stage_layout = 'nhwc'``: the stem and downsamplers
hand on NCHW views of NHWC memory, channels_last strides, no copy) and the output norms are LayerNorms over
channels on the stage outputs. The 3x3 s2 p1 downsamplers round odd sizes up: 800x1333 gives 200x333,
100x167, 50x84, 25x42.

Parameter names are the official sail-sg/metaformer ones (``downsample_layers.0.{conv,post_norm}``,
``downsample_layers.i.{pre_norm,conv}``, ``stages.s.b.{norm1,norm2,token_mixer.*,mlp.*,res_scale{1,2}.scale}``),
so the released files (plain state dicts: ImageNet-1K, 22K and 22K->1K) load unchanged. timm's layout
(``poolformerv2_*``, ``convformer_*``, ``caformer_*``: ``stem.*``, ``stages.i.downsample.*``,
``stages.s.blocks.b.*``, 1x1-conv weights in the NCHW stages) is converted on load. The classifier
(``norm.*``, ``head.*`` or the MLP head ``head.{fc1,norm,fc2}.*``) is dropped.

**Zero padding and the (H, W, C) norms.** IdentityFormer, RandFormer and PoolFormerV2 normalise each block
input over all positions and channels of the sample (GroupNorm with one group). The zeros that mmdet/mmseg
add to pad a batch therefore enter the mean and variance, and they shift every feature of the image, not
only those near the padding: the same image gives (deterministically) different features alone and in a
batch with a larger image. This is the official model's behaviour and is kept. ConvFormer and CAFormer
normalise over C only; padding reaches them only through the receptive fields (and, in CAFormer, as keys of
the global attention, which are not masked).
"""
import math
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import FamilyOption, MultiScaleBackbone
from .layers import DepthwiseConv2d, check_choice, is_tracing, maybe_drop_path
from .registry import register_family

ATTN_IMPLS = ('sdpa', 'explicit')
RESAMPLE_MODES = ('bilinear', 'nearest', 'none')
MIXERS = ('identity', 'random', 'pool', 'sepconv', 'attention')
NORMS = ('hwc', 'c')


# ---------------------------------------------------------------------------------------------- layers
class _StarReLUFunction(torch.autograd.Function):
    """``scale * relu(x) ** 2 + bias`` in two passes over the map, saving only ``relu(x)`` for backward
    (autograd of the plain formula runs four forward kernels and keeps two map-sized tensors)."""

    @staticmethod
    def forward(ctx, x, scale, bias):
        r = F.relu(x)
        ctx.save_for_backward(r, scale)
        y = r * r
        return y.mul_(scale).add_(bias)

    @staticmethod
    def backward(ctx, g):
        r, scale = ctx.saved_tensors
        gr = g * r
        gscale = gbias = None
        if ctx.needs_input_grad[1]:
            gscale = torch.dot(gr.reshape(-1), r.reshape(-1)).reshape(1)
        if ctx.needs_input_grad[2]:
            gbias = g.sum().reshape(1)
        gx = gr.mul_(2 * scale) if ctx.needs_input_grad[0] else None
        return gx, gscale, gbias


class StarReLU(nn.Module):
    """``scale * relu(x) ** 2 + bias`` with learnable scalars (stored as 1-element vectors).

    float32 maps run a fused autograd function (training) or in-place ops (inference); other dtypes (AMP)
    take the plain formula, whose type promotion (a half map times a float32 scale gives float32) is kept.
    """

    def __init__(self, scale_value: float = 1.0, bias_value: float = 0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(scale_value)))
        self.bias = nn.Parameter(torch.full((1,), float(bias_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.scale.dtype or x.dtype != self.bias.dtype:
            return self.scale * F.relu(x) ** 2 + self.bias
        if torch.is_grad_enabled():
            return _StarReLUFunction.apply(x, self.scale, self.bias)
        # inference: one new tensor instead of four (on CPU each fresh large tensor costs page faults)
        y = F.relu(x)
        return y.mul_(y).mul_(self.scale).add_(self.bias)


class Scale(nn.Module):
    """Per-channel learnable scale of an NHWC tensor (the official res scale)."""

    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class LayerNormNoBias(nn.Module):
    """LayerNorm over the last (channel) axis of an NHWC tensor, weight only."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, None, self.eps)


class JointNormNoBias(nn.Module):
    """Normalise an NHWC tensor over (H, W, C) jointly per sample, then scale each channel (weight only).

    The official ``LayerNormGeneral(normalized_dim=(1, 2, 3), bias=False)``, i.e. GroupNorm with one group:
    computed by ``F.group_norm`` on the channels-last NCHW view of the NHWC memory (one fused kernel with a
    channels-last path; no copy; half-precision inputs are reduced in float32 by the kernel). On CPU at
    detection sizes this is ~10x faster than ``var_mean`` plus three elementwise passes.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.permute(0, 3, 1, 2)
        if xc.device.type == 'cpu' and not x.requires_grad and self.weight.requires_grad and torch.is_grad_enabled():
            # torch's CPU group_norm backward segfaults (torch 2.12) on a channels-last input that needs no
            # gradient while the weight does: the first norm after a frozen stem (frozen_stages=0). A
            # contiguous copy takes the kernel's other path (tests/test_backbone_contract.py, frozen_stages).
            y = F.group_norm(xc.contiguous(), 1, self.weight, None, self.eps)
            return y.permute(0, 2, 3, 1).contiguous().to(x.dtype)  # NHWC out, as on the fast path
        y = F.group_norm(xc, 1, self.weight, None, self.eps)
        return y.permute(0, 2, 3, 1).to(x.dtype)  # autocast runs group_norm in float32: keep the input's dtype


def pointwise(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` for an NHWC map. On CPU it runs as a 1x1 convolution on the channels-last NCHW view of the
    same memory (no copy): oneDNN's 1x1 convolution is 10-30% faster than the GEMM of ``nn.Linear`` for
    forward+backward at detection sizes (and the official Linear weights are kept: a [out, in] matrix is
    the [out, in, 1, 1] kernel). Elsewhere (CUDA: cuBLAS) it is the plain Linear."""
    if x.device.type == 'cpu' and x.dim() == 4:
        y = F.conv2d(x.permute(0, 3, 1, 2), layer.weight[:, :, None, None], layer.bias)
        return y.permute(0, 2, 3, 1)
    return layer(x)


class MetaFormerMlp(nn.Module):
    """Linear C->rC -> StarReLU -> Linear rC->C, no biases (official ``Mlp``), on NHWC maps."""

    def __init__(self, dim: int, mlp_ratio: float = 4):
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.act = StarReLU()
        self.fc2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(self.act(pointwise(x, self.fc1)), self.fc2)


class SepConv(nn.Module):
    """Inverted separable conv: Linear C->2C -> StarReLU -> depthwise KxK -> Linear 2C->C (no biases)."""

    def __init__(self, dim: int, expansion_ratio: float = 2, kernel_size: int = 7):
        super().__init__()
        mid = int(expansion_ratio * dim)
        self.pwconv1 = nn.Linear(dim, mid, bias=False)
        self.act1 = StarReLU()
        self.dwconv = DepthwiseConv2d(mid, kernel_size, bias=False)
        self.pwconv2 = nn.Linear(mid, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(pointwise(x, self.pwconv1))
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return pointwise(x, self.pwconv2)


class Pooling(nn.Module):
    """``avgpool3x3(x) - x`` (stride 1, padding excluded from the average)."""

    def __init__(self, pool_size: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) - x


class Attention(nn.Module):
    """Global multi-head self-attention over all H*W tokens (qkv and proj without bias).

    ``impl='sdpa'`` uses ``F.scaled_dot_product_attention`` (fused / memory-efficient kernels: the
    (heads, N, N) matrix is never stored, which is what makes detection-size inputs trainable);
    ``impl='explicit'`` materialises ``softmax(q k^T * d^-0.5)`` as the official code does. Both give the same
    values within float rounding.
    """

    def __init__(self, dim: int, head_dim: int = 32, impl: str = 'sdpa'):
        super().__init__()
        self.head_dim = head_dim
        self.num_heads = max(dim // head_dim, 1)
        self.attention_dim = self.num_heads * head_dim
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, self.attention_dim * 3, bias=False)
        self.proj = nn.Linear(self.attention_dim, dim, bias=False)
        self.impl = check_choice('attn_impl', impl, ATTN_IMPLS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        N = H * W
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.impl == 'sdpa':
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
            x = attn.softmax(dim=-1) @ v
        x = x.transpose(1, 2).reshape(B, H, W, self.attention_dim)
        return self.proj(x)

    def extra_repr(self) -> str:
        return f'heads={self.num_heads}, head_dim={self.head_dim}, impl={self.impl!r}'


def resample_token_mixing(matrix: torch.Tensor, src_hw: Tuple[int, int], dst_hw: Tuple[int, int],
                          mode: str = 'bilinear') -> torch.Tensor:
    """Resample an (h*w, h*w) token-mixing matrix to (H*W, H*W), rows renormalised to sum to 1.

    The matrix is read as a 4-D kernel ``M[hq, wq, hk, wk]`` over the query and the key grids (row-major
    tokens, as ``x.reshape(B, H*W, C)`` orders them) and resized along the key grid, then along the query grid
    (``F.interpolate``, ``align_corners=False``: grid cells are areas covering the image, so a token keeps
    looking at the same image region; antialiased when a grid shrinks). Each row is then divided by its sum,
    so every output token is again a convex combination of input tokens (the official matrix is a row
    softmax). At ``dst_hw == src_hw`` the matrix is returned unchanged.
    """
    mode = check_choice('rand_resample', mode, RESAMPLE_MODES)
    (h0, w0), (H, W) = tuple(src_hw), tuple(dst_hw)
    if matrix.shape != (h0 * w0, h0 * w0):
        raise ValueError(f'matrix of shape {tuple(matrix.shape)} is not ({h0 * w0}, {h0 * w0}) for a {h0}x{w0} grid')
    if (H, W) == (h0, w0):
        return matrix
    if mode == 'none':
        raise ValueError(f'this random-mixing matrix is defined for a {h0}x{w0} token grid but got {H}x{W} '
                         f"(rand_resample='none' keeps the official behaviour, which only runs at 224x224 input); "
                         f"use rand_resample='bilinear' or 'nearest' to resample it")

    def resize(t: torch.Tensor) -> torch.Tensor:  # (n, h, w) -> (n, H, W)
        if mode == 'nearest':
            return F.interpolate(t[:, None], size=(H, W), mode='nearest-exact')[:, 0]
        shrink = H < t.shape[-2] or W < t.shape[-1]
        return F.interpolate(t[:, None], size=(H, W), mode='bilinear', align_corners=False,
                             antialias=shrink)[:, 0]

    m = matrix.float().reshape(h0 * w0, h0, w0)           # [q, hk, wk]
    m = resize(m)                                         # [q, HK, WK]
    m = m.reshape(h0, w0, H * W).permute(2, 0, 1)         # [K, hq, wq]
    m = resize(m.contiguous())                            # [K, HQ, WQ]
    m = m.reshape(H * W, H * W).t().contiguous()          # [Q, K]
    m = m.clamp_min_(0)
    m = m / m.sum(dim=-1, keepdim=True)
    return m.to(matrix.dtype)


class RandomMixing(nn.Module):
    """Token mixing by a frozen random row-stochastic matrix (``random_matrix``, a parameter that never trains).

    The matrix belongs to a fixed token grid (14x14 in stage 3 and 7x7 in stage 4 at 224x224 input). At any
    other grid size it is resampled with :func:`resample_token_mixing` (``resample``: 'bilinear', 'nearest' or
    'none' = refuse, as the official code fails) and the result is cached for the last ``cache_size`` sizes
    (the cache follows in-place changes of the matrix, e.g. loading a checkpoint).
    """

    def __init__(self, num_tokens: int = 196, resample: str = 'bilinear', cache_size: int = 1):
        super().__init__()
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f'random mixing needs a square token grid; {num_tokens} tokens is not a square')
        self.grid = (side, side)
        self.random_matrix = nn.Parameter(torch.softmax(torch.rand(num_tokens, num_tokens), dim=-1),
                                          requires_grad=False)
        self.resample = check_choice('rand_resample', resample, RESAMPLE_MODES)
        self.cache_size = int(cache_size)
        self._cache: 'OrderedDict[tuple, torch.Tensor]' = OrderedDict()

    def matrix_for(self, H: int, W: int) -> torch.Tensor:
        """The (H*W, H*W) mixing matrix for an HxW token grid."""
        m = self.random_matrix
        if (H, W) == self.grid:
            return m
        if m.requires_grad or is_tracing():  # unfrozen (autograd) or traced (export): no cache
            return resample_token_mixing(m, self.grid, (H, W), self.resample)
        key = (H, W, self.resample, m.device, m.dtype, m.data_ptr(), m._version)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        with torch.no_grad():
            out = resample_token_mixing(m, self.grid, (H, W), self.resample)
        if self.cache_size > 0:
            self._cache[key] = out
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        m = self.matrix_for(H, W)
        return torch.matmul(m.to(x.dtype), x.reshape(B, H * W, C)).reshape(B, H, W, C)

    def extra_repr(self) -> str:
        return f'grid={self.grid}, resample={self.resample!r}, cache_size={self.cache_size}'


class MetaFormerBlock(nn.Module):
    def __init__(self, dim: int, mixer: nn.Module, norm: str, mlp_ratio: float = 4, drop_path: float = 0.0,
                 res_scale_init: Optional[float] = None):
        super().__init__()
        norm_layer = JointNormNoBias if norm == 'hwc' else LayerNormNoBias
        self.norm1 = norm_layer(dim)
        self.token_mixer = mixer
        self.drop_path1 = maybe_drop_path(drop_path)
        self.res_scale1 = Scale(dim, res_scale_init) if res_scale_init else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = MetaFormerMlp(dim, mlp_ratio)
        self.drop_path2 = maybe_drop_path(drop_path)
        self.res_scale2 = Scale(dim, res_scale_init) if res_scale_init else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_scale1(x) + self.drop_path1(self.token_mixer(self.norm1(x)))
        x = self.res_scale2(x) + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class MetaFormerStem(nn.Module):
    """Conv 7x7 s4 p2 -> LayerNorm over C (weight only, on the NHWC view). NCHW in and out (channels_last
    memory)."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, dim, 7, stride=4, padding=2)
        self.post_norm = LayerNormNoBias(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post_norm(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class MetaFormerDownsample(nn.Module):
    """LayerNorm over C (weight only, on the NHWC view) -> conv 3x3 s2 p1. NCHW in and out."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.pre_norm = LayerNormNoBias(in_dim)
        self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pre_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


def _needs_mixer(kind: str, name: str):
    """The ``check`` of a family keyword that only applies to ``kind`` token mixers."""
    def check(cls, arch: dict, value) -> None:
        if kind not in arch['token_mixers']:
            raise ValueError(f'{name} applies to {kind} token mixers; {cls.__name__} (token_mixers '
                             f'{tuple(arch["token_mixers"])}) has none')
    return check


# ---------------------------------------------------------------------------------------------- backbones
_S_M = dict(
    s12=dict(depths=[2, 2, 6, 2], dims=[64, 128, 320, 512]),
    s24=dict(depths=[4, 4, 12, 4], dims=[64, 128, 320, 512]),
    s36=dict(depths=[6, 6, 18, 6], dims=[64, 128, 320, 512]),
    m36=dict(depths=[6, 6, 18, 6], dims=[96, 192, 384, 768]),
    m48=dict(depths=[8, 8, 24, 8], dims=[96, 192, 384, 768]),
)
_CONV_SIZES = dict(
    s18=dict(depths=[3, 3, 9, 3], dims=[64, 128, 320, 512]),
    s36=dict(depths=[3, 12, 18, 3], dims=[64, 128, 320, 512]),
    m36=dict(depths=[3, 12, 18, 3], dims=[96, 192, 384, 576]),
    b36=dict(depths=[3, 12, 18, 3], dims=[128, 256, 512, 768]),
)
_COMMON = dict(mlp_ratio=4, res_scale_init=(None, None, 1.0, 1.0), head_dim=32, attn_impl='sdpa',
               sepconv_expansion=2, sepconv_kernel=7, pool_size=3, rand_tokens=(None, None, 196, 49),
               rand_resample='bilinear', rand_cache_size=1)


class MetaFormer(MultiScaleBackbone):
    """The shared MetaFormer-baseline trunk (not registered itself; see the five families below).

    ``arch``: a size name or a dict with ``depths``, ``dims`` and optionally ``token_mixers`` (4 of
    'identity', 'random', 'pool', 'sepconv', 'attention'), ``norm`` ('hwc': over (H, W, C) jointly, 'c': over
    C), ``mlp_ratio``, ``res_scale_init`` (4 values or None), ``head_dim``, ``attn_impl``, ``rand_tokens``,
    ``rand_resample``, ``rand_cache_size``, ``sepconv_kernel``, ``sepconv_expansion``, ``pool_size``; missing
    keys take the family's values.

    Family keywords (:class:`~backbones.base.FamilyOption`; given, they override the arch's value):
    ``attn_impl`` ('sdpa' | 'explicit', attention families) and ``rand_resample`` ('bilinear' | 'nearest' |
    'none', random-mixing families); both can also be switched later with :meth:`set_attn_impl` /
    :meth:`set_rand_resample`.

    Block norms of IdentityFormer / RandFormer / PoolFormerV2 run over (H, W, C) of each sample, so zero
    padding changes every feature of the image (see the module docstring); ConvFormer / CAFormer norms run
    over C.
    """
    stage_layout = 'nhwc'
    family_options = {
        'attn_impl': FamilyOption(choices=ATTN_IMPLS, check=_needs_mixer('attention', 'attn_impl'),
                                  layers=(Attention, 'impl')),
        'rand_resample': FamilyOption(choices=RESAMPLE_MODES, check=_needs_mixer('random', 'rand_resample'),
                                      layers=(RandomMixing, 'resample')),
    }

    def _build(self, arch: dict, in_channels: int, dpr: List[float]) -> None:
        dims, depths = arch['dims'], arch['depths']
        mixers = [check_choice('token_mixers entry', m, MIXERS) for m in arch['token_mixers']]
        res_init = list(arch['res_scale_init']) if isinstance(arch['res_scale_init'], (list, tuple)) \
            else [arch['res_scale_init']] * 4
        rand_tokens = list(arch['rand_tokens'])
        norm = check_choice('norm', arch['norm'], NORMS)
        if len(mixers) != 4 or len(res_init) != 4 or len(rand_tokens) != 4:
            raise ValueError('token_mixers, res_scale_init and rand_tokens need 4 entries (one per stage)')

        def mixer(i: int) -> nn.Module:
            kind, dim = mixers[i], dims[i]
            if kind == 'identity':
                return nn.Identity()
            if kind == 'pool':
                return Pooling(arch['pool_size'])
            if kind == 'sepconv':
                return SepConv(dim, arch['sepconv_expansion'], arch['sepconv_kernel'])
            if kind == 'attention':
                return Attention(dim, arch['head_dim'], arch['attn_impl'])
            if not rand_tokens[i]:
                raise ValueError(f'stage {i} uses random mixing but rand_tokens[{i}] is {rand_tokens[i]!r}')
            return RandomMixing(rand_tokens[i], arch['rand_resample'], arch['rand_cache_size'])

        self.downsample_layers = nn.ModuleList([MetaFormerStem(in_channels, dims[0])])
        for i in range(3):
            self.downsample_layers.append(MetaFormerDownsample(dims[i], dims[i + 1]))
        self.stages = self.make_stages(depths, dpr, lambda i, j, dp: MetaFormerBlock(
            dims[i], mixer(i), norm, arch['mlp_ratio'], dp, res_init[i]))
        self.apply(self._init_module)

    # ------------------------------------------------------------------ switches
    def set_attn_impl(self, impl: str) -> None:
        """'sdpa' (fused) or 'explicit' (materialised softmax(QK^T), as the official code) for every attention."""
        self.set_option('attn_impl', impl)

    def set_rand_resample(self, mode: str) -> None:
        """How random-mixing matrices are applied at token grids other than their own (see RandFormer)."""
        self.set_option('rand_resample', mode)

    # ------------------------------------------------------------------ checkpoints
    _LINEAR_AS_CONV = ('token_mixer.pwconv1.weight', 'token_mixer.pwconv2.weight', 'mlp.fc1.weight',
                       'mlp.fc2.weight')

    @classmethod
    def convert_checkpoint(cls, state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], str]:
        """Official sail-sg keys pass unchanged; timm's MetaFormer layout is mapped onto them.

        timm: ``stem.{conv,norm}`` -> ``downsample_layers.0.{conv,post_norm}``; ``stages.i.downsample.{norm,conv}``
        -> ``downsample_layers.i.{pre_norm,conv}``; ``stages.s.blocks.b.`` -> ``stages.s.b.``; the 1x1-conv
        weights ([O, I, 1, 1]) of the NCHW stages -> Linear weights ([O, I]); ``head.norm`` -> ``norm``,
        ``head.fc.*`` -> ``head.*`` (both dropped afterwards as classifier).
        """
        keys = list(state_dict)
        if any(k.startswith('network.') for k in keys) or any('.layer_scale1' in k or '.layer_scale_1' in k
                                                                  for k in keys):
            from .checkpoint import CheckpointError
            raise CheckpointError(
                f'this looks like a PoolFormer (v1) checkpoint (GroupNorm with bias, layer scales, GELU MLP with '
                f'biases); {cls.__name__} takes the MetaFormer-baselines weights (sail-sg/metaformer, or timm '
                f'poolformerv2_* / convformer_* / caformer_*)')
        if 'stem.conv.weight' not in state_dict:
            return state_dict, 'official'
        out = {}
        for k, v in state_dict.items():
            if k.startswith('stem.'):
                k = 'downsample_layers.0.' + k[len('stem.'):].replace('norm.', 'post_norm.')
            elif k.startswith('stages.') and '.downsample.' in k:
                i, rest = k[len('stages.'):].split('.downsample.', 1)
                k = f'downsample_layers.{i}.' + rest.replace('norm.', 'pre_norm.')
            elif k.startswith('stages.') and '.blocks.' in k:
                k = k.replace('.blocks.', '.', 1)
                if k.endswith(cls._LINEAR_AS_CONV) and v.ndim == 4 and tuple(v.shape[2:]) == (1, 1):
                    v = v.flatten(1)
            elif k.startswith('head.norm.'):
                k = k[len('head.'):]
            elif k.startswith('head.fc.'):
                k = 'head.' + k[len('head.fc.'):]
            out[k] = v
        return out, 'timm'

    def no_weight_decay(self) -> List[str]:
        """Nothing beyond the 1-D rule: res scales ([C]) and StarReLU scalars ([1]) are 1-D, and the random
        mixing matrices never train (``requires_grad=False``, so no optimizer sees them)."""
        return []


@register_family
class IdentityFormer(MetaFormer):
    """IdentityFormer: identity token mixers, block norms over (H, W, C) (zero padding enters their
    statistics, see :class:`MetaFormer`). Sizes s12, s24, s36, m36, m48."""
    family = 'identityformer'
    arch_settings = _S_M
    arch_defaults = dict(_COMMON, token_mixers=('identity',) * 4, norm='hwc')


@register_family
class RandFormer(MetaFormer):
    """RandFormer: identity mixers in stages 1-2, frozen random token mixing in stages 3-4, block norms over
    (H, W, C). Sizes s12, s24, s36, m36, m48.

    **Any input size.** Each stage-3/4 block holds a frozen row-softmaxed matrix for a fixed token grid
    (196 = 14x14 and 49 = 7x7: the official model only runs at 224x224). Here a matrix is read as a 4-D
    kernel ``M[hq, wq, hk, wk]`` over the query and key grids, resized bilinearly (``align_corners=False``,
    antialiased when shrinking) along both grids to the current ``(H, W, H, W)``, and each row is renormalised
    to sum to 1, so every token stays a convex combination of tokens and looks at the same image regions, in
    relative image coordinates, as at 224. At 224 the official matrix is used as is (identical outputs).
    ``rand_resample='nearest'`` uses nearest-neighbour resizing instead; ``'none'`` refuses other sizes like
    the official code. Resampled matrices are cached per size (the last ``rand_cache_size`` sizes per block,
    default 1). Cost: the matrix has (H*W)^2 entries: at 1333x800 input stage 3 has 84x50 = 4,200 tokens,
    i.e. 17.6M entries (70 MB fp32) per block, plus 4,200^2*C multiply-adds per block; stage 4 is 1/16 of
    that. All five sizes hold one such matrix per stage-3 block (6-24 blocks).
    """
    family = 'randformer'
    arch_settings = _S_M
    arch_defaults = dict(_COMMON, token_mixers=('identity', 'identity', 'random', 'random'), norm='hwc')


@register_family
class PoolFormerV2(MetaFormer):
    """PoolFormerV2: pooling token mixers (avgpool3x3(x) - x), block norms over (H, W, C) (zero padding
    enters their statistics, see :class:`MetaFormer`). Sizes s12, s24, s36, m36, m48."""
    family = 'poolformerv2'
    arch_settings = _S_M
    arch_defaults = dict(_COMMON, token_mixers=('pool',) * 4, norm='hwc')


@register_family
class ConvFormer(MetaFormer):
    """ConvFormer: SepConv token mixers (dw 7x7), block norms over C. Sizes s18, s36, m36, b36."""
    family = 'convformer'
    arch_settings = _CONV_SIZES
    arch_defaults = dict(_COMMON, token_mixers=('sepconv',) * 4, norm='c')


@register_family
class CAFormer(MetaFormer):
    """CAFormer: SepConv in stages 1-2, global attention (head dim 32) in stages 3-4, block norms over C.
    Sizes s18, s36, m36, b36.

    Attention runs through ``F.scaled_dot_product_attention`` by default (``attn_impl='sdpa'``); at
    800x1216 stage 3 has 3,800 tokens and the official explicit softmax(QK^T) would store a
    (heads, 3800, 3800) matrix per block for backward. ``attn_impl='explicit'`` restores it (for comparisons).
    Padding tokens are attended (not masked), as in every global-attention detection backbone here.
    """
    family = 'caformer'
    arch_settings = _CONV_SIZES
    arch_defaults = dict(_COMMON, token_mixers=('sepconv', 'sepconv', 'attention', 'attention'), norm='c')
