"""Multi-scale + flip testing (glue/tta.py, tools/test.py --tta).

The scales are those of mmseg 0.x's ``MultiScaleFlipAug`` with which the ConvNeXt / MetaFormer / Conv2Former
papers measured their multi-scale mIoU: the config's test scale (2048x512, 2560x640 for the 640 crops) times
0.5 .. 1.75, each side truncated to an int. On the toy set, a toy UperNet (checkpoint made in the test) is
tested single-scale and with --tta through tools/test.py; the --tta predictions are recomputed independently (each of
the 12 views through its own single-scale pipeline and the segmentor, softmax scores averaged) and must match.
Detectors are refused with the reason. dist_test.sh forwards --tta to tools/test.py.
"""
import json
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, load_tool

SEG_TOY = 'configs/toy/conv2former_toy_upernet.py'
DET_TOY = 'configs/toy/conv2former_toy_maskrcnn.py'
RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
TOY_SCALES = [(160, 128), (240, 192), (320, 256), (400, 320), (480, 384), (560, 448)]  # (320, 256) x RATIOS


def _load(config):
    from mmengine.config import Config
    return Config.fromfile(osp.join(ROOT, config))


@pytest.mark.parametrize('config, scale', [
    ('configs/seg/convnext_t_upernet.py', (2048, 512)),
    ('configs/seg/convnext_l_upernet.py', (2560, 640)),
])
def test_seg_tta_pipeline_uses_the_papers_scales(config, scale):
    from glue.tta import enable_tta

    cfg = _load(config)
    assert list(cfg.img_ratios) == list(RATIOS)
    test_cfg = dict(cfg.model.test_cfg)
    scales = enable_tta(cfg)
    assert scales == [(int(scale[0] * r), int(scale[1] * r)) for r in RATIOS]
    assert scales[0] == (scale[0] // 2, scale[1] // 2) and scales[-1] == (int(scale[0] * 1.75), int(scale[1] * 1.75))
    load, tta = cfg.test_dataloader.dataset.pipeline
    assert load['type'] == 'LoadImageFromFile' and tta['type'] == 'TestTimeAug'
    resizes, flips, annotations, pack = tta['transforms']
    assert [(t['type'], tuple(t['scale']), t['keep_ratio']) for t in resizes] == [
        ('Resize', s, True) for s in scales]
    assert [(t['prob'], t['direction']) for t in flips] == [(0.0, 'horizontal'), (1.0, 'horizontal')]
    assert annotations == [dict(type='LoadAnnotations', reduce_zero_label=True)]
    assert [t['type'] for t in pack] == ['PackSegInputs']
    assert cfg.model['type'] == 'SegTTAModel' and cfg.model['module']['type'] == 'EncoderDecoder'
    assert dict(cfg.model['module']['test_cfg']) == test_cfg  # the sliding-window test of the recipe is kept


def test_detectors_are_refused_with_the_reason():
    from glue.tta import TTAUnsupportedError, enable_tta
    main = load_tool('tools/test.py').main

    with pytest.raises(TTAUnsupportedError, match='DetTTAModel merges boxes only and refuses instance masks'):
        enable_tta(_load('configs/det/convnext_t_maskrcnn.py'))
    with pytest.raises(SystemExit) as exc:
        main([osp.join(ROOT, DET_TOY), 'missing.pth', '--tta'])
    assert str(exc.value).startswith('--tta: test-time augmentation is not available for detectors')


def test_dist_test_forwards_tta(tmp_path):
    """A fake PYTHON records what torchrun would run."""
    fake = tmp_path / 'python'
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), PORT='29555')
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools', 'dist_test.sh'), 'cfg.py', 'ck.pth', '2', '--tta'],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.split('\n')
    i = args.index('--nproc_per_node=2')
    assert args[i + 1].endswith('tools/test.py')
    assert args[i + 2:i + 7] == ['cfg.py', 'ck.pth', '--launcher', 'pytorch', '--tta']


def _run(cmd):
    proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc.stdout


def _build_toy_segmentor():
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(_load(SEG_TOY).model)


def _single_view(model, path, scale, flip=0.0, keep_ratio=True):
    """One view through a single-scale pipeline: the data dict of a test step."""
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope('mmseg'):
        pipeline = Compose([dict(type='LoadImageFromFile'), dict(type='Resize', scale=scale, keep_ratio=keep_ratio),
                            dict(type='RandomFlip', prob=flip, direction='horizontal'), dict(type='PackSegInputs')])
        data = pipeline(dict(img_path=path, reduce_zero_label=True))
    return dict(inputs=[data['inputs']], data_samples=[data['data_samples']])


@pytest.fixture(scope='module')
def toy_segmentor(tmp_path_factory):
    """The toy UperNet, randomly initialised (seed 0) with its BatchNorm statistics measured on the training
    images and its classifier bias centred so that every class is predicted somewhere. (A few training
    iterations, the cheap alternative, leave a model that, depending on the seed, predicts one class
    everywhere: then single-scale and multi-scale mIoU coincide and the test would prove nothing.)"""
    from glue.toy_data import make_toy_data

    tmp = tmp_path_factory.mktemp('tta')
    paths = make_toy_data(str(tmp / 'toy'), seed=0, num_train=8, num_val=2)
    train_images = sorted(os.path.join(paths['ade_train_img'], f) for f in os.listdir(paths['ade_train_img']))
    torch.manual_seed(0)
    model = _build_toy_segmentor()
    model.init_weights()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # the statistics of the one calibration batch
    views = [_single_view(model, p, (192, 192), keep_ratio=False) for p in train_images]
    x = model.data_preprocessor(dict(inputs=[v['inputs'][0] for v in views],
                                     data_samples=[v['data_samples'][0] for v in views]), False)['inputs']
    with torch.no_grad():
        model.train()
        feats = model.extract_feat(x)
        model.decode_head(feats), model.auxiliary_head(feats)
        model.eval()
        model.decode_head.conv_seg.bias -= model.decode_head(model.extract_feat(x)).mean(dim=(0, 2, 3))
    ckpt = tmp / 'toy_upernet.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    return tmp, paths['ade_root'], ckpt


def _reference_tta(ckpt, image_paths):
    """The 12 views of each image through single-scale pipelines, softmax scores averaged: per image the argmax and
    the margin between the two best averaged scores. The model in the memory layout tools/test.py gives it (the toy
    config's ChannelsLastHook): convolutions on the other layout differ in the last bit, which flips the argmax of a
    near-tie pixel on some machines (0.0013% of one image on an Intel Xeon); the two layouts are compared in
    tests/test_memory_format.py. The tool runs in another process, whose thread count (and with it oneDNN's
    summation order) can differ from this one's: the test allows flips at near-tie pixels only."""
    from backbones.checkpoint import extract_state_dict, read_checkpoint
    from glue.memory_format import to_channels_last
    from glue.resume import has_custom_hook
    from mmengine.config import Config

    model = _build_toy_segmentor().eval()
    model.load_state_dict(extract_state_dict(read_checkpoint(str(ckpt)))[0], strict=True)
    if has_custom_hook(Config.fromfile(SEG_TOY), 'ChannelsLastHook'):
        assert to_channels_last(model) > 0
    preds = {}
    for path in image_paths:
        scores = 0
        for scale in TOY_SCALES:
            for flip in (0.0, 1.0):
                with torch.no_grad():
                    out = model.test_step(_single_view(model, path, scale, flip))
                scores = scores + out[0].seg_logits.data.softmax(dim=0)
        top2 = (scores / 12).topk(2, dim=0).values
        preds[osp.basename(path)] = ((scores / 12).argmax(dim=0), top2[0] - top2[1])
    return preds


@pytest.mark.slow
def test_tta_round_trip_on_the_toy_segmentor(toy_segmentor):
    tmp, ade, ckpt = toy_segmentor
    common = [SEG_TOY, str(ckpt), '--work-dir', str(tmp / 'test'), '--data-root', ade,
              '--cfg-options', 'test_dataloader.num_workers=0']
    _run(['tools/test.py', *common, '--metrics-out', str(tmp / 'single.json')])
    out = _run(['tools/test.py', *common, '--tta', '--metrics-out', str(tmp / 'tta.json'),
                '--out', str(tmp / 'tta.pkl')])
    assert f'--tta: test scales {TOY_SCALES}, each with and without flip' in out
    single = json.loads((tmp / 'single.json').read_text())['mIoU']
    multi = json.loads((tmp / 'tta.json').read_text())['mIoU']
    assert 0.0 <= single <= 100.0 and 0.0 <= multi <= 100.0
    assert multi != single, (single, multi)

    results = pickle.loads((tmp / 'tta.pkl').read_bytes())
    assert len(results) == 2
    reference = _reference_tta(ckpt, [r['img_path'] for r in results])
    for r in results:
        pred = r['pred_sem_seg']['data'][0]
        ref, margin = reference[osp.basename(r['img_path'])]
        assert pred.shape == ref.shape == tuple(r['ori_shape'])
        differ = pred != ref  # only near-ties (averaged scores within 1e-5) may flip, and only a few pixels
        assert differ.float().mean() <= 1e-4 and (margin[differ] < 1e-5).all(), (
            f"{r['img_path']}: {differ.float().mean():.4%} of pixels differ, margins {margin[differ].tolist()[:8]}")
