"""The unified token-mixer models of "Demystify Transformers & Convolutions in Modern Image Deep Networks"
(Lin et al., arXiv 2211.05781; OpenGVLab/STM-Evaluation): one meta-architecture, five token mixers.

========================= ======================= =========================================== ==================
family (registered type)  table names             token mixer                                 sizes
========================= ======================= =========================================== ==================
``UnifiedHalo``           ``unified_halo_*``      Halo attention: 7x7 query blocks, 13x13     micro tiny small
                                                  key windows (halo 3), query-dependent       base
                                                  relative logits
``UnifiedPVT``            ``unified_pvt_*``       PVT-v1 spatial-reduction attention (keys    micro tiny small
                                                  and values from a conv k=s=8/4/2/1) and an  base
                                                  absolute position embedding per stage
``UnifiedSwin``           ``unified_swin_*``      7x7 window attention, shifted by 3 on every micro tiny small
                                                  odd block, relative position bias           base
``UnifiedConvNeXt``       ``unified_convnext_*``  LN -> 1x1 -> dw 7x7 -> 1x1 (the paper's      micro tiny small
                                                  "unified ConvNeXt" block)                   base
``UnifiedDCNv3``          ``unified_dcn_v3_*``    deformable sampling of 9 points per head    micro tiny small
                                                  around a fixed 3x3 grid (Deformable-DETR    base large
                                                  single-level kernel; "U-InternImage")
========================= ======================= =========================================== ==================

The trunk (all five): stem = conv 3x3 s2 (C/2, bias) -> LN -> GELU -> conv 3x3 s2 (C, bias) -> LN; downsamplers
= conv 3x3 s2 (no bias) -> LN (norm after the conv); every block is pre-norm with two residual branches, layer
scales (init 1e-6) and an MLP (ratio 4; PVT 8/8/4/4, base 4). Parameter names are the official ones
(``downsample_layers.0.stem.*``, ``downsample_layers.i.reduction.*``, ``stages.s.b.*``), so the released
ImageNet checkpoints (``{'model': ...}``) load through the strict loader; the classifier (``conv_head.*``,
``head.*``) and cached buffers (Swin's ``attn_mask`` and the ``relative_position_index`` that timm 0.6.7
persisted) are dropped.

**This is the detection variant** (``detection/mmdet_custom/models/backbones`` of STM-Evaluation, the code
behind the published COCO numbers). It differs from the classification models in these ways (all kept):

1. Stage norms. Classification applies a LayerNorm (``stage_norms.i``) after every stage, feeding the next
   downsampler. The detection code discards these pretrained norms (the next downsampler sees un-normalised
   features) and adds fresh output norms (``out_norm_i`` there, ``out_norms.i`` here) that only normalise the
   returned maps. That is the default here (``stage_norms='skip'``; the checkpoint's ``stage_norms.*`` are
   dropped on load). ``stage_norms='keep'`` instead builds ``stage_norms`` and applies them between stages as
   in classification (loaded from the checkpoint; the returned maps are the stage-normalised ones, then
   ``out_norms`` if ``out_norm=True``).
2. PVT: the residual is taken *before* the position embedding is added (classification adds the embedding
   into the residual path); the embedding (stored at the 224-input grid, 56/28/14/7) is resized bilinearly
   with ``align_corners=True`` to the current feature size on every forward; the spatial-reduction conv
   (kernel = stride = sr) drops leftover rows/columns.
3. Swin: every odd block shifts by 3, stage 4 included (classification disables the shift where a stage is no
   larger than the window); the shift masks are built for the actual (padded) size; features are zero-padded
   right/bottom to a multiple of 7 and the padding is attended, not masked.
4. Halo: features are zero-padded right/bottom to a multiple of 7 (block size); only the halo border outside
   the padded map is masked, so padded zeros are attended.
5. DCNv3: the fixed 3x3 sampling grid is built as (y, x) but read as (x, y) (point ``3*i + j`` gets x-offset
   ``i - 1`` and y-offset ``j - 1``); values are zero-padded by 1 px and sampling locations are normalised by the
   padded size. The official code derives the reference points from the *input* size divided by 2^(i+2),
   so it only runs on inputs divisible by 32; here they come from the actual feature size, which gives
   identical results at such sizes and works at any size.

Everything runs in pure PyTorch. The DCNv3 sampling is bilinear ``F.grid_sample`` (the algorithm of mmcv's
``multi_scale_deformable_attn_pytorch``); on CUDA tensors, when mmcv's compiled
``MultiScaleDeformableAttnFunction`` is importable, it is used instead (same values, less memory;
``dcn_impl='pytorch'`` forces the pure path). Attention uses ``F.scaled_dot_product_attention`` (Swin and Halo:
an explicit matmul-softmax-matmul when recording a CPU graph for backward, which is cheaper there).

Any input size works: the stem rounds odd sizes up (333 -> 167 -> 84 -> 42 for 1333), Halo and Swin pad inside
each block and crop back, PVT resizes its embeddings, DCNv3 computes its reference points per forward. Only
PVT's spatial reduction (an sr x sr convolution, sr 8 at stride 4) needs 29 pixels per side
(``min_input_size()``; smaller inputs get a ValueError saying so).
"""
import contextlib
import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import FamilyOption, MultiScaleBackbone
from .layers import DepthwiseConv2d, LayerNorm2d, is_tracing, maybe_drop_path, mlp_gelu
from .registry import register_family

STAGE_NORM_MODES = ('skip', 'keep')
DCN_IMPLS = ('auto', 'pytorch', 'mmcv')


# ---------------------------------------------------------------------------------------------- shared layers
class UnifiedMlp(nn.Module):
    """Linear -> GELU -> Linear on the last axis (official ``mlp.fc1`` / ``mlp.fc2``); on CPU float32 through
    :func:`~backbones.layers.mlp_gelu` (one autograd node in training, fc1's GELU in oneDNN's GEMM in
    inference)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)  # the exact GELU between them is in mlp_gelu
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mlp_gelu(x, self.fc1, self.fc2)


class UnifiedStem(nn.Module):
    """conv 3x3 s2 (C/2) -> LN -> GELU -> conv 3x3 s2 (C) -> LN; keys ``stem.{0,1,3,4}``."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        half = dim // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, half, 3, stride=2, padding=1), LayerNorm2d(half, eps=1e-6), nn.GELU(),
            nn.Conv2d(half, dim, 3, stride=2, padding=1), LayerNorm2d(dim, eps=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


class UnifiedDownsample(nn.Module):
    """conv 3x3 s2 (no bias) -> LN; keys ``reduction.{0,1}``.

    The input is the previous stage's NHWC map seen as NCHW (channels_last strides). Under autograd, and in
    eval from 384 input channels, it is first made NCHW-contiguous, as the official stage does with
    ``.contiguous()``: oneDNN's channels_last weight gradient of this conv reorders a blocked buffer that it
    page-faults in anew in every call, and its channels_last forward is slower for the deep stages. Measured
    (conv alone with the copy included, ms, channels_last vs contiguous, 2 threads, Zen 4): fwd+bwd at 224,
    384->768 23.6 (2592 faults) vs 14.0 (0), 192->384 12.3 vs 9.9; at 512x512 384->768 58.5 vs 26.7; at
    800x1216 192->384 130 vs 93, 96->192 127 vs 124; eval forward at 224 384->768 6.2 vs 3.9, but 96->192 1.6
    vs 2.5 and 192->384 at 800x1216 24.6 vs 31.8 (these stay channels_last). Same values within float rounding.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.reduction = nn.Sequential(nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1, bias=False),
                                       LayerNorm2d(out_dim, eps=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or self.reduction[0].in_channels >= 384:
            x = x.contiguous()
        return self.reduction(x)


def _pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Zero-pad an NHWC tensor right/bottom so that H and W are multiples of ``m``."""
    H, W = x.shape[1], x.shape[2]
    pad_b, pad_r = (-H) % m, (-W) % m
    if pad_b or pad_r:
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    return x


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
               scale: Optional[float] = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v. On CPU explicitly: matmul, scale and bias added in place (one
    logits-sized tensor, which autograd does not keep), softmax, matmul. For the short window sequences of Swin
    and Halo (49 queries, 49 or 169 keys, head dim 32) that is faster than ``F.scaled_dot_product_attention``'s
    CPU flash kernel: eval 10-45% per call (e.g. 4 Swin windows x 12 heads: 0.29 vs 0.50 ms; 192 Halo blocks x
    heads: 3.5-3.8 vs 4.3 ms), and SDPA's CPU backward recomputes more. Elsewhere SDPA (fused GPU kernels).
    Same values within float rounding."""
    if q.device.type == 'cpu':
        attn = torch.matmul(q, k.transpose(-2, -1)).mul_(q.shape[-1] ** -0.5 if scale is None else scale)
        return attn.add_(bias).softmax(-1) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


# ---------------------------------------------------------------------------------------------- ConvNeXt
class UnifiedConvNeXtBlock(nn.Module):
    """The unified ConvNeXt block (``ConvNeXtV3Block`` in the official detection code). NHWC in and out (the
    family's ``stage_layout``: the stage permutes once before its first block and back after its last).

    ``x + g1 * 1x1(dw7x7(1x1(LN x)))``, then ``x + g2 * Linear(GELU(Linear(LN x)))``. The three convolutions
    run on a channels-last view of the NHWC map (oneDNN keeps that layout): no layout copies inside the block
    (the official block permutes to and from NCHW with ``.contiguous()``; same values within float rounding).
    The 7x7 is a :class:`~backbones.layers.DepthwiseConv2d`: oneDNN's depthwise weight gradient on a
    channels_last map allocates a ``C x k x k x 256`` float buffer, 38.5 MB at C 768, more than glibc keeps on
    its heap, so every call page-faulted it in anew (measured: 768 ch, 7x7 map, 2 threads: 12.8 ms and 9409
    faults, against 0.22 ms with its own weight gradient; unified_convnext_tiny fwd+bwd at 224: 1.00 -> 0.89x
    the official code).
    """

    def __init__(self, dim: int, drop_path: float, layer_scale_init: float, kernel_size: int = 7,
                 mlp_ratio: float = 4, **_):
        super().__init__()
        self.dw_norm = LayerNorm2d(dim, eps=1e-6)
        self.dw_input_proj = nn.Conv2d(dim, dim, 1)
        self.dwconv = DepthwiseConv2d(dim, kernel_size)
        self.dw_out_proj = nn.Conv2d(dim, dim, 1)
        self.gamma_1 = nn.Parameter(torch.full((1, dim, 1, 1), float(layer_scale_init)))
        self.pw_norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, int(mlp_ratio * dim))  # GELU between the two: mlp_gelu
        self.pwconv2 = nn.Linear(int(mlp_ratio * dim), dim)
        self.gamma_2 = nn.Parameter(torch.full((1, 1, 1, dim), float(layer_scale_init)))
        self.drop_path = maybe_drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C)."""
        n = self.dw_norm
        y = F.layer_norm(x, n.normalized_shape, n.weight, n.bias, n.eps).permute(0, 3, 1, 2)  # channels-last view
        y = self.dw_out_proj(self.dwconv(self.dw_input_proj(y))).permute(0, 2, 3, 1)
        x = x + self.drop_path(self.gamma_1.view(-1) * y)
        y = mlp_gelu(self.pw_norm(x), self.pwconv1, self.pwconv2)
        return x + self.drop_path(self.gamma_2 * y)


# ---------------------------------------------------------------------------------------------- Swin
def _window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws*ws, C), windows in row-major order per image."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B * (H // ws) * (W // ws), ws * ws, C)


def _window_merge(x: torch.Tensor, ws: int, B: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`_window_partition`."""
    C = x.shape[-1]
    x = x.view(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


def _relative_position_index(ws: int) -> torch.Tensor:
    """(ws*ws, ws*ws) index into a (2ws-1)^2 table: (dy + ws - 1) * (2ws - 1) + (dx + ws - 1)."""
    ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + ws - 1
    dx = xs[:, None] - xs[None, :] + ws - 1
    return dy * (2 * ws - 1) + dx


def _shift_mask(H: int, W: int, ws: int, shift: int, device) -> torch.Tensor:
    """(nW, ws*ws, ws*ws) additive mask (0 / -100) of the shifted windows of an HxW (padded) map.

    Regions: rows/cols [0, H-ws), [H-ws, H-shift), [H-shift, H) (same for W); tokens of different regions
    inside one window do not attend to each other.
    """
    def labels(n: int) -> torch.Tensor:
        lab = torch.zeros(n, dtype=torch.long, device=device)
        lab[max(n - ws, 0):] = 1
        lab[max(n - shift, 0):] = 2
        return lab
    region = (labels(H)[:, None] * 3 + labels(W)[None, :]).to(torch.float32)
    win = _window_partition(region[None, :, :, None], ws)[..., 0]  # (nW, N)
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros_like(diff).masked_fill_(diff != 0, -100.0)


class WindowAttention(nn.Module):
    """Multi-head attention inside ws x ws windows with a relative position bias (qkv with bias).

    Keys ``qkv``, ``proj``, ``relative_position_bias_table`` ((2ws-1)^2, heads); the index is a
    non-persistent buffer.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.qkv = nn.Linear(dim, 3 * self.head_dim * num_heads)
        self.proj = nn.Linear(self.head_dim * num_heads, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer('relative_position_index', _relative_position_index(window_size), persistent=False)

    def rel_bias(self) -> torch.Tensor:
        N = self.window_size ** 2
        idx = self.relative_position_index.view(-1)
        return self.relative_position_bias_table[idx].view(N, N, -1).permute(2, 0, 1)  # (heads, N, N)

    def forward(self, x: torch.Tensor, B: int, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (B * nW, N, C) windows; mask: (nW, N, N) or None."""
        BW, N, _ = x.shape
        nW = BW // B
        q, k, v = self.qkv(x).reshape(BW, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.rel_bias().to(q.dtype)
        if mask is None:
            out = _attention(q, k, v, bias[None])
        else:  # fold the windows into the head axis so that the mask broadcasts over the batch
            bias = (bias[None] + mask[:, None].to(q.dtype)).reshape(1, nW * self.num_heads, N, N)
            q, k, v = (t.reshape(B, nW * self.num_heads, N, self.head_dim) for t in (q, k, v))
            out = _attention(q, k, v, bias)
            out = out.reshape(BW, self.num_heads, N, self.head_dim)
        return self.proj(out.transpose(1, 2).reshape(BW, N, -1))


class SwinBlock(nn.Module):
    """Pre-norm (LayerNorm over C, eps 1e-6) window attention + MLP, layer scales [C]. NCHW in and out.

    Pads right/bottom to a multiple of the window (padding attended), shifts by ws//2 on odd blocks (``depth %
    2 == 1``, every stage), masks built for the padded size and cached for the last size.
    """

    def __init__(self, dim: int, drop_path: float, layer_scale_init: float, num_heads: int, depth: int,
                 window_size: int = 7, mlp_ratio: float = 4, **_):
        super().__init__()
        self.window_size = window_size
        self.shift_size = 0 if depth % 2 == 0 else window_size // 2
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.norm2 = LayerNorm2d(dim, eps=1e-6)
        self.mlp = UnifiedMlp(dim, int(dim * mlp_ratio))
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.drop_path = maybe_drop_path(drop_path)
        self._mask_cache: Tuple = (None, None)

    def _mask(self, H: int, W: int, device) -> torch.Tensor:
        if is_tracing():
            return _shift_mask(H, W, self.window_size, self.shift_size, device)
        key = (H, W, str(device))
        if self._mask_cache[0] != key:
            self._mask_cache = (key, _shift_mask(H, W, self.window_size, self.shift_size, device))
        return self._mask_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H0, W0 = x.shape
        ws, s = self.window_size, self.shift_size
        y = _pad_to_multiple(self.norm1(x).permute(0, 2, 3, 1), ws)
        H, W = y.shape[1], y.shape[2]
        mask = None
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
            mask = self._mask(H, W, y.device)
        y = self.attn(_window_partition(y, ws), B, mask)
        y = _window_merge(y, ws, B, H, W)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        y = y[:, :H0, :W0]
        x = x + self.drop_path((self.gamma_1 * y).permute(0, 3, 1, 2))
        y = self.mlp(self.norm2(x).permute(0, 2, 3, 1))
        return x + self.drop_path((self.gamma_2 * y).permute(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------- Halo
def _divisible(v: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor`` (nearest, never more than 10% below ``v``)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class QueryRelPosEmbed(nn.Module):
    """Query-dependent relative logits (``height_rel``, ``width_rel``: (2*win - 1, head_dim)).

    For a query at (hq, wq) of a block and a key at (kr, kc) of its window the logit is
    ``q . height_rel[kr - hq + win - 1] + q . width_rel[kc - wq + win - 1]``.
    """

    def __init__(self, block_size: int, win_size: int, head_dim: int, scale: float):
        super().__init__()
        self.block_size, self.win_size = block_size, win_size
        self.height_rel = nn.Parameter(torch.randn(2 * win_size - 1, head_dim) * scale)
        self.width_rel = nn.Parameter(torch.randn(2 * win_size - 1, head_dim) * scale)
        pos = torch.arange(win_size)[None, :] - torch.arange(block_size)[:, None] + win_size - 1
        self.register_buffer('rel_index', pos, persistent=False)  # (block, win)

    def forward(self, q: torch.Tensor, border: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """q: (..., nBlk, bs*bs, d) -> logits (..., nBlk, bs*bs, win*win). ``border``: additive (nBlk, 1, 1, win)
        row and column terms (0 or -inf, see :meth:`HaloAttention._border_mask`), added to the two 1-D logits
        before they are broadcast to the full window."""
        bs, win = self.block_size, self.win_size
        q = q.unflatten(-2, (bs, bs))                                   # (..., hq, wq, d)
        rh = self.height_rel[self.rel_index]                            # (hq, kr, d)
        rw = self.width_rel[self.rel_index]                             # (wq, kc, d)
        lh = torch.einsum('...hwd,hkd->...hwk', q, rh)                  # (..., hq, wq, kr)
        lw = torch.einsum('...hwd,wkd->...hwk', q, rw)                  # (..., hq, wq, kc)
        if border is not None:
            lh, lw = lh + border[0], lw + border[1]
        logits = lh[..., :, None] + lw[..., None, :]                    # (..., hq, wq, kr, kc)
        return logits.reshape(*logits.shape[:-4], bs * bs, win * win)


class HaloAttention(nn.Module):
    """Blocked local attention: bs x bs query blocks attend to (bs + 2*halo)^2 windows. NHWC in and out.

    q: Linear (no bias); k/v: one 1x1 conv (no bias) whose channels are, per head, [k (d_qk), v (d_v)];
    proj: Linear. Pads right/bottom to a multiple of bs; keys beyond the padded map (the halo border) are
    masked, padded zeros are not.
    """

    def __init__(self, dim: int, num_heads: int, block_size: int = 7, halo_size: int = 3):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'Halo attention: dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.dim_head_qk = _divisible(dim, 8) // num_heads
        self.dim_head_v = dim // num_heads
        if self.dim_head_qk != self.dim_head_v:
            raise ValueError(f'Halo attention: dim {dim} must be a multiple of 8 (got head dims '
                             f'{self.dim_head_qk}/{self.dim_head_v})')
        self.scale = self.dim_head_qk ** -0.5
        self.block_size, self.halo_size = block_size, halo_size
        self.win_size = block_size + 2 * halo_size
        self.q = nn.Linear(dim, self.dim_head_qk * num_heads, bias=False)
        self.kv = nn.Conv2d(dim, (self.dim_head_qk + self.dim_head_v) * num_heads, 1, bias=False)
        self.pos_embed = QueryRelPosEmbed(block_size, self.win_size, self.dim_head_qk, self.scale)
        self.proj = nn.Linear(self.dim_head_v * num_heads, dim)
        self._mask_cache: Tuple = (None, None)

    def _border_mask(self, H: int, W: int, device, dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """Additive (nBlk, 1, 1, win) row and column terms: -inf where the key row (column) lies outside the
        (padded) map, else 0. A key is outside when its row or its column is, so the two terms added to the
        1-D logits mask exactly the keys beyond the border (without a masked fill of the full logits)."""
        key = (H, W, str(device), dtype)
        if is_tracing() or self._mask_cache[0] != key:
            bs, win, h = self.block_size, self.win_size, self.halo_size
            hb, wb = H // bs, W // bs
            rows = F.pad(torch.ones(H, device=device), (h, h)).unfold(0, win, bs)  # (hb, win), 0 outside
            cols = F.pad(torch.ones(W, device=device), (h, h)).unfold(0, win, bs)  # (wb, win)
            ninf = torch.full((), float('-inf'), device=device, dtype=dtype)
            zero = torch.zeros((), device=device, dtype=dtype)
            r = torch.where(rows == 0, ninf, zero)[:, None].expand(hb, wb, win).reshape(hb * wb, 1, 1, win)
            c = torch.where(cols == 0, ninf, zero)[None].expand(hb, wb, win).reshape(hb * wb, 1, 1, win)
            if is_tracing():  # no cache: it would keep a traced tensor on the module
                return r, c
            self._mask_cache = (key, (r, c))
        return self._mask_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H0, W0, C = x.shape
        bs, win, nh = self.block_size, self.win_size, self.num_heads
        dq, dv = self.dim_head_qk, self.dim_head_v
        x = _pad_to_multiple(x, bs)
        H, W = x.shape[1], x.shape[2]
        hb, wb = H // bs, W // bs
        q = self.q(x).view(B, hb, bs, wb, bs, nh, dq).permute(0, 5, 1, 3, 2, 4, 6)
        q = q.reshape(B, nh, hb * wb, bs * bs, dq)
        kv = F.pad(self.kv(x.permute(0, 3, 1, 2)), [self.halo_size] * 4)
        kv = kv.unfold(2, win, bs).unfold(3, win, bs)                       # (B, nh*(dq+dv), hb, wb, win, win)
        kv = kv.reshape(B, nh, dq + dv, hb * wb, win * win).permute(0, 1, 3, 4, 2)
        k, v = kv.split([dq, dv], dim=-1)
        bias = self.pos_embed(q, self._border_mask(H, W, x.device, q.dtype))  # (B, nh, nBlk, bs*bs, win*win)
        # 4-D (blocks folded into the head axis) so that fused SDPA kernels apply
        out = _attention(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2), bias.flatten(1, 2), self.scale)
        out = out.view(B, nh, hb, wb, bs, bs, dv).permute(0, 2, 4, 3, 5, 1, 6).reshape(B, H, W, nh * dv)
        return self.proj(out[:, :H0, :W0])


class HaloBlock(nn.Module):
    """Pre-norm (nn.LayerNorm, eps 1e-5) Halo attention + MLP, layer scales [1, 1, 1, C]. NHWC in and out (the
    family's ``stage_layout``: the stage permutes once before its first block and back after its last, as the
    official code)."""

    def __init__(self, dim: int, drop_path: float, layer_scale_init: float, num_heads: int,
                 block_size: int = 7, halo_size: int = 3, mlp_ratio: float = 4, **_):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = HaloAttention(dim, num_heads, block_size, halo_size)
        self.gamma_1 = nn.Parameter(torch.full((1, 1, 1, dim), float(layer_scale_init)))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = UnifiedMlp(dim, int(dim * mlp_ratio))
        self.gamma_2 = nn.Parameter(torch.full((1, 1, 1, dim), float(layer_scale_init)))
        self.drop_path = maybe_drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


# ---------------------------------------------------------------------------------------------- PVT
class SRAttention(nn.Module):
    """PVT-v1 spatial-reduction attention: keys/values from conv(k=s=sr) -> LayerNorm (sr > 1)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'PVT attention: dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        q = self.q(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.sr(x.transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2)
            x = self.norm(x)
        k, v = self.kv(x).view(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class PVTBlock(nn.Module):
    """Pre-norm (nn.LayerNorm, eps 1e-5) SR attention + MLP, layer scales [C]. NCHW in and out.

    Block 0 of a stage holds the stage's absolute ``pos_embed`` [1, C, h, w] (h, w = the 224-input grid),
    resized bilinearly (align_corners=True) to the feature size and added *after* the residual is taken.
    """

    def __init__(self, dim: int, drop_path: float, layer_scale_init: float, num_heads: int, depth: int,
                 sr_ratio: int, mlp_ratio: float, pos_grid: Tuple[int, int], qkv_bias: bool = True, **_):
        super().__init__()
        if depth == 0:
            self.pos_embed = nn.Parameter(torch.zeros(1, dim, *pos_grid))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SRAttention(dim, num_heads, sr_ratio, qkv_bias)
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = UnifiedMlp(dim, int(dim * mlp_ratio))
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.drop_path = maybe_drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        shortcut = x.flatten(2).transpose(1, 2)
        if self.pos_embed is not None:
            x = x + F.interpolate(self.pos_embed, size=(H, W), mode='bilinear', align_corners=True).to(x.dtype)
        x = x.flatten(2).transpose(1, 2)
        x = shortcut + self.drop_path(self.gamma_1 * self.attn(self.norm1(x), H, W))
        x = x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))
        return x.transpose(1, 2).reshape(B, C, H, W)


# ---------------------------------------------------------------------------------------------- DCNv3
def deform_sample_pytorch(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Single-level multi-head deformable sampling with ``F.grid_sample`` (bilinear, zeros outside).

    value: (B, H, W, heads, d); locations: (B, Q, heads, P, 2) as (x, y) in [0, 1] of the map (pixel centres
    at (i + 0.5) / size, ``align_corners=False``); weights: (B, Q, heads, P). Returns (B, Q, heads * d) in
    value's dtype. Same algorithm as mmcv's ``multi_scale_deformable_attn_pytorch`` with one level; half
    precision inputs are sampled in float32 (as the official CUDA kernel forces).
    """
    B, H, W, M, D = value.shape
    Q, P = locations.shape[1], locations.shape[3]
    dtype = torch.promote_types(value.dtype, torch.float32)  # half-precision locations would be off by ~1 px
    v = value.to(dtype).permute(0, 3, 4, 1, 2).reshape(B * M, D, H, W)
    grid = (2 * locations.to(dtype) - 1).transpose(1, 2).reshape(B * M, Q, P, 2)
    # autocast off around the sampling (meta tensors, e.g. FLOP counting, have no autocast to switch off)
    with (contextlib.nullcontext() if v.device.type == 'meta' else torch.autocast(v.device.type, enabled=False)):
        sampled = F.grid_sample(v, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    w = weights.to(dtype).transpose(1, 2).reshape(B * M, 1, Q, P)
    out = (sampled * w).sum(-1)                                                   # (B*M, D, Q)
    return out.view(B, M * D, Q).transpose(1, 2).to(value.dtype)


_MMCV_MSDA = {}  # device -> mmcv's MultiScaleDeformableAttnFunction, or None where it does not run


def _mmcv_kernel(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor, fn) -> torch.Tensor:
    B, H, W, M, D = value.shape
    shapes = torch.tensor([[H, W]], dtype=torch.long, device=value.device)
    start = torch.zeros(1, dtype=torch.long, device=value.device)
    with torch.autocast('cuda', enabled=False):
        out = fn.apply(value.float().reshape(B, H * W, M, D).contiguous(), shapes, start,
                       locations.float()[:, :, :, None].contiguous(), weights.float()[:, :, :, None].contiguous(),
                       64)
    return out.to(value.dtype)


def _mmcv_msda(device: torch.device):
    """mmcv's compiled kernel if it runs on ``device`` (imported lazily; probed once per device with a tiny
    call compared against the pure path, so a CPU-only mmcv build or a broken kernel falls back), else None."""
    key = str(device)
    if key not in _MMCV_MSDA:
        fn = None
        try:
            from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction as fn
            g = torch.Generator().manual_seed(0)
            v = torch.randn(1, 3, 4, 2, 8, generator=g).to(device)
            loc = torch.rand(1, 5, 2, 9, 2, generator=g).to(device)
            w = torch.rand(1, 5, 2, 9, generator=g).softmax(-1).to(device)
            if not torch.allclose(_mmcv_kernel(v, loc, w, fn), deform_sample_pytorch(v, loc, w), atol=1e-5):
                fn = None
        except Exception:  # no mmcv, or mmcv without its CUDA ops
            fn = None
        _MMCV_MSDA[key] = fn
    return _MMCV_MSDA[key]


def deform_sample(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor,
                  impl: str = 'auto') -> torch.Tensor:
    """:func:`deform_sample_pytorch`, or mmcv's CUDA kernel (``impl='mmcv'``, or ``'auto'`` on CUDA when it
    runs there; computed in float32 as the official kernel forces)."""
    if impl == 'pytorch' or (impl == 'auto' and not value.is_cuda):
        return deform_sample_pytorch(value, locations, weights)
    fn = _mmcv_msda(value.device) if value.is_cuda else None
    if fn is None:
        if impl == 'mmcv':
            raise RuntimeError("dcn_impl='mmcv' needs CUDA tensors and mmcv built with its CUDA ops")
        return deform_sample_pytorch(value, locations, weights)
    return _mmcv_kernel(value, locations, weights, fn)


class DeformAttention(nn.Module):
    """The STM "DCNv3" token mixer (``MSDeformAttnGrid_softmax``, one level). NHWC in and out.

    query = GELU(LN(dw kxk(x))); per head and point: offset (2) and weight (softmax over the points) from
    Linear layers on the query; value = Linear(x), zero-padded by ``pad`` = sqrt(P)//2 px; point p = i*k + j
    of a head samples the padded value at ``ref + (grid_p + offset_p) * offsets_scaler / padded_size`` where
    ``ref`` is the pixel centre and ``grid_p = (i - k//2, j - k//2)`` read as (x, y) (the official quirk).
    """

    def __init__(self, dim: int, num_heads: int, points: int = 9, dw_kernel: int = 3, padding: bool = True,
                 offsets_scaler: float = 1.0, impl: str = 'auto'):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'DCNv3 attention: dim {dim} is not divisible by num_heads {num_heads}')
        k = math.isqrt(points)
        if k * k != points or k % 2 == 0:
            raise ValueError(f'deform_points must be an odd square (9, 25, ...), got {points}')
        self.num_heads, self.points, self.offsets_scaler = num_heads, points, float(offsets_scaler)
        self.pad = k // 2 if padding else 0
        self.impl = impl
        self.dw_conv = nn.Sequential(nn.Conv2d(dim, dim, dw_kernel, padding=(dw_kernel - 1) // 2, groups=dim),
                                     _ChannelsLastLN(dim), nn.GELU())
        self.sampling_offsets = nn.Linear(dim, num_heads * points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        lin = torch.arange(k, dtype=torch.float32) - k // 2
        gi, gj = torch.meshgrid(lin, lin, indexing='ij')
        self.register_buffer('grid', torch.stack([gi, gj], -1).reshape(points, 2), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero offsets and weights (every point starts on its grid position, equal weights); Xavier
        value/output projections (the official init)."""
        for lin in (self.sampling_offsets, self.attention_weights):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def sampling_locations(self, offsets: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """offsets (B, H, W, heads, P, 2) -> locations (B, H*W, heads, P, 2) in the padded map."""
        p = self.pad
        Hp, Wp = H + 2 * p, W + 2 * p
        dev = offsets.device
        ref_y = (torch.arange(H, device=dev, dtype=torch.float32) + p + 0.5) / Hp
        ref_x = (torch.arange(W, device=dev, dtype=torch.float32) + p + 0.5) / Wp
        ref = torch.stack(torch.broadcast_tensors(ref_x[None, :], ref_y[:, None]), -1)  # (H, W, 2) as (x, y)
        norm = torch.tensor([Wp, Hp], device=dev, dtype=torch.float32)
        loc = ref[:, :, None, None, :] + (self.grid + offsets.to(torch.promote_types(offsets.dtype, torch.float32))) \
            * self.offsets_scaler / norm
        return loc.flatten(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        M, P = self.num_heads, self.points
        q = self.dw_conv[0](x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        q = self.dw_conv[2](self.dw_conv[1](q))
        value = self.value_proj(x)
        if self.pad:
            value = F.pad(value, (0, 0, self.pad, self.pad, self.pad, self.pad))
        value = value.view(B, H + 2 * self.pad, W + 2 * self.pad, M, C // M)
        offsets = self.sampling_offsets(q).view(B, H, W, M, P, 2)
        weights = self.attention_weights(q).view(B, H * W, M, P).float().softmax(-1)
        loc = self.sampling_locations(offsets, H, W)
        out = deform_sample(value, loc, weights, self.impl)
        return self.output_proj(out).view(B, H, W, C)


class _ChannelsLastLN(nn.Module):
    """``LayerNormProxy``: nn.LayerNorm (eps 1e-5) over C, parameters under ``norm``. Applied to NHWC."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class DCNv3Block(nn.Module):
    """Pre-norm (nn.LayerNorm, eps 1e-5) deformable attention + MLP, layer scales ``gamma1``/``gamma2`` [C].
    NCHW in and out (NHWC inside)."""

    def __init__(self, dim: int, drop_path: float, layer_scale_init: float, num_heads: int,
                 deform_points: int = 9, dw_kernel: int = 3, deform_padding: bool = True,
                 offsets_scaler: float = 1.0, mlp_ratio: float = 4, dcn_impl: str = 'auto', **_):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = DeformAttention(dim, num_heads, deform_points, dw_kernel, deform_padding, offsets_scaler,
                                    dcn_impl)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = UnifiedMlp(dim, int(dim * mlp_ratio))
        self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.drop_path = maybe_drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = x + self.drop_path(self.gamma1 * self.attn(self.norm1(x)))
        x = x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------- trunk
class UnifiedMetaArch(MultiScaleBackbone):
    """The shared STM trunk (not registered itself; see the five families below).

    ``arch``: a size name or a dict with ``depths``, ``dims`` and the family's keys (``num_heads``; Halo:
    ``block_size``, ``halo_size``; Swin: ``window_size``; PVT: ``mlp_ratios``, ``sr_ratios``, ``img_size``;
    ConvNeXt: ``kernel_size``; DCNv3: ``deform_points``, ``dw_kernel``, ``deform_padding``); ``mlp_ratio`` and
    ``layer_scale_init`` for all.

    Family keywords (:class:`~backbones.base.FamilyOption`; also arch keys):

    ``stage_norms``
        ``'skip'`` (default, the official detection behaviour): no norm between stages; a checkpoint's
        ``stage_norms.*`` are dropped on load. ``'keep'``: ``stage_norms.i`` (LayerNorm over channels, eps 1e-6)
        after every stage, fed to the next downsampler and returned, as in classification; they load from the
        checkpoint (and a checkpoint without them is refused).
    """
    block_cls: type = None
    classifier_prefixes = ('conv_head.', 'head.', 'stage_norms.')
    ignored_checkpoint_keys = ('re:(^|\\.)attn_mask$', 're:\\.relative_position_index$')
    default_arch = 'tiny'
    arch_aliases = {'t': 'tiny', 's': 'small', 'b': 'base'}
    family_options = {'stage_norms': FamilyOption(choices=STAGE_NORM_MODES)}

    # ------------------------------------------------------------------ build
    def block_kwargs(self, arch: dict, stage: int) -> dict:
        return dict(num_heads=arch['num_heads'][stage]) if arch.get('num_heads') else {}

    def _build(self, arch: dict, in_channels: int, dpr: List[float]) -> None:
        dims, depths = arch['dims'], arch['depths']
        self.downsample_layers = nn.ModuleList([UnifiedStem(in_channels, dims[0])])
        for i in range(3):
            self.downsample_layers.append(UnifiedDownsample(dims[i], dims[i + 1]))
        kws = [{'mlp_ratio': arch['mlp_ratio'], **self.block_kwargs(arch, i)} for i in range(4)]
        self.stages = self.make_stages(depths, dpr, lambda i, j, dp: self.block_cls(
            dim=dims[i], drop_path=dp, layer_scale_init=arch['layer_scale_init'], depth=j, **kws[i]))
        self.apply(self._init_module)  # trunc-normal(0.02) weights, zero biases
        for m in self.modules():       # ... except the DCN projections, which keep their own init
            if isinstance(m, DeformAttention):
                m.reset_parameters()
        if arch['stage_norms'] == 'keep':
            self.stage_norms = nn.ModuleList(LayerNorm2d(d, eps=1e-6) for d in dims)

    # ------------------------------------------------------------------ forward
    def forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """The stage's blocks, then (``stage_norms='keep'``) its stage norm."""
        x = super().forward_stage(i, x)
        return self.stage_norms[i](x) if self.arch['stage_norms'] == 'keep' else x

    # ------------------------------------------------------------------ contract extensions
    def _frozen_modules(self) -> List[nn.Module]:
        mods = super()._frozen_modules()
        if self.arch['stage_norms'] == 'keep':
            mods += [self.stage_norms[i] for i in range(min(self.frozen_stages, 4))]
        return mods

    def param_position(self, name: str) -> Tuple[str, int, int]:
        parts = name.split('.')
        if parts[0] == 'stage_norms':  # goes with the last block of its stage
            s = int(parts[1])
            return 'block', s, self.depths[s] - 1
        return super().param_position(name)

    @classmethod
    def convert_checkpoint(cls, state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], str]:
        """Release files pass unchanged; the official detection backbones' ``out_norm_{i}.*`` (mmdet 2.x
        checkpoints of STM-Evaluation) become ``out_norms.{i}.*``."""
        if not any(k.startswith('out_norm_') for k in state_dict):
            return state_dict, 'official'
        out = {}
        for k, v in state_dict.items():
            if k.startswith('out_norm_'):
                i, rest = k[len('out_norm_'):].split('.', 1)
                k = f'out_norms.{i}.{rest}'
            out[k] = v
        return out, 'official detection'

    def no_weight_decay(self) -> List[str]:
        """Position tables: PVT ``pos_embed``, Swin ``relative_position_bias_table``, Halo ``height_rel`` /
        ``width_rel`` (1-D parameters are excluded by the optimizer constructor anyway)."""
        keys = ('pos_embed', 'relative_position_bias_table', 'height_rel', 'width_rel')
        return [n for n, _ in self.named_parameters() if n.rsplit('.', 1)[-1] in keys]


_COMMON = dict(mlp_ratio=4, layer_scale_init=1e-6, stage_norms='skip')
_HEADS_32 = dict(micro=[1, 2, 4, 8], tiny=[3, 6, 12, 24], small=[3, 6, 12, 24], base=[4, 8, 16, 32])
_DIMS = dict(micro=[32, 64, 128, 256], tiny=[96, 192, 384, 768], small=[96, 192, 384, 768],
             base=[128, 256, 512, 1024])


@register_family
class UnifiedHalo(UnifiedMetaArch):
    """U-Halo: Halo attention (block 7, halo 3, head dim 32, query-dependent relative logits).
    Sizes micro, tiny, small, base. See the module docstring for the detection-specific behaviour."""
    family = 'unified_halo'
    block_cls = HaloBlock
    stage_layout = 'nhwc'
    arch_settings = {s: dict(depths=d, dims=_DIMS[s], num_heads=_HEADS_32[s]) for s, d in
                     dict(micro=[2, 2, 9, 2], tiny=[2, 2, 6, 2], small=[2, 2, 18, 2], base=[2, 2, 18, 2]).items()}
    arch_defaults = dict(_COMMON, block_size=7, halo_size=3)

    def block_kwargs(self, arch, stage):
        return dict(super().block_kwargs(arch, stage), block_size=arch['block_size'], halo_size=arch['halo_size'])


@register_family
class UnifiedSwin(UnifiedMetaArch):
    """U-Swin: shifted 7x7 window attention (head dim 32, relative position bias).
    Sizes micro, tiny, small, base. See the module docstring for the detection-specific behaviour."""
    family = 'unified_swin'
    block_cls = SwinBlock
    arch_settings = {s: dict(depths=d, dims=_DIMS[s], num_heads=_HEADS_32[s]) for s, d in
                     dict(micro=[2, 2, 9, 2], tiny=[2, 2, 6, 2], small=[2, 2, 18, 2], base=[2, 2, 18, 2]).items()}
    arch_defaults = dict(_COMMON, window_size=7)

    def block_kwargs(self, arch, stage):
        return dict(super().block_kwargs(arch, stage), window_size=arch['window_size'])


@register_family
class UnifiedPVT(UnifiedMetaArch):
    """U-PVT: PVT-v1 spatial-reduction attention (sr 8/4/2/1, head dim 32, qkv bias) with an absolute position
    embedding per stage (sized for 224 input, resized every forward). Sizes micro, tiny, small, base."""
    family = 'unified_pvt'
    block_cls = PVTBlock
    _heads = [1, 2, 5, 8]
    arch_settings = {
        'micro': dict(depths=[2, 2, 3, 2], dims=[32, 64, 160, 256], num_heads=_heads),
        'tiny': dict(depths=[3, 4, 9, 3], dims=[64, 128, 320, 512], num_heads=_heads),
        'small': dict(depths=[3, 4, 21, 3], dims=[64, 128, 320, 512], num_heads=_heads),
        'base': dict(depths=[3, 8, 45, 3], dims=[64, 128, 320, 512], num_heads=_heads, mlp_ratios=[4, 4, 4, 4]),
    }
    arch_defaults = dict(_COMMON, mlp_ratios=[8, 8, 4, 4], sr_ratios=[8, 4, 2, 1], qkv_bias=True, img_size=224)

    def block_kwargs(self, arch, stage):
        g = arch['img_size'] // 4 // 2 ** stage
        return dict(super().block_kwargs(arch, stage), sr_ratio=arch['sr_ratios'][stage],
                    mlp_ratio=arch['mlp_ratios'][stage], qkv_bias=arch['qkv_bias'], pos_grid=(g, g))


@register_family
class UnifiedConvNeXt(UnifiedMetaArch):
    """U-ConvNeXt: the unified ConvNeXt block (LN -> 1x1 -> dw 7x7 -> 1x1, then an MLP; two residuals).
    Sizes micro, tiny, small, base (depths differ from the original ConvNeXt)."""
    family = 'unified_convnext'
    block_cls = UnifiedConvNeXtBlock
    stage_layout = 'nhwc'
    arch_settings = {
        'micro': dict(depths=[3, 3, 8, 3], dims=_DIMS['micro']),
        'tiny': dict(depths=[2, 2, 9, 2], dims=_DIMS['tiny']),
        'small': dict(depths=[2, 2, 24, 2], dims=_DIMS['small']),
        'base': dict(depths=[2, 2, 24, 2], dims=_DIMS['base']),
    }
    arch_defaults = dict(_COMMON, kernel_size=7)

    def block_kwargs(self, arch, stage):
        return dict(kernel_size=arch['kernel_size'])


@register_family
class UnifiedDCNv3(UnifiedMetaArch):
    """U-InternImage ("DCNv3" in STM-Evaluation): deformable sampling of 9 points per head (head dim 16)
    around a fixed 3x3 grid, query from a dw 3x3 conv. Sizes micro, tiny, small, base, large.

    Pure PyTorch (``F.grid_sample``); ``dcn_impl`` ('auto' | 'pytorch' | 'mmcv') picks mmcv's CUDA kernel on
    CUDA tensors when available. Runs at any input size (see the module docstring).
    """
    family = 'unified_dcn_v3'
    block_cls = DCNv3Block
    arch_settings = {
        'micro': dict(depths=[2, 2, 9, 2], dims=[32, 64, 128, 256], num_heads=[2, 4, 8, 16]),
        'tiny': dict(depths=[4, 4, 18, 4], dims=[64, 128, 256, 512], num_heads=[4, 8, 16, 32]),
        'small': dict(depths=[4, 4, 21, 4], dims=[80, 160, 320, 640], num_heads=[5, 10, 20, 40]),
        'base': dict(depths=[4, 4, 21, 4], dims=[112, 224, 448, 896], num_heads=[7, 14, 28, 56]),
        'large': dict(depths=[5, 5, 22, 5], dims=[160, 320, 640, 1280], num_heads=[10, 20, 40, 80]),
    }
    arch_aliases = {'t': 'tiny', 's': 'small', 'b': 'base', 'l': 'large'}
    arch_defaults = dict(_COMMON, deform_points=9, dw_kernel=3, deform_padding=True, offsets_scaler=1.0,
                         dcn_impl='auto')
    family_options = dict(UnifiedMetaArch.family_options,
                          dcn_impl=FamilyOption(choices=DCN_IMPLS, layers=(DeformAttention, 'impl')))

    def block_kwargs(self, arch, stage):
        return dict(super().block_kwargs(arch, stage), deform_points=arch['deform_points'],
                    dw_kernel=arch['dw_kernel'], deform_padding=arch['deform_padding'],
                    offsets_scaler=arch['offsets_scaler'], dcn_impl=arch['dcn_impl'])

    def set_dcn_impl(self, impl: str) -> None:
        """'auto' (mmcv's CUDA kernel on CUDA tensors when available, else grid_sample), 'pytorch', 'mmcv'."""
        self.set_option('dcn_impl', impl)
