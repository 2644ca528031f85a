"""Small layers shared by the families (pure PyTorch)."""
import threading
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath


def is_tracing() -> bool:
    """True while a graph is being traced (``torch.export`` and the ONNX exporters, ``torch.compile``,
    ``torch.jit.trace``). Per-size caches must then be bypassed: they would store traced placeholder
    tensors on the module and tie the graph to the traced input size."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def check_choice(what: str, value, choices: Sequence):
    """``value`` if it is one of ``choices``, else a ValueError naming ``what`` and the valid values."""
    if value not in choices:
        raise ValueError(f'{what} must be one of {", ".join(map(repr, choices))}, got {value!r}')
    return value


def maybe_drop_path(rate: float) -> nn.Module:
    """Stochastic depth of a residual branch (timm's ``DropPath``); ``nn.Identity`` at rate 0."""
    return DropPath(rate) if rate > 0 else nn.Identity()


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW tensor ("channels_first").

    Parameters are named ``weight``/``bias`` like the official channels_first LayerNorms of ConvNeXt and
    Conv2Former, so their checkpoints load unchanged. The official classes compute mean/var by hand; this
    uses ``F.layer_norm`` on a permuted view (same result within float rounding, and faster).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------ fused CPU inference (oneDNN)
def _probe_onednn() -> bool:
    """Whether oneDNN's fused CPU ops exist and agree with the aten ones: ``mkldnn::_linear_pointwise``
    (GEMM + bias + GELU, or GEMM + bias then + or x another tensor, in one call) and ``mkldnn::_convolution_pointwise``
    (convolution + bias + GELU) and ``mkldnn::_convolution_pointwise_.binary`` (convolution + bias added in place
    into a given map). They are private ops of torch's oneDNN integration (what inductor emits)
    and have no autograd, so blocks use them only where no gradient is needed (see :func:`use_fused_cpu`)."""
    try:
        lin, conv = torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._convolution_pointwise
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(s, generator=g) for s in ((6, 8), (5, 8), (5,)))
        other = torch.randn(6, 5, generator=g)
        ok = torch.allclose(lin(x, w, b, 'gelu', [], 'none'), F.gelu(F.linear(x, w, b)), atol=1e-5)
        ok = ok and torch.allclose(lin.binary(x, other, w, b, 'add'), other + F.linear(x, w, b), atol=1e-5)
        ok = ok and torch.allclose(lin.binary(x, other, w, b, 'mul'), other * F.linear(x, w, b), atol=1e-5)
        ok = ok and torch.allclose(lin(other, w.t(), None, 'none', [], 'none'), other.mm(w), atol=1e-5)  # a view
        ok = ok and torch.allclose(lin.binary(other, x, w.t(), None, 'add'), x + other.mm(w), atol=1e-5)
        xi = torch.randn(1, 4, 5, 6, generator=g).contiguous(memory_format=torch.channels_last)
        wc, bc = torch.randn(4, 1, 3, 3, generator=g), torch.randn(4, generator=g)
        ref = F.gelu(F.conv2d(xi, wc, bc, padding=1, groups=4))
        ok = ok and torch.allclose(conv(xi, wc, bc, [1, 1], [1, 1], [1, 1], 4, 'gelu', [], 'none'), ref, atol=1e-5)
        acc = torch.randn(1, 4, 5, 6, generator=g).contiguous(memory_format=torch.channels_last)
        ref = acc + F.conv2d(xi, wc, bc, padding=1, groups=4)
        out = torch.ops.mkldnn._convolution_pointwise_.binary(acc, xi, wc, bc, [1, 1], [1, 1], [1, 1], 4, 'add',
                                                              None, None, [], None)
        return ok and out is acc and torch.allclose(acc, ref, atol=1e-5)  # in place, into acc
    except Exception:  # no oneDNN in this build, or the private ops changed: use the aten path
        return False


class _FusedCPU:
    available: bool = _probe_onednn()
    enabled: bool = True
    training: bool = True
    # GEMM + GELU: oneDNN's GELU epilogue where it was measured worth it (AVX-512 machines); elsewhere the GEMM
    # then aten's in-place GELU, same values (bit for bit on AVX2) and faster: on an AMD EPYC Zen 2 (AVX2,
    # 2 threads) the epilogue cost 2.8 ms on a 1536x1152 output that aten's GELU takes in 0.95 ms
    gelu_epilogue: bool = torch.backends.cpu.get_cpu_capability() == 'AVX512'
    # GemmGradConv2d's GEMM weight gradients where oneDNN's own kernel is slow (AVX2: 6-10 GMAC/s). On AVX-512
    # it was neutral (AMD Zen 4, paired whole-model fwd+bwd at 512x768: 0.993), and there its different
    # summation order parted the 2-rank and 1-process Mask R-CNN runs of tests/test_dist_equivalence.py
    # (AdamW update error 0.019 against 1e-3), so oneDNN keeps those gradients on AVX-512 machines
    gemm_weight_grad: bool = torch.backends.cpu.get_cpu_capability() != 'AVX512'


def set_fused_cpu_inference(flag: bool) -> bool:
    """Switch the fused oneDNN inference path of the blocks (ConvNeXt, Conv2Former) on or off for the
    process; returns the previous setting. Off, every block runs its autograd (aten) path: same results
    within float32 rounding (tested), slower on CPU. FLOP counting turns it off (the counter sees aten ops)."""
    old = _FusedCPU.enabled
    _FusedCPU.enabled = bool(flag)
    return old


def use_fused_cpu(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` may run its fused oneDNN path on ``x``: CPU float32, not under autocast or a
    tracer/compiler (exporters and ``torch.compile`` see plain aten ops), no stochastic depth in training, and
    no gradient needed by ``x`` or the module's parameters."""
    if not (_FusedCPU.enabled and _FusedCPU.available and x.device.type == 'cpu' and x.dtype == torch.float32):
        return False
    if is_tracing() or torch.is_autocast_enabled('cpu'):
        return False
    drop_path = getattr(module, 'drop_path', None)
    if module.training and drop_path is not None and not isinstance(drop_path, nn.Identity):
        return False
    return not torch.is_grad_enabled() or not (x.requires_grad or any(p.requires_grad for p in module.parameters()))


def set_fused_cpu_training(flag: bool) -> bool:
    """Switch the hand-written CPU training paths of the blocks (Conv2Former's token mixer and MLP as
    autograd Functions) on or off for the process; returns the previous setting. Off, the blocks run plain
    autograd ops: same outputs and gradients within float32 rounding (tested), more memory, slower."""
    old = _FusedCPU.training
    _FusedCPU.training = bool(flag)
    return old


def use_fused_cpu_training(x: torch.Tensor) -> bool:
    """Whether a block may run its hand-written training Function on ``x``: CPU float32 with gradients
    enabled, not under autocast or a tracer/compiler (those see plain aten ops)."""
    return (_FusedCPU.training and x.device.type == 'cpu' and x.dtype == torch.float32 and torch.is_grad_enabled()
            and not is_tracing() and not torch.is_autocast_enabled('cpu'))


def linear_cpu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
               add: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ weight.T (+ bias) (+ add)`` without autograd (inside an autograd Function), through oneDNN's GEMM
    for CPU float32 where it is available (``weight`` may be a transposed view; ``add`` is summed in the
    GEMM's epilogue), else aten's. Used for the training Functions' input gradients (``dy @ W``, a short
    reduction over channels); for weight gradients (``dy.T @ x``, a reduction over every pixel) aten's
    ``mm`` is faster and stays."""
    if _FusedCPU.available and x.dtype == torch.float32 and x.device.type == 'cpu':
        if add is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, add, weight, bias, 'add')
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], 'none')
    out = F.linear(x, weight, bias)
    return out if add is None else out.add_(add)


def linear_gelu_cpu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``GELU(x @ weight.T + bias)`` (exact GELU) through oneDNN's GEMM, for the fused inference paths (no
    autograd; :func:`use_fused_cpu` checked). The GELU is the GEMM's epilogue or a separate in-place pass,
    whichever is faster on this CPU (``_FusedCPU.gelu_epilogue``); both give the same values (tested)."""
    lin = torch.ops.mkldnn._linear_pointwise
    if _FusedCPU.gelu_epilogue:
        return lin(x, weight, bias, 'gelu', [], 'none')
    return torch.ops.aten.gelu_(lin(x, weight, bias, 'none', [], 'none'))


# ------------------------------------------------------------------------------ spare buffers of big CPU maps
class _Spares(threading.local):
    """Dead big CPU maps kept for reuse by the training Functions (per thread; see :func:`spare_empty`).

    glibc's malloc serves a request of 32 MiB or more (its largest mmap threshold) from fresh pages of the
    kernel unless a free block of its heap is that large, and gives them back on free, so such a map is
    faulted in page by page at its first write, every time: 20-25 ms for the 70 MB hidden-size maps of
    Conv2Former-T's stage-1 MLP at 800x1216 (2 threads; 8 ms to write the same map when its pages are
    resident). Writing temporaries into buffers that an earlier block left here skips that. At most
    ``cap`` buffers (the most recently given) are kept, between training steps too: up to
    ``cap * max_bytes`` of memory that the next step's first big maps reuse."""
    min_bytes: int = 32 << 20
    max_bytes: int = 1 << 30
    cap: int = 4

    def __init__(self):
        self.buffers: List[torch.Tensor] = []


_SPARES = _Spares()


def spare_wanted(shape: Sequence[int], like: torch.Tensor) -> bool:
    """Whether a map of ``shape`` (dtype and device of ``like``) is big enough for :func:`spare_empty`."""
    nbytes = like.element_size()
    for s in shape:
        nbytes *= s
    return like.device.type == 'cpu' and _Spares.min_bytes <= nbytes <= _Spares.max_bytes


def spare_empty(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised contiguous tensor of ``shape`` (dtype and device of ``like``): a buffer given back
    through :func:`spare_give` when one of that shape and dtype is there, else a new one."""
    shape = tuple(shape)
    if spare_wanted(shape, like):
        bufs = _SPARES.buffers
        inference = torch.is_inference_mode_enabled()
        for i in range(len(bufs) - 1, -1, -1):  # an inference-mode tensor cannot be saved for a backward
            if bufs[i].shape == shape and bufs[i].dtype == like.dtype and bufs[i].is_inference() == inference:
                return bufs.pop(i)
    return like.new_empty(shape)


def spare_give(*tensors: Optional[torch.Tensor]) -> None:
    """Hand dead maps back for :func:`spare_empty`. The caller guarantees that nothing else refers to them
    (no view, no autograd save, not returned); the small ones, views and non-contiguous ones are ignored."""
    bufs = _SPARES.buffers
    for t in tensors:
        if (t is not None and t._base is None and t.is_contiguous() and not t.requires_grad
                and spare_wanted(t.shape, t) and all(b is not t for b in bufs)):
            bufs.append(t)
    del bufs[:max(0, len(bufs) - _Spares.cap)]


def release_spares() -> None:
    """Free the buffers kept by :func:`spare_give` (this thread's), e.g. after CPU training."""
    _SPARES.buffers.clear()


def gelu_into(x: torch.Tensor) -> torch.Tensor:
    """``F.gelu(x)`` (exact) written into :func:`spare_empty`."""
    return torch.ops.aten.gelu.out(x, out=spare_empty(x.shape, x))


def linear_into(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ weight.T (+ bias)`` without autograd: a big output (:func:`spare_wanted`) is written into
    :func:`spare_empty` by aten's GEMM (its pages resident), a small one comes from :func:`linear_cpu`
    (oneDNN's GEMM, 10-20 % faster than aten's when no page faults are at stake)."""
    shape = (x.shape[0], weight.shape[0])
    if not spare_wanted(shape, x):
        return linear_cpu(x, weight, bias)
    out = spare_empty(shape, x)
    return torch.mm(x, weight.t(), out=out) if bias is None else torch.addmm(bias, x, weight.t(), out=out)


class _MlpGeluFunction(torch.autograd.Function):
    """``fc2(GELU(fc1 x))`` on the last axis (exact GELU) as one autograd node for CPU float32 training: the
    ops and values of the autograd path (``F.linear``, ``F.gelu``, ``F.linear``), with fewer fresh hidden-size
    maps. It keeps ``x`` and fc1's output ``u`` for the backward and recomputes ``h = GELU(u)`` there (autograd
    keeps ``h`` too: one hidden-size map per block less through the step), computes GELU's input gradient in
    place over fc2's input gradient (autograd allocates a third map for it), and takes its big maps from
    :func:`spare_empty` (see :class:`_Spares`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor], w2: torch.Tensor,
                b2: Optional[torch.Tensor]) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        u = linear_into(x2, w1, b1)
        h = gelu_into(u)
        out = linear_cpu(h, w2, b2)
        spare_give(h)
        ctx.save_for_backward(x2, u, w1, w2)
        ctx.has_bias = (b1 is not None, b2 is not None)
        return out.view(*x.shape[:-1], w2.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dz: torch.Tensor):
        x2, u, w1, w2 = ctx.saved_tensors
        need = ctx.needs_input_grad
        dz2 = dz.reshape(-1, dz.shape[-1])
        g_w2 = g_b2 = g_x = g_w1 = g_b1 = None
        if need[3]:
            h = gelu_into(u)
            g_w2 = dz2.t().mm(h)
            spare_give(h)
        if need[4] and ctx.has_bias[1]:
            g_b2 = dz2.sum(0)
        if need[0] or need[1] or need[2]:
            dh = linear_into(dz2, w2.t())  # ours to overwrite (never the incoming gradient)
            du = torch.ops.aten.gelu_backward.grad_input(dh, u, grad_input=dh)
            g_x = linear_cpu(du, w1.t()).view(*dz.shape[:-1], w1.shape[1]) if need[0] else None
            g_w1 = du.t().mm(x2) if need[1] else None
            g_b1 = du.sum(0) if need[2] and ctx.has_bias[0] else None
            spare_give(du)
        return g_x, g_w1, g_b1, g_w2, g_b2


def mlp_gelu(x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear) -> torch.Tensor:
    """``fc2(GELU(fc1(x)))`` (exact GELU, on the last axis) for the families' plain MLPs. CPU float32:
    training through :class:`_MlpGeluFunction` (:func:`use_fused_cpu_training`), inference with fc1's GELU
    in oneDNN's GEMM (:func:`linear_gelu_cpu`; :func:`use_fused_cpu`: whenever neither ``x`` nor fc1 needs a
    gradient, fc2 keeping its autograd); elsewhere (GPU, autocast, tracing, ``torch.compile``, the switches
    off) the plain modules. Same values within float32 rounding (tested)."""
    if use_fused_cpu(fc1, x) and fc1.bias is not None:
        h = linear_gelu_cpu(x.reshape(-1, x.shape[-1]), fc1.weight, fc1.bias)
        return fc2(h).view(*x.shape[:-1], fc2.out_features)
    if use_fused_cpu_training(x):
        return _MlpGeluFunction.apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    return fc2(F.gelu(fc1(x)))


def depthwise3x3_into(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1, groups=c)`` for a channels_last ``(n, c, h, w)`` ``x`` (no
    autograd), as a channels_last result. A big one is oneDNN's convolution added into a zeroed
    :func:`spare_empty` buffer (stage-1 hidden map of Conv2Former-T at 800x1216: 39 -> 21 ms)."""
    n, c, h, w = x.shape
    if not (_FusedCPU.available and x.dtype == torch.float32 and spare_wanted((n, h, w, c), x)):
        return F.conv2d(x, weight, bias, padding=1, groups=c)
    out = spare_empty((n, h, w, c), x).zero_().permute(0, 3, 1, 2)
    return torch.ops.mkldnn._convolution_pointwise_.binary(out, x, weight, bias, [1, 1], [1, 1], [1, 1], c, 'add',
                                                           None, None, [], None)


def depthwise3x3_input_grad_add_(acc: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``acc += `` the input gradient of a stride-1, padding-1 depthwise 3x3 convolution whose output gradient
    is ``grad`` (both channels_last ``(n, c, h, w)``), in place. For a big map (:func:`spare_wanted`) it is the
    convolution of ``grad`` with the flipped kernels, added by oneDNN straight into ``acc`` (stage-1 hidden
    map of Conv2Former-T at 800x1216: 39 -> 17 ms against aten's ``convolution_backward``, whose fresh output
    map is faulted in, and a separate add); smaller maps keep aten's. Both are within 2e-7 of float64 and
    give a batch of 2 the same bits as its images one by one, but they round differently, and with oneDNN's
    at the tiny sizes of tests/test_dist_equivalence.py its 2-rank and 1-process Mask R-CNN runs parted
    after 2 AdamW steps (update error 3.1e-3, 1.9e-2 after 3, against 3.1e-5): the amplification of
    rounding that the test's docstring describes, not traced to an element. At 512x768 the oneDNN path on
    every map would be 2.3 % of Conv2Former-T's fwd+bwd (paired, 10 rounds)."""
    c = weight.shape[0]
    if (_FusedCPU.available and grad.dtype == torch.float32 and grad.device.type == 'cpu'
            and spare_wanted(acc.shape, acc)):
        return torch.ops.mkldnn._convolution_pointwise_.binary(acc, grad, weight.flip(-1, -2), None, [1, 1], [1, 1],
                                                               [1, 1], c, 'add', None, None, [], None)
    gin = torch.ops.aten.convolution_backward(grad, grad, weight, [c], [1, 1], [1, 1], [1, 1], False, [0, 0], c,
                                              [True, False, False])[0]
    return acc.add_(gin)


# ------------------------------------------------------------------------------ large-kernel depthwise conv
def depthwise_weight_grad(x: torch.Tensor, grad: torch.Tensor, padding: Sequence[int]) -> torch.Tensor:
    """The ``(c, 1, k, k)`` weight gradient of a stride-1 depthwise convolution of ``x`` (``(n, c, h, w)``,
    any memory format) whose output gradient is ``grad``: per channel, the cross-correlation of the padded
    input with the gradient map, run as one depthwise convolution whose kernels are the gradient maps (batch
    folded into the groups). Run that way (contiguous memory) it takes 4-10x less time than the aten/oneDNN
    depthwise weight-gradient kernel for k >= 5 (measured: 72 ch, 128x192, k 11: 92 -> 10 ms; 96 ch, k 7:
    66 -> 38 ms, one thread); same values within float32 summation order.

    The input is zero-padded here (one copy, which also makes it contiguous) and the convolution runs
    unpadded: oneDNN's AVX2 depthwise kernel refuses a padding above 4, and with ``padding=5`` (k 11) it fell
    back to im2col + GEMM, 10x slower (AMD EPYC Zen 2, 2 threads, 72 ch, 128x192: 128 -> 13 ms)."""
    n, c, h, w = x.shape
    ph, pw = padding
    xp = x.new_zeros((1, n * c, h + 2 * ph, w + 2 * pw))
    xp[0, :, ph:ph + h, pw:pw + w].view(n, c, h, w).copy_(x)
    gw = F.conv2d(xp, grad.contiguous().reshape(n * c, 1, h, w), groups=n * c)
    return gw.reshape(n, c, *gw.shape[2:]).sum(0).unsqueeze(1)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim)`` (same parameters, same state-dict keys) whose
    training backward on CPU uses :class:`_ConvWeightGradCPU` (the weight gradient from
    :func:`depthwise_weight_grad`) for kernels of 5 and more. Everything else (CUDA, inference, small kernels,
    tracing and exporting) is the plain convolution."""

    def __init__(self, dim: int, kernel_size: int, bias: bool = True):
        super().__init__(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == 'cpu' and self.kernel_size[0] >= 5 and torch.is_grad_enabled()
                and self.weight.requires_grad and not is_tracing()):
            return _ConvWeightGradCPU.apply(x, self.weight, self.bias, (1, 1), self.padding, self.groups)
        return super().forward(x)


# ------------------------------------------------------------------------------ dense conv weight gradient
def _gemm_weight_grad_geometry(kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> bool:
    """Whether :func:`conv_weight_grad` handles this geometry: a patchify convolution (stride == kernel,
    no padding) or any stride-1 convolution."""
    patchify = tuple(stride) == tuple(kernel) and tuple(padding) == (0, 0)
    return patchify or tuple(stride) == (1, 1)


def conv_weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int]) -> torch.Tensor:
    """The ``(co, ci, kh, kw)`` weight gradient of a dense convolution (groups 1, dilation 1) of ``x``
    (``(n, ci, h, w)``) whose output gradient is ``grad``, as GEMMs over NHWC rows (both maps are read as
    channels_last; channels_last inputs need no copy). Geometries: see :func:`_gemm_weight_grad_geometry`.

    Patchify: the patches are a reshape of the NHWC input, so the gradient is one GEMM
    ``grad_rows.T @ patches`` (``(co, P) @ (P, kh*kw*ci)``). Stride 1: with the input zero-padded and the
    gradient extended with zero columns to the padded width ``Wp``, output row ``r = y*Wp + x`` reads tap
    ``(i, j)`` at padded row ``r + i*Wp + j``, so each tap's gradient is a GEMM on a contiguous slice (no
    im2col copy). Measured against oneDNN's AVX2 weight-gradient kernel (AMD EPYC Zen 2, 2 threads, 800x1216
    input): the 2x2/2 convolutions 36 -> 72 ch at 400x608: 89 -> 23 ms, 72 -> 144 ch: 58 -> 14 ms; the
    3x3/1 36 -> 36 ch at 400x608: 189 -> 124 ms. Same values within float32 summation order (tested)."""
    n, ci, h, w = x.shape
    co, ho, wo = grad.shape[1:]
    kh, kw = kernel
    g = grad.permute(0, 2, 3, 1)  # NHWC rows (a view when grad is channels_last)
    xh = x.permute(0, 2, 3, 1)
    if not _gemm_weight_grad_geometry(kernel, stride, padding):
        raise ValueError(f'conv_weight_grad: stride {tuple(stride)} with kernel {(kh, kw)} and padding '
                         f'{tuple(padding)} is neither patchify nor stride 1')
    if tuple(stride) == (kh, kw):  # patchify (no padding)
        patches = xh[:, :ho * kh, :wo * kw].reshape(n, ho, kh, wo, kw, ci).permute(0, 1, 3, 2, 4, 5)
        gw = g.reshape(-1, co).t().mm(patches.reshape(-1, kh * kw * ci))
        return gw.view(co, kh, kw, ci).permute(0, 3, 1, 2).contiguous()
    ph, pw = padding
    hp, wp = h + 2 * ph, w + 2 * pw
    xbuf = x.new_zeros((n, hp * wp + kw - 1, ci))  # padded NHWC rows, plus the last tap's overrun
    xbuf[:, :hp * wp].view(n, hp, wp, ci)[:, ph:ph + h, pw:pw + w] = xh
    gext = grad.new_zeros((n, ho, wp, co))  # zero columns wo..wp-1 drop the wrapped-around taps
    gext[:, :, :wo] = g
    gw = x.new_zeros((kh, kw, co, ci))
    rows = ho * wp
    for b in range(n):
        gt = gext[b].view(rows, co).t()
        for i in range(kh):
            for j in range(kw):
                off = i * wp + j
                gw[i, j].addmm_(gt, xbuf[b, off:off + rows])
    return gw.permute(2, 3, 0, 1).contiguous()


class _ConvWeightGradCPU(torch.autograd.Function):
    """A convolution whose CPU backward computes the weight gradient with this module's own kernels:
    :func:`depthwise_weight_grad` for a stride-1 depthwise convolution (``groups > 1``), :func:`conv_weight_grad`
    for a dense one (``groups == 1``). The input gradient stays aten's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias, stride, padding, groups: int):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.groups, ctx.has_bias = stride, padding, groups, bias is not None
        return F.conv2d(x, weight, bias, stride, padding, groups=groups)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(grad, x, weight, None, list(ctx.stride), list(ctx.padding),
                                                     [1, 1], False, [0, 0], ctx.groups, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            gw = (depthwise_weight_grad(x, grad, ctx.padding) if ctx.groups > 1
                  else conv_weight_grad(x, grad, weight.shape[2:], ctx.stride, ctx.padding))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2, 3))
        return gx, gw, gb, None, None, None


class GemmGradConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same state-dict keys) whose CPU float32 training backward computes
    the weight gradient as GEMMs (:func:`conv_weight_grad`) for patchify and stride-1 convolutions: the
    stems and downsampling layers. oneDNN's AVX2 weight-gradient kernel ran these at 6-10 GMAC/s; on AVX-512
    CPUs oneDNN's is as fast and is kept (``_FusedCPU.gemm_weight_grad``). Everything
    else (CUDA, inference, frozen weights, groups, tracing and exporting, ``set_fused_cpu_training(False)``)
    is the plain convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == 'zeros'
                and not isinstance(self.padding, str) and self.weight.requires_grad and _FusedCPU.gemm_weight_grad
                and use_fused_cpu_training(x)
                and _gemm_weight_grad_geometry(self.kernel_size, self.stride, self.padding)):
            return _ConvWeightGradCPU.apply(x, self.weight, self.bias, self.stride, self.padding, 1)
        return super().forward(x)


# ------------------------------------------------------------------------------ BatchNorm on channels_last (CPU)
def _wide_rows(m: int) -> int:
    """How many of ``m`` NHWC rows to fold into one for the wide ``(m / r, r * c)`` view of an ``(m, c)`` map
    (a power-of-two divisor of ``m``, at most 64): per-channel vectors are repeated ``r`` times, so elementwise
    loops run over ``r * c`` floats instead of ``c`` (36 at Conv2Former-T's stem, which aten's broadcasting
    loops handle slowly)."""
    r = 64
    while m % r:
        r //= 2
    return r


class _BatchNormNHWCTrain(torch.autograd.Function):
    """Training-mode BatchNorm of a channels_last map viewed as ``(m, c)`` rows (batch statistics, biased
    variance), computed on a wide ``(m / r, r * c)`` view: two-pass mean and variance, ``y = x_c * k + b``.
    aten's channels_last BatchNorm kernel takes 29 ms forward+backward for 36 x 256 x 384 on 2 threads
    (more than on 1); this takes 7 (its NCHW kernel: 5). Same values within float32 summation order."""

    @staticmethod
    def forward(ctx, x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        m, c = x2.shape
        r = _wide_rows(m)
        xw = x2.view(m // r, r * c)
        mean = xw.sum(0).view(r, c).sum(0).div_(m)
        xc = xw - mean.repeat(r)
        var = xc.square().sum(0).view(r, c).sum(0).div_(m)
        invstd = (var + eps).rsqrt_()
        y = torch.addcmul(bias.repeat(r), xc, (weight * invstd).repeat(r))
        ctx.save_for_backward(xc, invstd, weight)
        ctx.mark_non_differentiable(mean, var)
        return y.view(m, c), mean, var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: torch.Tensor, _dmean, _dvar):
        xc, invstd, weight = ctx.saved_tensors
        rows, rc = xc.shape
        c = weight.shape[0]
        r, m = rc // c, rows * rc // c
        dy = dy.contiguous().view(rows, rc)
        db = dy.sum(0).view(r, c).sum(0)
        dxhat = (dy * xc).sum(0).view(r, c).sum(0)  # sum(dy * x_c) per channel
        k1 = weight * invstd
        dx = torch.addcmul((-k1 * db / m).repeat(r), dy, k1.repeat(r))
        dx.addcmul_(xc, (-k1 * invstd.square() * dxhat / m).repeat(r))
        return dx.view(m, c), dxhat * invstd, db, None


def _col_dot(a: torch.Tensor, b: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """``(a * b).sum(0)`` for two ``(n, k)`` maps, ``rows`` rows at a time: no full-size product is allocated
    (with glibc's default settings a fresh map above 32 MiB is mmapped and page-faulted in at every step:
    0.4 ms per MB, 14 ms for one 36 x 400 x 608 map on 2 threads, more than the GELU that fills it)."""
    out = torch.zeros(a.shape[1], dtype=a.dtype)
    for i in range(0, a.shape[0], rows):
        out += (a[i:i + rows] * b[i:i + rows]).sum(0)
    return out


def _col_sq_dev(a: torch.Tensor, mean: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """``(a - mean).square().sum(0)`` for an ``(n, k)`` map and a ``(k,)`` mean, in chunks as :func:`_col_dot`
    (two-pass variance; aten's ``var_mean(dim=0)`` took 27 ms for the map above, this 8)."""
    out = torch.zeros(a.shape[1], dtype=a.dtype)
    for i in range(0, a.shape[0], rows):
        out += (a[i:i + rows] - mean).square_().sum(0)
    return out


class _GeluBatchNormNHWC(torch.autograd.Function):
    """``BatchNorm(GELU(x))`` of a channels_last map viewed as ``(m, c)`` rows, as one node: batch statistics
    (training mode, two-pass mean and biased variance) or the
    given running statistics (eval mode, ``norm_eval``). It keeps only ``x`` (the convolution's output) for the
    backward and recomputes ``GELU(x)`` there; forward and backward each allocate one map (the unfused GELU
    and BatchNorm: four and three), and every pass runs on the wide ``(m / r, r * c)`` view."""

    @staticmethod
    def forward(ctx, x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor]):
        m, c = x2.shape
        r = _wide_rows(m)
        t = F.gelu(x2).view(m // r, r * c)  # becomes the output
        if running_mean is None:
            mean = t.sum(0).view(r, c).sum(0).div_(m)
            var = _col_sq_dev(t, mean.repeat(r)).view(r, c).sum(0).div_(m)
        else:
            mean, var = running_mean.clone(), running_var.clone()
        invstd = (var + eps).rsqrt()
        k = weight * invstd
        torch.addcmul((bias - mean * k).repeat(r), t, k.repeat(r), out=t)
        ctx.save_for_backward(x2, mean, invstd, weight)
        ctx.batch_stats = running_mean is None
        ctx.mark_non_differentiable(mean, var)
        return t.view(m, c), mean, var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: torch.Tensor, _dmean, _dvar):
        x2, mean, invstd, weight = ctx.saved_tensors
        m, c = x2.shape
        r = _wide_rows(m)
        dy = dy.contiguous().view(m // r, r * c)
        buf = F.gelu(x2).view(m // r, r * c)  # GELU(x), then x-hat, then d GELU(x), then d x: one map
        torch.addcmul((-mean * invstd).repeat(r), buf, invstd.repeat(r), out=buf)  # x-hat
        db = dy.sum(0).view(r, c).sum(0)
        dxhat = _col_dot(dy, buf).view(r, c).sum(0)  # sum(dy * x-hat) per channel
        k1 = weight * invstd
        if ctx.batch_stats:  # d t = k1 (dy - mean(dy) - x-hat mean(dy x-hat))
            torch.addcmul((-k1 * db / m).repeat(r), buf, (-k1 * dxhat / m).repeat(r), out=buf)
            buf.addcmul_(dy, k1.repeat(r))
        else:  # fixed statistics: d t = k1 dy
            torch.mul(dy, k1.repeat(r), out=buf)
        dt = buf.view(m, c)
        torch.ops.aten.gelu_backward.grad_input(dt, x2, grad_input=dt)
        return dt, dxhat, db, None, None, None


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and keys; still a ``_BatchNorm`` for ``norm_eval``,
    ``frozen_stages`` and SyncBN conversion) whose CPU float32 forward on a channels_last map runs on the wide
    ``(m / r, r * c)`` view: :class:`_BatchNormNHWCTrain` in training mode, ``x * k + b'`` with the running
    statistics folded into ``k, b'`` in eval mode (``norm_eval=True``). Forward+backward for 36 x 256 x 384
    on 2 threads: training 29 -> 7 ms, eval 19 -> 8 ms. Everything else (NCHW, CUDA, other dtypes, autocast,
    tracing, no running statistics) is ``nn.BatchNorm2d``."""

    def wide_path(self, x: torch.Tensor) -> bool:
        """Whether ``x`` takes the wide-view CPU path (see the class)."""
        return (self.affine and self.track_running_stats and x.device.type == 'cpu' and x.dim() == 4
                and x.dtype == torch.float32 and x.numel() > x.shape[1] and not is_tracing()
                and not torch.is_autocast_enabled('cpu') and x.is_contiguous(memory_format=torch.channels_last))

    def forward_gelu(self, x: torch.Tensor) -> torch.Tensor:
        """``self(F.gelu(x))`` for an ``x`` on the wide path, as one :class:`_GeluBatchNormNHWC` node (the
        GELU-before-BN of Conv2Former's stem): it saves one map instead of three for the backward and
        allocates two instead of seven."""
        n, c, h, w = x.shape
        stats = (None, None) if self.training else (self.running_mean, self.running_var)
        y, mean, var = _GeluBatchNormNHWC.apply(x.permute(0, 2, 3, 1).reshape(-1, c), self.weight, self.bias,
                                                self.eps, *stats)
        if self.training:
            self._update_running_stats(mean, var, n * h * w)
        return y.view(n, h, w, c).permute(0, 3, 1, 2)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, m: int) -> None:
        """The running statistics as ``nn.BatchNorm2d`` updates them (unbiased variance)."""
        self.num_batches_tracked.add_(1)
        f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - f).add_(mean, alpha=f)
        self.running_var.mul_(1 - f).add_(var * (m / max(m - 1, 1)), alpha=f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.wide_path(x):
            return super().forward(x)
        n, c, h, w = x.shape
        x2 = x.permute(0, 2, 3, 1).reshape(-1, c)
        m = x2.shape[0]
        if not self.training:  # eval: the running statistics folded into one addcmul (plain autograd ops)
            r = _wide_rows(m)
            k = self.weight * torch.rsqrt(self.running_var + self.eps)
            y = torch.addcmul((self.bias - self.running_mean * k).repeat(r), x2.view(m // r, r * c), k.repeat(r))
            return y.view(n, h, w, c).permute(0, 3, 1, 2)
        y, mean, var = _BatchNormNHWCTrain.apply(x2, self.weight, self.bias, self.eps)
        self._update_running_stats(mean, var, m)
        return y.view(n, h, w, c).permute(0, 3, 1, 2)
