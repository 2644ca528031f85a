"""ConvNeXt (Liu et al., "A ConvNet for the 2020s") and ConvNeXt V2 (Woo et al., "ConvNeXt V2: Co-designing
and Scaling ConvNets with Masked Autoencoders") as multi-scale backbones.

One implementation serves both families. A block is::

    x + DropPath( gamma * pwconv2( [GRN]( GELU( pwconv1( LN( dwconv7x7(x) ) ) ) ) ) )

with ``gamma`` (layer scale, V1 only) and ``GRN`` (global response normalisation, V2 only). Parameter
names follow the official facebookresearch code (``downsample_layers.0.{0,1}``, ``downsample_layers.i.{0,1}``,
``stages.s.b.{dwconv,norm,pwconv1,pwconv2,gamma}``, V2 ``stages.s.b.grn.{gamma,beta}`` of shape [1,1,1,4C]),
so official checkpoints load unchanged; the classifier (``norm.*``, ``head.*``) is dropped.

Checkpoint layouts (detected from the keys by :meth:`ConvNeXt.convert_checkpoint`):

``official``      the facebookresearch releases (``model`` wrapper; IN-1K, IN-22K with a 21841-class head,
                  V2 fine-tuned); also this project's own state dicts (``out_norms.*``);
``official-det``  the official ConvNeXt detection / segmentation checkpoints (whole mmdet 2.x / mmseg 0.x
                  models: ``backbone.norm{i}`` become our ``out_norms.{i}``);
``fcmae``         ConvNeXt V2 FCMAE pre-training files: ``encoder.``-prefixed sparse MinkowskiEngine weights
                  (kernels ``(k*k, in, out)`` / ``(k*k, C)``, 2-D biases and GRN); the decoder, ``mask_token``,
                  ``proj`` and ``pred`` are dropped;
``timm``          ``stem.*``, ``stages.N.downsample.*``, ``stages.N.blocks.M.{conv_dw,norm,mlp.fc1,mlp.fc2,
                  mlp.grn.weight/bias,gamma}``, ``head.{norm,fc}``;
``mmpretrain``    ``depthwise_conv``, ``pointwise_conv1/2`` (Linear or 1x1 conv), GRN of shape [4C]; a lone
                  ``norm3`` is the classification checkpoint's final norm (dropped), ``norm0..3`` of a
                  detection checkpoint become ``out_norms``;
``torchvision``   ``features.N.M.block.K``, ``layer_scale`` [C,1,1], ``classifier.*`` (also the
                  ``state_dict``-wrapped ConvNext-PyTorch ``.pth.tar`` files).

Anything else is refused with sample keys; a V2 checkpoint offered to :class:`ConvNeXt` (or the reverse) is
refused naming the right class.

Speed: the block runs its MLP in NHWC on a channels_last tensor (the stem's LayerNorm leaves the maps in
channels_last memory, so the permutes around the MLP are free views). With autograd, the layer scale is folded
into ``pwconv2``'s weight and bias and GRN into ``pwconv2`` as a per-sample weight scaling (one batched GEMM),
so neither costs passes over the activations. In CPU inference (float32, nothing needs a gradient) the two
GEMMs go to oneDNN with the bias + GELU (:func:`~backbones.layers.linear_gelu_cpu`) and the bias + residual
add fused in. The 7x7 depthwise convolution's weight gradient runs as a convolution on CPU
(:class:`~backbones.layers.DepthwiseConv2d`), the stem's and downsampling layers' as GEMMs
(:class:`~backbones.layers.GemmGradConv2d`). The backbone returns
contiguous NCHW maps (the shared forward of :mod:`backbones.base`).
"""
import math
import re
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import FamilyOption, MultiScaleBackbone
from .checkpoint import CheckpointError, CheckpointMismatchError
from .layers import (DepthwiseConv2d, GemmGradConv2d, LayerNorm2d, linear_gelu_cpu, maybe_drop_path,
                     use_fused_cpu)
from .registry import register_family

Tensor = torch.Tensor


class GRN(nn.Module):
    """Global Response Normalisation over an NHWC tensor (official parameter names and [1,1,1,C] shapes).

    ``y = gamma * (x * N) + beta + x`` with ``N = G / (mean_c G + 1e-6)``, ``G`` = per-sample, per-channel L2
    norm over the whole H x W map.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def scale(self, x: Tensor) -> Tensor:
        """``1 + gamma * N`` of shape (N, 1, 1, C): the GRN output is ``x * scale + beta``."""
        g = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + self.eps)
        return torch.addcmul(torch.ones_like(n), self.gamma, n)

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.beta, x, self.scale(x))


class ConvNeXtBlock(nn.Module):
    """dwconv 7x7 -> LN -> Linear C->4C -> GELU -> [GRN] -> Linear 4C->C -> [x gamma] -> DropPath -> + x.

    Two numerically equivalent paths (equal within float32 rounding; tested):

    * autograd path (training, GPU, autocast): ``F.linear`` GEMMs, layer scale folded into ``pwconv2``,
      GRN folded into ``pwconv2`` as a per-sample weight scaling (one batched GEMM);
    * CPU inference path (float32, no gradient needed; :func:`~backbones.layers.use_fused_cpu`, switched off
      with :func:`~backbones.layers.set_fused_cpu_inference`): oneDNN GEMMs with the bias and GELU fused into
      ``pwconv1`` and the bias and the residual add fused into ``pwconv2``.
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init: float = 1e-6, use_grn: bool = False,
                 mlp_ratio: int = 4, kernel_size: int = 7):
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.dwconv = DepthwiseConv2d(dim, kernel_size)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.grn = GRN(hidden) if use_grn else None
        self.pwconv2 = nn.Linear(hidden, dim)
        self.gamma = (nn.Parameter(torch.full((dim,), float(layer_scale_init)))
                      if layer_scale_init and layer_scale_init > 0 else None)
        self.drop_path = maybe_drop_path(drop_path)

    def _pwconv2_weights(self) -> Tuple[Tensor, Tensor]:
        w, b = self.pwconv2.weight, self.pwconv2.bias
        if self.gamma is not None:  # layer scale folded into the output rows of pwconv2
            w, b = w * self.gamma[:, None], b * self.gamma
        return w, b

    def forward(self, x: Tensor) -> Tensor:
        if use_fused_cpu(self, x):
            return self._forward_fused(x)
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)  # NHWC; a free view when x is channels_last
        x = self.act(self.pwconv1(self.norm(x)))
        w, b = self._pwconv2_weights()
        if self.grn is None:
            x = F.linear(x, w, b)
        else:
            # W (x * s_n + beta) + b = (W * s_n) x + (W beta + b): GRN as a per-sample weight scaling
            n, h, wd, c = x.shape
            s = self.grn.scale(x).reshape(n, 1, c)
            b = torch.addmv(b, w, self.grn.beta.reshape(-1))
            x = torch.baddbmm(b, x.reshape(n, h * wd, c), (w * s).transpose(1, 2)).reshape(n, h, wd, -1)
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))

    def _forward_fused(self, x: Tensor) -> Tensor:
        op = torch.ops.mkldnn._linear_pointwise
        n, c, h, wd = x.shape
        shortcut = x.permute(0, 2, 3, 1).reshape(n, h * wd, c)  # a view when x is channels_last
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1)).reshape(n, h * wd, c)
        y = linear_gelu_cpu(y, self.pwconv1.weight, self.pwconv1.bias)  # GEMM + bias + exact GELU
        w, b = self.pwconv2.weight, self.pwconv2.bias
        if self.grn is None:
            parts = [(y.reshape(n * h * wd, -1), shortcut.reshape(n * h * wd, c), w)]
        else:  # GRN folded into pwconv2's weights, per sample (see forward)
            s = self.grn.scale(y.reshape(n, 1, h * wd, -1)).reshape(n, 1, -1)
            b = torch.addmv(b, w, self.grn.beta.reshape(-1))
            parts = [(y[i], shortcut[i], w * s[i]) for i in range(n)]
        if self.gamma is None:  # GEMM + bias + residual in one oneDNN call
            outs = [op.binary(yi, si, wi, b, 'add') for yi, si, wi in parts]
        else:  # GEMM + bias, then residual + gamma * y in one pass
            outs = [torch.addcmul(si, op(yi, wi, b, 'none', [], ''), self.gamma) for yi, si, wi in parts]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out.reshape(n, h, wd, c).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------- checkpoint layouts
def _sub(rules: Sequence[Tuple[str, str]], key: str) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def _linear_weight(key: str, v: Tensor) -> Tensor:
    """1x1-conv pointwise weights (timm conv_mlp, mmpretrain linear_pw_conv=False) -> Linear weights."""
    if re.search(r'\.pwconv[12]\.weight$', key) and v.ndim == 4 and v.shape[2:] == (1, 1):
        return v.reshape(v.shape[0], v.shape[1])
    return v


def _grn_shape(key: str, v: Tensor) -> Tensor:
    return v.reshape(1, 1, 1, -1) if re.search(r'\.grn\.(gamma|beta)$', key) else v


_TIMM_RULES = (
    (r'^stem\.(\d+)\.', r'downsample_layers.0.\1.'),
    (r'^stages\.(\d+)\.downsample\.(\d+)\.', r'downsample_layers.\1.\2.'),
    (r'^stages\.(\d+)\.blocks\.(\d+)\.', r'stages.\1.\2.'),
    (r'\.conv_dw\.', '.dwconv.'),
    (r'\.mlp\.fc(\d)\.', r'.pwconv\1.'),
    (r'\.mlp\.grn\.weight$', '.grn.gamma'),
    (r'\.mlp\.grn\.bias$', '.grn.beta'),
)
_MMPRETRAIN_RULES = ((r'\.depthwise_conv\.', '.dwconv.'), (r'\.pointwise_conv(\d)\.', r'.pwconv\1.'))
_TV_BLOCK = {'0': 'dwconv', '2': 'norm', '3': 'pwconv1', '5': 'pwconv2'}


def _from_torchvision(key: str) -> str:
    m = re.match(r'^features\.(\d+)\.(\d+)\.(.*)$', key)
    if m is None:
        return key  # classifier.*: dropped
    n, j, rest = int(m[1]), m[2], m[3]
    if n == 0:
        return f'downsample_layers.0.{j}.{rest}'
    if n % 2 == 0:
        return f'downsample_layers.{n // 2}.{j}.{rest}'
    stage = (n - 1) // 2
    if rest == 'layer_scale':
        return f'stages.{stage}.{j}.gamma'
    b = re.match(r'^block\.(\d+)\.(.*)$', rest)
    if b is None or b[1] not in _TV_BLOCK:
        return key
    return f'stages.{stage}.{j}.{_TV_BLOCK[b[1]]}.{b[2]}'


def _dense_kernel(v: Tensor) -> Tensor:
    """A MinkowskiEngine kernel -> a dense Conv2d weight (FCMAE files; inverse in the tests).

    ``(k*k, in, out)``: ``W[o, i, a, b] = kernel[b*k + a, i, o]``; depthwise ``(k*k, C)``:
    ``W[c, 0, a, b] = kernel[b*k + a, c]`` (Minkowski enumerates the kernel offsets column-major).
    """
    k = math.isqrt(v.shape[0])
    if k * k != v.shape[0] or v.ndim not in (2, 3):
        raise CheckpointError(f'unexpected sparse kernel shape {tuple(v.shape)}: expected (k*k, in, out) '
                              f'or (k*k, C)')
    if v.ndim == 3:
        _, cin, cout = v.shape
        return v.permute(2, 1, 0).reshape(cout, cin, k, k).transpose(3, 2).contiguous()
    c = v.shape[1]
    return v.permute(1, 0).reshape(c, 1, k, k).transpose(3, 2).contiguous()


def _from_fcmae(sd: Dict[str, Tensor]) -> Dict[str, Tensor]:
    out = {}
    for k, v in sd.items():
        if not k.startswith('encoder.'):
            out[k] = v  # decoder / mask_token / proj / pred: dropped by ignored_checkpoint_keys
            continue
        k = k[len('encoder.'):]
        if k.endswith('.kernel'):
            out[k[:-len('kernel')] + 'weight'] = _dense_kernel(v)
            continue
        k = re.sub(r'\.(ln|linear)\.', '.', k)  # MinkowskiLayerNorm.ln / MinkowskiLinear.linear
        if k.endswith('.bias') and v.ndim != 1:
            v = v.reshape(-1)
        out[k] = _grn_shape(k, v)
    return out


def _out_norms(sd: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], List[int]]:
    """``norm{i}.*`` (official / mmpretrain detection backbones) -> ``out_norms.{i}.*``."""
    found = sorted({int(m[1]) for k in sd for m in [re.match(r'^norm(\d)\.', k)] if m})
    return {re.sub(r'^norm(\d)\.', r'out_norms.\1.', k): v for k, v in sd.items()}, found


LAYOUTS = ('official', 'official-det', 'fcmae', 'timm', 'mmpretrain', 'mmpretrain-det', 'torchvision')


_SHALLOW, _DEEP = (2, 2, 6, 2), (3, 3, 27, 3)


def _size(depths: Sequence[int], width: int) -> dict:
    """A size: blocks per stage and the widths C, 2C, 4C, 8C of the four stages."""
    return dict(depths=list(depths), dims=[width * 2 ** i for i in range(4)])


def _check_layer_scale(cls, arch: dict, value: float) -> None:
    if cls.use_grn and value > 0:
        raise ValueError(f'{cls.__name__} has no layer scale (GRN replaces it); '
                         f'layer_scale_init_value must be None or 0, got {value}')


# ---------------------------------------------------------------------------------------- the families
@register_family
class ConvNeXt(MultiScaleBackbone):
    """ConvNeXt as a 4-stage feature-pyramid backbone (see :mod:`backbones.base` for the shared contract).

    ``arch``: ``'tiny'``, ``'small'``, ``'base'``, ``'large'``, ``'xlarge'`` (aliases ``t/s/b/l/xl``,
    ``'convnext_tiny'`` ...) or ``dict(depths=[...], dims=[...], layer_scale_init=1e-6, mlp_ratio=4,
    kernel_size=7)``.

    ``layer_scale_init_value`` (family keyword, the official spelling): initial value of the layer scale
    ``gamma``; ``None`` keeps the arch's (1e-6, as in ImageNet training); ``0`` builds blocks without
    layer scale. The official detection / segmentation configs set 1.0; a checkpoint overwrites it either
    way, so it only matters when training from scratch.

    Loads every released checkpoint layout (module docstring). The output norms (``out_norm=True``) are the
    official detection backbones' ``norm0..3``; the official detection checkpoints restore them.
    """
    family = 'convnext'
    default_arch = 'tiny'
    use_grn = False
    family_options = {'layer_scale_init_value': FamilyOption(key='layer_scale_init', convert=float,
                                                             check=_check_layer_scale)}
    arch_settings = {'tiny': _size([3, 3, 9, 3], 96), 'small': _size(_DEEP, 96), 'base': _size(_DEEP, 128),
                     'large': _size(_DEEP, 192), 'xlarge': _size(_DEEP, 256)}
    arch_aliases = {'t': 'tiny', 's': 'small', 'b': 'base', 'l': 'large', 'xl': 'xlarge'}
    arch_defaults = dict(layer_scale_init=1e-6, mlp_ratio=4, kernel_size=7)
    classifier_prefixes = ('head.', 'norm.', 'classifier.', 'norm_pre.')
    # parts of an FCMAE pre-training file that are not the encoder
    ignored_checkpoint_keys = (r're:^decoder\.\d+\.', r're:^mask_token$', r're:^(proj|pred)\.(weight|bias)$')

    @property
    def layer_scale_init_value(self) -> float:
        return self.arch['layer_scale_init']

    def _build(self, arch: dict, in_channels: int, dpr: List[float]) -> None:
        dims, depths = arch['dims'], arch['depths']
        self.downsample_layers = nn.ModuleList([nn.Sequential(  # keys downsample_layers.0.{0,1}
            GemmGradConv2d(in_channels, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(dims[i], eps=1e-6), GemmGradConv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        self.stages = self.make_stages(depths, dpr, lambda i, j, dp: ConvNeXtBlock(
            dims[i], dp, arch['layer_scale_init'], self.use_grn, arch['mlp_ratio'], arch['kernel_size']))
        self.apply(self._init_module)

    def no_weight_decay(self) -> List[str]:
        """GRN's gamma/beta ([1,1,1,C], not 1-D): no weight decay, as the official V2 optimizer factory."""
        return [n for n, _ in self.named_parameters() if re.search(r'\.grn\.(gamma|beta)$', n)]

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def detect_layout(cls, keys: Sequence[str]) -> str:
        """Name the layout of a (prefix-stripped) state dict from its keys; raise if none fits."""
        keys = list(keys)
        if any(re.match(r'^encoder\.(downsample_layers|stages)\.\d', k) for k in keys):
            return 'fcmae'
        if any(k.startswith('features.') for k in keys):
            return 'torchvision'
        if any(k.startswith('stem.') or re.match(r'^stages\.\d+\.(blocks|downsample)\.', k) for k in keys):
            return 'timm'
        if any('.depthwise_conv.' in k or '.pointwise_conv' in k for k in keys):
            return 'mmpretrain'
        if any(re.match(r'^(downsample_layers|stages)\.\d+\.', k) for k in keys):
            return 'official'
        sample = ', '.join(keys[:8]) + (' ...' if len(keys) > 8 else '')
        raise CheckpointError(
            f'cannot identify the layout of this {cls.__name__} checkpoint ({len(keys)} keys; first: {sample}). '
            f'Supported: official (downsample_layers.*, stages.s.b.dwconv ...), official detection (+ norm0..3), '
            f'FCMAE pre-training (encoder.*), timm (stem.*, stages.N.blocks.M.conv_dw ...), mmpretrain '
            f'(depthwise_conv / pointwise_conv1), torchvision (features.N.M.block.K). For a whole detector or '
            f'a wrapped model give init_cfg prefix=... (e.g. "backbone.").')

    @classmethod
    def convert_checkpoint(cls, state_dict: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], str]:
        """Map any supported layout onto the official one; return ``(state_dict, layout_name)``."""
        layout = cls.detect_layout(state_dict)
        if layout == 'fcmae':
            sd = _from_fcmae(state_dict)
        elif layout == 'torchvision':
            sd = {}
            for k, v in state_dict.items():
                k = _from_torchvision(k)
                sd[k] = v.reshape(-1) if k.endswith('.gamma') else v
        elif layout == 'timm':
            sd = {}
            for k, v in state_dict.items():
                k = _sub(_TIMM_RULES, k)
                sd[k] = _grn_shape(k, _linear_weight(k, v))
        elif layout == 'mmpretrain':
            sd = {}
            for k, v in state_dict.items():
                k = _sub(_MMPRETRAIN_RULES, k)
                sd[k] = _grn_shape(k, _linear_weight(k, v))
            if {int(m[1]) for k in sd for m in [re.match(r'^norm(\d)\.', k)] if m} == {3}:
                # classification checkpoint: norm3 is the final (pre-head) norm = official 'norm'
                sd = {re.sub(r'^norm3\.', 'norm.', k): v for k, v in sd.items()}
        else:
            sd = dict(state_dict)
        if layout in ('official', 'mmpretrain'):
            sd, norms = _out_norms(sd)
            if norms:
                layout += '-det'
        cls._check_version(sd, layout)
        return sd, layout

    @classmethod
    def _check_version(cls, sd: Dict[str, Tensor], layout: str) -> None:
        has_grn = any(re.search(r'\.grn\.(gamma|beta)$', k) for k in sd)
        has_ls = any(re.match(r'^stages\.\d+\.\d+\.gamma$', k) for k in sd)
        if has_grn and not cls.use_grn:
            raise CheckpointMismatchError(f'this is a ConvNeXt V2 checkpoint (GRN keys, {layout} layout): build '
                                          f'ConvNeXtV2 (type=\'ConvNeXtV2\' / \'convnextv2_<size>\'), not '
                                          f'{cls.__name__}')
        if cls.use_grn and has_ls and not has_grn:
            raise CheckpointMismatchError(f'this is a ConvNeXt (V1) checkpoint (layer scale, no GRN; {layout} '
                                          f'layout): build ConvNeXt (type=\'ConvNeXt\' / \'convnext_<size>\'), '
                                          f'not {cls.__name__}')


@register_family
class ConvNeXtV2(ConvNeXt):
    """ConvNeXt V2: the ConvNeXt trunk with GRN after the GELU and no layer scale.

    ``arch``: ``'atto'``, ``'femto'``, ``'pico'``, ``'nano'``, ``'tiny'``, ``'base'``, ``'large'``, ``'huge'``
    (or ``'convnextv2_tiny'``; the official ``'convnext_pico'`` (sic) is accepted) or a dict with
    ``depths``/``dims``. Loads the fine-tuned releases, the FCMAE pre-training files (sparse encoder),
    timm and mmpretrain layouts.

    GRN and padding: GRN divides every channel by its L2 norm over the *whole* H x W map (relative to the
    mean over channels), so a pixel's features depend on the entire map it sits in. Zero padding does not
    stay zero (the stem's conv bias and LayerNorm make the padded area non-zero), so the padded area enters
    every GRN's statistics and changes the features *everywhere* (in V1 only within the receptive field of
    the padded area). Under
    mmdet's batching (``pad_size_divisor=32`` and every image padded to the largest of its batch) an image's
    V2 features therefore depend on its batch mates and on the padding: the same image gives (slightly)
    different detections alone and in a batch, and test-time results depend on the test batch size (one
    image per GPU pads only to a multiple of 32). The official and timm implementations behave the same way
    (no masking); for a given padded input the output is deterministic.
    """
    family = 'convnextv2'
    use_grn = True
    arch_settings = {'atto': _size(_SHALLOW, 40), 'femto': _size(_SHALLOW, 48), 'pico': _size(_SHALLOW, 64),
                     'nano': _size([2, 2, 8, 2], 80),
                     **{size: ConvNeXt.arch_settings[size] for size in ('tiny', 'base', 'large')},  # V1's
                     'huge': _size(_DEEP, 352)}
    arch_aliases = {'a': 'atto', 'f': 'femto', 'p': 'pico', 'n': 'nano', 't': 'tiny', 'b': 'base',
                    'l': 'large', 'h': 'huge', 'convnext_pico': 'pico'}
    arch_defaults = dict(layer_scale_init=0.0, mlp_ratio=4, kernel_size=7)
