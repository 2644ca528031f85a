"""The CPU fast paths against torch's own ops and the official formulation: DepthwiseConv2d's custom weight
gradient against ``nn.Conv2d``'s autograd, BatchNorm2d's channels_last training path against
``nn.BatchNorm2d``, Conv2Former's training Functions against the official NCHW ``nn.Conv2d`` blocks, the plain
MLP's (``mlp_gelu``) against ``nn.Linear``/``nn.GELU``, and when each path may run."""
import pytest
import torch
import torch.nn as nn

from backbones import build_backbone
from backbones.layers import (_SPARES, BatchNorm2d, DepthwiseConv2d, GemmGradConv2d, _BatchNormNHWCTrain,
                              _ConvWeightGradCPU, _FusedCPU, _Spares, depthwise3x3_input_grad_add_, depthwise3x3_into,
                              linear_gelu_cpu, linear_into, mlp_gelu, release_spares, set_fused_cpu_inference,
                              set_fused_cpu_training, spare_empty, spare_give, use_fused_cpu)
from conftest import autograd_nodes


@pytest.mark.parametrize('k', [3, 5, 7, 11])
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('fmt', [torch.contiguous_format, torch.channels_last], ids=['nchw', 'channels_last'])
def test_depthwise_conv_gradients_equal_nn_conv2d(k, bias, fmt):
    torch.manual_seed(k)
    ours = DepthwiseConv2d(6, k, bias=bias)
    ref = nn.Conv2d(6, 6, k, padding=k // 2, groups=6, bias=bias)
    ref.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 6, 13, 17).contiguous(memory_format=fmt)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(2, 6, 13, 17)
    ya, yb = ours(xa), ref(xb)
    ran = any(n.name() == '_ConvWeightGradCPUBackward' for n in autograd_nodes(ya))
    assert ran == (k >= 5)  # the custom weight gradient for large kernels only
    torch.testing.assert_close(ya, yb)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-4)
    if bias:
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-4)


def test_depthwise_conv_function_gradcheck():
    args = (torch.randn(2, 2, 5, 6, dtype=torch.double, requires_grad=True),
            torch.randn(2, 1, 5, 5, dtype=torch.double, requires_grad=True),
            torch.randn(2, dtype=torch.double, requires_grad=True), (1, 1), (2, 2), 2)
    assert torch.autograd.gradcheck(_ConvWeightGradCPU.apply, args)


@pytest.fixture
def gemm_weight_grad():
    """GemmGradConv2d's GEMM path on, whatever this CPU's default (off on AVX-512 machines)."""
    old, _FusedCPU.gemm_weight_grad = _FusedCPU.gemm_weight_grad, True
    yield
    _FusedCPU.gemm_weight_grad = old


@pytest.mark.parametrize('geom', [(2, 2, 0), (4, 4, 0), (3, 1, 1), (3, 1, 0), (5, 1, 2), ((1, 3), 1, (0, 1))],
                         ids=['patch2', 'patch4', '3x3-same', '3x3-valid', '5x5-same', '1x3'])
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('fmt', [torch.contiguous_format, torch.channels_last], ids=['nchw', 'channels_last'])
def test_gemm_weight_grad_conv_equals_nn_conv2d(geom, bias, fmt, gemm_weight_grad):
    k, s, p = geom
    torch.manual_seed(0)
    ours = GemmGradConv2d(5, 7, k, stride=s, padding=p, bias=bias)
    ref = nn.Conv2d(5, 7, k, stride=s, padding=p, bias=bias)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 13, 18).contiguous(memory_format=fmt)  # 13: a remainder row for the patchify cases
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    assert any(n.name() == '_ConvWeightGradCPUBackward' for n in autograd_nodes(ya))  # the GEMM path really ran
    torch.testing.assert_close(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-4)
    assert ours.weight.grad.is_contiguous()
    if bias:
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('geom', [(2, 2, 0), (3, 1, 1)], ids=['patch2', '3x3-same'])
def test_gemm_weight_grad_conv_gradcheck(geom):
    k, s, p = geom
    args = (torch.randn(2, 3, 6, 7, dtype=torch.double, requires_grad=True),
            torch.randn(4, 3, k, k, dtype=torch.double, requires_grad=True),
            torch.randn(4, dtype=torch.double, requires_grad=True), (s, s), (p, p), 1)
    assert torch.autograd.gradcheck(_ConvWeightGradCPU.apply, args)


def test_gemm_weight_grad_conv_only_where_it_applies(gemm_weight_grad):
    conv = GemmGradConv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 8, 8)
    nodes = lambda y: {n.name() for n in autograd_nodes(y)}
    assert '_ConvWeightGradCPUBackward' in nodes(conv(x))
    assert '_ConvWeightGradCPUBackward' not in nodes(GemmGradConv2d(4, 4, 3, stride=2)(x))  # neither geometry
    assert '_ConvWeightGradCPUBackward' not in nodes(GemmGradConv2d(4, 4, 3, padding=1, groups=2)(x))
    conv.weight.requires_grad_(False)  # frozen (frozen_stages): the plain convolution
    assert '_ConvWeightGradCPUBackward' not in nodes(conv(x.requires_grad_()))
    conv.weight.requires_grad_(True)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), nn.functional.conv2d(x, conv.weight, conv.bias, padding=1))
    old = set_fused_cpu_training(False)
    try:
        assert '_ConvWeightGradCPUBackward' not in nodes(conv(x))
    finally:
        set_fused_cpu_training(old)


@pytest.mark.parametrize('shape', [(2, 36, 16, 24), (1, 5, 7, 9), (3, 16, 1, 1)])  # 768 rows, 63 (odd), 3
@pytest.mark.parametrize('momentum', [0.1, None])
def test_batchnorm_channels_last_training_equals_nn_batchnorm(shape, momentum):
    torch.manual_seed(shape[1])
    # eps 0.01 (not 1e-5): large enough against the variance (~9) for a misplaced eps to show at 1e-5
    ours, ref = (cls(shape[1], eps=0.01, momentum=momentum) for cls in (BatchNorm2d, nn.BatchNorm2d))
    nn.init.uniform_(ref.weight, 0.5, 1.5)
    nn.init.uniform_(ref.bias, -1, 1)
    ours.load_state_dict(ref.state_dict())
    for step in range(3):  # running statistics over several steps (momentum None: cumulative average)
        x = (torch.randn(shape) * 3 + 2).contiguous(memory_format=torch.channels_last)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        g = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        ya, yb = ours(xa), ref(xb)
        assert _ran_nhwc_batchnorm(ya)  # the fast path really ran
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=2e-5)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=2e-5)
        for pa, pb in ((ours.weight, ref.weight), (ours.bias, ref.bias)):
            torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-5, atol=1e-4)
        for name, buf in ref.named_buffers():
            torch.testing.assert_close(getattr(ours, name), buf)
    ours.eval(), ref.eval()  # norm_eval: the running statistics just accumulated
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=2e-5)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-4)


def _node_names(y: torch.Tensor) -> set:
    return {fn.name() for fn in autograd_nodes(y)}


def _ran_nhwc_batchnorm(y: torch.Tensor, node: str = 'BatchNormNHWCTrain') -> bool:
    """Whether the autograd graph of ``y`` holds the channels_last BatchNorm function (or ``node``)."""
    return any(node in name for name in _node_names(y))


def test_batchnorm_fast_path_only_where_it_applies():
    bn = BatchNorm2d(4)
    x = torch.randn(2, 4, 3, 5, requires_grad=True)
    cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert _ran_nhwc_batchnorm(bn(cl))
    assert not _ran_nhwc_batchnorm(bn(x))  # NCHW: nn.BatchNorm2d
    assert not _ran_nhwc_batchnorm(bn.eval()(cl))  # eval mode (norm_eval): running statistics ...
    assert _ran_nhwc_batchnorm(bn(cl), 'Addcmul')  # ... folded into one addcmul on the wide view
    assert not _ran_nhwc_batchnorm(bn(x), 'Addcmul')
    no_stats = BatchNorm2d(4, track_running_stats=False)  # batch statistics in eval too: nn.BatchNorm2d
    assert not _ran_nhwc_batchnorm(no_stats(cl)) and not _ran_nhwc_batchnorm(no_stats.eval()(cl), 'Addcmul')
    with pytest.raises(ValueError, match='more than 1 value per channel'):  # torch's own error
        BatchNorm2d(4)(torch.randn(1, 4, 1, 1).contiguous(memory_format=torch.channels_last))


def test_batchnorm_function_gradcheck():
    args = (torch.randn(12, 3, dtype=torch.double, requires_grad=True),
            torch.rand(3, dtype=torch.double, requires_grad=True) + 0.5,
            torch.randn(3, dtype=torch.double, requires_grad=True), 1e-5)
    assert torch.autograd.gradcheck(lambda *a: _BatchNormNHWCTrain.apply(*a)[0], args)


@pytest.mark.skipif(not _FusedCPU.available, reason='no oneDNN fused ops in this torch build')
@pytest.mark.parametrize('epilogue', [True, False], ids=['gelu-epilogue', 'gelu-after'])
def test_linear_gelu_equals_aten(epilogue):
    torch.manual_seed(0)
    x, w, b = torch.randn(300, 24), torch.randn(96, 24) * 0.3, torch.randn(96)
    old, _FusedCPU.gelu_epilogue = _FusedCPU.gelu_epilogue, epilogue
    try:
        out = linear_gelu_cpu(x, w, b)
        out3 = linear_gelu_cpu(x.view(3, 100, 24), w, b)  # ConvNeXt passes (n, h*w, c)
    finally:
        _FusedCPU.gelu_epilogue = old
    ref = torch.nn.functional.gelu(torch.nn.functional.linear(x, w, b))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out3, ref.view(3, 100, 96), rtol=1e-5, atol=1e-5)


def test_fused_path_only_without_gradients():
    m = build_backbone('conv2former_n', out_indices=(0,))
    block = m.stages[0][0]
    x = torch.randn(1, 16, 16, 64)
    assert not use_fused_cpu(block.train(), x)  # parameters need gradients
    with torch.no_grad():
        assert use_fused_cpu(block.eval(), x) == _FusedCPU.available  # oneDNN ops probed at import
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert not use_fused_cpu(block, x)
        assert not use_fused_cpu(block, x.double())
        old = set_fused_cpu_inference(False)
        try:
            assert not use_fused_cpu(block, x)
        finally:
            set_fused_cpu_inference(old)



# ------------------------------------------------------------- Conv2Former's training Functions
class _LayerNormCF(nn.Module):
    """The official Conv2Former LayerNorm (channels_first, written out): the reference's normalisation."""

    def __init__(self, dim):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - u) / torch.sqrt(s + 1e-6)) + self.bias[:, None, None]


class _OfficialConvMod(nn.Module):
    """The official ``ConvMod`` in NCHW with ``nn.Conv2d`` layers (same parameter names)."""

    def __init__(self, dim, k):
        super().__init__()
        self.norm = _LayerNormCF(dim)
        self.att = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU(), nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim))
        self.v = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        x = self.norm(x)
        return self.proj(self.att(x) * self.v(x))


class _OfficialMlp(nn.Module):
    """The official ``MLP`` in NCHW with ``nn.Conv2d`` layers (same parameter names)."""

    def __init__(self, dim, r=4):
        super().__init__()
        self.norm = _LayerNormCF(dim)
        self.fc1, self.fc2 = nn.Conv2d(dim, dim * r, 1), nn.Conv2d(dim * r, dim, 1)
        self.pos = nn.Conv2d(dim * r, dim * r, 3, padding=1, groups=dim * r)
        self.act = nn.GELU()

    def forward(self, x):
        x = self.act(self.fc1(self.norm(x)))
        x = x + self.act(self.pos(x))
        return self.fc2(x)


def _conv2former_pair(kind, k=7, dim=8):
    from backbones.conv2former import ConvMlp, ConvMod
    ours, ref = (ConvMod(dim, k), _OfficialConvMod(dim, k)) if kind == 'mod' else (ConvMlp(dim), _OfficialMlp(dim))
    for p in ref.parameters():  # away from the default init (ones / zeros) so that every term shows
        nn.init.normal_(p, 0, 0.5)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


FN = {'mod': '_ConvModFunctionBackward', 'mlp': '_ConvMlpFunctionBackward'}


@pytest.fixture(params=[False, True], ids=['fresh-maps', 'spare-maps'])
def spares(request):
    """``spare-maps``: every map of the spare-buffer code (``backbones.layers.spare_empty``) goes through the
    buffers, not only those of 32 MiB and more (which tests cannot afford)."""
    old = _Spares.min_bytes
    _Spares.min_bytes = 0 if request.param else old
    release_spares()
    yield request.param
    _Spares.min_bytes = old
    release_spares()


def test_spare_buffers_keep_only_dead_whole_maps(spares):
    big = torch.empty(4, 6)
    spare_give(big, big[1:], big.t(), torch.ones(3, requires_grad=True), None)
    assert _SPARES.buffers == ([big] if spares else [])  # not the views, not a leaf that needs a gradient
    if not spares:
        return
    assert spare_empty((6, 4), big) is not big and spare_empty((4, 6), big.double()) is not big  # shape, dtype
    assert spare_empty((4, 6), big) is big and _SPARES.buffers == []  # taken out
    maps = [torch.empty(2, 3) for _ in range(_Spares.cap + 2)]
    spare_give(*maps)
    spare_give(maps[-1])  # given twice: kept once
    assert _SPARES.buffers == maps[2:]  # the most recently given ``cap``
    with torch.inference_mode():
        t = spare_empty((9,), big)
        spare_give(t)
    assert spare_empty((9,), big) is not t  # an inference tensor could not be saved for a backward
    with torch.inference_mode():
        assert spare_empty((9,), big) is t


@pytest.mark.skipif(not _FusedCPU.available, reason='no oneDNN fused ops in this torch build')
@pytest.mark.parametrize('onednn', [True, False], ids=['onednn', 'aten'])
def test_spare_map_helpers_equal_aten(spares, onednn):
    """The GEMM / depthwise 3x3 helpers of the MLP's training Function against the aten ops they replace,
    into spare buffers or not, through oneDNN or its aten fallback."""
    torch.manual_seed(0)
    old, _FusedCPU.available = _FusedCPU.available, onednn
    try:
        x = torch.randn(2, 12, 7, 9).contiguous(memory_format=torch.channels_last)
        w, b = torch.randn(12, 1, 3, 3), torch.randn(12)
        ref = nn.functional.conv2d(x, w, b, padding=1, groups=12)
        for _ in range(2):  # the second time into the first one's buffer
            out = depthwise3x3_into(x, w, b)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
            assert out.is_contiguous(memory_format=torch.channels_last)
            spare_give(out.permute(0, 2, 3, 1))
        g, acc = torch.randn_like(x), torch.randn_like(x)
        gin = torch.ops.aten.convolution_backward(g, x, w, [12], [1, 1], [1, 1], [1, 1], False, [0, 0], 12,
                                                  [True, False, False])[0]
        ref, out = acc + gin, acc.clone()
        assert depthwise3x3_input_grad_add_(out, g, w) is out
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        rows, wl, bl = torch.randn(40, 6), torch.randn(24, 6), torch.randn(24)
        for _ in range(2):
            torch.testing.assert_close(linear_into(rows, wl, bl), nn.functional.linear(rows, wl, bl))
            torch.testing.assert_close(linear_into(rows, wl), rows @ wl.t())
            torch.testing.assert_close(linear_into(rows.t().contiguous().t(), wl.t().contiguous().t()), rows @ wl.t())
            spare_give(linear_into(rows, wl, bl))
    finally:
        _FusedCPU.available = old


@pytest.mark.parametrize('kind,k', [('mod', 7), ('mod', 11), ('mod', 3), ('mlp', 3)])
@pytest.mark.parametrize('frozen', ['none', 'params', 'input', 'dw'])
def test_conv2former_training_functions_equal_official_formulation(kind, k, frozen, spares):
    """Outputs and every gradient (input, each parameter, the layer scale) of ConvMod / ConvMlp's training
    Functions against the official NCHW ``nn.Conv2d`` formulation; frozen parts get no gradient. With
    ``spare-maps`` a first step leaves its dead maps as spare buffers, the checked step writes into them."""
    torch.manual_seed(k)
    ours, ref = _conv2former_pair(kind, k)
    x = torch.randn(2, 8, 9, 13)  # odd sizes: no accidental symmetry in the padding
    scale = torch.rand(8) + 0.5
    frozen_names = {'params': [n for n, _ in ours.named_parameters()], 'none': [], 'input': [],
                    'dw': ['att.2.weight', 'att.2.bias', 'pos.weight', 'pos.bias']}[frozen]
    for model in (ours, ref):
        for n, p in model.named_parameters():
            p.requires_grad_(n not in frozen_names)
    if spares:
        ours(torch.randn(2, 9, 13, 8, requires_grad=True), scale).sum().backward()
        assert _SPARES.buffers or kind == 'mod'  # the MLP gives its dead hidden-size maps back
        for p in ours.parameters():
            p.grad = None
    xa = x.permute(0, 2, 3, 1).contiguous().requires_grad_(frozen != 'input')  # the blocks' NHWC input
    xb = x.clone().requires_grad_(frozen != 'input')
    sa, sb = scale.clone().requires_grad_(), scale.clone().requires_grad_()
    ya = ours(xa, sa)
    yb = sb[:, None, None] * ref(xb)
    assert FN[kind] in _node_names(ya)  # the Function really ran
    torch.testing.assert_close(ya.permute(0, 3, 1, 2), yb, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(yb)
    ga = g.permute(0, 2, 3, 1).contiguous()
    g_kept = ga.clone()
    ya.backward(ga)
    yb.backward(g)
    assert torch.equal(ga, g_kept)  # the incoming gradient is left as it came
    if frozen == 'input':
        assert xa.grad is None
    else:
        torch.testing.assert_close(xa.grad.permute(0, 3, 1, 2), xb.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sa.grad, sb.grad, rtol=1e-4, atol=1e-4)
    pb = dict(ref.named_parameters())
    for n, p in ours.named_parameters():
        if n in frozen_names:
            assert p.grad is None, n
        else:
            torch.testing.assert_close(p.grad, pb[n].grad, rtol=1e-4, atol=1e-4, msg=n)


@pytest.mark.parametrize('kind', ['mod', 'mlp'])
def test_conv2former_training_functions_backward_twice(kind, spares):
    """``backward(retain_graph=True)`` then ``backward()`` doubles every gradient: the backward leaves the
    saved maps as they were, with its temporaries in spare buffers or not."""
    torch.manual_seed(1)
    ours, _ = _conv2former_pair(kind, 7)
    x = torch.randn(2, 9, 13, 8, requires_grad=True)
    y = ours(x, torch.rand(8) + 0.5)
    assert FN[kind] in _node_names(y)
    g = torch.randn_like(y)
    y.backward(g, retain_graph=True)
    first = [t.grad.clone() for t in [x, *ours.parameters()]]
    ours(torch.randn_like(x), torch.ones(8)).backward(g)  # another step in between: its temporaries, its spares
    for t in [x, *ours.parameters()]:
        t.grad = None
    y.backward(g)
    for a, b in zip(first, [t.grad for t in [x, *ours.parameters()]]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('kind,k', [('mod', 5), ('mod', 3), ('mlp', 3)])  # 5: the convolution weight grad
def test_conv2former_training_functions_gradcheck(kind, k, spares):
    from backbones.conv2former import _ConvMlpFunction, _ConvModFunction
    torch.manual_seed(0)
    c, hid = 3, (3 if kind == 'mod' else 6)
    d = dict(dtype=torch.double, requires_grad=True)
    if kind == 'mod':
        args = (torch.randn(2, 4, 5, c, **d), torch.randn(c, c, **d), torch.randn(c, **d), torch.randn(c, c, **d),
                torch.randn(c, **d), torch.randn(c, 1, k, k, **d), torch.randn(c, **d), torch.randn(c, c, **d),
                torch.randn(c, **d))
        fn = _ConvModFunction.apply
    else:
        args = (torch.randn(2, 4, 5, c, **d), torch.randn(hid, c, **d), torch.randn(hid, **d),
                torch.randn(hid, 1, 3, 3, **d), torch.randn(hid, **d), torch.randn(c, hid, **d), torch.randn(c, **d))
        fn = _ConvMlpFunction.apply
    assert torch.autograd.gradcheck(fn, args)


def test_conv2former_training_functions_only_where_they_apply():
    from backbones.layers import set_fused_cpu_training
    ours, _ = _conv2former_pair('mod', 7)
    x, s = torch.randn(1, 5, 6, 8, requires_grad=True), torch.ones(8)
    assert FN['mod'] in _node_names(ours(x, s))
    ours.double()
    assert FN['mod'] not in _node_names(ours(x.double(), s.double()))  # float32 only
    ours.float()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert FN['mod'] not in _node_names(ours(x, s))
    old = set_fused_cpu_training(False)
    try:
        y = ours(x, s)
        assert FN['mod'] not in _node_names(y) and y.grad_fn is not None  # plain autograd ops
    finally:
        set_fused_cpu_training(old)
    with torch.no_grad():
        assert ours(x, s).grad_fn is None


# ------------------------------------------------------------- the plain MLP (unified family): mlp_gelu
MLP_FN = '_MlpGeluFunctionBackward'


def _mlp_pair(dim=6, hidden=20):
    """``(fc1, fc2)`` for :func:`mlp_gelu` and torch's own ``nn.Sequential(Linear, GELU, Linear)`` with the same
    (non-default) weights."""
    torch.manual_seed(dim)
    ref = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
    for p in ref.parameters():
        nn.init.normal_(p, 0, 0.5)
    fc1, fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
    fc1.load_state_dict(ref[0].state_dict()), fc2.load_state_dict(ref[2].state_dict())
    return fc1, fc2, ref


@pytest.mark.parametrize('frozen', ['none', 'fc1', 'fc2', 'biases', 'input'])
@pytest.mark.parametrize('layout', ['nhwc', 'permuted', 'rows'])
def test_mlp_gelu_training_function_equals_nn_modules(frozen, layout, spares):
    """Output and every gradient of the training Function against torch's ``Linear -> GELU -> Linear``;
    frozen parts get no gradient; the incoming gradient is left as it came. ``permuted``: a non-contiguous
    input (Swin's ``LayerNorm2d(x).permute(0, 2, 3, 1)`` of an NCHW map)."""
    fc1, fc2, ref = _mlp_pair()
    off = {'none': [], 'fc1': ['0.weight', '0.bias'], 'fc2': ['2.weight', '2.bias'],
           'biases': ['0.bias', '2.bias'], 'input': []}[frozen]
    for n, p in ref.named_parameters():
        p.requires_grad_(n not in off)
    ours = [*[('0.' + k, v) for k, v in fc1.named_parameters()], *[('2.' + k, v) for k, v in fc2.named_parameters()]]
    for n, p in ours:
        p.requires_grad_(n not in off)
    if spares:
        mlp_gelu(torch.randn(5, 7, 6, requires_grad=True), fc1, fc2).sum().backward()  # leaves spare maps
        for p in [*fc1.parameters(), *fc2.parameters()]:
            p.grad = None
    x = {'nhwc': torch.randn(2, 5, 7, 6), 'permuted': torch.randn(2, 6, 5, 7).permute(0, 2, 3, 1),
         'rows': torch.randn(11, 6)}[layout]
    xa = x.clone().requires_grad_(frozen != 'input')  # clone keeps the permuted strides
    xb = x.clone().requires_grad_(frozen != 'input')
    assert xa.is_contiguous() == (layout != 'permuted')
    ya, yb = mlp_gelu(xa, fc1, fc2), ref(xb)
    assert MLP_FN in _node_names(ya)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(yb)
    g_kept = g.clone()
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(g, g_kept)
    if frozen == 'input':
        assert xa.grad is None
    else:
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    pb = dict(ref.named_parameters())
    for n, p in ours:
        if n in off:
            assert p.grad is None, n
        else:
            torch.testing.assert_close(p.grad, pb[n].grad, rtol=1e-5, atol=1e-5, msg=n)


def test_mlp_gelu_backward_twice(spares):
    """``backward(retain_graph=True)``, another step, then ``backward()``: the same gradients (the saved maps
    stay as they were; the temporaries go to spare buffers or not)."""
    fc1, fc2, _ = _mlp_pair()
    x = torch.randn(2, 5, 7, 6, requires_grad=True)
    y = mlp_gelu(x, fc1, fc2)
    g = torch.randn_like(y)
    y.backward(g, retain_graph=True)
    first = [t.grad.clone() for t in [x, *fc1.parameters(), *fc2.parameters()]]
    mlp_gelu(torch.randn_like(x), fc1, fc2).backward(g)
    for t in [x, *fc1.parameters(), *fc2.parameters()]:
        t.grad = None
    y.backward(g)
    for a, b in zip(first, [t.grad for t in [x, *fc1.parameters(), *fc2.parameters()]]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_mlp_gelu_function_gradcheck(spares):
    from backbones.layers import _MlpGeluFunction
    torch.manual_seed(0)
    d = dict(dtype=torch.double, requires_grad=True)
    args = (torch.randn(2, 3, 4, 5, **d), torch.randn(7, 5, **d), torch.randn(7, **d), torch.randn(5, 7, **d),
            torch.randn(5, **d))
    assert torch.autograd.gradcheck(_MlpGeluFunction.apply, args)


def test_mlp_gelu_paths_only_where_they_apply():
    """The Function for CPU float32 training only; without gradients fc1's GELU in oneDNN's GEMM (same values
    as torch's modules); float64, autocast and the switches off run the modules themselves."""
    fc1, fc2, ref = _mlp_pair()
    x = torch.randn(2, 5, 7, 6, requires_grad=True)
    assert MLP_FN in _node_names(mlp_gelu(x, fc1, fc2))
    with torch.no_grad():
        y = mlp_gelu(x, fc1, fc2)
        assert y.grad_fn is None and y.shape == (2, 5, 7, 6)
        torch.testing.assert_close(y, ref(x), rtol=1e-5, atol=1e-5)
    for p in [*fc1.parameters(), *ref[0].parameters()]:
        p.requires_grad_(False)
    y = mlp_gelu(x.detach(), fc1, fc2)  # only fc2 needs a gradient: fc1 + GELU fused, fc2 through autograd
    assert MLP_FN not in _node_names(y) and y.grad_fn is not None
    g = torch.randn_like(y)
    y.backward(g)
    ref(x.detach()).backward(g)
    torch.testing.assert_close(fc2.weight.grad, ref[2].weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fc2.bias.grad, ref[2].bias.grad, rtol=1e-5, atol=1e-5)
    for p in fc2.parameters():
        p.requires_grad_(False)
    y = mlp_gelu(x.detach(), fc1, fc2)  # nothing needs a gradient: the inference path
    assert y.grad_fn is None
    for p in [*fc1.parameters(), *fc2.parameters()]:
        p.requires_grad_(True)
    y = mlp_gelu(x.double(), fc1.double(), fc2.double())
    assert y.grad_fn is not None and MLP_FN not in _node_names(y)
    fc1.float(), fc2.float()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert MLP_FN not in _node_names(mlp_gelu(x, fc1, fc2))
    old = set_fused_cpu_training(False), set_fused_cpu_inference(False)
    try:
        y = mlp_gelu(x, fc1, fc2)
        assert MLP_FN not in _node_names(y) and y.grad_fn is not None
        torch.testing.assert_close(y, ref(x))
    finally:
        set_fused_cpu_training(old[0]), set_fused_cpu_inference(old[1])


@pytest.mark.parametrize('name', ['unified_halo_micro', 'unified_swin_micro', 'unified_pvt_micro',
                                  'unified_convnext_micro', 'unified_dcn_v3_micro'])
def test_unified_blocks_train_through_mlp_function(name):
    """Every unified mixer's MLP runs the Function in CPU training (its parity against torch's modules is the
    test above; the eval outputs are checked against the official code in tests/test_unified.py)."""
    m = build_backbone(name, out_indices=(0,)).train()
    y = m(torch.randn(1, 3, 64, 64))[0]
    assert MLP_FN in _node_names(y)


@pytest.mark.parametrize('train', [True, False], ids=['batch-stats', 'running-stats'])
@pytest.mark.parametrize('shape', [(2, 36, 16, 24), (1, 5, 7, 9), (1, 4, 97, 192)])  # r = 64, 1, 64 (291 rows)
def test_gelu_batchnorm_equals_nn_gelu_then_batchnorm(train, shape):
    """BatchNorm2d.forward_gelu (Conv2Former's stem) against nn.GELU -> nn.BatchNorm2d: outputs, gradients of
    the input and the affine parameters, running statistics over several steps; eps 0.01 as above."""
    torch.manual_seed(shape[1])
    ours, ref = BatchNorm2d(shape[1], eps=0.01), nn.BatchNorm2d(shape[1], eps=0.01)
    nn.init.uniform_(ref.weight, 0.5, 1.5)
    nn.init.uniform_(ref.bias, -1, 1)
    ref.running_mean.uniform_(-0.5, 0.5)
    ref.running_var.uniform_(0.5, 2)
    ours.load_state_dict(ref.state_dict())
    ours.train(train), ref.train(train)
    for step in range(3):
        x = (torch.randn(shape) * 2 + 0.5).contiguous(memory_format=torch.channels_last)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        g = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        assert ours.wide_path(xa)
        ya, yb = ours.forward_gelu(xa), ref(nn.functional.gelu(xb))
        assert _ran_nhwc_batchnorm(ya, 'GeluBatchNormNHWC')
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=2e-5)
        g_kept = g.clone()
        ya.backward(g)
        yb.backward(g)
        assert torch.equal(g, g_kept)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=2e-5)
        for pa, pb in ((ours.weight, ref.weight), (ours.bias, ref.bias)):  # sums of up to 18,624 terms
            torch.testing.assert_close(pa.grad, pb.grad, rtol=5e-5, atol=1e-4)
            pa.grad = pb.grad = None
        for name, buf in ref.named_buffers():
            torch.testing.assert_close(getattr(ours, name), buf)


@pytest.mark.parametrize('batch_stats', [True, False])
def test_gelu_batchnorm_function_gradcheck(batch_stats):
    from backbones.layers import _GeluBatchNormNHWC
    d = dict(dtype=torch.double)
    stats = (None, None) if batch_stats else (torch.randn(3, **d), torch.rand(3, **d) + 0.5)
    args = (torch.randn(12, 3, **d, requires_grad=True), (torch.rand(3, **d) + 0.5).requires_grad_(),
            torch.randn(3, **d, requires_grad=True), 1e-5, *stats)
    assert torch.autograd.gradcheck(lambda *a: _GeluBatchNormNHWC.apply(*a)[0], args)


def test_conv2former_stem_fuses_gelu_batchnorm_only_on_the_wide_path():
    stem = build_backbone('conv2former_n', out_indices=(0,)).downsample_layers[0]
    x = torch.randn(1, 3, 32, 48)
    assert _ran_nhwc_batchnorm(stem(x), 'GeluBatchNormNHWC')
    ref = nn.Sequential(*[nn.BatchNorm2d(mod.num_features) if isinstance(mod, BatchNorm2d) else mod
                          for mod in stem])
    ref.load_state_dict(stem.state_dict())
    torch.testing.assert_close(stem(x), ref(x), rtol=1e-5, atol=2e-5)  # the official ops, module by module
    with torch.autocast('cpu', dtype=torch.bfloat16):  # no wide path: module by module
        assert not _ran_nhwc_batchnorm(stem(x), 'GeluBatchNormNHWC')
    assert not _ran_nhwc_batchnorm(stem.double()(x.double()), 'GeluBatchNormNHWC')


def test_chunked_column_sums_sum_every_chunk():
    from backbones.layers import _col_dot, _col_sq_dev
    a, b = torch.randn(1000, 7), torch.randn(1000, 7)  # 3 full chunks of 256 rows and a partial one
    torch.testing.assert_close(_col_dot(a, b), (a * b).sum(0))
    torch.testing.assert_close(_col_sq_dev(a, b[0]), (a - b[0]).square().sum(0))
