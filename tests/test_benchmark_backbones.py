"""Smoke test of tools/analysis/benchmark_backbones.py on a tiny input (no speed is asserted)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

TOOL = os.path.join(ROOT, 'tools', 'analysis', 'benchmark_backbones.py')
# conv2former_n backbone + one output LayerNorm (weight, bias) per returned stage
CONV2FORMER_N_PARAMS = 13_052_640 + 2 * (64 + 128 + 256 + 512)


def _run(*args, timeout=120):
    # run from outside the repository: the installed package must be found from anywhere
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(ROOT))


def test_benchmark_with_reference(tmp_path):
    pytest.importorskip('timm')
    out = tmp_path / 'bench.json'
    # one thread: robust on a loaded 2-core machine (oversubscribed OpenMP threads crawl)
    proc = _run('conv2former_n', '--shape', '64', '96', '--repeats', '2', '--warmup', '1', '--threads', '1',
                '--json', str(out), '--reference', 'conv2former_n=convnext_atto', '--check-outputs')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'torch ' + torch.__version__ in proc.stdout
    assert 'conv2former_n' in proc.stdout and 'timm:convnext_atto' in proc.stdout

    data = json.loads(out.read_text())
    assert data['meta']['shape'] == [64, 96] and data['meta']['threads'] == 1
    res = {r['label']: r for r in data['results']}
    assert set(res) == {'conv2former_n', 'timm:convnext_atto'}
    assert res['conv2former_n']['params'] == CONV2FORMER_N_PARAMS == 13_054_560
    assert res['timm:convnext_atto']['reference_for'] == 'conv2former_n'
    for r in res.values():
        for mode in ('fwd', 'fwdbwd'):
            m = r[mode]
            assert len(m['times_ms']) == 2 and len(m['warmup_ms']) == 1
            assert m['median_ms'] > 0 and m['min_ms'] <= m['median_ms'] <= m['max_ms']
            assert m['peak_mib'] is not None and m['peak_mib'] >= 0, m
        assert [s[0] for s in r['output_shapes']] == [1, 1, 1, 1]
    # stride-4 map of a 64x96 input
    assert res['conv2former_n']['output_shapes'][0] == [1, 64, 16, 24]

    (ratio,) = data['ratios']
    assert ratio['ours'] == 'conv2former_n' and ratio['reference'] == 'timm:convnext_atto'
    for key in ('params', 'fwd_median', 'fwdbwd_median'):
        assert ratio[key] is not None and ratio[key] > 0
    assert ratio['fwd_median'] == pytest.approx(res['conv2former_n']['fwd']['median_ms']
                                                / res['timm:convnext_atto']['fwd']['median_ms'])


_NO_OPENMMLAB = """
import runpy, sys
# a machine without OpenMMLab (the lent GPU box has torch and timm only): a None entry in sys.modules makes
# 'import mmengine' raise ModuleNotFoundError and importlib.util.find_spec('mmcv') return None, as if absent
for name in ('mmengine', 'mmcv', 'mmdet', 'mmseg'):
    sys.modules[name] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_benchmark_needs_torch_only(tmp_path):
    # the backbone benchmark is the script to run on a lent GPU machine, which has no mmengine/mmcv/mmdet/mmseg
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, '-c', _NO_OPENMMLAB, TOOL, 'conv2former_n', '--shape', '64', '64',
                           '--repeats', '1', '--warmup', '0', '--threads', '1', '--no-memory', '--json', str(out)],
                          capture_output=True, text=True, timeout=120, cwd=os.path.dirname(ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())['results']
    assert [r['label'] for r in res] == ['conv2former_n'] and res[0]['fwdbwd']['median_ms'] > 0
    assert 'No module named' not in proc.stderr


def test_unknown_name_lists_valid_ones():
    proc = _run('not_a_backbone', '--shape', '32', '32', '--repeats', '1', '--warmup', '0', timeout=60)
    assert proc.returncode == 2
    assert 'not_a_backbone' in proc.stderr and 'conv2former_t' in proc.stderr
    assert 'Traceback' not in proc.stderr


def _load_tool():
    spec = importlib.util.spec_from_file_location('benchmark_backbones', TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cuda_unavailable_is_a_clear_error(monkeypatch, capsys):
    tool = _load_tool()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert tool.main(['conv2former_n', '--device', 'cuda']) == 2
    assert 'CUDA is not available' in capsys.readouterr().err


def test_same_weights_twin_identical_outputs(tmp_path):
    """--timm-twin --same-weights: timm's randomised weights load into ours, outputs are identical."""
    pytest.importorskip('timm')
    out = tmp_path / 'bench.json'
    proc = _run('convnextv2_atto', 'poolformerv2_s12', '--timm-twin', '--same-weights', '--shape', '64', '96',
                '--repeats', '1', '--warmup', '0', '--threads', '1', '--no-memory', '--modes', 'fwd',
                '--json', str(out), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'OK identical' in proc.stdout and 'DIFFERENT' not in proc.stdout
    data = json.loads(out.read_text())
    res = {r['label']: r for r in data['results']}
    assert set(res) == {'convnextv2_atto', 'timm:convnextv2_atto', 'poolformerv2_s12', 'timm:poolformerv2_s12'}
    for name in ('convnextv2_atto', 'poolformerv2_s12'):
        ref = res[f'timm:{name}']
        assert ref['reference_for'] == name and ref['kind'] == 'timm_full'
        assert res[name]['kind'] == 'ours_raw'  # raw stage outputs, as timm's
        assert ref['weights'].startswith('timm,')  # loaded through our loader, timm layout detected
        sw = ref['same_weights']
        assert sw['identical'] and len(sw['stages']) == 4
        for s in sw['stages']:
            assert s['allclose'] and s['max_abs_diff'] < 1e-4
            assert s['max_ref_abs'] > 0.1  # randomised: the features are not trivially small


def test_same_weights_wrong_architecture_is_a_usage_error():
    pytest.importorskip('timm')
    proc = _run('convnextv2_atto', '--reference', 'convnextv2_atto=convnext_atto', '--same-weights',
                '--shape', '32', '32', '--repeats', '1', '--warmup', '0', '--no-memory', timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'do not load into convnextv2_atto' in proc.stderr and 'Traceback' not in proc.stderr


def test_speed_table_document(tmp_path):
    """tools/analysis/speed_table.py runs both benchmark tools and writes the document with their numbers."""
    tool = os.path.join(ROOT, 'tools', 'analysis', 'speed_table.py')
    doc, work = tmp_path / 'speed.md', tmp_path / 'speed'
    proc = subprocess.run(
        [sys.executable, tool, '--names', 'conv2former_n', 'convnextv2_atto', '--models', 'conv2former_n',
         '--shape', '64', '64', '--threads', '1', '--repeats', '1', '--warmup', '0', '--work-dir', str(work),
         '--out', str(doc)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = doc.read_text()
    data = json.loads((work / 'backbones.json').read_text())
    backbone_part, whole_part = text.split('## Whole models')
    rows = {line.split('|')[1].strip(): line for line in backbone_part.splitlines() if line.startswith('| conv')}
    assert set(rows) == {'conv2former_n', 'convnextv2_atto'}
    for r in data['results']:  # the document shows the tool's own numbers
        cells = [c.strip() for c in rows[r['label']].split('|')[1:-1]]
        assert cells[1] == f'{r["params"] / 1e6:.1f}' and cells[2] == f'{r["fwd"]["median_ms"]:.0f}'
        assert cells[3] == f'{r["fwdbwd"]["median_ms"]:.0f}'
    assert 'benchmark_backbones.py conv2former_n convnextv2_atto --shape 64 64' in text
    whole = [line for line in whole_part.splitlines() if line.startswith('| conv2former_n |')]
    assert len(whole) == 1, text
    for task in ('maskrcnn', 'upernet'):
        res = json.loads((work / f'conv2former_n_{task}.json').read_text())['result']
        assert f'{res["images_per_s"]:.2f}' in whole[0]
    # re-rendering from the saved run gives the same document
    proc = subprocess.run([sys.executable, tool, '--render-only', '--work-dir', str(work), '--out',
                           str(tmp_path / 'again.md')], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / 'again.md').read_text() == text


def test_speed_table_machine_names_cpu_type():
    # 'AMD EPYC' alone was a Zen 2 (AVX2) or a Zen 4 (AVX-512): the document must tell them apart
    from glue.speed_table import machine
    line = machine()
    assert torch.backends.cpu.get_cpu_capability() in line and 'logical cores' in line
    if os.path.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            fields = dict(l.split(':', 1) for l in f.read().split('\n\n')[0].splitlines() if ':' in l)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if 'cpu family' in fields:
            assert f"family {fields['cpu family']} model {fields['model']}" in line
            assert line.startswith(fields['model name'])
