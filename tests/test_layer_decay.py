"""Layer-wise learning-rate decay: the published ConvNeXt rules, every backbone's ``get_layer_depth``, and
``tools/analysis/print_param_groups.py``.

The reference rules are written out here, independently of ``backbones/base.py``, from ConvNeXt's official
``object_detection/mmcv_custom/layer_decay_optimizer_constructor.py`` (also in semantic_segmentation/), which
mmdet/mmseg copy as ``get_layer_id_for_convnext`` / ``get_stage_id_for_convnext``. With ``N = num_layers``
of the config (6 for 9 stage-2 blocks, 12 for 27) the constructor has ``N + 2`` ids and gives id ``i`` the lr
``base_lr * rate ** (N + 1 - i)``:

* ``layer_wise`` (detection): stem (``downsample_layers.0``) 0; stage 0 blocks 1; ``downsample_layers.1``
  and stage 1 blocks 2; ``downsample_layers.2`` 3; stage-2 block b ``3 + b // 3`` (the last one ``N - 1``);
  ``downsample_layers.3`` and stage 3 ``N`` (scale ``rate``); everything else, neck and heads, ``N + 1``
  (scale 1). NB recipes.md section 1.1 says "stage 3 -> num_layers + 1"; the official code (and mmdet's
  copy, compared below) gives stage 3 ``num_layers``, i.e. one factor ``rate`` below the heads. The code
  is what produced the published numbers, so it is what is checked.
* ``stage_wise`` (segmentation): all four downsample layers (stem included) 0; stage s ``s + 1`` (so the
  last stage is 4 whatever N is: scale ``rate ** (N - 3)``); everything else ``N + 1`` (the official
  ``num_max_layer - 1`` with ``num_max_layer = N + 2``).
* weight decay: none for 1-D parameters and ``*.bias`` (norms, biases, layer scales); the base value else.

Published values (recipes.md): Mask R-CNN 3x ConvNeXt-T lr 1e-4, layer_wise 0.95, N 6; Cascade 3x
ConvNeXt-S lr 2e-4, 0.7, N 12; UperNet T / S lr 1e-4, stage_wise 0.9, N 6 / 12. Mask R-CNN 3x ConvNeXt-S
is not published: its config takes the T row's lr and rate (its header says so), N 12 from its 27 blocks.

Models are built on the CPU without random initialisation (the tool's ``build_model``: meta device, then
uninitialised CPU storage; ``test_fast_build_has_the_models_parameters`` checks that it has exactly the
parameters of a normal build). Nothing runs forward.
"""
import copy
import math
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from conftest import ROOT, smallest_archs

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from backbones import families, list_backbones  # noqa: E402
from backbones.base import LAYER_DECAY_SCHEMES  # noqa: E402
from backbones.registry import build_backbone  # noqa: E402
from glue import param_groups as ppg  # noqa: E402

TOOL = osp.join(ROOT, 'tools', 'analysis', 'print_param_groups.py')

# config -> (decay_type, base lr, decay rate, num_layers), recipes.md sections 1.1 / 2.1
CONVNEXT_CASES = {
    'det/convnext_t_maskrcnn.py': ('layer_wise', 1e-4, 0.95, 6),   # Mask R-CNN 3x ConvNeXt-T (published)
    'det/convnext_s_maskrcnn.py': ('layer_wise', 1e-4, 0.95, 12),  # not published: T row's lr/rate, N 12
    'det/convnext_s_cascade.py': ('layer_wise', 2e-4, 0.7, 12),    # Cascade 3x ConvNeXt-S (published)
    'seg/convnext_t_upernet.py': ('stage_wise', 1e-4, 0.9, 6),     # UperNet ConvNeXt-T (published)
    'seg/convnext_s_upernet.py': ('stage_wise', 1e-4, 0.9, 12),    # UperNet ConvNeXt-S (published)
}
BASE_WD = 0.05
# The official ConvNeXt parameter names, which the official/mmdet rules key on (ours are the same).
CONVNEXT_BACKBONE_NAME = re.compile(r'^backbone\.(downsample_layers\.[0-3]\.[01]\.|stages\.[0-3]\.\d+\.'
                                    r'(dwconv|norm|pwconv1|pwconv2|gamma)|out_norms\.[0-3]\.)')


# ------------------------------------------------------------------------------------ reference rules
def official_layer_wise(name: str, num_layers: int) -> int:
    """ConvNeXt's get_num_layer_layer_wise(name, num_max_layer=num_layers) (= mmdet get_layer_id_for_convnext)."""
    parts = name.split('.')
    if name.startswith('backbone.downsample_layers'):
        return {0: 0, 1: 2, 2: 3, 3: num_layers}[int(parts[2])]
    if name.startswith('backbone.stages'):
        stage, block = int(parts[2]), int(parts[3])
        return [1, 2, 3 + block // 3, num_layers][stage]
    return num_layers + 1


def official_stage_wise(name: str, num_layers: int) -> int:
    """ConvNeXt's get_num_layer_stage_wise(name, num_max_layer=num_layers + 2)."""
    if name.startswith('backbone.downsample_layers'):
        return 0
    if name.startswith('backbone.stages'):
        return int(name.split('.')[2]) + 1
    return (num_layers + 2) - 1


OFFICIAL = {'layer_wise': official_layer_wise, 'stage_wise': official_stage_wise}


def official_scale(layer_id: int, rate: float, num_layers: int) -> float:
    return rate ** ((num_layers + 2) - layer_id - 1)


def group_layer_id(group: dict) -> int:
    return int(re.match(r'layer_(\d+)_(no_)?decay$', group['group_name']).group(1))


def groups_by_param(wrapper) -> dict:
    """id(param) -> its group; asserts that no parameter is in two groups."""
    out = {}
    for g in wrapper.optimizer.param_groups:
        for p in g['params']:
            assert id(p) not in out, 'a parameter is in two groups'
            out[id(p)] = g
    return out


# ------------------------------------------------------------------------------------ config models
_CACHE = {}


def _built(config: str):
    """(cfg, model) of a config, built once per test session (CPU, random init skipped)."""
    if config not in _CACHE:
        cfg, _ = ppg.load(osp.join(ROOT, 'configs', config))
        _CACHE[config] = cfg, ppg.build_model(cfg)
    return _CACHE[config]


def test_fast_build_has_the_models_parameters():
    """The tool's quick build (meta, then to_empty on the CPU) = a normal CPU build, parameter for parameter."""
    cfg, fast = _built('det/convnext_t_maskrcnn.py')
    full = ppg.build_model(cfg, init=True)
    spec = lambda m: [(n, tuple(p.shape), p.dtype, p.device.type, p.requires_grad)  # noqa: E731
                      for n, p in m.named_parameters()]
    assert spec(fast) == spec(full)
    assert {p.device.type for p in fast.parameters()} == {'cpu'}
    # ConvNeXt paper, Table 3: Mask R-CNN with ConvNeXt-T has 48M parameters
    assert round(sum(p.numel() for p in full.parameters()) / 1e6) == 48


@pytest.mark.parametrize('config', list(CONVNEXT_CASES))
def test_convnext_config_follows_published_rule(config):
    scheme, base_lr, rate, num_layers = CONVNEXT_CASES[config]
    cfg, model = _built(config)
    ow = cfg.optim_wrapper
    # AmpOptimWrapper is swapped for OptimWrapper without CUDA (tools/train.py's fallback)
    assert ow.type == ('AmpOptimWrapper' if torch.cuda.is_available() else 'OptimWrapper')
    assert ow.constructor == 'LayerDecayOptimWrapperConstructor'
    assert ow.optimizer.type == 'AdamW' and ow.optimizer.lr == base_lr and ow.optimizer.weight_decay == BASE_WD
    assert ow.paramwise_cfg.decay_type == scheme and ow.paramwise_cfg.decay_rate == rate
    assert 'num_layers' not in ow.paramwise_cfg and model.backbone.num_layers(scheme) == num_layers

    wrapper = ppg.build_optimizer(cfg, model)
    group_of = groups_by_param(wrapper)
    rule = OFFICIAL[scheme]
    n_checked = 0
    for name, p in model.named_parameters():
        g = group_of[id(p)]  # every parameter is optimised (nothing is frozen in these configs)
        layer_id = rule(name, num_layers)
        assert group_layer_id(g) == layer_id, name
        assert g['lr'] == pytest.approx(base_lr * official_scale(layer_id, rate, num_layers), rel=1e-12), name
        assert g['weight_decay'] == (0.0 if p.ndim == 1 or name.endswith('.bias') else BASE_WD), name
        if name.startswith('backbone.'):
            assert CONVNEXT_BACKBONE_NAME.match(name), name
        if not name.startswith('backbone.') or name.startswith('backbone.out_norms.'):
            assert g['lr'] == base_lr, name  # neck, heads (and the new output norms): the base lr
        n_checked += 1
    assert n_checked == len(group_of) == sum(1 for _ in model.parameters())

    # spot values, spelled out
    lr = {n: group_of[id(p)]['lr'] for n, p in model.named_parameters()}
    wd = {n: group_of[id(p)]['weight_decay'] for n, p in model.named_parameters()}
    last2 = model.backbone.depths[2] - 1
    if scheme == 'layer_wise':
        assert lr['backbone.downsample_layers.0.0.weight'] == pytest.approx(base_lr * rate ** (num_layers + 1))
        assert lr['backbone.stages.0.0.dwconv.weight'] == pytest.approx(base_lr * rate ** num_layers)
        assert lr[f'backbone.stages.2.{last2}.dwconv.weight'] == pytest.approx(base_lr * rate ** 2)
        assert lr['backbone.downsample_layers.3.1.weight'] == pytest.approx(base_lr * rate)
        assert lr['backbone.stages.3.2.pwconv2.weight'] == pytest.approx(base_lr * rate)
    else:
        for i in range(4):
            assert lr[f'backbone.downsample_layers.{i}.0.weight'] == pytest.approx(
                base_lr * rate ** (num_layers + 1))
            assert lr[f'backbone.stages.{i}.0.dwconv.weight'] == pytest.approx(base_lr * rate ** (num_layers - i))
    assert wd['backbone.stages.1.0.gamma'] == 0 and wd['backbone.stages.1.0.norm.weight'] == 0
    assert wd['backbone.stages.1.0.pwconv1.bias'] == 0 and wd['backbone.stages.1.0.pwconv1.weight'] == BASE_WD


@pytest.mark.parametrize('config', list(CONVNEXT_CASES))
def test_convnext_config_matches_openmmlab_constructor(config):
    """mmdet's (detection) / mmseg's (segmentation) LearningRateDecayOptimizerConstructor, the ports of the
    official one, give every parameter of the same model the same group, lr and weight decay. They key on
    ``backbone.downsample_layers`` / ``backbone.stages`` and on 'ConvNeXt' in the backbone's class name: our
    names are the official ones (no mapping needed); our ``backbone.out_norms.i`` (the official detection
    backbone's ``backbone.norm{i}``) fall into their "everything else" branch, the heads' id, as in ours.
    Their num_layers must be given; ours is derived from the depths."""
    scheme, base_lr, rate, num_layers = CONVNEXT_CASES[config]
    cfg, model = _built(config)
    if cfg.default_scope == 'mmdet':
        from mmdet.engine.optimizers import LearningRateDecayOptimizerConstructor
    else:
        from mmseg.engine.optimizers import LearningRateDecayOptimizerConstructor
    assert 'ConvNeXt' in type(model.backbone).__name__
    ours = groups_by_param(ppg.build_optimizer(cfg, model))
    ctor = LearningRateDecayOptimizerConstructor(
        dict(type='OptimWrapper', optimizer=copy.deepcopy(cfg.optim_wrapper.optimizer)),
        dict(decay_rate=rate, decay_type=scheme, num_layers=num_layers))
    with ppg.quiet_mmengine_logger():
        theirs = groups_by_param(ctor(model))
    assert set(ours) == set(theirs)
    for name, p in model.named_parameters():
        a, b = ours[id(p)], theirs[id(p)]
        assert a['group_name'] == b['group_name'], name
        assert a['lr'] == pytest.approx(b['lr'], rel=1e-12) and a['lr_scale'] == pytest.approx(b['lr_scale'])
        assert a['weight_decay'] == b['weight_decay'], name


# ------------------------------------------------------------------------------------ every backbone
def _trunk_position(name: str):
    """Forward-order key of a backbone parameter: (stage, 0 downsampler / 1 block / 2 stage norm, block);
    None for the output norms. The stem is downsampler 0; downsampler i runs between stage i-1 and stage i."""
    parts = name.split('.')
    if parts[0] == 'downsample_layers':
        return int(parts[1]), 0, 0
    if parts[0] == 'stages':
        return int(parts[1]), 1, int(parts[2])
    if parts[0] == 'stage_norms':  # unified families with stage_norms='keep': after the stage's last block
        return int(parts[1]), 2, 0
    assert parts[0] == 'out_norms', f'{name}: a backbone parameter outside the stem/downsamplers/stages/norms'
    return None


def check_layer_depths(m, scheme: str, rate: float = 0.9) -> None:
    """The properties every backbone's ``get_layer_depth`` must have under ``scheme``:

    * ids are ints in [0, max_id) with ``max_id = num_layers + 2`` for every parameter; the stem is 0; the
      output norms (new layers, like the heads) get ``max_id - 1``, as does anything outside the backbone;
    * monotone: in forward order (stem, stage 0 blocks, downsampler 1, stage 1 blocks, ..., stage 3 blocks)
      the ids never decrease, so a parameter of a later stage never gets a smaller id (a larger lr decay)
      than one of an earlier stage, nor a later block than an earlier block of its stage. Exception, by the
      published rule: ``stage_wise`` puts every downsampler at 0 with the stem, so there the chain is
      checked over the stem and blocks, and the downsamplers are checked to be 0;
    * the deepest ids: ``layer_wise`` stage 3 (and downsampler 3) ``num_layers`` = max_id - 2, the last
      stage-2 block ``num_layers - 1``; ``stage_wise`` stage s ``s + 1`` (stage 3: 4); ``block_wise`` block b
      of stage s ``1 + sum(depths[:s]) + b`` (the last block max_id - 2), downsampler s with its first block;
    * ``layer_wise`` / ``stage_wise`` equal ConvNeXt's official rule applied to the names (every family uses
      ConvNeXt's ``downsample_layers`` / ``stages`` naming);
    * lr scales ``rate ** (max_id - id - 1)`` are in (0, 1], non-decreasing along the same order, and 1.0
      exactly for the heads.
    """
    n = m.num_layers(scheme)
    max_id = n + 2
    rows = []
    for name, _ in m.named_parameters():
        layer_id, got_max = m.get_layer_depth(name, scheme=scheme)
        assert type(layer_id) is int and type(got_max) is int, name
        assert got_max == max_id and 0 <= layer_id < max_id, (name, layer_id, got_max)
        assert m.get_layer_depth('backbone.' + name, prefix='backbone.', scheme=scheme) == (layer_id, max_id)
        key = _trunk_position(name)
        if key is None:
            assert layer_id == max_id - 1, name
            continue
        if scheme in OFFICIAL and key[1] != 2:
            assert layer_id == OFFICIAL[scheme]('backbone.' + name, n), (name, layer_id)
        if scheme == 'block_wise':
            stage, kind, block = key
            first = 1 + sum(m.depths[:stage])  # the id of the stage's first block
            if (stage, kind) == (0, 0):
                expected = 0                                  # the stem
            elif kind == 0:
                expected = first                              # a downsampler goes with its stage's first block
            elif kind == 1:
                expected = first + block
            else:
                expected = first + m.depths[stage] - 1        # a stage norm goes with the stage's last block
            assert layer_id == expected, name
        rows.append((key, layer_id, name))
    assert m.get_layer_depth('neck.lateral_convs.0.conv.weight', prefix='backbone.', scheme=scheme) == \
        (max_id - 1, max_id)

    rows.sort(key=lambda r: r[0])  # stable: the registration order inside a block is kept
    assert all(layer_id == 0 for key, layer_id, _ in rows if key[:2] == (0, 0))  # the stem
    if scheme == 'stage_wise':
        assert all(layer_id == 0 for key, layer_id, _ in rows if key[1] == 0)
        chain = [r for r in rows if r[0][1] != 0 or r[0][0] == 0]
    else:
        chain = rows
    ids = [layer_id for _, layer_id, _ in chain]
    bad = [(a[2], a[1], b[2], b[1]) for a, b in zip(chain, chain[1:]) if b[1] < a[1]]
    assert not bad, f'{scheme}: ids decrease along the forward order: {bad[:3]}'

    deepest = [layer_id for key, layer_id, _ in rows if key[0] == 3 and key[1] == 1]
    last2 = [layer_id for key, layer_id, _ in rows if key == (2, 1, m.depths[2] - 1)]
    if scheme == 'layer_wise':
        assert set(deepest) == {n} == {max_id - 2} and set(last2) == {n - 1}
    elif scheme == 'stage_wise':
        assert set(deepest) == {4}
    else:
        assert max(deepest) == max_id - 2 == sum(m.depths)

    scales = [rate ** (max_id - i - 1) for i in ids]
    assert all(0 < s < 1 for s in scales) and scales == sorted(scales)  # 1.0 only for heads / out norms


@pytest.mark.parametrize('name', list_backbones())
def test_layer_depth_rules_every_backbone(name):
    with torch.device('meta'):  # ids only: no storage needed
        m = build_backbone(name)
    for scheme in LAYER_DECAY_SCHEMES:
        check_layer_depths(m, scheme)


# no weight decay, by name (independent of the constructor's shape rule): layer/res scales, GRN, positions
NO_DECAY_LEAVES = {'gamma', 'gamma_1', 'gamma_2', 'gamma1', 'gamma2', 'layer_scale_1', 'layer_scale_2',
                   'beta', 'scale', 'pos_embed', 'relative_position_bias_table', 'height_rel', 'width_rel'}


class _Detector(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Conv2d(backbone.dims[-1], 8, 1)
        self.head = nn.Linear(8, 2)


@pytest.mark.parametrize('family,arch,kwargs', smallest_archs(),
                         ids=lambda v: v if isinstance(v, str) else ','.join(f'{k}={x}' for k, x in v.items()))
def test_constructor_every_family_smallest_size(family, arch, kwargs):
    """The real constructor on a real (CPU) backbone of each family, every scheme: groups, lr, weight decay."""
    import detection  # noqa: F401  (registers the constructor)
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope

    with torch.device('meta'):  # then uninitialised CPU storage: the optimizer needs parameters, not values
        model = _Detector(families()[family](arch=arch, **kwargs))
    model.to_empty(device='cpu')
    bb = model.backbone
    check_layer_depths(bb, 'layer_wise')  # the stage_norms='keep' variants are only built here
    base_lr, rate = 1e-3, 0.8
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for scheme in LAYER_DECAY_SCHEMES:
        with DefaultScope.overwrite_default_scope('mmdet'), ppg.quiet_mmengine_logger():
            wrapper = build_optim_wrapper(model, dict(
                type='OptimWrapper', constructor='LayerDecayOptimWrapperConstructor',
                optimizer=dict(type='AdamW', lr=base_lr, weight_decay=BASE_WD),
                paramwise_cfg=dict(decay_rate=rate, decay_type=scheme)))
        group_of = groups_by_param(wrapper)
        assert len(group_of) == len(trainable)  # frozen ones (RandFormer's random matrices) are left out
        max_id = bb.num_layers(scheme) + 2
        order = []
        for name, p in trainable:
            g = group_of[id(p)]
            layer_id = bb.get_layer_depth(name, prefix='backbone.', scheme=scheme)[0]
            assert group_layer_id(g) == layer_id, name
            assert g['lr'] == pytest.approx(base_lr * rate ** (max_id - layer_id - 1), rel=1e-12), name
            leaf = name.rsplit('.', 1)[-1]
            no_decay = p.ndim == 1 or leaf == 'bias' or (name.startswith('backbone.') and leaf in NO_DECAY_LEAVES)
            assert g['weight_decay'] == (0.0 if no_decay else BASE_WD), (name, tuple(p.shape))
            key = _trunk_position(name[len('backbone.'):]) if name.startswith('backbone.') else None
            if key is not None and not (scheme == 'stage_wise' and key[1] == 0 and key[0] > 0):
                order.append((key, g['lr']))
            if key is None:
                assert g['lr'] == base_lr, name
        lrs = [lr for _, lr in sorted(order, key=lambda r: r[0])]
        assert lrs == sorted(lrs) and max(g['lr'] for g in group_of.values()) == base_lr


def test_constructor_without_paramwise_cfg_keeps_the_weight_decay_rules():
    """mmengine's constructor skips add_params() for an empty paramwise_cfg; ours must not (no layer decay,
    but still no weight decay on norms, biases and layer scales)."""
    import detection  # noqa: F401
    from mmengine.optim import build_optim_wrapper

    model = _Detector(build_backbone('unified_convnext_micro'))
    wrapper = build_optim_wrapper(model, dict(type='OptimWrapper', constructor='LayerDecayOptimWrapperConstructor',
                                              optimizer=dict(type='AdamW', lr=1e-4, weight_decay=BASE_WD)))
    group_of = groups_by_param(wrapper)
    assert {g['lr'] for g in group_of.values()} == {1e-4}
    wd = {n: group_of[id(p)]['weight_decay'] for n, p in model.named_parameters()}
    assert wd['backbone.stages.0.0.dw_norm.weight'] == 0 and wd['backbone.stages.0.0.pwconv1.bias'] == 0
    assert wd['backbone.stages.0.0.gamma_1'] == 0 and wd['backbone.stages.0.0.gamma_2'] == 0  # [1, C, 1, 1]
    assert wd['backbone.stages.0.0.pwconv1.weight'] == BASE_WD and wd['head.weight'] == BASE_WD


def test_frozen_stages_leave_the_other_groups_unchanged():
    import detection  # noqa: F401
    from mmengine.optim import build_optim_wrapper

    def lrs(frozen):
        model = _Detector(build_backbone('convnextv2_atto', frozen_stages=frozen))
        with ppg.quiet_mmengine_logger():
            w = build_optim_wrapper(model, dict(
                type='OptimWrapper', constructor='LayerDecayOptimWrapperConstructor',
                optimizer=dict(type='AdamW', lr=1e-4, weight_decay=BASE_WD), paramwise_cfg=dict(decay_rate=0.9)))
        group_of = groups_by_param(w)
        return {n: group_of[id(p)]['lr'] for n, p in model.named_parameters() if id(p) in group_of}

    full, frozen = lrs(-1), lrs(2)
    assert not any(n.startswith(('backbone.downsample_layers.0.', 'backbone.downsample_layers.1.',
                                 'backbone.stages.0.', 'backbone.stages.1.')) for n in frozen)
    assert frozen and all(full[n] == lr for n, lr in frozen.items())


# ------------------------------------------------------------------------------------ the tool
ROW = re.compile(r'^(layer_(\d+)_(?:no_)?decay)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s+([\d,]+)$')


def _run_tool(*args):
    proc = subprocess.run([sys.executable, TOOL, *args], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=300,
                          env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    return proc.returncode, proc.stdout, proc.stderr


def _rows(out):
    return [m.groups() for m in map(ROW.match, out.splitlines()) if m]


def test_print_param_groups_detection_verbose():
    scheme, base_lr, rate, n = CONVNEXT_CASES['det/convnext_t_maskrcnn.py']
    rc, out, err = _run_tool('configs/det/convnext_t_maskrcnn.py', '--verbose')
    assert rc == 0, out + err
    lines = out.splitlines()
    assert lines[0] == 'config: configs/det/convnext_t_maskrcnn.py (mmdet)'
    assert lines[1] == 'model: MaskRCNN, backbone ConvNeXt (arch t)'
    assert "paramwise_cfg={'decay_rate': 0.95, 'decay_type': 'layer_wise'}" in lines[3]
    rows = _rows(out)
    # ids 0..N+1, each with a decay and a no_decay group, in layer order
    assert [r[0] for r in rows] == [f'layer_{i}_{k}' for i in range(n + 2) for k in ('decay', 'no_decay')]
    for name, gid, layer, lr, scale, wd, tensors, values in rows:
        assert gid == layer
        assert float(scale) == pytest.approx(official_scale(int(layer), rate, n), abs=5e-5)
        assert float(lr) == pytest.approx(base_lr * official_scale(int(layer), rate, n), rel=1e-4)
        assert float(wd) == (0.0 if name.endswith('no_decay') else BASE_WD)
    _, model = _built('det/convnext_t_maskrcnn.py')
    total = sum(p.numel() for p in model.parameters())
    assert sum(int(r[7].replace(',', '')) for r in rows) == total
    assert sum(int(r[6]) for r in rows) == len(list(model.parameters()))
    assert lines[-1] == (f'total: {len(rows)} groups, {len(list(model.parameters()))} tensors, {total:,} '
                         f'parameters (model: {total:,} parameters, all trainable; matches)')
    # --verbose: the parameter names under their group
    group, members = None, {}
    for line in lines:
        m = ROW.match(line)
        if m:
            group = m.group(1)
        elif line.startswith('    ') and group:
            members[line.strip()] = group
    assert len(members) == len(list(model.parameters()))
    assert members['backbone.downsample_layers.0.0.weight'] == 'layer_0_decay'
    assert members['backbone.stages.2.8.pwconv1.weight'] == 'layer_5_decay'  # 3 + 8 // 3
    assert members['backbone.stages.3.2.gamma'] == f'layer_{n}_no_decay'
    assert members['rpn_head.rpn_conv.weight'] == f'layer_{n + 1}_decay'


def test_print_param_groups_segmentation_with_cfg_options():
    _, base_lr, _, n = CONVNEXT_CASES['seg/convnext_t_upernet.py']
    rc, out, err = _run_tool('configs/seg/convnext_t_upernet.py',
                             '--cfg-options', 'optim_wrapper.paramwise_cfg.decay_rate=0.8')
    assert rc == 0, out + err
    assert '(mmseg)' in out.splitlines()[0]
    assert torch.cuda.is_available() or 'SyncBN' in out  # the CPU fallback is reported
    rows = _rows(out)
    # stage_wise: downsamplers 0, stages 1..4, heads N+1 (nothing at 5..N)
    assert sorted({int(r[2]) for r in rows}) == [0, 1, 2, 3, 4, n + 1]
    for name, gid, layer, lr, scale, wd, tensors, values in rows:
        assert float(lr) == pytest.approx(base_lr * official_scale(int(layer), 0.8, n), rel=1e-4)
    _, model = _built('seg/convnext_t_upernet.py')
    total = sum(p.numel() for p in model.parameters())
    assert sum(int(r[7].replace(',', '')) for r in rows) == total
    assert out.splitlines()[-1].endswith(f'(model: {total:,} parameters, all trainable; matches)')
    assert not any(line.startswith('    ') for line in out.splitlines())  # no names without --verbose


def test_print_param_groups_missing_config():
    rc, out, err = _run_tool('configs/det/no_such_config.py')
    assert rc == 2 and out == ''
    assert err.strip().splitlines() == ['print_param_groups.py: config not found: configs/det/no_such_config.py']


def test_scale_formula_matches_recipes_example():
    """Mask R-CNN 3x ConvNeXt-T: stem 0.95 ** 7 = 0.698, stage 3 0.95, heads 1 (by the official code)."""
    assert official_scale(0, 0.95, 6) == pytest.approx(0.95 ** 7) and math.isclose(official_scale(6, 0.95, 6), 0.95)
    assert official_scale(7, 0.95, 6) == 1.0
