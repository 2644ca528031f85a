"""The torchvision-backed mmcv ops (glue/mmcv_ops.py) against mmcv's compiled ops.

The fixture tests/fixtures/mmcv_ops.pt holds inputs and the outputs of mmcv 2.1.0's compiled CPU ops
(written by tools/dev/make_ops_fixtures.py). mmcv's own Python wrappers (``mmcv.ops.roi_align``, ``nms``,
``batched_nms``) run here with their extension module swapped for ours, whichever mmcv is installed, so
the whole call path a detector takes is checked. CUDA cases run where a GPU exists.
"""
import os

import pytest
import torch

from glue import mmcv_ops

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'mmcv_ops.pt')
DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])

mmcv_roi_align = pytest.importorskip('mmcv.ops.roi_align')
mmcv_nms = pytest.importorskip('mmcv.ops.nms')


@pytest.fixture(scope='module')
def fx():
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture
def ours(monkeypatch):
    """mmcv's Python op wrappers calling glue.mmcv_ops instead of whatever extension is installed."""
    ext = mmcv_ops.lite_extension()
    monkeypatch.setattr(mmcv_roi_align, 'ext_module', ext)
    monkeypatch.setattr(mmcv_nms, 'ext_module', ext)
    return ext


def grad_output_for(shape):  # same formula as tools/dev/make_ops_fixtures.py
    n = 1
    for s in shape:
        n *= s
    return torch.sin(torch.arange(n, dtype=torch.float32) * 0.7).reshape(shape)


def _case_id(c):
    return f"s{c['spatial_scale']}-o{c['output_size']}-sr{c['sampling_ratio']}-al{int(c['aligned'])}"


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last', 'strided_view'])
def test_roi_align_values_and_grads_equal_mmcv(fx, ours, device, layout):
    data = fx['roi_align']
    assert len(data['cases']) == 16
    for case in data['cases']:
        feats = data['input'].to(device)
        if layout == 'channels_last':
            feats = feats.contiguous(memory_format=torch.channels_last)
        elif layout == 'strided_view':  # an NHWC buffer seen as NCHW, as LayerNorm outputs used to be
            feats = feats.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        assert layout == 'contiguous' or not feats.is_contiguous()
        x = feats.detach().requires_grad_()
        y = mmcv_roi_align.roi_align(x, data['rois'].to(device), tuple(case['output_size']),
                                     case['spatial_scale'], case['sampling_ratio'], 'avg', case['aligned'])
        y.backward(grad_output_for(y.shape).to(device))
        torch.testing.assert_close(y.detach().cpu(), case['output'], rtol=1e-5, atol=1e-6, msg=_case_id(case))
        torch.testing.assert_close(x.grad.cpu(), case['grad_input'], rtol=1e-5, atol=1e-5, msg=_case_id(case))


@pytest.mark.parametrize('device', DEVICES)
def test_roi_align_empty_rois(ours, device):
    x = torch.randn(1, 3, 8, 8, device=device, requires_grad=True)
    y = mmcv_roi_align.roi_align(x, torch.zeros(0, 5, device=device), (7, 7), 1.0, 0, 'avg', True)
    assert y.shape == (0, 3, 7, 7)
    y.sum().backward()
    assert x.grad is not None and not x.grad.any()


def test_roi_align_max_mode_names_the_op(ours):
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(mmcv_ops.MissingMMCVOp, match="pool_mode='max'.*--full-mmcv"):
        mmcv_roi_align.roi_align(x, torch.tensor([[0., 1, 1, 5, 5]]), (2, 2), 1.0, 0, 'max', True)


@pytest.mark.parametrize('device', DEVICES)
def test_nms_equals_mmcv(fx, ours, device):
    data = fx['nms']
    boxes, scores = data['boxes'].to(device), data['scores'].to(device)
    assert len(scores.unique()) < len(scores) / 2, 'the fixture must hold score ties'
    for case in data['cases']:
        kw = {k: case[k] for k in ('score_threshold', 'max_num') if k in case}
        dets, keep = mmcv_nms.nms(boxes, scores, case['iou_threshold'], offset=case['offset'], **kw)
        assert keep.cpu().tolist() == case['keep'].tolist(), case['iou_threshold']
        torch.testing.assert_close(dets.cpu(), case['dets'])


@pytest.mark.parametrize('device', DEVICES)
def test_batched_nms_equals_mmcv(fx, ours, device):
    boxes, scores = fx['nms']['boxes'].to(device), fx['nms']['scores'].to(device)
    idxs = fx['batched_nms']['idxs'].to(device)
    for case in fx['batched_nms']['cases']:
        dets, keep = mmcv_nms.batched_nms(boxes, scores, idxs, dict(case['nms_cfg']))
        assert keep.cpu().tolist() == case['keep'].tolist(), case['nms_cfg']
        torch.testing.assert_close(dets.cpu(), case['dets'])


def test_nms_empty_and_torchvision_agreement():
    """Empty input; and without ties our order is torchvision's own (an independent implementation)."""
    assert mmcv_ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(200, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + torch.rand(200, 2, generator=g) * 30 + 1], 1)
    scores = torch.randperm(200, generator=g).float()  # distinct
    from torchvision.ops import nms as tv_nms
    assert mmcv_ops.nms(boxes, scores, 0.5).tolist() == tv_nms(boxes, scores, 0.5).tolist()


def test_missing_op_fails_at_call_time_with_a_clear_error(ours):
    stub = ours.softnms  # importing (hasattr in mmcv's ext_loader) works ...
    with pytest.raises(mmcv_ops.MissingMMCVOp, match="'softnms'.*mmcv-lite.*--full-mmcv"):
        stub(torch.zeros(1, 4), torch.zeros(1))  # ... calling names the op and the fix
    with pytest.raises(AttributeError):
        ours.__wrapped__  # dunder look-ups stay AttributeErrors (pickle, inspect)


def test_install_keeps_a_compiled_mmcv(monkeypatch):
    """With a compiled mmcv._ext on disk, install() leaves mmcv alone."""
    import sys
    monkeypatch.setattr(mmcv_ops, 'compiled_mmcv_ops', lambda: '/x/mmcv/_ext.so')
    saved = sys.modules.pop('mmcv._ext', None)
    try:
        assert mmcv_ops.install() is False
        assert 'mmcv._ext' not in sys.modules
    finally:
        if saved is not None:
            sys.modules['mmcv._ext'] = saved
