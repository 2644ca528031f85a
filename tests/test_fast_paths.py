"""The CPU fast paths of backbones.layers against torch's own ops: DepthwiseConv2d's custom weight gradient
against ``nn.Conv2d``'s autograd, and when the fused oneDNN inference path may run."""
import pytest
import torch
import torch.nn as nn

from backbones import build_backbone
from backbones.layers import DepthwiseConv2d, _DepthwiseConvCPU, _FusedCPU, set_fused_cpu_inference, use_fused_cpu


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

