"""The strict loader: every wrapper layout, and a clear error for every kind of bad checkpoint."""
import argparse
import os

import pytest
import torch

from backbones import (CheckpointError, CheckpointMismatchError, Conv2Former, build_backbone, load_pretrained,
                       read_checkpoint)
from backbones.checkpoint import extract_state_dict

TINY = dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32], kernel_size=7)


class NotAllowed:  # an arbitrary object that must never be unpickled
    pass


def _sd(arch=TINY, seed=0):
    torch.manual_seed(seed)
    return Conv2Former(arch=arch, out_norm=False).state_dict()


@pytest.mark.parametrize('wrap', ['plain', 'state_dict', 'model', 'module_prefix', 'nested'])
def test_wrappers(tmp_path, wrap):
    sd = _sd()
    obj = {'plain': sd, 'state_dict': {'state_dict': sd, 'epoch': 1, 'args': argparse.Namespace(lr=1.0)},
           'model': {'model': sd, 'optimizer': {}}, 'module_prefix': {'state_dict': {f'module.{k}': v
                                                                                      for k, v in sd.items()}},
           'nested': {'model': {'state_dict': sd}}}[wrap]
    torch.save(obj, tmp_path / 'c.pth')
    m = Conv2Former(arch=TINY)
    report = load_pretrained(m, str(tmp_path / 'c.pth'))
    assert report.loaded == len(sd)
    for k, v in sd.items():
        assert torch.equal(m.state_dict()[k], v), k


def test_ema_selection(tmp_path):
    sd, ema = _sd(seed=0), _sd(seed=1)
    torch.save({'state_dict': sd, 'state_dict_ema': ema}, tmp_path / 'c.pth')
    m = Conv2Former(arch=TINY)
    load_pretrained(m, str(tmp_path / 'c.pth'))
    assert torch.equal(m.stages[0][0].attn.v.weight, sd['stages.0.0.attn.v.weight'])
    load_pretrained(m, str(tmp_path / 'c.pth'), use_ema=True)
    assert torch.equal(m.stages[0][0].attn.v.weight, ema['stages.0.0.attn.v.weight'])
    torch.save({'state_dict': sd}, tmp_path / 'noema.pth')
    with pytest.raises(CheckpointError, match='no EMA'):
        load_pretrained(m, str(tmp_path / 'noema.pth'), use_ema=True)
    torch.save({'state_dict_ema': ema}, tmp_path / 'onlyema.pth')  # EMA is all there is: take it
    load_pretrained(m, str(tmp_path / 'onlyema.pth'))
    assert torch.equal(m.stages[0][0].attn.v.weight, ema['stages.0.0.attn.v.weight'])


def test_missing_file_is_clear():
    m = Conv2Former(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint='/nonexistent/c2f_t.pth'))
    with pytest.raises(FileNotFoundError, match='/nonexistent/c2f_t.pth'):
        m.init_weights()


def test_unsafe_pickle_refused(tmp_path):
    torch.save({'state_dict': _sd(), 'extra': NotAllowed()}, tmp_path / 'evil.pth')
    with pytest.raises(CheckpointError, match='allow-list'):
        read_checkpoint(str(tmp_path / 'evil.pth'))


def test_not_a_checkpoint(tmp_path):
    (tmp_path / 'junk.pth').write_bytes(b'not a zip')
    with pytest.raises(CheckpointError):
        read_checkpoint(str(tmp_path / 'junk.pth'))
    torch.save([1, 2], tmp_path / 'list.pth')
    with pytest.raises(CheckpointError, match='not a state dict'):
        read_checkpoint(str(tmp_path / 'list.pth'))


def test_other_size_names_keys_and_the_matching_arch(tmp_path):
    torch.save({'state_dict': build_backbone('conv2former_n', out_norm=False).state_dict()}, tmp_path / 'n.pth')
    m = Conv2Former(arch='t', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'n.pth')))
    with pytest.raises(CheckpointMismatchError) as e:
        m.init_weights()
    msg = str(e.value)
    assert 'shape mismatches' in msg and 'downsample_layers.0.0.weight' in msg
    assert 'missing keys' in msg and 'stages.0.2.' in msg  # T has 3 blocks in stage 0, N has 2
    assert "matches arch='n'" in msg


def test_other_kernel_size_detected(tmp_path):
    sd = _sd(arch=dict(TINY, kernel_size=11))
    m = Conv2Former(arch=TINY)
    with pytest.raises(CheckpointMismatchError, match=r'attn.att.2.weight: checkpoint \(8, 1, 11, 11\) vs model '
                                                      r'\(8, 1, 7, 7\)'):
        load_pretrained(m, sd)


def test_other_family_names_unexpected_keys():
    # a ConvNeXt-style state dict (official layout): dwconv/pwconv names Conv2Former does not have
    sd = {'downsample_layers.0.0.weight': torch.zeros(8, 3, 4, 4), 'stages.0.0.dwconv.weight': torch.zeros(8, 1, 7, 7),
          'stages.0.0.pwconv1.weight': torch.zeros(32, 8), 'stages.0.0.gamma': torch.zeros(8)}
    with pytest.raises(CheckpointMismatchError) as e:
        load_pretrained(Conv2Former(arch=TINY), sd)
    msg = str(e.value)
    assert 'unexpected keys' in msg and 'stages.0.0.dwconv.weight' in msg and 'another family' in msg


def test_non_strict_loads_what_fits():
    sd = _sd()
    sd['stages.9.junk'] = torch.zeros(1)
    sd['stages.0.0.attn.v.weight'] = torch.zeros(8, 8, 3, 3)  # wrong shape
    report = load_pretrained(Conv2Former(arch=TINY), sd, strict=False)
    assert report.loaded == len(sd) - 2
    assert sorted(report.skipped) == ['stages.0.0.attn.v.weight', 'stages.9.junk']
    assert 'SKIPPED' in str(report)


def test_extract_plain_rejects_empty():
    with pytest.raises(CheckpointError, match='no state dict'):
        extract_state_dict({'epoch': 3})


def test_real_fixture_needs_the_allow_list():
    from conftest import FIXTURES
    path = os.path.join(FIXTURES, 'conv2former', 'tiny_k11.pth.tar')
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # argparse.Namespace inside, as in real training checkpoints
    assert isinstance(read_checkpoint(path)['args'], argparse.Namespace)


def test_safetensors_file(tmp_path):
    """timm's hub format: a flat tensor file, read by the loader itself (init_cfg / pretrained= alike)."""
    safetensors = pytest.importorskip('safetensors.torch')
    sd = _sd(seed=3)
    path = str(tmp_path / 'model.safetensors')
    safetensors.save_file({k: v.contiguous() for k, v in sd.items()}, path)
    assert set(read_checkpoint(path)) == set(sd)
    m = Conv2Former(arch=TINY, pretrained=path)
    m.init_weights()  # pretrained= is an init_cfg: read when the weights are initialised
    for k, v in sd.items():
        assert torch.equal(m.state_dict()[k], v), k
    (tmp_path / 'bad.safetensors').write_bytes(b'not a safetensors file')
    with pytest.raises(CheckpointError, match='safetensors'):
        read_checkpoint(str(tmp_path / 'bad.safetensors'))


def test_whole_mmengine_runner_checkpoint(tmp_path):
    """A trained detector's / segmentor's own checkpoint (mmengine runner format: message hub with
    HistoryBuffer objects, numpy arrays) gives its backbone through the safe loader, mmengine not needed."""
    history = pytest.importorskip('mmengine.logging.history_buffer')
    import numpy as np
    buf = history.HistoryBuffer()
    for v in (1.5, 1.2, 0.9):
        buf.update(v)
    sd = _sd(seed=4)
    weights = {f'backbone.{k}': v for k, v in sd.items()}
    weights['decode_head.conv_seg.weight'] = torch.zeros(4, 8, 1, 1)
    obj = {'meta': {'epoch': 3, 'seed': np.int64(0)}, 'state_dict': weights,
           'message_hub': {'log_scalars': {'train/loss': buf}, 'runtime_info': {'iter': 400}},
           'optimizer': {'state': {}, 'param_groups': []}}
    path = str(tmp_path / 'iter_400.pth')
    torch.save(obj, path)
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    m = Conv2Former(arch=TINY)
    report = load_pretrained(m, path)
    assert "prefix 'backbone.'" in report.wrapper and report.loaded == len(sd)
    for k, v in sd.items():
        assert torch.equal(m.state_dict()[k], v), k
