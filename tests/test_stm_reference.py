"""glue/stm_reference.py without the official code (it is never part of this repository): a wrong path or a
differing copy is refused with a clear message, the benchmark tool's --stm-official option parses and reports
such errors, and the official constructor arguments match the published STM-Evaluation configs."""
import os

import pytest
import torch

from conftest import ROOT, load_tool
from glue import stm_reference as S

TOOL = 'tools/analysis/benchmark_backbones.py'


def test_missing_or_wrong_path_is_refused(tmp_path):
    with pytest.raises(S.OfficialCodeError, match='git clone https://github.com/OpenGVLab/STM-Evaluation'):
        S.check_official_path(None)
    with pytest.raises(S.OfficialCodeError, match='is not a directory'):
        S.check_official_path(str(tmp_path / 'nowhere'))
    (tmp_path / 'detection').mkdir()
    with pytest.raises(S.OfficialCodeError, match='not an STM-Evaluation checkout: missing') as e:
        S.load_official(str(tmp_path))
    assert os.path.join('blocks', 'dcn_v3.py') in str(e.value) and 'ms_deform_attn_func.py' in str(e.value)


def test_differing_copy_is_refused(tmp_path):
    """Every file present, but not the lines the loader patches (another commit): named, nothing executed."""
    for f in S.required_files(str(tmp_path)):
        os.makedirs(os.path.dirname(f), exist_ok=True)
        with open(f, 'w') as fh:
            fh.write('raise SystemExit("must not run")\n')
    with pytest.raises(S.OfficialCodeError, match=r"meta_arch\.py: expected the line 'from mmdet\.utils"):
        S.load_official(str(tmp_path))
    assert not any(k.startswith('_stm_official_') for k in __import__('sys').modules)


def test_names_are_checked():
    assert S.resolve_names(['unified_swin_tiny', 'unified_swin_tiny']) == ['unified_swin_tiny']
    assert len(S.resolve_names(['all'])) == 21
    with pytest.raises(ValueError, match='convnext_tiny.*valid names: .*unified_dcn_v3_tiny'):
        S.resolve_names(['convnext_tiny'])


def test_official_kwargs_match_published_configs():
    """detection/configs/unified_models/*/mask_rcnn_*_tiny.py of STM-Evaluation (values copied as facts)."""
    from backbones import build_backbone
    with torch.device('meta'):
        arch = {n: build_backbone(f'{n}_tiny').arch for n in S.MIXERS}
    kw = {n: S.official_kwargs(n, a) for n, a in arch.items()}
    assert kw['unified_dcn_v3']['dims'] == [64, 128, 256, 512] and kw['unified_dcn_v3']['depths'] == [4, 4, 18, 4]
    b = kw['unified_dcn_v3']['block_kwargs']
    assert (b['num_heads'], b['deform_points'], b['kernel_size'], b['deform_padding']) == ([4, 8, 16, 32], 9, 3,
                                                                                          True)
    assert kw['unified_dcn_v3']['forward_kwargs'] == dict(deform_points=9, deform_padding=True)
    b = kw['unified_pvt']['block_kwargs']
    assert kw['unified_pvt']['dims'] == [64, 128, 320, 512] and kw['unified_pvt']['depths'] == [3, 4, 9, 3]
    assert (b['num_heads'], b['mlp_ratios'], b['qkv_bias'], b['sr_ratios']) == ([1, 2, 5, 8], [8, 8, 4, 4], True,
                                                                                [8, 4, 2, 1])
    assert kw['unified_halo']['block_kwargs'] == dict(num_heads=[3, 6, 12, 24], block_size=7, halo_size=3,
                                                      mlp_ratio=4)
    assert kw['unified_swin']['block_kwargs'] == dict(num_heads=[3, 6, 12, 24], window_size=7, mlp_ratio=4)
    assert kw['unified_convnext']['depths'] == [2, 2, 9, 2] and kw['unified_halo']['depths'] == [2, 2, 6, 2]
    assert all(k['drop_path_rate'] == 0 and k['out_indices'] == (0, 1, 2, 3) for k in kw.values())


def test_tool_option_parses_and_reports_a_bad_path(tmp_path, capsys):
    tool = load_tool(TOOL)
    args = tool.parse_args(['unified_swin_tiny', '--stm-official', str(tmp_path), '--shape', '224', '224'])
    assert args.stm_official == str(tmp_path) and args.names == ['unified_swin_tiny']
    assert tool.main(['unified_swin_tiny', '--stm-official', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert 'not an STM-Evaluation checkout' in err and 'Traceback' not in err


def test_tool_rejects_a_name_without_official_counterpart(capsys):
    tool = load_tool(TOOL)
    args = tool.parse_args(['convnext_tiny', '--stm-official', ROOT])
    assert S.run_cli(args) == 2
    err = capsys.readouterr().err
    assert "'convnext_tiny' has no official STM-Evaluation counterpart; valid names:" in err
    assert 'unified_halo_tiny' in err and 'Traceback' not in err
