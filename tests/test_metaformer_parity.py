"""MetaFormer baselines against reference implementations.

* IdentityFormer and RandFormer: outputs of the official sail-sg/metaformer code (fixtures/metaformer/README.md).
* PoolFormerV2, ConvFormer, CAFormer: timm's MetaFormer (random weights with randomised norms and scales),
  loaded both in timm's layout and converted to the official layout, per-stage features at atol 1e-5.
"""
import os
import re

import numpy as np
import pytest
import torch

from backbones import CAFormer, ConvFormer, IdentityFormer, PoolFormerV2, RandFormer, load_pretrained
from conftest import FIXTURES

D = os.path.join(FIXTURES, 'metaformer')
TINY_DIMS = [8, 8, 12, 16]
OFFICIAL = {
    'identityformer_tiny': (IdentityFormer, dict(depths=[1, 1, 2, 1], dims=TINY_DIMS)),
    'randformer_tiny': (RandFormer, dict(depths=[1, 1, 1, 2], dims=TINY_DIMS)),
}


@pytest.fixture(scope='module')
def io():
    data = torch.load(os.path.join(D, 'io.pt'), weights_only=True)
    rs = np.random.RandomState(1)
    imgs = {'224': rs.randint(0, 256, (1, 3, 224, 224)).astype(np.uint8),
            '97x131': rs.randint(0, 256, (1, 3, 97, 131)).astype(np.uint8)}
    for tag, img in imgs.items():
        assert int(img.astype(np.int64).sum()) == data[f'img_{tag}_sum'], 'input regeneration drifted'
    data['x'] = {tag: (torch.from_numpy(img).float() / 255 - 0.5) / 0.25 for tag, img in imgs.items()}
    return data


def official_model(name, **kw):
    cls, arch = OFFICIAL[name]
    m = cls(arch=arch, out_norm=False, init_cfg=dict(type='Pretrained', checkpoint=os.path.join(D, f'{name}.pth')),
            **kw)
    m.init_weights()
    return m.eval()


@pytest.mark.parametrize('name,tag', [('identityformer_tiny', '224'), ('identityformer_tiny', '97x131'),
                                      ('randformer_tiny', '224')])
def test_stage_outputs_match_official(io, name, tag):
    model = official_model(name)
    with torch.no_grad():
        feats = model(io['x'][tag])
    compared = 0
    for i, f in enumerate(feats):
        ref = io.get(f'{name}/feat{i}_{tag}')
        if ref is None:  # RandFormer's stages 0-1 (identity blocks) are covered through stages 2-3
            continue
        assert f.shape == ref.shape
        torch.testing.assert_close(f, ref, atol=1e-5, rtol=0)
        compared += 1
    assert compared == (4 if name.startswith('identity') else 2)


def test_official_randformer_fails_off_224_and_ours_does_not(io):
    assert 'einsum' in io['randformer_tiny/error_256']  # the official model only runs at 224
    model = official_model('randformer_tiny')
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 256, 256))
    assert [tuple(f.shape[2:]) for f in feats] == [(64, 64), (32, 32), (16, 16), (8, 8)]
    assert all(torch.isfinite(f).all() for f in feats)
    model.set_rand_resample('none')
    with pytest.raises(ValueError, match="14x14 token grid but got 16x16"):
        model(torch.randn(1, 3, 256, 256))


def test_official_checkpoint_report():
    model = RandFormer(arch=OFFICIAL['randformer_tiny'][1])
    report = load_pretrained(model, os.path.join(D, 'randformer_tiny.pth'))
    assert report.wrapper == 'plain' and report.layout == 'official'
    assert sorted(report.dropped_classifier) == ['head.bias', 'head.weight', 'norm.bias', 'norm.weight']
    assert report.fresh and all(k.startswith('out_norms.') for k in report.fresh)
    assert not model.stages[2][0].token_mixer.random_matrix.requires_grad


# ---------------------------------------------------------------------------------------------- timm
timm_mf = pytest.importorskip('timm.models.metaformer')


def _timm_kwargs(family):
    T = timm_mf
    return {
        'poolformerv2': dict(token_mixers=T.Pooling, norm_layers=T.GroupNorm1NoBias, use_mlp_head=False),
        'convformer': dict(token_mixers=T.SepConv, norm_layers=T.LayerNorm2dNoBias),
        'caformer': dict(token_mixers=[T.SepConv, T.SepConv, T.Attention, T.Attention],
                         norm_layers=[T.LayerNorm2dNoBias] * 2 + [T.LayerNormNoBias] * 2),
    }[family]


def randomise(model, seed=0):
    """Non-trivial weights: fan-in scaled conv/linear weights, norm weights and StarReLU scales in [0.5, 1.5],
    res scales in [0.5, 1], biases and StarReLU offsets ~ N(0, 0.1). Model on the meta device: materialised."""
    if any(p.is_meta for p in model.parameters()):
        model.to_empty(device='cpu')
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 / p[0].numel() ** 0.5)
            elif n.endswith('bias'):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif 'res_scale' in n:  # <= 1 so that 2 x 18 blocks of stage 3 keep magnitudes near 1
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.5)
            else:  # norm weights, StarReLU scales
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model.eval()


def timm_to_official(sd):
    """Written independently of MetaFormer.convert_checkpoint (and checked against timm's own filter)."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r'^stem\.conv\.', 'downsample_layers.0.conv.', k)
        k = re.sub(r'^stem\.norm\.', 'downsample_layers.0.post_norm.', k)
        k = re.sub(r'^stages\.(\d+)\.downsample\.norm\.', r'downsample_layers.\1.pre_norm.', k)
        k = re.sub(r'^stages\.(\d+)\.downsample\.conv\.', r'downsample_layers.\1.conv.', k)
        k = re.sub(r'^stages\.(\d+)\.blocks\.(\d+)\.', r'stages.\1.\2.', k)
        k = re.sub(r'^head\.norm\.', 'norm.', k)
        k = re.sub(r'^head\.fc\.', 'head.', k)
        if v.ndim == 4 and tuple(v.shape[2:]) == (1, 1):
            v = v[:, :, 0, 0]
        out[k] = v
    return out


FAMILIES = {'poolformerv2': PoolFormerV2, 'convformer': ConvFormer, 'caformer': CAFormer}
# dims differ stage to stage (timm skips a downsampler between equal widths); CAFormer's attention widths
# are multiples of the head dim 32 (timm's attention fails otherwise; the official code and ours do not)
REDUCED = dict(depths=[2, 1, 2, 1], dims=[16, 24, 48, 64])


def _pair(family, arch_name=None):
    reduced = dict(REDUCED, dims=[16, 24, 64, 96]) if family == 'caformer' else REDUCED
    with torch.device('meta'):  # no initialisation cost; every parameter is set below / loaded
        if arch_name is None:
            tm = timm_mf.MetaFormer(num_classes=5, **reduced, **_timm_kwargs(family))
            arch = dict(reduced)
        else:
            import timm
            tm = timm.create_model(f'{family}_{arch_name}', pretrained=False)
            arch = arch_name
        cls = FAMILIES[family]
        a, b = cls(arch=arch, out_norm=False).eval(), cls(arch=arch, out_norm=False).eval()
    a.to_empty(device='cpu'), b.to_empty(device='cpu')
    randomise(tm)
    sd = tm.state_dict()
    official = timm_to_official(sd)
    # the test's converter is the inverse of timm's official->timm filter
    back = timm_mf.checkpoint_filter_fn(official, tm)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    ra, rb = load_pretrained(a, sd), load_pretrained(b, official)
    assert (ra.layout, rb.layout) == ('timm', 'official')
    assert ra.loaded == rb.loaded == len(a.state_dict())
    assert sorted(ra.dropped_classifier) == sorted(rb.dropped_classifier)
    assert {k.split('.')[0] for k in ra.dropped_classifier} == {'head', 'norm'}
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    return tm, a


def _check(tm, ours, size, atol=1e-5):
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    with torch.no_grad():
        ref = tm.forward_intermediates(x, intermediates_only=True)
        feats = ours(x)
    assert len(ref) == len(feats) == 4
    for r, f in zip(ref, feats):
        assert f.shape == r.shape
        torch.testing.assert_close(f, r, atol=atol, rtol=0)
    return feats


@pytest.mark.parametrize('family', list(FAMILIES))
def test_reduced_config_matches_timm(family):
    tm, ours = _pair(family)
    for size in [(224, 224), (333, 517)]:
        feats = _check(tm, ours, size)
    assert [tuple(f.shape[2:]) for f in feats] == [(83, 129), (42, 65), (21, 33), (11, 17)]  # ceil at odd sizes
    if family == 'caformer':
        ours.set_attn_impl('explicit')
        _check(tm, ours, (333, 517))


def test_convformer_s18_matches_timm_at_224():
    tm, ours = _pair('convformer', 's18')
    _check(tm, ours, (224, 224))
    # the randomised blocks are far from identity: every stage changes its input substantially
    h = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for i in range(4):
            h = ours.downsample_layers[i](h)
            out = ours.forward_stage(i, h)  # NCHW in and out (the stages run NHWC)
            assert (out - h).norm() / h.norm() > 0.1, i
            h = out


def test_caformer_sdpa_equals_explicit():
    torch.manual_seed(0)
    m = randomise(CAFormer(arch=dict(depths=[1, 1, 2, 1], dims=[16, 24, 64, 96]), out_norm=False))
    x = torch.randn(2, 3, 160, 224)
    calls = []
    orig = torch.nn.functional.scaled_dot_product_attention

    def spy(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    outs, grads = {}, {}
    for impl in ('sdpa', 'explicit'):
        m.set_attn_impl(impl)
        m.zero_grad()
        torch.nn.functional.scaled_dot_product_attention = spy
        try:
            calls.clear()
            feats = m(x)
        finally:
            torch.nn.functional.scaled_dot_product_attention = orig
        assert len(calls) == (3 if impl == 'sdpa' else 0)
        sum((f * f).mean() for f in feats).backward()
        outs[impl] = [f.detach() for f in feats]
        grads[impl] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    for a, b in zip(outs['sdpa'], outs['explicit']):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    for n, g in grads['sdpa'].items():
        torch.testing.assert_close(g, grads['explicit'][n], atol=1e-5, rtol=1e-4, msg=n)
