"""The ConvNeXt / ConvNeXt V2 configs: complete set, widths that match the built backbone, the release each
size starts from and the L/XL (V2 large/huge) crop rule, the headers that state the recipe choice. The recipe
values themselves (lr, decay, drop path, precision) are checked against backbones/recipes.py for every config
in tests/test_configs.py."""
import glob
import os.path as osp
import re

import pytest
import torch

from backbones import hub, recipes
from conftest import ROOT, load_config

Config = pytest.importorskip('mmengine.config').Config

V1 = ('t', 's', 'b', 'l', 'xl')
V2 = ('atto', 'femto', 'pico', 'nano', 'tiny', 'base', 'large', 'huge')
KINDS = ('maskrcnn', 'cascade', 'upernet')
ALL = sorted(p for d in ('det', 'seg') for p in glob.glob(osp.join(ROOT, 'configs', d, 'convnext*.py')))
CONFIGS = [p for p in ALL if '_dinov3_' not in p]
DINOV3 = [p for p in ALL if '_dinov3_' in p]
NAME_RE = re.compile(r'^(?P<family>convnextv2|convnext)_(?P<size>[a-z]+)_(?P<kind>maskrcnn|cascade|upernet)\.py$')


def _parse(path):
    m = NAME_RE.match(osp.basename(path))
    assert m, path
    return m['family'], m['size'], m['kind']


def test_config_set_is_complete():
    assert {osp.basename(p) for p in DINOV3} == {f'convnext_{s}_dinov3_{k}.py' for s in 'tsbl' for k in KINDS}
    names = {osp.basename(p) for p in CONFIGS}
    want = {f'convnext_{s}_{k}.py' for s in V1 for k in KINDS} | {f'convnextv2_{s}_{k}.py' for s in V2 for k in KINDS}
    assert names == want


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config(path):
    from backbones import build_backbone
    family, size, kind = _parse(path)
    cfg = load_config(path)
    bb = cfg.model.backbone
    v1 = family == 'convnext'
    assert bb.type == ('ConvNeXt' if v1 else 'ConvNeXtV2') and bb.arch == size
    assert bb.get('layer_scale_init_value') == (1.0 if v1 else None)
    with torch.device('meta'):
        model = build_backbone(bb.type, **{k: v for k, v in bb.items() if k not in ('type', 'init_cfg')})
    if kind == 'upernet':
        assert list(cfg.model.decode_head.in_channels) == model.out_channels
        assert cfg.model.auxiliary_head.in_channels == model.out_channels[2]
    else:
        assert list(cfg.model.neck.in_channels) == model.out_channels
    row = recipes.get(path).row
    assert 'num_layers' not in cfg.optim_wrapper.paramwise_cfg
    assert bb.init_cfg.checkpoint == cfg.checkpoint_file
    entry = hub.get(cfg.checkpoint_file)
    assert entry.arch == f'{family}_{model.arch_name}' and entry.task is None
    assert ('22k' in entry.pretrain) == (row in ('L', 'XL'))
    assert entry.pretrain == ({'T': 'in1k', 'S': 'in1k', 'B': 'in1k', 'L': 'in22k', 'XL': 'in22k'}[row] if v1 else
                              'fcmae-ft-in22k-in1k' if row in ('L', 'XL') else 'fcmae-ft-in1k')
    if kind == 'upernet':
        crop = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'RandomCrop'][0]['crop_size']
        assert tuple(crop) == ((640, 640) if row in ('L', 'XL') else (512, 512))
    header = open(path).read().split('_base_')[0]
    if not v1:  # the header states the row the table maps the size to
        assert 'ConvNeXt V2 publishes no per-model' in header and f'(here: {row})' in header
    if kind == 'maskrcnn' and row != 'T' or kind == 'maskrcnn' and not v1:
        assert 'Not published' in header and 'base rule' in header


def test_detector_builds_and_runs():
    """A whole Mask R-CNN from a V2 config (random weights) runs a forward pass."""
    pytest.importorskip('mmdet')
    import detection  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'det', 'convnextv2_atto_maskrcnn.py'))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 160, 224))
    assert len(feats) == 5 and feats[0].shape == (1, 256, 40, 56)


@pytest.mark.parametrize('path', DINOV3, ids=osp.basename)
def test_dinov3_config_is_the_convnext_recipe_from_dinov3_weights(path):
    """T/S/B/L from timm's DINOv3 ConvNeXt: the ConvNeXt config of the same size and method, only the
    initialisation changed (the recipe choice its header states)."""
    name = osp.basename(path)
    size, kind = name.split('_')[1], name.split('_')[-1][:-3]
    parent_path = path.replace('_dinov3', '')
    assert f"_base_ = './{osp.basename(parent_path)}'" in open(path).read()
    cfg, parent = load_config(path), load_config(parent_path)
    full = {'t': 'tiny', 's': 'small', 'b': 'base', 'l': 'large'}[size]
    ckpt = f'convnext_{full}.dinov3_lvd1689m'
    assert cfg.checkpoint_file == ckpt and cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=ckpt)
    entry = hub.get(ckpt)
    assert entry.arch == f'convnext_{full}' and entry.pretrain == 'lvd1689m-dinov3' and entry.layout == 'timm'
    assert entry.timm == ckpt and entry.license == 'DINOv3 License'
    ours, theirs = cfg.to_dict(), parent.to_dict()
    for d in (ours, theirs):
        d.pop('checkpoint_file')
        d['model']['backbone'].pop('init_cfg')
    assert ours == theirs
    header = open(path).read().split('_base_')[0]
    assert 'none is published' in header and f'convnext_{size}_{kind}.py' in header
