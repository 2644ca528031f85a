"""ConvNeXt / ConvNeXt V2 against timm, torchvision and the official ConvNeXt-V2 code.

* timm: random-initialised timm models (reduced sizes and the real convnext_tiny / convnextv2_atto) with
  randomised layer scales, GRN and norms, saved in timm's layout and converted to the official layout
  (mapping written here from the documented key correspondence, checked by a round trip through timm's own
  ``checkpoint_filter_fn``), loaded through our loader; per-stage features (pre-norm, ``out_norm=False``)
  compared with ``forward_intermediates`` at 224 and 333x517, on both of our block paths, and gradients.
* torchvision: ``convnext_tiny`` state dicts (``.pth.tar`` with a ``state_dict`` wrapper).
* DINOv3 (timm's ``convnext_{tiny,small,base,large}.dinov3_lvd1689m``): the pretrained cfgs exist, the models'
  state dicts (the layout of the hub files) load strictly into ours (all four sizes, meta device), and
  convnext_tiny's randomised weights, served as the hub's ``model.safetensors`` from 127.0.0.1 under the
  named checkpoint, give timm's ``forward_intermediates``.
* fixtures/convnextv2: outputs of the official facebookresearch/ConvNeXt-V2 code (see its README).

Tolerance: atol 1e-5. For the real-size models we add rtol 1e-5: their stage-3 maps reach |x| ~ 10 and
float32 re-association alone moves them by ~1e-5 (timm and ours are both ~6e-6..8e-6 away from a float64
evaluation of the same weights).
"""
import contextlib
import os
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones import ConvNeXt, ConvNeXtV2, load_pretrained
from backbones.layers import set_fused_cpu_inference
from conftest import FIXTURES

timm = pytest.importorskip('timm')
from timm.models.convnext import ConvNeXt as TimmConvNeXt  # noqa: E402
from timm.models.convnext import checkpoint_filter_fn  # noqa: E402

SIZES = [(224, 224), (333, 517)]
SMALL = dict(depths=[1, 1, 2, 1], dims=[16, 24, 32, 48])


# ------------------------------------------------------------------------------------------------ helpers
def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Move every block away from identity: layer scales ~U(0.5, 1.5), GRN gamma ~N(0, 1) and beta /
    biases ~N(0, 0.1), LayerNorm affine ~U(0.5, 1.5) / N(0, 0.1). Conv/Linear weights keep their init."""
    g = torch.Generator().manual_seed(seed)

    def fill(p, kind):
        if kind == 'u':
            p.copy_(torch.rand(p.shape, generator=g) + 0.5)
        else:
            p.copy_(torch.randn(p.shape, generator=g) * kind)

    with torch.no_grad():
        for m in model.modules():
            for name, p in m.named_parameters(recurse=False):
                grn = 'GlobalResponseNorm' in type(m).__name__ or type(m).__name__ == 'GRN'
                if name in ('gamma', 'layer_scale') and not grn:
                    fill(p, 'u')
                elif grn:
                    fill(p, 1.0 if name in ('weight', 'gamma') else 0.1)
                elif isinstance(m, nn.LayerNorm):
                    fill(p, 'u' if name == 'weight' else 0.1)
                elif name == 'bias':
                    fill(p, 0.1)
    return model.eval()


_TIMM_BLOCK = [('conv_dw.', 'dwconv.'), ('norm.', 'norm.'), ('mlp.fc1.', 'pwconv1.'), ('mlp.fc2.', 'pwconv2.'),
               ('mlp.grn.weight', 'grn.gamma'), ('mlp.grn.bias', 'grn.beta'), ('gamma', 'gamma')]


def timm_to_official(sd):
    """timm -> official keys (the official key layout, read backwards)."""
    out = {}
    for k, v in sd.items():
        if m := re.fullmatch(r'stem\.(\d)\.(\w+)', k):
            k = f'downsample_layers.0.{m[1]}.{m[2]}'
        elif m := re.fullmatch(r'stages\.(\d)\.downsample\.(\d)\.(\w+)', k):
            k = f'downsample_layers.{m[1]}.{m[2]}.{m[3]}'
        elif m := re.fullmatch(r'stages\.(\d)\.blocks\.(\d+)\.(.+)', k):
            rest = next(new + m[3][len(old):] for old, new in _TIMM_BLOCK if m[3].startswith(old))
            k = f'stages.{m[1]}.{m[2]}.{rest}'
            if '.grn.' in k:
                v = v.reshape(1, 1, 1, -1)
            elif v.ndim == 4 and '.pwconv' in k:  # timm's conv_mlp variants (V2 atto..nano)
                v = v.reshape(v.shape[0], v.shape[1])
        elif k.startswith('head.norm.'):
            k = k[len('head.'):]
        elif k.startswith('head.fc.'):
            k = 'head.' + k[len('head.fc.'):]
        else:
            raise AssertionError(f'unmapped timm key {k}')
        out[k] = v
    return out


def timm_features(model, x):
    return model.forward_intermediates(x, intermediates_only=True)  # NCHW, before any norm


@contextlib.contextmanager
def fused(flag: bool):
    old = set_fused_cpu_inference(flag)
    try:
        yield
    finally:
        set_fused_cpu_inference(old)


def assert_feats(ours, ref, rtol=0.0):
    assert len(ours) == len(ref) == 4
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape, i
        torch.testing.assert_close(a, b, atol=1e-5, rtol=rtol, msg=lambda m: f'stage {i}: {m}')


def empty(cls, arch):
    """Our model without the (slow, here pointless) random initialisation: every tensor gets loaded."""
    with torch.device('meta'):
        m = cls(arch=arch, out_norm=False)
    return m.to_empty(device='cpu')


def load_both_layouts(tmp_path, timm_model, cls, arch, to_file):
    """Save the timm model in timm's and in the official layout; load each through our loader."""
    sd = timm_model.state_dict()
    official = timm_to_official(sd)
    round_trip = checkpoint_filter_fn({'model': official}, timm_model)  # timm's own official -> timm
    assert set(round_trip) == set(sd)
    for k in sd:
        assert torch.equal(round_trip[k], sd[k]), k
    ckpts = {'timm': {'state_dict': sd, 'epoch': 3}, 'official': {'model': official}}
    models = []
    for layout, ckpt in ckpts.items():
        if to_file:
            torch.save(ckpt, tmp_path / f'{layout}.pth')
            ckpt = str(tmp_path / f'{layout}.pth')
        m = empty(cls, arch)
        report = load_pretrained(m, ckpt)
        assert report.layout == layout and not report.fresh
        assert sorted({k.split('.')[0] for k in report.dropped_classifier}) == (['head'] if layout == 'timm'
                                                                               else ['head', 'norm'])
        models.append(m.eval())
    return models


# ------------------------------------------------------------------------------------------------ timm
TIMM_CASES = {
    'v1_small': (lambda: TimmConvNeXt(num_classes=5, **SMALL), ConvNeXt, SMALL, 0.0),
    'v2_small': (lambda: TimmConvNeXt(num_classes=5, use_grn=True, ls_init_value=None, **SMALL), ConvNeXtV2,
                 SMALL, 0.0),
    'convnext_tiny': (lambda: timm.create_model('convnext_tiny'), ConvNeXt, 'tiny', 1e-5),
    'convnextv2_atto': (lambda: timm.create_model('convnextv2_atto'), ConvNeXtV2, 'atto', 1e-5),  # conv_mlp
}


@pytest.mark.parametrize('case', list(TIMM_CASES))
def test_timm_parity_both_layouts(tmp_path, case):
    make, cls, arch, rtol = TIMM_CASES[case]
    torch.manual_seed(0)
    ref = randomise(make(), seed=1)
    small = case.endswith('small')
    ours_timm, ours_official = load_both_layouts(tmp_path, ref, cls, arch, to_file=small)
    for k, v in ours_official.state_dict().items():
        assert torch.equal(v, ours_timm.state_dict()[k]), k
    gen = torch.Generator().manual_seed(2)
    paths = (True, False) if small else (True,)
    for h, w in SIZES if small else SIZES[:1]:  # the real sizes at 224 only (CPU time)
        x = torch.randn(2 if small else 1, 3, h, w, generator=gen)
        with torch.no_grad():
            expected = timm_features(ref, x)
            for use_fused in paths:  # our two block paths: oneDNN inference and autograd
                with fused(use_fused):
                    assert_feats(ours_timm(x), expected, rtol)
        if small:  # with gradients enabled (the training code path)
            assert_feats(ours_official(x), expected, rtol)


@pytest.mark.parametrize('v2', [False, True], ids=['v1', 'v2'])
def test_timm_gradients_match(v2):
    """Training path: same loss, same parameter gradients as timm (layer scale / GRN folds are exact). timm
    runs in float64: the reference is then exact to float32 rounding, and the comparison measures our error
    alone (in float32 timm's own summation error, 3e-4 on the stem's weight gradient, exceeded 1e-4)."""
    torch.manual_seed(0)
    ref = randomise(TimmConvNeXt(num_classes=5, use_grn=v2, ls_init_value=None if v2 else 1e-6, **SMALL), 3)
    ours = (ConvNeXtV2 if v2 else ConvNeXt)(arch=SMALL, out_norm=False)
    load_pretrained(ours, {'state_dict': ref.state_dict()})
    ref.double()
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(4))
    weights = [torch.randn(1, c, 1, 1, generator=torch.Generator().manual_seed(i)) for i, c in enumerate(SMALL['dims'])]
    for model, feats in ((ref.train(), lambda m: timm_features(m, x.double())), (ours.train(), lambda m: m(x))):
        sum((f * w.to(f.dtype)).sum() for f, w in zip(feats(model), weights)).backward()
    grads, _ = type(ours).convert_checkpoint({n: p.grad.float() for n, p in ref.named_parameters()
                                              if p.grad is not None})
    own = {n: p.grad for n, p in ours.named_parameters()}
    assert set(own) <= set(grads)
    for n, g in own.items():
        torch.testing.assert_close(g, grads[n], atol=1e-4, rtol=1e-4, msg=lambda m: f'{n}: {m}')


# ------------------------------------------------------------------------------------------------ GRN, padding
def test_grn_padding_effect_is_deterministic_and_matches_timm():
    """Zero padding changes V2 features everywhere (GRN's whole-map statistics), V1 only near the border."""
    torch.manual_seed(0)
    refs = {v2: randomise(TimmConvNeXt(num_classes=5, use_grn=v2, ls_init_value=None if v2 else 1e-6, **SMALL), 5)
            for v2 in (False, True)}
    x = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(6))
    padded = F.pad(x, (0, 64, 0, 64))  # what a 192x224 batch mate does to this image under mmdet's padding
    for v2, ref in refs.items():
        ours = (ConvNeXtV2 if v2 else ConvNeXt)(arch=SMALL, out_norm=False).eval()
        load_pretrained(ours, {'state_dict': ref.state_dict()})
        with torch.no_grad():
            a, b = ours(padded), ours(padded)
            alone = ours(x)
            expected = timm_features(ref, padded)
        for f1, f2 in zip(a, b):
            assert torch.equal(f1, f2)  # deterministic
        assert_feats(a, expected)  # timm (same padded input) agrees
        # top-left of stage 0, well inside the image: the receptive field never sees the padded area
        inner = (slice(None), slice(None), slice(0, 24), slice(0, 32))
        diff = (a[0][inner] - alone[0][inner]).abs().max().item()
        if v2:
            assert diff > 1e-3, diff  # GRN statistics include the padded area
        else:
            assert diff < 1e-5, diff


# ------------------------------------------------------------------------------------------------ torchvision
def test_torchvision_convnext_tiny(tmp_path):
    tv = pytest.importorskip('torchvision')
    torch.manual_seed(0)
    ref = randomise(tv.models.convnext_tiny(), seed=7)
    torch.save({'epoch': 600, 'state_dict': ref.state_dict()}, tmp_path / 'convnext_tiny.pth.tar')
    ours = empty(ConvNeXt, 'tiny')
    report = load_pretrained(ours, str(tmp_path / 'convnext_tiny.pth.tar'))
    assert report.layout == 'torchvision' and not report.fresh
    assert sorted({k.split('.')[0] for k in report.dropped_classifier}) == ['classifier']
    ours.eval()
    gen = torch.Generator().manual_seed(8)
    for h, w in SIZES:
        x = torch.randn(1, 3, h, w, generator=gen)
        with torch.no_grad():
            expected, y = [], x
            for i, layer in enumerate(ref.features):
                y = layer(y)
                if i % 2 == 1:
                    expected.append(y)
            assert_feats(ours(x), expected, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ official V2
D = os.path.join(FIXTURES, 'convnextv2')
FIXTURE_ARCH = dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32])


@pytest.fixture(scope='module')
def official_io():
    data = torch.load(os.path.join(D, 'io.pt'), weights_only=True)
    rs = np.random.RandomState(3)
    imgs = {'224': rs.randint(0, 256, (1, 3, 224, 224)).astype(np.uint8),
            '2x133x171': rs.randint(0, 256, (2, 3, 133, 171)).astype(np.uint8)}
    for tag, img in imgs.items():
        assert int(img.astype(np.int64).sum()) == data[f'img_{tag}_sum'], 'input regeneration drifted'
    data['x'] = {tag: (torch.from_numpy(img).float() / 255 - 0.5) / 0.25 for tag, img in imgs.items()}
    return data


@pytest.mark.parametrize('tag', ['224', '2x133x171'])
@pytest.mark.parametrize('path', ['fused', 'aten', 'grad'])
def test_official_convnextv2_fixture(official_io, tag, path):
    model = ConvNeXtV2(arch=FIXTURE_ARCH, out_norm=False,
                       init_cfg=dict(type='Pretrained', checkpoint=os.path.join(D, 'tiny_grn.pth')))
    model.init_weights()
    model.eval()
    x = official_io['x'][tag]
    with fused(path == 'fused'), (contextlib.nullcontext() if path == 'grad' else torch.no_grad()):
        feats = model(x)
    assert_feats([f.detach() for f in feats], [official_io[f'feat{i}_{tag}'] for i in range(4)])


# ------------------------------------------------------------------------------------------------ DINOv3
@pytest.mark.parametrize('size', ['tiny', 'small', 'base', 'large'])
def test_dinov3_layout_loads_strictly(size):
    """timm 1.0.31 ships convnext_<size>.dinov3_lvd1689m: the plain ConvNeXt architecture with num_classes=0
    (the head keeps its final LayerNorm, no fc). That state dict fits ours strictly; only head.norm is
    dropped and only the output norms are new."""
    name = f'convnext_{size}.dinov3_lvd1689m'
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.hf_hub_id == f'timm/{name}' and cfg.num_classes == 0 and cfg.license == 'dinov3-license'
    assert cfg.architecture == f'convnext_{size}' and cfg.mean == (0.485, 0.456, 0.406)
    with torch.device('meta'):
        ref = timm.create_model(name)
        ours = ConvNeXt(arch=size)
    sd = ref.state_dict()
    assert [k for k in sd if k.startswith('head.')] == ['head.norm.weight', 'head.norm.bias']
    report = load_pretrained(ours, {'state_dict': sd})
    assert report.layout == 'timm' and report.dropped_classifier == ['head.norm.weight', 'head.norm.bias']
    assert report.loaded == len(sd) - 2 and {k.split('.')[0] for k in report.fresh} == {'out_norms'}


def test_dinov3_named_checkpoint_matches_timm(loopback_server, torch_home, monkeypatch):
    """The whole path a user takes: pretrained='convnext_tiny.dinov3_lvd1689m' downloads the hub's
    model.safetensors (here timm's randomised model, from a server on 127.0.0.1), loads it strictly, and the
    four stage outputs equal timm's forward_intermediates."""
    import dataclasses

    from safetensors.torch import save as save_safetensors

    from backbones import build_backbone, hub
    torch.manual_seed(0)
    ref = randomise(timm.create_model('convnext_tiny.dinov3_lvd1689m'), seed=7)
    entry = hub.get('convnext_tiny.dinov3_lvd1689m')
    path = '/timm/convnext_tiny.dinov3_lvd1689m/resolve/main/model.safetensors'
    assert entry.url == 'https://huggingface.co' + path
    loopback_server.files[path] = save_safetensors({k: v.contiguous() for k, v in ref.state_dict().items()})
    monkeypatch.setitem(hub.CHECKPOINTS, entry.name, dataclasses.replace(entry, url=loopback_server.url(path)))
    ours = build_backbone('convnext_tiny', out_norm=False, pretrained='convnext_tiny.dinov3_lvd1689m')
    ours.init_weights()
    assert (torch_home / 'convnext_tiny.dinov3_lvd1689m.safetensors').is_file()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert_feats(ours.eval()(x), timm_features(ref, x), 1e-5)
