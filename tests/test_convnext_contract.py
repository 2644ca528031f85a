"""ConvNeXt / ConvNeXt V2: sizes, names, parameter counts, mmdet's layer-decay ids, the layer-scale switch, the
two block paths, and the OpenMMLab registration (the shared contract, every family: test_backbone_contract.py)."""
import pytest
import torch

from backbones import ConvNeXt, ConvNeXtV2, build_backbone, families, get_family, list_backbones
from backbones.layers import set_fused_cpu_inference

SMALL = dict(depths=[1, 1, 2, 1], dims=[16, 24, 32, 48])

# counted on the official code (official classifier minus norm + head)
BACKBONE_PARAMS = {
    'convnext_tiny': 27_818_592, 'convnext_small': 49_453_152, 'convnext_base': 87_564_416,
    'convnext_large': 196_227_264, 'convnext_xlarge': 348_143_872,
    'convnextv2_atto': 3_386_760, 'convnextv2_femto': 4_847_472, 'convnextv2_pico': 8_552_256,
    'convnextv2_nano': 14_981_520, 'convnextv2_tiny': 27_864_960, 'convnextv2_base': 87_690_752,
    'convnextv2_large': 196_416_768, 'convnextv2_huge': 657_467_008,
}


@pytest.mark.parametrize('name', list(BACKBONE_PARAMS))
def test_param_counts_equal_reference_table(name):
    with torch.device('meta'):
        m = build_backbone(name, out_norm=False)
        with_norms = build_backbone(name)
    assert sum(p.numel() for p in m.parameters()) == BACKBONE_PARAMS[name]
    extra = sum(p.numel() for p in with_norms.parameters()) - BACKBONE_PARAMS[name]
    assert extra == 2 * sum(m.dims)  # one LayerNorm per returned map (the official det norm0..3)


def test_table_names_aliases_and_longest_prefix():
    names = list_backbones()
    for n in BACKBONE_PARAMS:
        assert n in names
    assert families()['ConvNeXt'] is ConvNeXt and families()['ConvNeXtV2'] is ConvNeXtV2
    assert get_family('convnextv2_tiny') is ConvNeXtV2 and get_family('convnext_tiny') is ConvNeXt
    with torch.device('meta'):
        for arch in ('t', 'tiny', 'T', 'convnext_t', 'convnext_tiny'):
            assert ConvNeXt(arch=arch).arch_name == 'tiny'
        assert ConvNeXt(arch='xl').dims == [256, 512, 1024, 2048]
        assert build_backbone('convnextv2_tiny').use_grn and not build_backbone('convnext_tiny').use_grn
        assert ConvNeXtV2(arch='convnext_pico').arch_name == 'pico'  # the official (sic) function name
        assert build_backbone('ConvNeXtV2', arch='huge').dims == [352, 704, 1408, 2816]


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(ValueError, match=r'valid: tiny, small, base, large, xlarge \(aliases: t->tiny'):
        ConvNeXt(arch='huge')
    with pytest.raises(ValueError, match=r'valid: atto, femto, pico, nano, tiny, base, large, huge'):
        ConvNeXtV2(arch='small')
    with pytest.raises(ValueError, match=r"ConvNeXtV2 arch 'xxl'; valid: atto"):
        build_backbone('convnextv2_xxl')


@pytest.mark.parametrize('size', [(224, 224), (333, 517), (800, 1333)])
def test_strides_channels_and_floor(size):
    m = ConvNeXtV2(arch=SMALL).eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, *size))
    assert [o.shape[1] for o in outs] == m.out_channels == SMALL['dims']
    h, w = size[0] // 4, size[1] // 4  # 4x4/4 stem, then 2x2/2 convs: every step floors
    for i, o in enumerate(outs):
        assert tuple(o.shape[2:]) == (h >> i, w >> i)
        assert o.is_contiguous()  # plain NCHW memory: mmcv ops (RoIAlign) index it raw (test_openmmlab.py)


def test_layer_decay_ids_match_mmdet_convnext_rules():
    mmdet_ld = pytest.importorskip('mmdet.engine.optimizers.layer_decay_optimizer_constructor')
    for name, n_layers in (('convnext_tiny', 6), ('convnext_small', 12), ('convnextv2_base', 12)):
        with torch.device('meta'):
            m = build_backbone(name)
        assert m.num_layers('layer_wise') == m.num_layers('stage_wise') == n_layers
        for n, _ in m.named_parameters():
            full = f'backbone.{n}'
            ours, max_id = m.get_layer_depth(full, prefix='backbone.', scheme='layer_wise')
            assert max_id == n_layers + 2
            ref = n_layers + 1 if n.startswith('out_norms') else mmdet_ld.get_layer_id_for_convnext(full, n_layers)
            assert ours == ref, (name, n)
            ours_s, _ = m.get_layer_depth(full, prefix='backbone.', scheme='stage_wise')
            assert ours_s == mmdet_ld.get_stage_id_for_convnext(full, n_layers + 2), (name, n)


def test_layer_scale_switch():
    with torch.device('meta'):
        default = ConvNeXt(arch='tiny')
        none = ConvNeXt(arch='tiny', layer_scale_init_value=0)
    assert default.layer_scale_init_value == 1e-6
    assert sum(p.numel() for p in default.parameters()) - sum(p.numel() for p in none.parameters()) == \
        sum(d * c for d, c in zip(default.depths, default.dims))
    det = ConvNeXt(arch=SMALL, layer_scale_init_value=1.0)  # the official det/seg configs
    assert det.arch_name == 'custom' and all(torch.all(b.gamma == 1.0) for s in det.stages for b in s)
    with torch.device('meta'):
        assert ConvNeXt(arch='t', layer_scale_init_value=1.0).arch_name == 'tiny'
    assert all(b.gamma is None for s in ConvNeXtV2(arch=SMALL).stages for b in s)
    with pytest.raises(ValueError, match='no layer scale'):
        ConvNeXtV2(arch=SMALL, layer_scale_init_value=1.0)


def test_grn_parameters_get_no_weight_decay():
    m = ConvNeXtV2(arch=SMALL)
    names = m.no_weight_decay()
    assert len(names) == 2 * sum(SMALL['depths']) and all('.grn.' in n for n in names)
    assert ConvNeXt(arch=SMALL).no_weight_decay() == []


def test_frozen_stages_fused_path_equals_autograd():
    """Frozen stages take the no-gradient (fused oneDNN) path in training; the result equals the autograd path.
    (Which parameters freeze: tests/test_backbone_contract.py, every family.)"""
    torch.manual_seed(0)
    m = ConvNeXtV2(arch=SMALL, frozen_stages=2, out_norm=False).train()
    x = torch.randn(2, 3, 96, 128)
    outs = m(x)
    old = set_fused_cpu_inference(False)
    try:
        ref = m(x)
    finally:
        set_fused_cpu_inference(old)
    for a, b in zip(outs, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_drop_path_linear_up_to_the_last_block():
    """(with_cp with drop path, every family: tests/test_backbone_contract.py)"""
    a = ConvNeXt(arch=SMALL, drop_path_rate=0.3)
    assert a.stages[3][0].drop_path.drop_prob == pytest.approx(0.3)


def test_mmdet_and_mmseg_build():
    pytest.importorskip('mmdet')
    import detection  # noqa: F401
    from mmdet.registry import MODELS
    for t in ('ConvNeXt', 'ConvNeXtV2'):
        m = MODELS.build(dict(type=t, arch=SMALL, layer_scale_init_value=0.0 if t == 'ConvNeXtV2' else 1.0))
        assert isinstance(m, ConvNeXt) and m.out_channels == SMALL['dims']
    pytest.importorskip('mmseg')
    import segmentation  # noqa: F401
    from mmseg.registry import MODELS as SEG
    assert type(SEG.build(dict(type='ConvNeXtV2', arch='atto'))) is ConvNeXtV2


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
def test_tracing_sees_plain_aten_ops():
    """The oneDNN inference path is private to eager CPU runs: traced / exported graphs use aten ops."""
    m = ConvNeXtV2(arch=SMALL, out_norm=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(m, x, check_trace=False)
        graph = str(traced.inlined_graph)
        assert 'mkldnn::_linear_pointwise' not in graph and 'aten::baddbmm' in graph
        for a, b in zip(traced(x), m(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
