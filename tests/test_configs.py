"""The shipped configs: they parse, carry the published recipe values, and build.

Every config under configs/det and configs/seg is checked against the recipe table below (the
values and their sources are documented in the configs and configs/_base_); models are built on
torch's meta device (no memory, no weights) for every size and on the CPU for N and T.
"""
import copy
import glob
import os.path as osp
import re
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmengine.config import Config  # noqa: E402

# The Conv2Former configs of the foundation; every other family checks its own (tests/test_<family>_configs.py).
DET_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'det', 'conv2former_*.py')))
SEG_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'seg', 'conv2former_*.py')))
TOY_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'toy', '*.py')))
MODEL_CONFIGS = DET_CONFIGS + SEG_CONFIGS
NAME_RE = re.compile(r'^conv2former_(?P<size>n|t|s|b|l)_(?P<kind>maskrcnn|cascade|upernet)\.py$')

OUT_CHANNELS = {'n': [64, 128, 256, 512], 't': [72, 144, 288, 576], 's': [72, 144, 288, 576],
                'b': [96, 192, 384, 768], 'l': [128, 256, 512, 1024]}

# (lr, layer-decay rate, drop path) per config; see the config files for the sources.
RECIPE = {
    ('maskrcnn', 'n'): (1e-4, 0.95, 0.4), ('maskrcnn', 't'): (1e-4, 0.95, 0.4),
    ('maskrcnn', 's'): (1e-4, 0.95, 0.6), ('maskrcnn', 'b'): (1e-4, 0.95, 0.9),
    ('maskrcnn', 'l'): (1e-4, 0.95, 0.7),
    ('cascade', 'n'): (2e-4, 0.7, 0.4), ('cascade', 't'): (2e-4, 0.7, 0.2),
    ('cascade', 's'): (2e-4, 0.7, 0.6), ('cascade', 'b'): (2e-4, 0.8, 0.9),
    ('cascade', 'l'): (1e-4, 0.7, 0.7),
    ('upernet', 'n'): (1e-4, 0.9, 0.4), ('upernet', 't'): (1e-4, 0.9, 0.4),
    ('upernet', 's'): (1e-4, 0.9, 0.3), ('upernet', 'b'): (1e-4, 0.9, 0.4),
    ('upernet', 'l'): (1e-4, 0.9, 0.4),
}


def _name(path):
    return osp.basename(path)


def _parse(path):
    m = NAME_RE.match(_name(path))
    assert m, f'unexpected config name {_name(path)}'
    return m['size'], m['kind']


_CACHE = {}


def load(path):
    if path not in _CACHE:
        _CACHE[path] = Config.fromfile(path)  # also runs custom_imports
    return _CACHE[path]


def test_config_set_is_complete():
    names = {_name(p) for p in MODEL_CONFIGS}
    want = {f'conv2former_{s}_{k}.py' for s in 'ntsbl' for k in ('maskrcnn', 'cascade', 'upernet')}
    assert names == want


@pytest.mark.parametrize('path', MODEL_CONFIGS, ids=_name)
def test_config_structure(path):
    size, kind = _parse(path)
    cfg = load(path)
    task = 'segmentation' if kind == 'upernet' else 'detection'
    scope = 'mmseg' if kind == 'upernet' else 'mmdet'
    assert cfg.default_scope == scope
    assert cfg.custom_imports == dict(imports=[task], allow_failed_imports=False)

    bb = cfg.model.backbone
    assert bb.type == 'Conv2Former' and bb.arch == size
    assert tuple(bb.out_indices) == (0, 1, 2, 3)
    assert bb.norm_eval is True  # BN stem + 2 images/GPU: keep the ImageNet statistics
    assert 'prefix' not in bb.init_cfg and bb.init_cfg.type == 'Pretrained'
    pretrain = '22k' if size == 'l' else '1k'
    assert bb.init_cfg.checkpoint == cfg.checkpoint_file == f'checkpoints/conv2former_{size}_{pretrain}.pth'

    if kind == 'upernet':
        assert list(cfg.model.decode_head.in_channels) == OUT_CHANNELS[size]
        assert cfg.model.auxiliary_head.in_channels == OUT_CHANNELS[size][2]
        assert cfg.model.auxiliary_head.in_index == 2
    else:
        assert list(cfg.model.neck.in_channels) == OUT_CHANNELS[size]

    lr, decay, dp = RECIPE[(kind, size)]
    assert bb.drop_path_rate == dp
    ow = cfg.optim_wrapper
    assert ow.constructor == 'LayerDecayOptimWrapperConstructor'
    assert 'num_layers' not in ow.paramwise_cfg  # derived from the backbone
    assert ow.paramwise_cfg.decay_rate == decay
    assert ow.paramwise_cfg.decay_type == ('stage_wise' if kind == 'upernet' else 'layer_wise')
    assert ow.optimizer.type == 'AdamW' and ow.optimizer.lr == lr
    assert ow.optimizer.weight_decay == 0.05 and tuple(ow.optimizer.betas) == (0.9, 0.999)
    fp32 = size == 'l' and kind != 'upernet'  # detection recipe: fp16 except L
    assert ow.type == ('OptimWrapper' if fp32 else 'AmpOptimWrapper')
    assert cfg.train_dataloader.batch_size == 2
    assert 'mmpretrain' not in cfg.pretty_text


@pytest.mark.parametrize('path', DET_CONFIGS, ids=_name)
def test_det_recipe(path):
    size, kind = _parse(path)
    cfg = load(path)
    assert cfg.train_cfg.max_epochs == 36
    warmup, steps = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == 500 and not warmup.by_epoch
    assert steps.type == 'MultiStepLR' and list(steps.milestones) == [27, 33] and steps.gamma == 0.1
    branches = cfg.train_dataloader.dataset.pipeline[3]['transforms']
    assert cfg.train_dataloader.dataset.pipeline[3]['type'] == 'RandomChoice' and len(branches) == 2
    assert [s[0] for s in branches[0][0]['scales']] == list(range(480, 801, 32))
    assert branches[1][1]['type'] == 'RandomCrop' and tuple(branches[1][1]['crop_size']) == (384, 600)
    resize = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] == 'Resize'][0]
    assert tuple(resize['scale']) == (1333, 800)
    assert cfg.val_evaluator.ann_file.startswith('data/coco/')
    if kind == 'cascade':
        heads = cfg.model.roi_head.bbox_head
        assert cfg.model.type == 'CascadeRCNN' and len(heads) == 3
        for head in heads:
            assert head.type == 'ConvFCBBoxHead'
            assert head.num_shared_convs == 4 and head.num_shared_fcs == 1
            assert head.norm_cfg.type == 'SyncBN'
            assert head.loss_bbox.type == 'GIoULoss' and head.loss_bbox.loss_weight == 10.0
            assert head.reg_decoded_bbox
    else:
        assert cfg.model.type == 'MaskRCNN'


@pytest.mark.parametrize('path', SEG_CONFIGS, ids=_name)
def test_seg_recipe(path):
    size, _ = _parse(path)
    cfg = load(path)
    crop = 640 if size == 'l' else 512
    assert cfg.train_cfg.max_iters == 160000
    warmup, poly = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == 1500
    assert poly.type == 'PolyLR' and poly.power == 1.0 and poly.eta_min == 0.0
    assert poly.begin == 1500 and poly.end == 160000
    crop_t = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'RandomCrop'][0]
    assert tuple(crop_t['crop_size']) == (crop, crop)
    assert tuple(cfg.model.data_preprocessor.size) == (crop, crop)
    assert cfg.model.test_cfg.mode == 'slide'
    assert tuple(cfg.model.test_cfg.crop_size) == (crop, crop)
    assert tuple(cfg.model.test_cfg.stride) == ((341, 341) if crop == 512 else (426, 426))
    assert cfg.model.decode_head.type == 'UPerHead' and cfg.model.decode_head.channels == 512
    assert cfg.model.auxiliary_head.loss_decode.loss_weight == 0.4
    for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
        assert head.norm_cfg.type == 'SyncBN' and head.num_classes == 150
    assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'


def _shared_part(path, keys):
    cfg = Config.fromfile(path, import_custom_modules=False)
    return {k: cfg[k] for k in keys}


@pytest.mark.parametrize('pair,keys', [
    (('det/mask-rcnn_fpn_3x_coco.py', 'det/cascade-mask-rcnn_fpn_3x_coco.py'),
     ('custom_imports', 'param_scheduler', 'train_cfg', 'train_dataloader')),
    (('seg/upernet_160k_ade20k-512x512.py', 'seg/upernet_160k_ade20k-640x640.py'),
     ('custom_imports', 'param_scheduler', 'train_cfg', 'optim_wrapper')),
])
def test_base_configs_in_sync(pair, keys):
    """The recipe overrides are written twice (mmengine cannot merge two bases that both define
    ``model``); make sure the copies agree."""
    a, b = (osp.join(ROOT, 'configs', '_base_', p) for p in pair)
    if 'train_dataloader' in keys:  # same pipeline and batch size
        ca, cb = _shared_part(a, keys), _shared_part(b, keys)
        assert ca.pop('train_dataloader') == cb.pop('train_dataloader')
        assert ca == cb
    else:
        assert _shared_part(a, keys) == _shared_part(b, keys)
    bb_a = Config.fromfile(a, import_custom_modules=False).model.backbone
    bb_b = Config.fromfile(b, import_custom_modules=False).model.backbone
    assert bb_a == bb_b


def _build(cfg, device):
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.init_cfg = None
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    from mmengine.registry import DefaultScope

    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(cfg.default_scope), torch.device(device):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('path', MODEL_CONFIGS, ids=_name)
def test_build_model_meta(path):
    size, _ = _parse(path)
    model = _build(load(path), 'meta')
    assert list(model.backbone.out_channels) == OUT_CHANNELS[size]
    assert model.backbone.norm_eval


@pytest.mark.parametrize(
    'path', [p for p in MODEL_CONFIGS if _parse(p)[0] in 'nt'], ids=_name)
def test_build_model_and_optimizer_cpu(path):
    """Real CPU build for the small sizes, with the layer-decay optimizer and a forward pass."""
    from mmengine.optim import build_optim_wrapper

    cfg = load(path)
    model = _build(cfg, 'cpu')
    ow_cfg = copy.deepcopy(cfg.optim_wrapper)
    ow_cfg.type = 'OptimWrapper'  # AMP needs a GPU
    ow = build_optim_wrapper(model, ow_cfg)
    groups = ow.optimizer.param_groups
    n_params = sum(len(g['params']) for g in groups)
    assert n_params == sum(1 for p in model.parameters() if p.requires_grad)
    lrs = sorted({g['lr'] for g in groups})
    assert max(lrs) == pytest.approx(cfg.optim_wrapper.optimizer.lr)  # heads: base lr
    assert min(lrs) < max(lrs)  # the backbone's lower layers decay
    assert all(g['weight_decay'] == 0 for g in groups if all(p.ndim == 1 for p in g['params']))

    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.zeros(1, 3, 64, 64))
    if cfg.default_scope == 'mmdet':
        assert len(feats) == 5 and feats[0].shape[1] == 256  # FPN levels
    else:
        assert len(feats) == 4 and [f.shape[1] for f in feats] == OUT_CHANNELS[_parse(path)[0]]


@pytest.mark.parametrize('path', TOY_CONFIGS, ids=_name)
def test_toy_configs(path):
    """Toy configs inherit the real N configs and swap data, schedule, precision, BN, weights."""
    text = open(path).read()
    kind = 'det' if 'maskrcnn' in _name(path) else 'seg'
    parent = '../det/conv2former_n_maskrcnn.py' if kind == 'det' else '../seg/conv2former_n_upernet.py'
    assert f"_base_ = '{parent}'" in text
    cfg = load(path)
    assert cfg.custom_imports.imports == ['detection' if kind == 'det' else 'segmentation']
    bb = cfg.model.backbone
    assert bb.type == 'Conv2Former' and isinstance(bb.arch, dict) and bb.init_cfg is None
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert cfg.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    assert 'SyncBN' not in str(cfg.model)
    assert 'data/toy/' in cfg.train_dataloader.dataset.data_root
    model = _build(cfg, 'meta')
    out = list(model.backbone.out_channels)
    if kind == 'det':
        assert list(cfg.model.neck.in_channels) == out
        assert cfg.model.roi_head.bbox_head.num_classes == 3
        assert cfg.val_evaluator.ann_file.startswith('data/toy/coco/')
    else:
        assert list(cfg.model.decode_head.in_channels) == out
        assert cfg.model.auxiliary_head.in_channels == out[2]
        assert cfg.model.decode_head.num_classes == 4
        assert cfg.train_dataloader.dataset.reduce_zero_label
