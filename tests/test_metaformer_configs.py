"""The MetaFormer-baseline configs: complete, the stated recipe choice and family switches, and they build in
mmdet / mmseg (the recipe values are checked against backbones/recipes.py in tests/test_configs.py)."""
import copy
import glob
import os.path as osp
import re

import pytest
import torch

from backbones import CAFormer, ConvFormer, IdentityFormer, PoolFormerV2, RandFormer, hub, recipes
from conftest import ROOT, build_config_model, load_config

pytest.importorskip('mmengine.config')

FAMILIES = {'identityformer': IdentityFormer, 'randformer': RandFormer, 'poolformerv2': PoolFormerV2,
            'convformer': ConvFormer, 'caformer': CAFormer}
NAME_RE = re.compile(r'^(?P<family>identityformer|randformer|poolformerv2|convformer|caformer)_'
                     r'(?P<size>[a-z]\d+)_(?P<kind>maskrcnn|cascade|upernet)\.py$')
PATHS = sorted(p for d in ('det', 'seg') for p in glob.glob(osp.join(ROOT, 'configs', d, '*.py'))
               if NAME_RE.match(osp.basename(p)))


def _parse(path):
    m = NAME_RE.match(osp.basename(path))
    return m['family'], m['size'], m['kind']


def test_every_size_has_three_configs():
    want = {f'{f}_{s}_{k}.py' for f, cls in FAMILIES.items() for s in cls.arch_settings
            for k in ('maskrcnn', 'cascade', 'upernet')}
    assert {osp.basename(p) for p in PATHS} == want and len(want) == 69


@pytest.mark.parametrize('path', PATHS, ids=osp.basename)
def test_config_values(path):
    family, size, kind = _parse(path)
    text = open(path).read()
    row = recipes.get(path).row  # the header states the table's row and its rule
    assert f'(here: {row})' in text and 's12/s18/s24 -> T, s36/m36 -> S, m48/b36 -> B' in text
    cfg = load_config(path)
    assert cfg.custom_imports.imports == ['segmentation' if kind == 'upernet' else 'detection']
    bb = cfg.model.backbone
    cls = FAMILIES[family]
    assert bb.type == cls.__name__ and bb.arch == size
    assert hub.get(bb.init_cfg.checkpoint).url.endswith(f'/{family}/{family}_{size}.pth')  # the official file
    assert cfg.checkpoint_file == bb.init_cfg.checkpoint
    assert tuple(bb.out_indices) == (0, 1, 2, 3) and bb.out_norm is True
    if family == 'caformer':
        assert bb.attn_impl == 'sdpa'
    if family == 'randformer':
        assert bb.rand_resample == 'bilinear'
    dims = cls.arch_settings[size]['dims']
    if kind == 'upernet':
        assert list(cfg.model.decode_head.in_channels) == dims and cfg.model.auxiliary_head.in_channels == dims[2]
        crop = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'RandomCrop'][0]
        assert tuple(crop['crop_size']) == (512, 512)
        assert cfg.train_cfg.max_iters == 160000
    else:
        assert list(cfg.model.neck.in_channels) == dims
        assert cfg.train_cfg.max_epochs == 36
        assert cfg.model.type == ('CascadeRCNN' if kind == 'cascade' else 'MaskRCNN')
    ow = cfg.optim_wrapper
    assert ow.constructor == 'LayerDecayOptimWrapperConstructor'
    assert ow.paramwise_cfg.decay_type == ('stage_wise' if kind == 'upernet' else 'layer_wise')
    assert ow.optimizer.weight_decay == 0.05 and 'num_layers' not in ow.paramwise_cfg


@pytest.mark.parametrize('name', ['identityformer_s12_maskrcnn', 'poolformerv2_m48_cascade', 'convformer_b36_cascade',
                                  'caformer_m36_upernet', 'randformer_s24_upernet'])
def test_build_on_meta(name):
    kind = 'seg' if name.endswith('upernet') else 'det'
    cfg, model = build_config_model(osp.join(ROOT, 'configs', kind, f'{name}.py'), 'meta')
    family, size = name.split('_')[:2]
    assert type(model.backbone) is FAMILIES[family] and model.backbone.arch_name == size
    assert model.backbone.drop_path_rate == recipes.get(f'{kind}/{name}').drop_path


def test_randformer_detector_cpu_build_optimizer_and_forward():
    """Real build: the layer-decay constructor leaves the frozen random matrices out, the forward runs at a
    size whose grids differ from 14x14 / 7x7."""
    from mmengine.optim import build_optim_wrapper
    cfg, model = build_config_model(osp.join(ROOT, 'configs', 'det', 'randformer_s12_maskrcnn.py'), 'cpu')
    assert model.backbone.stages[2][0].token_mixer.resample == 'bilinear'
    ow_cfg = copy.deepcopy(cfg.optim_wrapper)
    ow_cfg.type = 'OptimWrapper'
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        ow = build_optim_wrapper(model, ow_cfg)
    in_groups = {id(p) for g in ow.optimizer.param_groups for p in g['params']}
    for n, p in model.named_parameters():
        assert (id(p) in in_groups) == ('random_matrix' not in n), n
    assert all(g['weight_decay'] == 0 for g in ow.optimizer.param_groups if all(p.ndim == 1 for p in g['params']))
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.zeros(1, 3, 96, 160))
    assert len(feats) == 5 and all(torch.isfinite(f).all() for f in feats)
