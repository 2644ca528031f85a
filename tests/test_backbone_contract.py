"""The shared contract (arch, out_indices, frozen_stages, norm_eval, with_cp, layer depth) and its errors."""
import pytest
import torch
import torch.nn as nn

from backbones import Conv2Former, build_backbone, families, list_backbones
from conftest import smallest_archs

TINY = dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32], kernel_size=7)


def tiny(**kw):
    return Conv2Former(arch=TINY, **kw)


def test_table_lists_every_size_and_builds_by_name():
    names = list_backbones()
    for a in ('n', 't', 's', 'b', 'b_22k', 'l'):
        assert f'conv2former_{a}' in names
    assert 'Conv2Former' in families()
    with torch.device('meta'):
        for name in ('conv2former_t', 'Conv2Former'):
            assert build_backbone(name).dims == [72, 144, 288, 576]
        for arch in ('t', 'tiny', 'conv2former_t', 'T'):
            assert Conv2Former(arch=arch).arch_name == 't'


@pytest.mark.parametrize('bad', ['conv2former_xl', 'resnet50'])
def test_unknown_name_lists_valid_ones(bad):
    with pytest.raises(ValueError) as e:
        build_backbone(bad)
    assert 'conv2former_t' in str(e.value) or 'Conv2Former' in str(e.value)


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(ValueError, match=r"valid: n, t, s, b, b_22k, l"):
        Conv2Former(arch='huge')
    with pytest.raises(ValueError, match='depths'):
        Conv2Former(arch=dict(dims=[8, 16, 24, 32]))


@pytest.mark.parametrize('kw', [dict(out_indices=(4,)), dict(out_indices=(-5,)), dict(out_indices=()),
                                dict(out_indices=(1, 1)), dict(frozen_stages=5), dict(frozen_stages=-2),
                                dict(drop_path_rate=1.5)])
def test_out_of_range_arguments(kw):
    with pytest.raises(ValueError):
        tiny(**kw)


def test_wrong_channel_count():
    with pytest.raises(ValueError, match=r'3 channels, got shape \(1, 1, 64, 64\)'):
        tiny()(torch.zeros(1, 1, 64, 64))
    m = tiny(in_channels=4)
    assert len(m(torch.zeros(1, 4, 64, 64))) == 4


@pytest.mark.parametrize('size', [(224, 224), (333, 517), (800, 1216)])
def test_strides_and_channels(size):
    m = tiny().eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, *size))
    assert [o.shape[1] for o in outs] == m.out_channels == TINY['dims']
    assert m.out_strides == [4, 8, 16, 32]
    for o, s in zip(outs, m.out_strides):
        # stem: ceil at the stride-2 3x3 conv, floor at every 2x2 conv
        h = (size[0] + 1) // 2 // 2
        assert o.shape[2] == h // (s // 4)


def test_output_norms_switchable():
    torch.manual_seed(0)
    a = tiny().eval()
    b = tiny(out_norm=False).eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith('out_norms')})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    ln = nn.functional.layer_norm(yb[1].permute(0, 2, 3, 1), (16,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ya[1], ln)
    assert not hasattr(b, 'out_norms')


def _frozen_names(m):
    return {n for n, p in m.named_parameters() if not p.requires_grad}


@pytest.mark.parametrize('k', [-1, 0, 1, 2, 4])
def test_frozen_stages_one_meaning(k):
    m = tiny(frozen_stages=k)
    frozen = _frozen_names(m)
    for n, _ in m.named_parameters():
        kind, stage, _ = m.param_position(n)
        should = (k >= 0 and kind == 'stem') or (kind in ('downsample', 'block') and stage < k)
        assert (n in frozen) == should, (k, n)
    m.train()
    stem_bn = m.downsample_layers[0][2]
    assert stem_bn.training == (k < 0)
    before = stem_bn.running_mean.clone()
    m(torch.randn(2, 3, 64, 64))
    assert torch.equal(before, stem_bn.running_mean) == (k >= 0)
    if k >= 1:  # a frozen stage gets no gradient, the next one does
        m(torch.randn(1, 3, 64, 64))[-1].sum().backward()
        assert m.stages[k - 1][0].layer_scale_1.grad is None
        if k < 4:
            assert m.stages[k][0].layer_scale_1.grad is not None


def test_norm_eval_keeps_bn_statistics():
    m = tiny(norm_eval=True).train()
    bn = m.downsample_layers[0][2]
    before = bn.running_var.clone()
    m(torch.randn(2, 3, 64, 64))
    assert not bn.training and torch.equal(before, bn.running_var)
    assert bn.weight.requires_grad  # norm_eval freezes statistics, not the affine parameters


def test_with_cp_same_values_and_gradients():
    torch.manual_seed(0)
    a = tiny(drop_path_rate=0.0)
    b = tiny(with_cp=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 64)
    a.train(), b.train()
    ya, yb = a(x), b(x)
    sum(y.sum() for y in ya).backward()
    sum(y.sum() for y in yb).backward()
    for y1, y2 in zip(ya, yb):
        torch.testing.assert_close(y1, y2)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


def test_later_stages_not_computed():
    m = tiny(out_indices=(0,))
    calls = []
    m.stages[1].register_forward_hook(lambda *a: calls.append(1))
    m(torch.randn(1, 3, 64, 64))
    assert calls == []


def test_layer_wise_depth_matches_mmdet_convnext_rule():
    """ConvNeXt's published rule (mmdet's own implementation) on a ConvNeXt-T-shaped trunk."""
    mmdet_ld = pytest.importorskip('mmdet.engine.optimizers.layer_decay_optimizer_constructor')
    with torch.device('meta'):
        m = Conv2Former(arch=dict(depths=[3, 3, 9, 3], dims=[96, 192, 384, 768]))
    assert m.num_layers('layer_wise') == 6 and m.num_layers('stage_wise') == 6
    names = [f'backbone.{n}' for n, _ in m.named_parameters()] + ['neck.conv.weight', 'rpn_head.bias']
    for n in names:
        ours, max_id = m.get_layer_depth(n, prefix='backbone.', scheme='layer_wise')
        assert max_id == 8
        ref = mmdet_ld.get_layer_id_for_convnext(n, 6)
        if n.startswith('backbone.out_norms'):
            ref = 7  # output norms belong with the heads (as the official norm0..3 do)
        assert ours == ref, n
        ours_s, _ = m.get_layer_depth(n, prefix='backbone.', scheme='stage_wise')
        assert ours_s == mmdet_ld.get_stage_id_for_convnext(n, 8), n


@pytest.mark.parametrize('scheme', ['layer_wise', 'stage_wise', 'block_wise'])
def test_layer_depth_monotone(scheme):
    """Ids never decrease along the forward order (stem, then each stage's downsampler and blocks).

    ConvNeXt's stage_wise rule puts every downsampler at id 0, so there only stem and blocks are checked.
    """
    with torch.device('meta'):
        m = build_backbone('conv2former_s')
    rows = []
    for n, _ in m.named_parameters():
        kind, stage, block = m.param_position(n)
        if kind == 'out_norm' or (scheme == 'stage_wise' and kind == 'downsample'):
            continue
        layer_id, max_id = m.get_layer_depth(n, scheme=scheme)
        rows.append(((stage, kind == 'block', block), layer_id))
    ids = [i for _, i in sorted(rows)]
    assert ids[0] == 0 and ids == sorted(ids)
    assert max(ids) <= max_id - 2  # the heads (max_id - 1) stay above every backbone parameter
    assert m.get_layer_depth('backbone.out_norms.0.weight', prefix='backbone.', scheme=scheme)[0] == max_id - 1


@pytest.mark.parametrize('family,arch,kwargs', smallest_archs(),
                         ids=lambda v: v if isinstance(v, str) else ','.join(f'{k}={x}' for k, x in v.items()))
def test_outputs_are_contiguous_nchw(family, arch, kwargs):
    """Every family returns plain contiguous NCHW maps, with and without output norms. The channels-last
    views that LayerNorms and NHWC stages leave behind are fine for convolutions but not for compiled ops
    indexing raw NCHW memory: mmcv's RoIAlign read them as stripes (tests/test_openmmlab.py)."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 96)
    for out_norm in (True, False):
        model = families()[family](arch=arch, out_norm=out_norm, **kwargs).eval()
        with torch.no_grad():
            outs = model(x)
        for i, y in enumerate(outs):
            assert y.is_contiguous(), (family, arch, out_norm, i, y.stride())
            assert y.shape[1] == model.dims[i] and y.shape[2:] == (64 // 4 // 2 ** i, 96 // 4 // 2 ** i)
