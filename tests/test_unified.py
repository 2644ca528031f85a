"""STM unified token-mixer models (Halo, PVT, Swin, ConvNeXt, DCNv3) against the official STM-Evaluation
detection code (fixtures/unified/README.md), plus parameter counts, checkpoints, stage norms and any-size input."""
import os

import numpy as np
import pytest
import torch

from backbones import (CheckpointMismatchError, UnifiedConvNeXt, UnifiedDCNv3, UnifiedHalo, UnifiedPVT,
                       UnifiedSwin, build_backbone, list_backbones, load_pretrained)
from backbones.unified import deform_sample_pytorch
from conftest import FIXTURES

D = os.path.join(FIXTURES, 'unified')
_A = dict(dims=[8, 8, 16, 16], num_heads=[1, 1, 2, 2])
TINY = {
    'convnext': (UnifiedConvNeXt, dict(depths=[2, 1, 1, 1], dims=[8, 8, 16, 16])),
    'halo': (UnifiedHalo, dict(_A, depths=[2, 1, 1, 1])),
    'swin': (UnifiedSwin, dict(_A, depths=[2, 1, 1, 2])),
    'pvt': (UnifiedPVT, dict(_A, depths=[2, 1, 1, 1], img_size=64)),
    'dcn_v3': (UnifiedDCNv3, dict(_A, depths=[2, 1, 1, 1])),
}
# counted on the official code (classification params minus conv_head and head)
BACKBONE_PARAMS = {
    'unified_halo_micro': 3_905_600, 'unified_halo_tiny': 29_483_136, 'unified_halo_small': 50_791_296,
    'unified_halo_base': 90_214_400,
    'unified_pvt_micro': 3_969_984, 'unified_pvt_tiny': 29_993_984, 'unified_pvt_small': 49_723_904,
    'unified_pvt_base': 90_402_560,
    'unified_swin_micro': 3_896_970, 'unified_swin_tiny': 29_500_506, 'unified_swin_small': 50_827_626,
    'unified_swin_base': 90_275_640,
    'unified_convnext_micro': 3_955_552, 'unified_convnext_tiny': 29_872_320,
    'unified_convnext_small': 52_353_600, 'unified_convnext_base': 92_752_640,
    'unified_dcn_v3_micro': 3_818_620, 'unified_dcn_v3_tiny': 28_769_520, 'unified_dcn_v3_small': 48_504_960,
    'unified_dcn_v3_base': 94_913_280, 'unified_dcn_v3_large': 218_957_170,
}


@pytest.fixture(scope='module')
def io():
    data = torch.load(os.path.join(D, 'io.pt'), weights_only=True)
    rs = np.random.RandomState(1)
    imgs = {'64': rs.randint(0, 256, (2, 3, 64, 64)).astype(np.uint8),
            '45x71': rs.randint(0, 256, (1, 3, 45, 71)).astype(np.uint8)}
    for tag, img in imgs.items():
        assert int(img.astype(np.int64).sum()) == data[f'img_{tag}_sum'], 'input regeneration drifted'
    data['x'] = {tag: (torch.from_numpy(img).float() / 255 - 0.5) / 0.25 for tag, img in imgs.items()}
    return data


def official(name, **kw):
    cls, arch = TINY[name]
    m = cls(arch=arch, init_cfg=dict(type='Pretrained', checkpoint=os.path.join(D, f'{name}.pth')), **kw)
    m.init_weights()
    return m.eval()


# ---------------------------------------------------------------------------------------------- table
def test_param_counts_equal_reference_table():
    assert sorted(n for n in list_backbones() if n.startswith('unified_')) == sorted(BACKBONE_PARAMS)
    for name, n in BACKBONE_PARAMS.items():
        with torch.device('meta'):
            det = build_backbone(name)                                    # fresh output norms
            raw = build_backbone(name, out_norm=False)
            cls = build_backbone(name, out_norm=False, stage_norms='keep')  # classification trunk
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert count(det) == n == count(cls), name
        assert count(raw) == n - 2 * sum(raw.dims), name


def test_names_and_det_behaviours():
    with torch.device('meta'):
        m = build_backbone('unified_swin_tiny')
        assert m.arch_name == 'tiny' and m.out_channels == [96, 192, 384, 768]
        assert [b.shift_size for b in m.stages[3]] == [0, 3]  # stage 4 shifts too (det code)
        assert UnifiedSwin(arch='t').arch_name == 'tiny'
        assert build_backbone('UnifiedDCNv3', arch='unified_dcn_v3_l').arch_name == 'large'
        pvt = build_backbone('unified_pvt_tiny')
        assert [tuple(s[0].pos_embed.shape) for s in pvt.stages] == [(1, 64, 56, 56), (1, 128, 28, 28),
                                                                     (1, 320, 14, 14), (1, 512, 7, 7)]
        assert all(b.pos_embed is None for s in pvt.stages for b in s[1:])
    with pytest.raises(ValueError, match='stage_norms'):
        UnifiedHalo(arch=TINY['halo'][1], stage_norms='drop')


# ---------------------------------------------------------------------------------------------- parity
CASES = [(n, t) for n in TINY for t in ('64', '45x71') if not (n == 'dcn_v3' and t == '45x71')]


@pytest.mark.parametrize('name,tag', CASES, ids=[f'{n}-{t}' for n, t in CASES])
def test_stage_outputs_match_official_detection_code(io, name, tag):
    model = official(name, out_norm=False)
    with torch.no_grad():
        feats = model(io['x'][tag])
    for i, f in enumerate(feats):
        ref = io[f'{name}/feat{i}_{tag}']
        assert f.shape == ref.shape
        torch.testing.assert_close(f, ref, atol=1e-5, rtol=0)


def test_official_dcn_needs_multiples_of_32_ours_does_not(io):
    assert 'shape' in io['dcn_v3/error_45x71']  # the official reshape of the reference grid fails
    model = official('dcn_v3', out_norm=False)
    with torch.no_grad():
        feats = model(io['x']['45x71'])
    assert [tuple(f.shape[2:]) for f in feats] == [(12, 18), (6, 9), (3, 5), (2, 3)]
    assert all(torch.isfinite(f).all() for f in feats)


@pytest.mark.parametrize('name', list(TINY))
def test_release_layout_load_report(name):
    model = TINY[name][0](arch=TINY[name][1])
    report = load_pretrained(model, os.path.join(D, f'{name}.pth'))
    assert report.wrapper == "'model'"
    assert {k.split('.')[0] for k in report.dropped_classifier} == {'conv_head', 'head', 'stage_norms'}
    if name == 'swin':
        kinds = {k.rsplit('.', 1)[-1] for k in report.dropped_ignored}
        assert kinds == {'attn_mask', 'relative_position_index'}
    else:
        assert report.dropped_ignored == []
    assert report.fresh and all(k.startswith('out_norms.') for k in report.fresh)


def test_stage_norms_keep_applies_pretrained_norms_between_stages(io):
    ref = official('halo', out_norm=False)
    keep = official('halo', out_norm=False, stage_norms='keep')
    ck = torch.load(os.path.join(D, 'halo.pth'), weights_only=True)['model']
    torch.testing.assert_close(keep.stage_norms[2].weight, ck['stage_norms.2.weight'], atol=0, rtol=0)
    x = io['x']['45x71']
    with torch.no_grad():
        got = keep(x)
        y, want = x, []
        for i in range(4):  # the classification forward, written out with the skip model's modules
            y = keep.stage_norms[i](ref.forward_stage(i, ref.downsample_layers[i](y)))
            want.append(y)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=0)
    assert not torch.allclose(got[3], io['halo/feat3_45x71'], atol=1e-2)  # and they do change the features
    # a checkpoint without stage norms cannot serve 'keep'
    sd = {k: v for k, v in ck.items() if not k.startswith('stage_norms')}
    with pytest.raises(CheckpointMismatchError, match='stage_norms.0.weight'):
        load_pretrained(UnifiedHalo(arch=TINY['halo'][1], stage_norms='keep'), {'model': sd})
    # frozen stages freeze their stage norms; layer ids put them with their stage
    m = UnifiedHalo(arch=TINY['halo'][1], stage_norms='keep', frozen_stages=2)
    assert not m.stage_norms[1].weight.requires_grad and m.stage_norms[2].weight.requires_grad
    assert m.get_layer_depth('stage_norms.3.bias')[0] == m.get_layer_depth('stages.3.0.norm1.weight')[0]


def test_official_detection_checkpoint_out_norm_keys(tmp_path, io):
    """A whole mmdet 2.x detector of STM-Evaluation (backbone.out_norm_{i}.*) loads, output norms included."""
    src = official('pvt')  # out_norm=True
    with torch.no_grad():
        for p in src.out_norms.parameters():
            p.uniform_(0.5, 1.5)
    sd = {('backbone.' + k.replace('out_norms.', 'out_norm_', 1)): v for k, v in src.state_dict().items()}
    torch.save({'state_dict': {**sd, 'neck.fpn_convs.0.conv.weight': torch.zeros(1)}}, tmp_path / 'det.pth')
    m = UnifiedPVT(arch=TINY['pvt'][1])
    report = load_pretrained(m, str(tmp_path / 'det.pth'))
    assert report.layout == 'official detection' and report.fresh == []
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(io['x']['64'])[1], src(io['x']['64'])[1], atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------- DCNv3
def test_deform_sampling_matches_mmcv_pytorch_reference():
    mmcv_msda = pytest.importorskip('mmcv.ops.multi_scale_deform_attn')
    g = torch.Generator().manual_seed(0)
    B, H, W, M, Dh, Q, P = 2, 7, 11, 3, 4, 13, 9
    value = torch.randn(B, H, W, M, Dh, generator=g, dtype=torch.float64, requires_grad=True)
    loc = (torch.rand(B, Q, M, P, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()  # some outside
    w = torch.rand(B, Q, M, P, generator=g, dtype=torch.float64).softmax(-1).requires_grad_()
    ours = deform_sample_pytorch(value, loc, w)
    ref = mmcv_msda.multi_scale_deformable_attn_pytorch(
        value.reshape(B, H * W, M, Dh), torch.tensor([[H, W]]), loc[:, :, :, None], w[:, :, :, None])
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    g1 = torch.autograd.grad(ours.square().sum(), (value, loc, w))
    g2 = torch.autograd.grad(ref.square().sum(), (value, loc, w))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_dcn_grid_quirk_and_implementation_switch():
    m = UnifiedDCNv3(arch=TINY['dcn_v3'][1], dcn_impl='pytorch')
    grid = m.stages[0][0].attn.grid
    assert grid[1].tolist() == [-1.0, 0.0] and grid[3].tolist() == [0.0, -1.0]  # point 3i+j: x = i-1, y = j-1
    assert all(b.attn.impl == 'pytorch' for s in m.stages for b in s)
    with pytest.raises(ValueError, match='dcn_impl'):
        m.set_dcn_impl('cuda')
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match='CUDA'):
            m.set_dcn_impl('mmcv')
            m(torch.randn(1, 3, 64, 64))


# ---------------------------------------------------------------------------------------------- any size
@pytest.mark.parametrize('family', ['unified_halo', 'unified_pvt', 'unified_swin', 'unified_convnext',
                                    'unified_dcn_v3'])
def test_micro_runs_at_odd_detection_like_size(family):
    """A scaled-down 1333-wide input (120x199): odd, and the stage sizes (30x50 ... 4x7) are not multiples of
    7 but for the last width, nor PVT's embedding grids (800x1216 runs in tools/analysis/benchmark_backbones.py)."""
    torch.manual_seed(0)
    m = build_backbone(f'{family}_micro').eval()
    with torch.no_grad():
        feats = m(torch.randn(1, 3, 120, 199))
    assert [tuple(f.shape[1:]) for f in feats] == [(c, h, w) for c, (h, w) in
                                                    zip(m.dims, [(30, 50), (15, 25), (8, 13), (4, 7)])]
    assert all(torch.isfinite(f).all() for f in feats)


def test_no_weight_decay_lists_position_tables():
    names = {k: TINY[k][0](arch=TINY[k][1]).no_weight_decay() for k in TINY}
    assert names['convnext'] == [] and names['dcn_v3'] == []
    assert names['pvt'] == [f'stages.{i}.0.pos_embed' for i in range(4)]
    assert set(names['halo']) == {f'stages.{s}.{b}.attn.pos_embed.{t}_rel' for s, d in enumerate([2, 1, 1, 1])
                                  for b in range(d) for t in ('height', 'width')}
    assert len(names['swin']) == 6 and all(n.endswith('attn.relative_position_bias_table') for n in names['swin'])


def test_mmdet_built_backbone_loads_release_layout(io):
    pytest.importorskip('mmdet')
    import detection  # noqa: F401
    from mmdet.registry import MODELS
    m = MODELS.build(dict(type='UnifiedSwin', arch=TINY['swin'][1], out_norm=False,
                          init_cfg=dict(type='Pretrained', checkpoint=os.path.join(D, 'swin.pth'))))
    m.init_weights()
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(io['x']['45x71'])[3], io['swin/feat3_45x71'], atol=1e-5, rtol=0)


def test_bfloat16_autocast_close_to_float32(io):
    """Mixed precision: the DCN sampling locations stay float32 (bf16 would misplace them by ~1 px)."""
    model = official('dcn_v3', out_norm=False)
    x = io['x']['64']
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        feats = model(x)
    for i, f in enumerate(feats):
        ref = io[f'dcn_v3/feat{i}_64']
        assert torch.isfinite(f).all()
        assert (f.float() - ref).abs().mean() < 0.05 * ref.abs().mean()


@pytest.mark.parametrize('tag', ['64', '45x71'])
def test_stage_norms_keep_matches_official_classification_forward(io, tag):
    """ConvNeXt: the official classification MetaArch (stage norms between stages) on the same checkpoint."""
    model = official('convnext', out_norm=False, stage_norms='keep')
    with torch.no_grad():
        feats = model(io['x'][tag])
    for i, f in enumerate(feats):
        torch.testing.assert_close(f, io[f'convnext/cls_feat{i}_{tag}'], atol=1e-5, rtol=0)
