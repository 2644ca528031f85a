"""Conv2Former against outputs of the official HVision-NKU/Conv2Former code (fixtures/conv2former/README.md)."""
import os

import numpy as np
import pytest
import torch

from backbones import Conv2Former, build_backbone, load_pretrained
from backbones.layers import (_SPARES, _FusedCPU, _Spares, release_spares, set_fused_cpu_inference,
                             set_fused_cpu_training)
from conftest import FIXTURES, autograd_nodes

D = os.path.join(FIXTURES, 'conv2former')
ARCH = dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32], kernel_size=11)


@pytest.fixture(scope='module')
def io():
    data = torch.load(os.path.join(D, 'io.pt'), weights_only=True)
    rs = np.random.RandomState(1)
    imgs = {'224': rs.randint(0, 256, (1, 3, 224, 224)).astype(np.uint8),
            '197x251': rs.randint(0, 256, (1, 3, 197, 251)).astype(np.uint8)}
    for tag, img in imgs.items():
        assert int(img.astype(np.int64).sum()) == data[f'img_{tag}_sum'], 'input regeneration drifted'
    data['x'] = {tag: (torch.from_numpy(img).float() / 255 - 0.5) / 0.25 for tag, img in imgs.items()}
    return data


def official_model(**kw):
    m = Conv2Former(arch=ARCH, out_norm=False, init_cfg=dict(type='Pretrained',
                                                            checkpoint=os.path.join(D, 'tiny_k11.pth.tar')), **kw)
    m.init_weights()
    return m.eval()


@pytest.mark.parametrize('path', ['fused-cpu', 'fused-cpu-gelu-epilogue', 'aten', 'autograd-fn', 'autograd-fn-spares'])
@pytest.mark.parametrize('tag', ['224', '197x251'])
def test_stage_outputs_match_official(io, tag, path):
    """Every block path: oneDNN-fused CPU inference (GELU after the GEMM, or as its epilogue: which one runs
    depends on the CPU, both are checked), the plain autograd (aten) ops, and the training Functions
    (``_ConvModFunction`` / ``_ConvMlpFunction``) that run when gradients are recorded; ``-spares``: those
    with every map of the MLP's written into spare buffers (``_Spares.min_bytes = 0``; by default only maps
    of 32 MiB and more), the second of two passes into the buffers the first one left (after its backward)."""
    model = official_model()
    training, spares = path.startswith('autograd-fn'), path.endswith('-spares')
    old = (set_fused_cpu_inference(path.startswith('fused-cpu')), set_fused_cpu_training(training),
           _FusedCPU.gelu_epilogue, _Spares.min_bytes)
    _FusedCPU.gelu_epilogue = path.endswith('epilogue')
    _Spares.min_bytes = 0 if spares else old[3]
    try:
        with torch.set_grad_enabled(training):
            for _ in range(2 if spares else 1):
                feats = model(io['x'][tag])
                if spares and training:
                    sum(f.sum() for f in feats).backward()
            kept = len(_SPARES.buffers)  # maps given back for the next pass (this thread's)
    finally:
        set_fused_cpu_inference(old[0])
        set_fused_cpu_training(old[1])
        _FusedCPU.gelu_epilogue = old[2]
        _Spares.min_bytes = old[3]
        release_spares()
    fns = {n.name() for n in autograd_nodes(feats[-1])}
    assert ('_ConvModFunctionBackward' in fns and '_ConvMlpFunctionBackward' in fns) == training
    assert (kept > 0) == spares
    assert len(feats) == 4
    for i, f in enumerate(feats):
        ref = io[f'feat{i}_{tag}']
        assert f.shape == ref.shape
        torch.testing.assert_close(f, ref, atol=1e-5, rtol=0)


def test_subset_and_negative_out_indices(io):
    model = official_model(out_indices=(-1, 1))
    assert model.out_indices == (1, 3)
    with torch.no_grad():
        f1, f3 = model(io['x']['224'])
    torch.testing.assert_close(f1, io['feat1_224'], atol=1e-5, rtol=0)
    torch.testing.assert_close(f3, io['feat3_224'], atol=1e-5, rtol=0)


def test_load_report_drops_classifier_and_adds_out_norms():
    model = Conv2Former(arch=ARCH)  # with output norms
    report = load_pretrained(model, os.path.join(D, 'tiny_k11.pth.tar'))
    assert report.wrapper == "'state_dict'"
    assert sorted({k.split('.')[0] for k in report.dropped_classifier}) == ['head', 'pred']
    assert report.fresh and all(k.startswith('out_norms.') for k in report.fresh)
    assert report.loaded == len(model.state_dict()) - len(report.fresh)
    assert 'loaded' in str(report) and 'out_norms' in str(report)


def test_whole_detector_checkpoint_and_prefix(tmp_path, io):
    """An mmdet/mmseg checkpoint ('state_dict' with backbone./neck. keys) and a custom prefix both load."""
    sd = official_model().state_dict()
    whole = {'meta': {'epoch': 3}, 'state_dict': {**{f'backbone.{k}': v for k, v in sd.items()},
                                                  'neck.lateral_convs.0.conv.weight': torch.zeros(1)}}
    torch.save(whole, tmp_path / 'det.pth')
    m = Conv2Former(arch=ARCH, out_norm=False, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'det.pth')))
    m.init_weights()
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(io['x']['224'])[2], io['feat2_224'], atol=1e-5, rtol=0)
    torch.save({'model': {f'encoder.{k}': v for k, v in sd.items()}}, tmp_path / 'pref.pth')
    m2 = Conv2Former(arch=ARCH, out_norm=False)
    load_pretrained(m2, str(tmp_path / 'pref.pth'), prefix='encoder')
    for k, v in m2.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_mmdet_built_backbone_matches_official(io):
    pytest.importorskip('mmdet')
    import detection  # noqa: F401
    from mmdet.registry import MODELS
    m = MODELS.build(dict(type='Conv2Former', arch=ARCH, out_norm=False,
                          init_cfg=dict(type='Pretrained', checkpoint=os.path.join(D, 'tiny_k11.pth.tar'))))
    m.init_weights()
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(io['x']['197x251'])[3], io['feat3_197x251'], atol=1e-5, rtol=0)


def test_param_counts_equal_reference_table():
    # counted on the official code (official classifier minus head)
    expected = {'n': 13_052_640, 't': 24_675_084, 's': 48_010_572, 'b': 87_761_232, 'b_22k': 86_517_072,
                'l': 196_298_176}
    for arch, n in expected.items():
        with torch.device('meta'):
            m = build_backbone(f'conv2former_{arch}', out_norm=False)
        assert sum(p.numel() for p in m.parameters()) == n, arch
        with torch.device('meta'):
            m = build_backbone(f'conv2former_{arch}')
        extra = sum(p.numel() for p in m.parameters()) - n
        assert extra == 2 * sum(m.dims), arch  # one LayerNorm (weight+bias) per returned map
