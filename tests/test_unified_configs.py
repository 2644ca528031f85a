"""The STM unified-model configs: complete, the STM 1x protocol and the 3x / UperNet bases, and they build in
mmdet / mmseg (drop path, lr, decay, precision and checkpoint per size are checked against backbones/recipes.py
in tests/test_configs.py)."""
import copy
import glob
import os.path as osp
import re

import pytest
import torch

from backbones import UnifiedConvNeXt, UnifiedDCNv3, UnifiedHalo, UnifiedPVT, UnifiedSwin, hub
from conftest import ROOT, build_config_model, load_config

pytest.importorskip('mmengine.config')

MIXERS = {'halo': UnifiedHalo, 'pvt': UnifiedPVT, 'swin': UnifiedSwin, 'convnext': UnifiedConvNeXt,
          'dcn_v3': UnifiedDCNv3}
STEM = {'halo': 'unified_halonet', 'pvt': 'unified_pvt', 'swin': 'unified_swin', 'convnext': 'unified_convnext',
        'dcn_v3': 'unified_internimage'}  # released file names
SIZES = ('micro', 'tiny', 'small', 'base')
NAME_RE = re.compile(r'^unified_(?P<mixer>halo|pvt|swin|convnext|dcn_v3)_(?P<size>micro|tiny|small|base)_'
                     r'(?P<kind>maskrcnn1x|maskrcnn|cascade|upernet)\.py$')
PATHS = sorted(p for d in ('det', 'seg') for p in glob.glob(osp.join(ROOT, 'configs', d, 'unified_*.py')))


def _parse(path):
    m = NAME_RE.match(osp.basename(path))
    assert m, osp.basename(path)
    return m['mixer'], m['size'], m['kind']


def test_every_mixer_and_size_has_four_configs():
    want = {f'unified_{m}_{s}_{k}.py' for m in MIXERS for s in SIZES
            for k in ('maskrcnn1x', 'maskrcnn', 'cascade', 'upernet')}
    assert {osp.basename(p) for p in PATHS} == want and len(want) == 80


@pytest.mark.parametrize('path', PATHS, ids=osp.basename)
def test_config_values(path):
    mixer, size, kind = _parse(path)
    cfg = load_config(path)
    assert cfg.custom_imports.imports == ['segmentation' if kind == 'upernet' else 'detection']
    bb = cfg.model.backbone
    cls = MIXERS[mixer]
    assert bb.type == cls.__name__ and bb.arch == size
    assert hub.get(bb.init_cfg.checkpoint).url.endswith(f'/cls-ckpt/{STEM[mixer]}_{size}.pth')  # the release file
    assert cfg.checkpoint_file == bb.init_cfg.checkpoint
    assert tuple(bb.out_indices) == (0, 1, 2, 3) and bb.out_norm is True
    dims = cls.arch_settings[size]['dims']
    ow = cfg.optim_wrapper
    assert ow.constructor == 'LayerDecayOptimWrapperConstructor' and ow.optimizer.type == 'AdamW'
    assert ow.optimizer.weight_decay == 0.05 and 'num_layers' not in ow.paramwise_cfg
    if kind == 'upernet':
        assert list(cfg.model.decode_head.in_channels) == dims and cfg.model.auxiliary_head.in_channels == dims[2]
        assert cfg.train_cfg.max_iters == 160000
    else:
        assert list(cfg.model.neck.in_channels) == dims
    if kind == 'maskrcnn1x':  # the published STM protocol (the STM-Evaluation paper's 1x protocol)
        assert bb.stage_norms == 'skip'
        assert cfg.model.type == 'MaskRCNN' and cfg.train_cfg.max_epochs == 12
        warm, step = cfg.param_scheduler
        assert warm.type == 'LinearLR' and warm.end == 1000 and not warm.by_epoch
        assert step.type == 'MultiStepLR' and step.milestones == [8, 11] and step.end == 12
        pipe = [t.type for t in cfg.train_dataloader.dataset.pipeline]
        assert pipe == ['LoadImageFromFile', 'LoadAnnotations', 'Resize', 'RandomFlip', 'PackDetInputs']
        resize = cfg.train_dataloader.dataset.pipeline[2]
        assert tuple(resize.scale) == (1333, 800) and resize.keep_ratio
        assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
        assert cfg.model.data_preprocessor.pad_size_divisor == 32
        return
    assert ow.paramwise_cfg.decay_type == ('stage_wise' if kind == 'upernet' else 'layer_wise')
    if kind != 'upernet':
        assert cfg.train_cfg.max_epochs == 36
        assert cfg.model.type == ('CascadeRCNN' if kind == 'cascade' else 'MaskRCNN')


@pytest.mark.parametrize('name', ['unified_halo_base_maskrcnn1x', 'unified_pvt_small_cascade',
                                  'unified_swin_tiny_maskrcnn', 'unified_dcn_v3_base_upernet',
                                  'unified_convnext_micro_upernet'])
def test_build_on_meta(name):
    kind = 'seg' if name.endswith('upernet') else 'det'
    cfg, model = build_config_model(osp.join(ROOT, 'configs', kind, f'{name}.py'), 'meta')
    assert type(model.backbone).__name__ == cfg.model.backbone.type
    assert model.backbone.arch_name == cfg.model.backbone.arch


def test_stm_1x_optimizer_groups_and_forward():
    """The STM 1x protocol: one lr everywhere (no layer decay); no decay on 1-D params and position tables."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    cfg, model = build_config_model(osp.join(ROOT, 'configs', 'det', 'unified_pvt_micro_maskrcnn1x.py'), 'cpu')
    with DefaultScope.overwrite_default_scope('mmdet'):
        ow = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    groups = ow.optimizer.param_groups
    assert {g['lr'] for g in groups} == {1e-4}
    wd = {n: g['weight_decay'] for g in groups for n in g['param_names']}
    assert len(wd) == sum(1 for p in model.parameters() if p.requires_grad)
    assert wd['backbone.stages.0.0.pos_embed'] == 0 and wd['backbone.stages.0.0.attn.q.weight'] == 0.05
    assert wd['backbone.stages.0.0.gamma_1'] == 0 and wd['backbone.out_norms.0.weight'] == 0
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.zeros(1, 3, 96, 160))
    assert len(feats) == 5 and all(torch.isfinite(f).all() for f in feats)
