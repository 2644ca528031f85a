"""The CPU fast paths of backbones.layers against torch's own ops: DepthwiseConv2d's custom weight gradient
against ``nn.Conv2d``'s autograd, BatchNorm2d's channels_last training path against ``nn.BatchNorm2d``, and
when the fused oneDNN inference path may run."""
import pytest
import torch
import torch.nn as nn

from backbones import build_backbone
from backbones.layers import (BatchNorm2d, DepthwiseConv2d, _BatchNormNHWCTrain, _DepthwiseConvCPU, _FusedCPU,
                              set_fused_cpu_inference, use_fused_cpu)


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
            torch.randn(2, dtype=torch.double, requires_grad=True), (2, 2))
    assert torch.autograd.gradcheck(_DepthwiseConvCPU.apply, args)


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


def _ran_nhwc_batchnorm(y: torch.Tensor, node: str = 'BatchNormNHWCTrain') -> bool:
    """Whether the autograd graph of ``y`` holds the channels_last BatchNorm function (or ``node``)."""
    seen, todo = set(), [y.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if node in fn.name():
            return True
        todo.extend(f for f, _ in fn.next_functions)
    return False


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

