"""Every ConvNeXt / ConvNeXt V2 checkpoint layout loads into the same weights.

Each layout is written here from the official state dict of a small random model, following the layout's
documented key correspondence (FCMAE: ConvNeXt-V2 ``models/utils.py remap_checkpoint_keys`` read
backwards; mmpretrain: ``tools/model_converters/convnext_to_mmpretrain.py`` and its ConvNeXt backbone;
torchvision: ``torchvision.models.convnext``; official detection: object_detection/.../convnext.py
``norm{i}``), then loaded through the strict loader and compared tensor by tensor. timm's and
torchvision's real models are covered in test_convnext_parity.py.
"""
import argparse
import re

import pytest
import torch

from backbones import (CheckpointError, CheckpointMismatchError, ConvNeXt, ConvNeXtV2, build_backbone,
                       load_pretrained)

SMALL = dict(depths=[1, 1, 2, 1], dims=[16, 24, 32, 48])


def reference(cls, seed=0, out_norm=False):
    torch.manual_seed(seed)
    m = cls(arch=SMALL, out_norm=out_norm)
    with torch.no_grad():
        for p in m.parameters():  # every tensor distinct, so any mix-up of keys or reshape shows
            p.copy_(torch.randn(p.shape))
    return m


def official(model, classes=1000):
    """The official release layout: trunk + classifier norm/head."""
    sd = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith('out_norms.')}
    c = model.dims[-1]
    sd.update({'norm.weight': torch.ones(c), 'norm.bias': torch.zeros(c), 'head.weight': torch.randn(classes, c),
               'head.bias': torch.zeros(classes)})
    return sd


def assert_same_weights(model, ref, skip_out_norms=True):
    own = model.state_dict()
    for k, v in ref.state_dict().items():
        if skip_out_norms and k.startswith('out_norms.'):
            continue
        assert torch.equal(own[k], v), k


def load(cls, ckpt, tmp_path=None, out_norm=False, **kw):
    if tmp_path is not None:
        torch.save(ckpt, tmp_path / 'ckpt.pth')
        ckpt = str(tmp_path / 'ckpt.pth')
    m = cls(arch=SMALL, out_norm=out_norm)
    return m, load_pretrained(m, ckpt, **kw)


# ---------------------------------------------------------------------------------------------- official
@pytest.mark.parametrize('cls', [ConvNeXt, ConvNeXtV2])
@pytest.mark.parametrize('classes', [1000, 21841])
def test_official_release_1k_and_22k(tmp_path, cls, classes):
    ref = reference(cls)
    m, report = load(cls, {'model': official(ref, classes), 'epoch': 299,
                           'args': argparse.Namespace(model='convnext_tiny')}, tmp_path, out_norm=True)
    assert report.layout == 'official' and report.wrapper == "'model'"
    assert sorted(report.dropped_classifier) == ['head.bias', 'head.weight', 'norm.bias', 'norm.weight']
    assert report.fresh and all(k.startswith('out_norms.') for k in report.fresh)
    assert_same_weights(m, ref)


def test_official_detection_checkpoint_restores_output_norms(tmp_path):
    """Whole mmdet 2.x model of the official ConvNeXt detection code: backbone.norm{i} -> out_norms.{i}."""
    ref = reference(ConvNeXt, out_norm=True)
    sd = {}
    for k, v in ref.state_dict().items():
        k = re.sub(r'^out_norms\.(\d)\.', r'norm\1.', k)
        sd[f'backbone.{k}'] = v
    sd.update({'neck.lateral_convs.0.conv.weight': torch.zeros(256, 16, 1, 1), 'rpn_head.rpn_cls.bias': torch.zeros(3)})
    m, report = load(ConvNeXt, {'meta': {'epoch': 36}, 'state_dict': sd}, tmp_path, out_norm=True)
    assert report.layout == 'official-det' and not report.fresh and not report.dropped_classifier
    assert_same_weights(m, ref, skip_out_norms=False)


# ---------------------------------------------------------------------------------------------- FCMAE
def to_fcmae(sd):
    """Official dense V2 weights -> the FCMAE pre-training file's sparse encoder layout (+ decoder)."""
    out = {}
    for k, v in sd.items():
        if k.startswith(('norm.', 'head.')):
            continue  # the pre-training model has no classifier
        if k.startswith('downsample_layers.0.'):
            out['encoder.' + k] = v  # the stem stays dense
            continue
        if m := re.fullmatch(r'downsample_layers\.(\d)\.0\.(weight|bias)', k):  # MinkowskiLayerNorm
            out[f'encoder.downsample_layers.{m[1]}.0.ln.{m[2]}'] = v
        elif m := re.fullmatch(r'downsample_layers\.(\d)\.1\.weight', k):  # MinkowskiConvolution k2 s2
            cout, cin, kh, kw = v.shape  # W[o, i, a, b] = kernel[b*k + a, i, o]
            out[f'encoder.downsample_layers.{m[1]}.1.kernel'] = v.transpose(3, 2).reshape(cout, cin, kh * kw).permute(2, 1, 0)
        elif m := re.fullmatch(r'(downsample_layers\.\d\.1|stages\.\d\.\d+\.dwconv)\.bias', k):
            out[f'encoder.{m[1]}.bias'] = v.reshape(1, -1)  # Minkowski biases are (1, C)
        elif m := re.fullmatch(r'(stages\.\d\.\d+)\.dwconv\.weight', k):  # MinkowskiDepthwiseConvolution
            c, _, kh, kw = v.shape  # W[c, 0, a, b] = kernel[b*k + a, c]
            out[f'encoder.{m[1]}.dwconv.kernel'] = v[:, 0].transpose(1, 2).reshape(c, kh * kw).permute(1, 0)
        elif m := re.fullmatch(r'(stages\.\d\.\d+)\.norm\.(weight|bias)', k):
            out[f'encoder.{m[1]}.norm.ln.{m[2]}'] = v
        elif m := re.fullmatch(r'(stages\.\d\.\d+)\.(pwconv\d)\.(weight|bias)', k):  # MinkowskiLinear
            out[f'encoder.{m[1]}.{m[2]}.linear.{m[3]}'] = v
        elif m := re.fullmatch(r'(stages\.\d\.\d+)\.grn\.(gamma|beta)', k):  # MinkowskiGRN: (1, C)
            out[f'encoder.{m[1]}.grn.{m[2]}'] = v.reshape(1, -1)
        else:
            raise AssertionError(f'unmapped {k}')
    d = 64  # the decoder of models/fcmae.py: proj, mask_token, one dense V2 block, pred
    out.update({'proj.weight': torch.randn(d, SMALL['dims'][-1], 1, 1), 'proj.bias': torch.zeros(d),
                'mask_token': torch.zeros(1, d, 1, 1), 'decoder.0.dwconv.weight': torch.randn(d, 1, 7, 7),
                'decoder.0.dwconv.bias': torch.zeros(d), 'decoder.0.norm.weight': torch.ones(d),
                'decoder.0.norm.bias': torch.zeros(d), 'decoder.0.pwconv1.weight': torch.randn(4 * d, d),
                'decoder.0.pwconv1.bias': torch.zeros(4 * d), 'decoder.0.grn.gamma': torch.zeros(1, 1, 1, 4 * d),
                'decoder.0.grn.beta': torch.zeros(1, 1, 1, 4 * d), 'decoder.0.pwconv2.weight': torch.randn(d, 4 * d),
                'decoder.0.pwconv2.bias': torch.zeros(d), 'pred.weight': torch.randn(32 * 32 * 3, d, 1, 1),
                'pred.bias': torch.zeros(32 * 32 * 3)})
    return out


def test_fcmae_pretraining_file(tmp_path):
    ref = reference(ConvNeXtV2)
    sparse = to_fcmae(official(ref))
    assert sparse['encoder.stages.0.0.dwconv.kernel'].shape == (49, 16)
    assert sparse['encoder.downsample_layers.1.1.kernel'].shape == (4, 16, 24)
    m, report = load(ConvNeXtV2, {'model': sparse, 'epoch': 1599}, tmp_path)
    assert report.layout == 'fcmae' and not report.fresh and not report.dropped_classifier
    assert {k.split('.')[0] for k in report.dropped_ignored} == {'proj', 'mask_token', 'decoder', 'pred'}
    assert_same_weights(m, ref)


def test_fcmae_kernel_offsets_are_column_major():
    """Minkowski enumerates kernel offsets with the first spatial axis fastest: offset p = b*k + a."""
    k = 7
    kernel = torch.arange(k * k, dtype=torch.float32)[:, None].repeat(1, 3)  # (k*k, C): value = offset index
    sd, _ = ConvNeXtV2.convert_checkpoint({'encoder.stages.0.0.dwconv.kernel': kernel})
    w = sd['stages.0.0.dwconv.weight']
    assert w.shape == (3, 1, k, k)
    assert w[0, 0, 0, 1] == k and w[0, 0, 1, 0] == 1 and w[0, 0, 2, 3] == 3 * k + 2


# ---------------------------------------------------------------------------------------------- mmpretrain
def to_mmpretrain(sd, conv_pw=False):
    """convnext_to_mmpretrain.py: dwconv -> depthwise_conv, pwconv -> pointwise_conv, norm -> norm3,
    head -> head.fc, everything else under backbone.; mmpretrain's GRN is [4C]."""
    out = {}
    for k, v in sd.items():
        if k.startswith('head.'):
            out['head.fc.' + k[len('head.'):]] = v
            continue
        k = k.replace('dwconv', 'depthwise_conv').replace('pwconv', 'pointwise_conv')
        k = re.sub(r'^norm\.', 'norm3.', k)
        if '.grn.' in k:
            v = v.reshape(-1)
        if conv_pw and re.search(r'pointwise_conv\d\.weight$', k):
            v = v[:, :, None, None]  # linear_pw_conv=False: 1x1 convolutions
        out['backbone.' + k] = v
    return out


@pytest.mark.parametrize('cls', [ConvNeXt, ConvNeXtV2])
@pytest.mark.parametrize('conv_pw', [False, True], ids=['linear', 'conv1x1'])
def test_mmpretrain_classifier_checkpoint(tmp_path, cls, conv_pw):
    ref = reference(cls)
    m, report = load(cls, {'meta': {}, 'state_dict': to_mmpretrain(official(ref), conv_pw)}, tmp_path)
    assert report.layout == 'mmpretrain' and "prefix 'backbone.'" in report.wrapper
    assert sorted(report.dropped_classifier) == ['norm.bias', 'norm.weight']  # its final norm3
    assert_same_weights(m, ref)


def test_mmpretrain_detection_checkpoint(tmp_path):
    """mmdet 3.x ConvNeXt detectors (mmpretrain backbone, out_indices 0-3): norm0..3 are output norms."""
    ref = reference(ConvNeXtV2, out_norm=True)
    sd = {re.sub(r'^out_norms\.(\d)\.', r'norm\1.', k): v for k, v in ref.state_dict().items()}
    whole = {k: v for k, v in to_mmpretrain(sd).items()}
    whole['neck.fpn_convs.0.conv.weight'] = torch.zeros(1)
    m, report = load(ConvNeXtV2, {'state_dict': whole}, tmp_path, out_norm=True)
    assert report.layout == 'mmpretrain-det' and not report.fresh
    assert_same_weights(m, ref, skip_out_norms=False)


# ---------------------------------------------------------------------------------------------- torchvision
def to_torchvision(sd):
    tv_block = {'dwconv': '0', 'norm': '2', 'pwconv1': '3', 'pwconv2': '5'}
    out = {}
    for k, v in sd.items():
        if m := re.fullmatch(r'downsample_layers\.(\d)\.(\d)\.(\w+)', k):
            out[f'features.{2 * int(m[1])}.{m[2]}.{m[3]}'] = v
        elif m := re.fullmatch(r'stages\.(\d)\.(\d+)\.gamma', k):
            out[f'features.{2 * int(m[1]) + 1}.{m[2]}.layer_scale'] = v.reshape(-1, 1, 1)
        elif m := re.fullmatch(r'stages\.(\d)\.(\d+)\.(\w+)\.(\w+)', k):
            out[f'features.{2 * int(m[1]) + 1}.{m[2]}.block.{tv_block[m[3]]}.{m[4]}'] = v
        elif k.startswith('norm.'):
            out['classifier.0.' + k[len('norm.'):]] = v
        elif k.startswith('head.'):
            out['classifier.2.' + k[len('head.'):]] = v
        else:
            raise AssertionError(k)
    return out


def test_torchvision_layout_small(tmp_path):
    ref = reference(ConvNeXt)
    torch.save({'epoch': 1, 'arch': 'convnext_tiny', 'state_dict': to_torchvision(official(ref))},
               tmp_path / 'model_best.pth.tar')
    m = ConvNeXt(arch=SMALL, out_norm=False)
    report = load_pretrained(m, str(tmp_path / 'model_best.pth.tar'))
    assert report.layout == 'torchvision' and report.wrapper == "'state_dict'"
    assert_same_weights(m, ref)


# ---------------------------------------------------------------------------------------------- errors
def test_unknown_layout_names_sample_keys():
    sd = {'trunk.conv1.weight': torch.zeros(1), 'trunk.bn1.bias': torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r'cannot identify the layout.*trunk\.conv1\.weight'):
        ConvNeXt.convert_checkpoint(sd)
    with pytest.raises(CheckpointError, match='trunk.bn1.bias'):
        load_pretrained(ConvNeXtV2(arch=SMALL), {'model': sd})


def test_v1_v2_mix_up_names_the_right_class():
    with pytest.raises(CheckpointMismatchError, match="build ConvNeXtV2"):
        load(ConvNeXt, {'model': official(reference(ConvNeXtV2))})
    with pytest.raises(CheckpointMismatchError, match=r"build ConvNeXt \("):
        load(ConvNeXtV2, {'model': official(reference(ConvNeXt))})


def test_other_size_suggests_the_matching_arch():
    with torch.device('meta'):
        tiny = build_backbone('convnext_tiny', out_norm=False)
        small = build_backbone('convnext_small', out_norm=False)
    sd = {k: torch.zeros(v.shape) for k, v in tiny.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"matches arch='tiny'"):
        load_pretrained(small.to_empty(device='cpu'), {'model': sd})
