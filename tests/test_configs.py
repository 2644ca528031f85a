"""The shipped configs: they parse, name a registered backbone, wire its channels into the neck /
heads, carry the published recipe values, and build.

* every config under configs/det and configs/seg (all families): parses with its custom_imports,
  names a backbone family + arch that match the file name, neck / decode-head in_channels equal the
  backbone's out_channels, one ``checkpoint_file`` feeds init_cfg, no mmpretrain left over;
* the recipe table (backbones/recipes.py): every config's drop path, lr, layer decay, precision, checkpoint and
  base equal its row, every row has its config, docs/recipes.md is current, and tools/analysis/recipes.py --check
  names a wrong key;
* the recipe bases: ConvNeXt 3x COCO (Mask R-CNN and Cascade) and UperNet 160k ADE20K values;
* Conv2Former: the config set, widths and BN statistics kept (norm_eval);
* building: on torch's meta device the two smallest sizes of every family and task (every size
  for Conv2Former), on the CPU the Conv2Former N and T models with the layer-decay optimizer;
* the toy configs inherit the real N configs and swap what the CPU demo needs.
"""
import copy
import glob
import os
import os.path as osp
from collections import defaultdict

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

from mmengine.config import Config  # noqa: E402

from backbones import families, hub, recipes  # noqa: E402
from conftest import load_config, load_tool  # noqa: E402

DET_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'det', '*.py')))
SEG_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'seg', '*.py')))
TOY_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'toy', '*.py')))
MODEL_CONFIGS = DET_CONFIGS + SEG_CONFIGS
KINDS = ('maskrcnn1x', 'maskrcnn', 'cascade', 'upernet')
FAMILY_BY_PREFIX = {cls.family: cls for cls in families().values()}


def _name(path):
    return osp.basename(path)


# initialisations other than the family's ImageNet release, as a tag before the kind
INIT_TAGS = ('dinov3',)


def split_name(path):
    """'conv2former_t_cascade.py' -> (Conv2Former class, 't', 'cascade'); 'convnext_t_dinov3_cascade.py' ->
    (ConvNeXt, 't', 'cascade')."""
    stem = _name(path)[:-3]
    kind = next((k for k in KINDS if stem.endswith('_' + k)), None)
    assert kind, f'{_name(path)}: the name must end with one of {KINDS}'
    stem = stem[:-len(kind) - 1]
    tag = next((t for t in INIT_TAGS if stem.endswith('_' + t)), None)
    stem = stem[:-len(tag) - 1] if tag else stem
    family = max((f for f in FAMILY_BY_PREFIX if stem.startswith(f + '_')), key=len, default=None)
    assert family, f'{_name(path)}: no backbone family prefix (known: {sorted(FAMILY_BY_PREFIX)})'
    return FAMILY_BY_PREFIX[family], stem[len(family) + 1:], kind


load = load_config
base_of = recipes.base_of


def out_channels(cfg):
    bb = cfg.model.backbone
    cls = families()[bb.type]
    _, settings = cls.resolve_arch(bb.arch)
    return [settings['dims'][i] for i in bb.get('out_indices', (0, 1, 2, 3))]


# ------------------------------------------------------------------------- every config
@pytest.mark.parametrize('path', MODEL_CONFIGS, ids=_name)
def test_config_consistent(path):
    cls, arch, kind = split_name(path)
    cfg = load(path)
    det = osp.basename(osp.dirname(path)) == 'det'
    assert kind != 'upernet' if det else kind == 'upernet'
    assert cfg.default_scope == ('mmdet' if det else 'mmseg')
    assert cfg.custom_imports == dict(imports=['detection' if det else 'segmentation'],
                                      allow_failed_imports=False)
    bb = cfg.model.backbone
    assert bb.type == cls.__name__
    assert cls.resolve_arch(bb.arch)[0] == cls.resolve_arch(arch)[0], 'arch differs from the file name'
    out = out_channels(cfg)
    if det:
        assert list(cfg.model.neck.in_channels) == out
    else:
        assert list(cfg.model.decode_head.in_channels) == [out[i] for i in cfg.model.decode_head.in_index]
        assert cfg.model.auxiliary_head.in_channels == out[cfg.model.auxiliary_head.in_index]
    # one obvious place names the checkpoint
    assert bb.init_cfg == dict(type='Pretrained', checkpoint=cfg.checkpoint_file)
    # ... by name: an official release file of this very backbone (backbones/hub.py)
    entry = hub.get(cfg.checkpoint_file)
    assert entry.name == cfg.checkpoint_file and entry.task is None
    assert entry.arch == f'{cls.family}_{cls.resolve_arch(bb.arch)[0]}'
    assert cfg.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert 'mmpretrain' not in str(cfg.to_dict())  # (pretty_text would cost 0.7 s per config)
    # drop path, lr, layer decay, precision, checkpoint and base: the config's row of the recipe table
    assert recipes.mismatches(cfg, path) == []


def test_every_config_uses_a_recipe_base():
    bases = {_name(p): base_of(p) for p in MODEL_CONFIGS}
    known = {'det/mask-rcnn_fpn_3x_coco.py', 'det/cascade-mask-rcnn_fpn_3x_coco.py',
             'det/mask-rcnn_fpn_1x_coco_stm.py', 'seg/upernet_160k_ade20k-512x512.py',
             'seg/upernet_160k_ade20k-640x640.py'}
    assert {n: b for n, b in bases.items() if b not in known} == {}


# ------------------------------------------------------------------------- recipe bases
@pytest.mark.parametrize(
    'path', [p for p in DET_CONFIGS if '3x' in base_of(p)], ids=_name)
def test_det_3x_recipe(path):
    _, _, kind = split_name(path)
    cfg = load(path)
    assert cfg.train_cfg.max_epochs == 36
    assert cfg.train_dataloader.batch_size == 2
    warmup, steps = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == 500 and not warmup.by_epoch
    assert warmup.start_factor == 0.001
    assert steps.type == 'MultiStepLR' and list(steps.milestones) == [27, 33] and steps.gamma == 0.1
    choice = cfg.train_dataloader.dataset.pipeline[3]
    assert choice['type'] == 'RandomChoice' and len(choice['transforms']) == 2
    branch_a, branch_b = choice['transforms']
    assert [s[0] for s in branch_a[0]['scales']] == list(range(480, 801, 32))
    assert [s[0] for s in branch_b[0]['scales']] == [400, 500, 600]
    assert branch_b[1]['type'] == 'RandomCrop' and tuple(branch_b[1]['crop_size']) == (384, 600)
    resize = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] == 'Resize'][0]
    assert tuple(resize['scale']) == (1333, 800)
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert tuple(cfg.optim_wrapper.optimizer.betas) == (0.9, 0.999)
    assert cfg.optim_wrapper.paramwise_cfg.decay_type == 'layer_wise'
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.val_evaluator.ann_file == 'data/coco/annotations/instances_val2017.json'
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
def test_seg_160k_recipe(path):
    cfg = load(path)
    crop = 640 if '640' in base_of(path) else 512
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 2
    warmup, poly = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == 1500
    assert poly.type == 'PolyLR' and poly.power == 1.0 and poly.eta_min == 0.0
    assert poly.begin == 1500 and poly.end == 160000
    crop_t = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'RandomCrop'][0]
    assert tuple(crop_t['crop_size']) == (crop, crop)
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'RandomResize'][0]
    assert tuple(resize['scale']) == (4 * crop, crop) and tuple(resize['ratio_range']) == (0.5, 2.0)
    assert tuple(cfg.model.data_preprocessor.size) == (crop, crop)
    assert cfg.model.test_cfg.mode == 'slide'
    assert tuple(cfg.model.test_cfg.crop_size) == (crop, crop)
    assert tuple(cfg.model.test_cfg.stride) == ((341, 341) if crop == 512 else (426, 426))
    assert cfg.model.decode_head.type == 'UPerHead' and cfg.model.decode_head.channels == 512
    assert cfg.model.auxiliary_head.in_index == 2
    assert cfg.model.auxiliary_head.loss_decode.loss_weight == 0.4
    for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
        assert head.norm_cfg.type == 'SyncBN' and head.num_classes == 150
    ow = cfg.optim_wrapper
    assert ow.optimizer.weight_decay == 0.05 and ow.paramwise_cfg.decay_type == 'stage_wise'
    assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'


@pytest.mark.parametrize('pair,keys', [
    (('det/mask-rcnn_fpn_3x_coco.py', 'det/cascade-mask-rcnn_fpn_3x_coco.py'),
     ('custom_imports', 'param_scheduler', 'train_cfg', 'train_dataloader')),
    (('seg/upernet_160k_ade20k-512x512.py', 'seg/upernet_160k_ade20k-640x640.py'),
     ('custom_imports', 'param_scheduler', 'train_cfg', 'optim_wrapper')),
])
def test_base_configs_in_sync(pair, keys):
    """The recipe overrides are written twice (mmengine refuses two bases that both define
    ``model``); make sure the copies agree."""
    a, b = (Config.fromfile(osp.join(ROOT, 'configs', '_base_', p), import_custom_modules=False)
            for p in pair)
    for key in keys:
        assert a[key] == b[key], key
    assert a.model.backbone == b.model.backbone
    assert a.optim_wrapper.optimizer.keys() == b.optim_wrapper.optimizer.keys()


# ------------------------------------------------------------------------- the recipe table
def test_recipe_table_has_a_config_per_row_and_the_doc_is_current():
    assert {recipes.get(p).name for p in MODEL_CONFIGS} == {r.name for r in recipes.all_recipes()}
    assert len(recipes.all_recipes()) == len(MODEL_CONFIGS) == len({r.name for r in recipes.all_recipes()})
    with open(osp.join(ROOT, 'docs', 'recipes.md')) as f:
        assert f.read() == recipes.render_markdown(), 'docs/recipes.md is stale: python tools/analysis/recipes.py'
    with pytest.raises(KeyError, match='closest: det/convnext_t_cascade'):
        recipes.get('det/convnext_t_cascades')


def test_recipes_tool_names_a_wrong_key(tmp_path, capsys):
    """--check on a config whose drop path and lr differ from the table: exit 1, each key named with both values."""
    tool = load_tool('tools/analysis/recipes.py')
    os.makedirs(tmp_path / 'configs' / 'det')
    os.symlink(osp.join(ROOT, 'configs', '_base_'), tmp_path / 'configs' / '_base_')
    bad = tmp_path / 'configs' / 'det' / 'conv2former_t_cascade.py'
    text = open(osp.join(ROOT, 'configs', 'det', 'conv2former_t_cascade.py')).read()
    bad.write_text(text.replace('drop_path_rate=0.2', 'drop_path_rate=0.3').replace('lr=2e-4', 'lr=1e-4'))
    good = osp.join(ROOT, 'configs', 'det', 'conv2former_t_cascade.py')
    assert tool.main(['--check', good]) == 0
    assert tool.main(['--check', str(bad)]) == 1
    out = capsys.readouterr().out
    assert 'det/conv2former_t_cascade: model.backbone.drop_path_rate = 0.3, the recipe table says 0.2' in out
    assert 'optim_wrapper.optimizer.lr = 0.0001, the recipe table says 0.0002' in out


# ------------------------------------------------------------------------- Conv2Former
C2F_OUT = {'n': [64, 128, 256, 512], 't': [72, 144, 288, 576], 's': [72, 144, 288, 576],
           'b': [96, 192, 384, 768], 'l': [128, 256, 512, 1024]}
C2F_CONFIGS = [p for p in MODEL_CONFIGS if _name(p).startswith('conv2former_')]


def test_conv2former_config_set_is_complete():
    want = {f'conv2former_{s}_{k}.py' for s in 'ntsbl' for k in ('maskrcnn', 'cascade', 'upernet')}
    assert {_name(p) for p in C2F_CONFIGS} == want


@pytest.mark.parametrize('path', C2F_CONFIGS, ids=_name)
def test_conv2former_recipe(path):
    _, size, kind = split_name(path)
    cfg = load(path)
    bb = cfg.model.backbone
    assert bb.arch == size and out_channels(cfg) == C2F_OUT[size]
    assert bb.norm_eval is True  # BN stem + 2 images/GPU: keep the ImageNet statistics
    assert 'num_layers' not in cfg.optim_wrapper.paramwise_cfg  # derived from the backbone


# ------------------------------------------------------------------------- building
def _build(cfg, device):
    from mmengine.registry import DefaultScope

    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.init_cfg = None
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(cfg.default_scope), torch.device(device):
        return MODELS.build(cfg.model)


def _smallest_two_per_family_and_kind():
    groups = defaultdict(list)
    for p in MODEL_CONFIGS:
        cls, arch, kind = split_name(p)
        order = list(cls.arch_settings).index(cls.resolve_arch(arch)[0])
        groups[(cls.__name__, kind)].append((order, p))
    picked = {p for g in groups.values() for _, p in sorted(g)[:2]}
    return sorted(picked | set(C2F_CONFIGS))


@pytest.mark.parametrize('path', _smallest_two_per_family_and_kind(), ids=_name)
def test_build_model_meta(path):
    cfg = load(path)
    model = _build(cfg, 'meta')
    assert list(model.backbone.out_channels) == out_channels(cfg)


@pytest.mark.parametrize(
    'path', [p for p in C2F_CONFIGS if split_name(p)[1] in 'nt'], ids=_name)
def test_build_conv2former_cpu_with_optimizer(path):
    """Real CPU build of the small sizes, the layer-decay optimizer, and a forward pass."""
    from mmengine.optim import build_optim_wrapper

    cfg = load(path)
    model = _build(cfg, 'cpu')
    ow_cfg = copy.deepcopy(cfg.optim_wrapper)
    ow_cfg.type = 'OptimWrapper'  # AMP needs a GPU
    groups = build_optim_wrapper(model, ow_cfg).optimizer.param_groups
    assert sum(len(g['params']) for g in groups) == sum(
        1 for p in model.parameters() if p.requires_grad)
    lrs = sorted({g['lr'] for g in groups})
    assert max(lrs) == pytest.approx(cfg.optim_wrapper.optimizer.lr)  # neck / heads: base lr
    assert min(lrs) < max(lrs)  # the backbone's lower layers decay
    assert all(g['weight_decay'] == 0 for g in groups if all(p.ndim == 1 for p in g['params']))

    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.zeros(1, 3, 64, 64))
    if cfg.default_scope == 'mmdet':
        assert len(feats) == 5 and feats[0].shape[1] == 256  # FPN levels
    else:
        assert [f.shape[1] for f in feats] == out_channels(cfg)


# ------------------------------------------------------------------------- toy configs
@pytest.mark.parametrize('path', TOY_CONFIGS, ids=_name)
def test_toy_configs(path):
    """Toy configs inherit the real N configs and swap data, schedule, precision, BN (detector), weights."""
    det = 'maskrcnn' in _name(path)
    parent = 'det/conv2former_n_maskrcnn.py' if det else 'seg/conv2former_n_upernet.py'
    assert f"_base_ = '../{parent}'" in open(path).read()
    cfg = load(path)
    assert cfg.custom_imports.imports == ['detection' if det else 'segmentation']
    bb = cfg.model.backbone
    assert bb.type == 'Conv2Former' and isinstance(bb.arch, dict) and bb.init_cfg is None
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert cfg.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    if det:
        assert 'SyncBN' not in str(cfg.model)
    else:  # the recipe's SyncBN in the heads: BN in one process, CPU SyncBN under a launcher (glue.runtime)
        assert cfg.model.decode_head.norm_cfg.type == cfg.model.auxiliary_head.norm_cfg.type == 'SyncBN'
    assert cfg.train_dataloader.dataset.data_root.startswith('data/toy/')
    model = _build(cfg, 'meta')
    out = list(model.backbone.out_channels)
    if det:
        assert list(cfg.model.neck.in_channels) == out
        assert cfg.model.roi_head.bbox_head.num_classes == 3
        assert cfg.model.roi_head.mask_head.num_classes == 3
        assert cfg.val_evaluator.ann_file.startswith('data/toy/coco/')
    else:
        assert list(cfg.model.decode_head.in_channels) == [out[i] for i in cfg.model.decode_head.in_index]
        assert cfg.model.auxiliary_head.in_channels == out[2]
        assert cfg.model.decode_head.num_classes == 4
        assert cfg.train_dataloader.dataset.reduce_zero_label
