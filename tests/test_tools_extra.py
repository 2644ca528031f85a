"""tools/convert_checkpoint.py (on the official-layout fixtures), tools/image_demo.py and
tools/analysis/benchmark.py (on the toy configs with randomly initialised weights), on CPU."""
import hashlib
import json
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from backbones import Conv2Former, build_backbone
from backbones.convnext import ConvNeXtV2
from backbones.unified import UnifiedSwin
from conftest import FIXTURES, ROOT, load_tool

cc = load_tool('tools/convert_checkpoint.py')

DET_TOY = osp.join(ROOT, 'configs/toy/conv2former_toy_maskrcnn.py')
SEG_TOY = osp.join(ROOT, 'configs/toy/conv2former_toy_upernet.py')

# (fixture file, family, arch dict): the tiny models of tests/fixtures/*/README.md
OFFICIAL = {
    'conv2former': ('conv2former/tiny_k11.pth.tar', Conv2Former,
                    dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32], kernel_size=11)),
    'convnextv2': ('convnextv2/tiny_grn.pth', ConvNeXtV2, dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32])),
    'unified_swin': ('unified/swin.pth', UnifiedSwin,
                     dict(depths=[2, 1, 1, 2], dims=[8, 8, 16, 16], num_heads=[1, 1, 2, 2])),
}


def _cli(tool, *args, timeout=120):
    return subprocess.run([sys.executable, osp.join(ROOT, tool), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


# ------------------------------------------------------------------------------------- convert_checkpoint
@pytest.mark.parametrize('name', list(OFFICIAL))
def test_convert_official_round_trip(name, tmp_path, capsys):
    rel, cls, arch = OFFICIAL[name]
    src, dst = osp.join(FIXTURES, rel), str(tmp_path / f'{name}.pth')
    assert cc.main([src, dst, '--arch', cls.__name__, '--arch-cfg', json.dumps(arch)]) == 0
    out = capsys.readouterr().out
    assert 'kept:' in out and 'head.*' in out and dst in out

    ckpt = torch.load(dst, weights_only=True)
    meta = ckpt['meta']
    assert meta['family'] == cls.__name__ and meta['arch_cfg'] == arch and meta['layout'] == 'official'
    assert meta['source'] == osp.abspath(src) and meta['source_sha256'] == _sha256(src)
    assert not any(k.startswith(('head.', 'pred.', 'conv_head.', 'stage_norms.')) for k in ckpt['state_dict'])

    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    ref = cls(arch=arch, out_norm=False, init_cfg=dict(type='Pretrained', checkpoint=src))
    ref.init_weights()
    with torch.no_grad():
        ref_feats = ref.eval()(x)
    for kw in (dict(pretrained=dst), dict(init_cfg=dict(type='Pretrained', checkpoint=dst))):
        m = cls(arch=arch, out_norm=False, **kw)
        m.init_weights()  # strict
        with torch.no_grad():
            feats = m.eval()(x)
        for a, b in zip(feats, ref_feats):
            assert torch.equal(a, b)
    # mmengine's own strict loader reads it too (no classifier, no renaming)
    from mmengine.runner import load_checkpoint
    load_checkpoint(cls(arch=arch, out_norm=False), dst, strict=True)

    # converting our own file again needs no --arch (the meta names the family and arch)
    again = str(tmp_path / 'again.pth')
    assert cc.main([dst, again]) == 0
    assert "from the file's meta" in capsys.readouterr().out
    a2 = torch.load(again, weights_only=True)['state_dict']
    assert a2.keys() == ckpt['state_dict'].keys() and all(torch.equal(a2[k], ckpt['state_dict'][k]) for k in a2)


def test_convert_matches_official_outputs(tmp_path, capsys):
    """The converted Conv2Former fixture reproduces the official code's stage outputs (io.pt)."""
    rel, cls, arch = OFFICIAL['conv2former']
    dst = str(tmp_path / 'c2f.pth')
    assert cc.main([osp.join(FIXTURES, rel), dst, '--arch', 'Conv2Former', '--arch-cfg', json.dumps(arch)]) == 0
    io = torch.load(osp.join(FIXTURES, 'conv2former', 'io.pt'), weights_only=True)
    img = np.random.RandomState(1).randint(0, 256, (1, 3, 224, 224)).astype(np.uint8)
    assert int(img.astype(np.int64).sum()) == io['img_224_sum']
    m = cls(arch=arch, out_norm=False, pretrained=dst)
    m.init_weights()
    with torch.no_grad():
        feats = m.eval()((torch.from_numpy(img).float() / 255 - 0.5) / 0.25)
    for i, f in enumerate(feats):
        torch.testing.assert_close(f, io[f'feat{i}_224'], atol=1e-5, rtol=0)


@pytest.fixture(scope='module')
def mmdet_atto(tmp_path_factory):
    """A whole mmdet-style checkpoint of convnextv2_atto (backbone.* with output norms, a neck key, meta)."""
    torch.manual_seed(0)
    sd = build_backbone('convnextv2_atto').state_dict()
    whole = {f'backbone.{k}': v for k, v in sd.items()}
    whole['neck.lateral_convs.0.conv.weight'] = torch.zeros(8, 40, 1, 1)
    path = str(tmp_path_factory.mktemp('atto') / 'mask_rcnn_atto_epoch_36.pth')
    torch.save({'state_dict': whole, 'meta': {'epoch': 36}}, path)
    return path, sd


def test_convert_guesses_the_arch(mmdet_atto, tmp_path, capsys):
    src, sd = mmdet_atto
    dst = str(tmp_path / 'atto.pth')
    assert cc.main([src, dst]) == 0
    out = capsys.readouterr().out
    assert 'arch:    convnextv2_atto (ConvNeXtV2, guessed from the keys)' in out
    assert '1 outside the backbone part not converted' in out
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt['meta']['arch'] == 'convnextv2_atto'
    assert ckpt['state_dict'].keys() == sd.keys()  # the trained output norms are kept
    assert all(torch.equal(ckpt['state_dict'][k], v) for k, v in sd.items())
    m = build_backbone('convnextv2_atto', pretrained=dst)
    m.init_weights()
    assert torch.equal(m.out_norms[3].weight, sd['out_norms.3.weight'])


def test_convert_refuses_a_mismatched_arch(mmdet_atto, tmp_path, capsys):
    # another size of the same family: counts, key names, and the size that fits
    assert cc.main([mmdet_atto[0], str(tmp_path / 'x.pth'), '--arch', 'convnextv2_femto']) == 2
    err = capsys.readouterr().err
    assert 'does not match ConvNeXtV2(arch=\'femto\')' in err
    assert 'shape mismatches: downsample_layers.0.0.weight' in err
    assert "the checkpoint matches arch='atto'" in err
    assert not (tmp_path / 'x.pth').exists()
    # the official Conv2Former fixture (a custom size) against conv2former_n
    rel = OFFICIAL['conv2former'][0]
    assert cc.main([osp.join(FIXTURES, rel), str(tmp_path / 'y.pth'), '--arch', 'conv2former_n']) == 2
    err = capsys.readouterr().err
    assert '180 missing keys: stages.0.1.' in err and '123 shape mismatches' in err and '(+168 more)' in err
    assert '--arch Conv2Former --arch-cfg' in err
    # the wrong family
    assert cc.main([osp.join(FIXTURES, rel), str(tmp_path / 'z.pth'), '--arch', 'convnextv2_atto']) == 2
    err = capsys.readouterr().err
    assert 'unexpected keys' in err and 'closest to the Conv2Former family' in err
    # unknown names list the valid ones
    assert cc.main([osp.join(FIXTURES, rel), str(tmp_path / 'z.pth'), '--arch', 'resnet50']) == 2
    assert "unknown arch 'resnet50'; valid: conv2former_n, " in capsys.readouterr().err
    assert cc.main([osp.join(FIXTURES, rel), str(tmp_path / 'z.pth'), '--arch', 'convnext_pico']) == 2
    assert "unknown ConvNeXt arch 'pico'; valid: tiny, small" in capsys.readouterr().err
    # no --arch, a custom size: nothing to guess, the closest family is named
    assert cc.main([osp.join(FIXTURES, OFFICIAL['convnextv2'][0]), str(tmp_path / 'z.pth')]) == 2
    assert 'closest to the ConvNeXtV2 family' in capsys.readouterr().err
    assert not (tmp_path / 'z.pth').exists()


def test_convert_cli_refusals(tmp_path):
    """From the command line: exit status 2, one message, no traceback."""
    proc = _cli('tools/convert_checkpoint.py', tmp_path / 'missing.pth', tmp_path / 'out.pth')
    assert proc.returncode == 2
    assert proc.stderr.strip() == f'error: source checkpoint not found: {tmp_path / "missing.pth"}'


# ------------------------------------------------------------------------------------ demo and benchmark
@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    """A drawn image and toy checkpoints saved from randomly initialised models."""
    import cv2

    from glue.inference import init_inference_model, load_inference_config

    d = tmp_path_factory.mktemp('toy_models')
    img = np.full((150, 200, 3), 90, np.uint8)
    cv2.circle(img, (60, 70), 35, (40, 40, 220), -1)
    cv2.rectangle(img, (110, 60), (180, 130), (60, 200, 40), -1)
    cv2.imwrite(str(d / 'shapes.png'), img)
    paths = dict(image=str(d / 'shapes.png'))
    for task, config in (('det', DET_TOY), ('seg', SEG_TOY)):
        torch.manual_seed(0)
        model = init_inference_model(load_inference_config(config, 'cpu'), None, 'cpu')
        paths[task] = str(d / f'{task}.pth')
        torch.save({'state_dict': model.state_dict(), 'meta': {}}, paths[task])
    return paths


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_image_demo(toy, task, tmp_path, capsys):
    import cv2

    image_demo = load_tool('tools/image_demo.py')

    out = str(tmp_path / f'{task}.png')
    config = DET_TOY if task == 'det' else SEG_TOY
    assert image_demo.main([toy['image'], config, toy[task], '--out', out, '--device', 'cpu', '--score-thr', '0.0',
                            '--cfg-options', 'model.test_cfg.rcnn.max_per_img=10']) == 0
    stdout = capsys.readouterr().out
    pic = cv2.imread(out)
    assert pic is not None and pic.shape == (150, 200, 3)
    assert f'picture: {out}' in stdout
    if task == 'det':  # random weights: every box the model keeps scores >= 0
        assert 'MaskRCNN (mmdet)' in stdout and '10 boxes with score >= 0 (of 10 the model kept)' in stdout
        assert any(f'  {c}: ' in stdout for c in ('circle', 'square', 'triangle'))
    else:
        assert 'EncoderDecoder (mmseg)' in stdout and '30000 pixels' in stdout and '%' in stdout


def test_image_demo_refusals(toy, tmp_path, capsys):
    image_demo = load_tool('tools/image_demo.py')

    cases = [([str(tmp_path / 'no.png'), DET_TOY, toy['det']], 'image not found'),
             ([toy['image'], str(tmp_path / 'no.py'), toy['det']], 'config not found'),
             ([toy['image'], DET_TOY, str(tmp_path / 'no.pth')], 'checkpoint not found'),
             ([toy['image'], DET_TOY, toy['seg']], 'does not fit')]
    for argv, msg in cases:
        assert image_demo.main(argv + ['--device', 'cpu']) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith('error: ') and msg in err and '\n' not in err, err


def test_benchmark_detector(tmp_path, capsys):
    benchmark = load_tool('tools/analysis/benchmark.py')

    out = tmp_path / 'det.json'
    assert benchmark.main([DET_TOY, '--shape', '128', '128', '--repeats', '2', '--warmup', '1', '--no-memory',
                           '--json', str(out), '--cfg-options', 'model.test_cfg.rcnn.max_per_img=20']) == 0
    assert 'RANDOM weights' in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res['images_per_s'] > 0 and len(res['result']['times_ms']) == 2
    assert res['result']['model_input_shape'] == [1, 3, 128, 128] and res['result']['weights'] == 'random'
    assert len(res['result']['boxes_per_image']) == 1 and res['result']['boxes_per_image'][0] <= 20
    assert res['result']['images_per_s_min'] <= res['images_per_s'] <= res['result']['images_per_s_max']


def test_benchmark_segmentor_with_checkpoint_and_cpu_memory(toy, tmp_path, capsys):
    benchmark = load_tool('tools/analysis/benchmark.py')

    out = tmp_path / 'seg.json'
    assert benchmark.main([SEG_TOY, toy['seg'], '--shape', '96', '128', '--batch', '2', '--repeats', '2',
                           '--warmup', '1', '--json', str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f'weights {toy["seg"]}' in stdout and 'peak mem' in stdout
    res = json.loads(out.read_text())['result']
    assert res['images_per_s'] > 0 and res['model_input_shape'] == [2, 3, 96, 128]
    assert res['label_map_shape'] == [96, 128]
    assert res['peak_total_mib'] > 0 and res['peak_mib'] >= 0 and 'error' not in res['memory_child']
