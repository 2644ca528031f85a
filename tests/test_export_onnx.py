"""ONNX export (backbones/export.py, glue/export.py, tools/deploy/export_onnx.py), checked against
onnxruntime, an independent runtime executing the exported graph.

For every family (its smallest size with one block per stage: the same layers and token mixers, a quarter of
the tracing time; ConvNeXt-T is also exported at full depth): the export run by onnxruntime matches PyTorch
within 1e-4 (float32)
at the traced 64x96 input, and, for the families exported with dynamic axes, at a second size and batch
through the same file; a fixed-size export has a fixed input in the graph and onnxruntime refuses another
size. The CLI exports a config's backbone + FPN with a trained checkpoint's weights. docs/export.md lists the
same dynamic / fixed split as the code. (The unified models' ``stage_norms='keep'`` variants only add
LayerNorms and are left out here.)
"""
import os.path as osp
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT, load_tool, smallest_archs

from backbones import families, get_family
from backbones.export import FIXED_SIZE_FAMILIES, MAX_ABS_DIFF, export_and_check, export_onnx

FAMILIES = [(fam, arch) for fam, arch, kwargs in smallest_archs() if not kwargs]
SIZE = (64, 96)


def _input_dims(path):
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


@pytest.mark.slow
@pytest.mark.parametrize('family,arch', FAMILIES, ids=[f'{f}-{a}' for f, a in FAMILIES])
def test_export_matches_pytorch(family, arch, tmp_path):
    torch.manual_seed(0)
    cls = get_family(family)
    settings = dict(cls.resolve_arch(arch)[1])
    settings['depths'] = [1] * len(settings['depths'])
    model = cls(arch=settings)
    path = str(tmp_path / f'{family}.onnx')
    result = export_and_check(model, path, SIZE)

    assert result.dynamic == (family not in FIXED_SIZE_FAMILIES)
    checked = [shape for shape, _ in result.checks]
    if result.dynamic:
        assert checked == [(2, 3, *SIZE), (1, 3, SIZE[0] + 31, SIZE[1] + 33)]
        assert _input_dims(path) == ['batch', 3, 'height', 'width']
    else:
        assert checked == [(1, 3, *SIZE)]
        assert _input_dims(path) == [1, 3, *SIZE]
        session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
        with pytest.raises(Exception, match='dimensions'):
            session.run(None, {'input': np.zeros((1, 3, SIZE[0] + 32, SIZE[1]), np.float32)})
    assert result.max_abs_diff <= MAX_ABS_DIFF, result.checks
    assert len(result.output_names) == 4
    # the eager model is untouched by the export (no traced tensor left in a per-size cache)
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        assert all(torch.isfinite(y).all() for y in model(x))


@pytest.mark.slow
def test_full_depth_export_matches_pytorch(tmp_path):
    """Depth changes nothing in the export path: the whole ConvNeXt-T (3-3-9-3 blocks) as well."""
    torch.manual_seed(0)
    result = export_and_check(get_family('ConvNeXt')(arch='tiny'), str(tmp_path / 'convnext_t.onnx'), SIZE)
    assert result.dynamic and result.max_abs_diff <= MAX_ABS_DIFF, result.checks


def test_dynamic_export_of_a_fixed_size_family_is_refused_with_the_reason(tmp_path):
    model = get_family('RandFormer')(arch='s12')
    with pytest.raises(ValueError, match='RandFormer cannot be exported with dynamic input sizes: the frozen'):
        export_onnx(model, str(tmp_path / 'x.onnx'), SIZE, dynamic=True)


def test_docs_table_lists_every_family_with_its_mode():
    text = open(osp.join(ROOT, 'docs', 'export.md')).read()
    rows = dict(re.findall(r'^\| `(\w+)` \| (dynamic|fixed) \|', text, flags=re.M))
    expected = {name: 'fixed' if name in FIXED_SIZE_FAMILIES else 'dynamic' for name in families()}
    assert rows == expected


@pytest.mark.slow
def test_cli_exports_a_config_backbone_and_neck_with_checkpoint_weights(tmp_path, capsys):
    from glue.export import build_backbone_and_neck
    main = load_tool('tools/deploy/export_onnx.py').main

    config = osp.join(ROOT, 'configs', 'toy', 'conv2former_toy_maskrcnn.py')
    torch.manual_seed(1)
    trained = build_backbone_and_neck(config)
    ckpt = tmp_path / 'det.pth'
    torch.save({'state_dict': {k: v for k, v in trained.state_dict().items()}, 'meta': {}}, ckpt)
    out = tmp_path / 'det.onnx'
    assert main([config, '--checkpoint', str(ckpt), '--shape', '128', '160', '--out', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'exported backbone + neck of Conv2Former' in text and 'dynamic batch/height/width' in text
    assert re.search(r'input 1x3x159x193: max abs diff [0-9.e-]+', text) and 'OK: max abs diff' in text

    # the file holds the checkpoint's weights: it reproduces the trained model's five FPN levels
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        ref = trained(x)
    got = ort.InferenceSession(str(out), providers=['CPUExecutionProvider']).run(None, {'input': x.numpy()})
    assert len(got) == len(ref) == 5
    assert max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref)) <= MAX_ABS_DIFF


def test_cli_unknown_name_lists_the_valid_ones(capsys):
    main = load_tool('tools/deploy/export_onnx.py').main

    assert main(['convnext_tinyy']) == 2
    err = capsys.readouterr().err
    assert "unknown ConvNeXt arch 'tinyy'; valid: tiny, small" in err
    assert main(['nosuchnet']) == 2
    err = capsys.readouterr().err
    assert "unknown backbone 'nosuchnet'; valid names:" in err and 'conv2former_n' in err
