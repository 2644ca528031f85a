"""tools/analysis/get_flops.py and tools/analysis/model_zoo.py.

* calibration: Mask R-CNN 3x ConvNeXt-T has 48M parameters and 262 GFLOPs at 1280x800 (ConvNeXt paper,
  Table 3), within 2 %; the same paper's Cascade Mask R-CNN ConvNeXt-T
  (86M / 741G, Table 3) and UperNet ConvNeXt-T at 2048x512 (60M / 939G, Table 4);
* backbone FLOPs inside the whole model equal the trunk MACs measured on the official code
  (measured on the official STM code, 800x1344);
* attention (CAFormer's F.scaled_dot_product_attention) and the unified DCNv3's grid_sample are counted,
  equal to their closed forms, and the whole model costs more than its backbone;
* the meta-device count (what the model zoo uses) equals a real CPU forward's;
* ``model_zoo.py --check``: docs/model_zoo.md and docs/model_zoo_flops.json are in sync with configs/,
  and a missing entry or a stale document is reported.

The full calibration also runs as a real CPU forward (about 30 s on 2 cores, not run here):
``python tools/analysis/get_flops.py configs/det/convnext_t_maskrcnn.py --device cpu``.
"""
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
ANALYSIS = osp.join(ROOT, 'tools', 'analysis')
from conftest import load_tool  # noqa: E402
from glue import flops as G  # noqa: E402

Z = load_tool('tools/analysis/model_zoo.py')


@pytest.fixture(scope='module', autouse=True)
def _fast_configs():
    with Z.fast_config_loading():
        yield


def _cfg(name):
    return osp.join(ROOT, 'configs', name)


def _flops(name, shape=None, device='meta'):
    return G.get_flops(_cfg(name), shape, device)


def _close(value, expected, rel=0.02):
    return abs(value - expected) <= rel * expected


# ------------------------------------------------------------------------------ calibration
@pytest.mark.parametrize('name, shape, params, gflops', [
    ('det/convnext_t_maskrcnn.py', None, 48e6, 262),     # ConvNeXt paper, Table 3 (recipes.md 1.1)
    ('det/convnext_t_cascade.py', None, 86e6, 741),      # ConvNeXt paper, Table 3
    ('seg/convnext_t_upernet.py', (512, 2048), 60e6, 939),  # ConvNeXt paper, Table 4 (2048x512)
])
def test_calibration(name, shape, params, gflops):
    r = _flops(name, shape)
    assert _close(r['params'], params), r['params']
    assert _close(r['flops'], gflops * 1e9), r['flops']
    assert sum(r['flops_modules'].values()) == r['flops']
    assert sum(r['params_modules'].values()) == r['params']
    if name.startswith('det/'):
        assert tuple(r['shape']) == (800, 1280)
        assert set(r['flops_modules']) == {'backbone', 'neck', 'rpn_head', 'roi_head'}
        assert r['flops_modules']['roi_head'] > 0
    else:
        assert r['flops_modules']['decode_head'] > 0 and 'auxiliary_head' in r['params_modules']


def test_cascade_runs_three_box_and_mask_stages():
    mask = _flops('det/convnext_t_maskrcnn.py')['flops_modules']
    cascade = _flops('det/convnext_t_cascade.py')['flops_modules']
    assert cascade['backbone'] == mask['backbone'] and cascade['rpn_head'] == mask['rpn_head']
    mask_head = 4 * 256 * 256 * 9 * 196 * 100 + 256 * 256 * 4 * 196 * 100 + 256 * 80 * 784 * 100
    assert mask['roi_head'] == mask_head + 1000 * (256 * 49 * 1024 + 1024 * 1024 + 1024 * (81 + 320))
    # three 4conv1fc box heads on 1000 RoIs (4 3x3 convs on 7x7 + 1 fc; class-specific regression,
    # reg_class_agnostic=False in the ConvNeXt cascade config) and three mask heads on 100
    box_4conv1fc = 1000 * (4 * 256 * 256 * 9 * 49 + 256 * 49 * 1024 + 1024 * (81 + 320))
    assert cascade['roi_head'] == 3 * (box_4conv1fc + mask_head)


@pytest.mark.parametrize('config, backbone_gmacs, tol', [
    # trunk MACs measured on the official code at 800x1344
    ('det/convnext_t_maskrcnn.py', 95.5, 0.005),
    ('det/convformer_s18_maskrcnn.py', 84, 0.01),
    ('det/caformer_s18_maskrcnn.py', 188, 0.005),
    ('det/unified_pvt_tiny_maskrcnn1x.py', 171, 0.005),
    ('det/unified_dcn_v3_tiny_maskrcnn1x.py', 102 + 1.70, 0.005),  # 102 excludes the sampling
])
def test_backbone_flops_match_the_official_code(config, backbone_gmacs, tol):
    r = _flops(config, (800, 1344))
    assert _close(r['flops_modules']['backbone'], backbone_gmacs * 1e9, tol)


# ------------------------------------------------------------------------ attention / DCNv3
def test_caformer_attention_is_counted():
    r = _flops('det/caformer_s18_maskrcnn.py')
    # global attention in stages 3-4: 2 N^2 C per block (QK^T and AV); 9 blocks of C=320 on
    # 50x80 tokens, 3 blocks of C=512 on 25x40
    expected = 9 * 2 * 4000 ** 2 * 320 + 3 * 2 * 1000 ** 2 * 512
    assert r['flops_ops']['attention'] == expected
    assert r['flops'] > r['flops_modules']['backbone'] > r['flops_ops']['attention']
    conv = _flops('det/convformer_s18_maskrcnn.py')  # the same model with SepConv mixers
    assert conv['flops_ops']['attention'] == 0


def test_unified_dcnv3_grid_sample_is_counted():
    r = _flops('det/unified_dcn_v3_tiny_maskrcnn1x.py')
    # 4 multiply-adds per channel and sampled point (9 points), dims 64..512, depths 4/4/18/4,
    # maps 200x320 ... 25x40
    expected = sum(d * hw * c * 9 * 4 for d, hw, c in
                   zip((4, 4, 18, 4), (64000, 16000, 4000, 1000), (64, 128, 256, 512)))
    assert r['flops_ops']['grid_sample'] == expected
    assert r['flops'] > r['flops_modules']['backbone'] > 0
    seg = _flops('seg/unified_dcn_v3_tiny_upernet.py')
    assert seg['flops_ops']['grid_sample'] > 0 and seg['flops'] > seg['flops_modules']['backbone']


def test_swin_and_halo_attention_is_counted():
    for name in ('det/unified_swin_micro_maskrcnn1x.py', 'seg/unified_halo_micro_upernet.py'):
        r = _flops(name)
        assert r['flops_ops']['attention'] > 0, name


# ---------------------------------------------------------------------------- meta == cpu
@pytest.mark.parametrize('name, shape', [
    ('seg/caformer_s18_upernet.py', (96, 128)),
    ('det/unified_dcn_v3_micro_cascade.py', (128, 160)),
])
def test_meta_count_equals_cpu_forward(name, shape, monkeypatch):
    monkeypatch.setattr(G, 'NUM_PROPOSALS', 20)  # keep the CPU forward of the RoI heads short
    monkeypatch.setattr(G, 'NUM_MASK_ROIS', 8)
    meta, cpu = _flops(name, shape, 'meta'), _flops(name, shape, 'cpu')
    for key in ('params', 'flops', 'flops_modules', 'params_modules'):
        assert meta[key] == cpu[key], key
    # MetaFormer's pointwise layers run as 1x1 convolutions on CPU (faster there) and as Linear elsewhere:
    # the same multiply-adds, booked under another op name
    merge = lambda ops: {**{k: v for k, v in ops.items() if k not in ('conv', 'linear')},  # noqa: E731
                         'conv+linear': ops.get('conv', 0) + ops.get('linear', 0)}
    assert merge(meta['flops_ops']) == merge(cpu['flops_ops'])
    assert meta['flops_ops']['attention' if 'caformer' in name else 'grid_sample'] > 0


# ----------------------------------------------------------------------------------- CLI
def test_get_flops_missing_config_exits_2():
    proc = subprocess.run([sys.executable, osp.join(ANALYSIS, 'get_flops.py'), 'configs/det/nope.py'],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == 'get_flops.py: error: config not found: configs/det/nope.py'


def test_get_flops_json(tmp_path):
    out = tmp_path / 'r.json'
    res = load_tool('tools/analysis/get_flops.py').main([_cfg('seg/convnext_t_upernet.py'), '--shape', '256',
                                                        '--json', str(out)])
    import json
    data = json.loads(out.read_text())
    assert data['shape'] == [256, 256] and data['flops'] == res['flops'] > 0


# ------------------------------------------------------------------------------ model zoo
@pytest.fixture(scope='module')
def infos():
    return Z.collect()


def test_model_zoo_check_passes(infos, monkeypatch, capsys):
    """docs/model_zoo.md and its FLOPs cache are in sync with configs/det and configs/seg."""
    monkeypatch.setattr(Z, 'collect', lambda: infos)
    rc = Z.main(['--check'])
    assert rc == 0, capsys.readouterr().out
    names = {i['name'] for i in infos}
    assert not any(n.startswith('toy/') for n in names)
    assert {'det/convnext_t_maskrcnn', 'det/convnext_t_cascade', 'seg/convnext_t_upernet'} <= names
    assert set(Z.PUBLISHED) <= names  # every published row names an existing config
    doc = open(Z.DOC).read()
    assert '| 48.1 | 261.9 | 46.2 / 41.7 |' in doc  # the calibration row


def test_model_zoo_check_reports_missing_and_stale(infos, tmp_path):
    entries = Z.load_cache(Z.CACHE)
    gone = infos[0]['key']
    changed = infos[-1]['key']
    entries.pop(gone)
    entries[changed] = dict(entries[changed], hash='0' * 16)
    doc = tmp_path / 'zoo.md'
    doc.write_text(open(Z.DOC).read().replace('261.9', '999.9'))
    problems, diff = Z.check(infos, entries, str(doc))
    assert f'no cached FLOPs for {gone}' in problems
    assert any(changed in p and 'stale' in p for p in problems)
    assert any(p.endswith('is stale') for p in problems)
    assert '-| [convnext_t_maskrcnn]' in diff and '999.9' in diff
