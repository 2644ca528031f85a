"""ChannelsLastHook (glue/memory_format.py): the same numbers in channels_last memory, a refusal where a
compiled mmcv RoI op would read the maps wrongly, and the DDP wrapper that converts before wrapping."""
import copy

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

from conftest import det_batch, seg_batch  # noqa: E402
from glue import memory_format, mmcv_ops  # noqa: E402

SEG = 'configs/toy/conv2former_toy_upernet.py'
DET = 'configs/toy/conv2former_toy_maskrcnn.py'


def _build(path, bn=False):
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None
    if bn:  # torch's SyncBN needs a process group: one process is BN (as glue.runtime makes it on CPU)
        for head in ('decode_head', 'auxiliary_head'):
            cfg.model[head].norm_cfg = dict(type='BN', requires_grad=True)
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, model


def _losses_and_grads(model, batch):
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the RoI samplers draw from the global generator
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    loss.backward()
    with torch.no_grad():  # BN's running statistics as before: the eval logits compare the same weights
        for n, b in model.named_buffers():
            b.copy_(buffers[n])
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _heads_are_channels_last(model):
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)
             and m.weight.shape[1] > 1 and m.weight.shape[2] * m.weight.shape[3] > 1]
    assert convs
    return all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)


def test_segmentor_same_loss_gradients_and_logits():
    _, model = _build(SEG, bn=True)
    batch = seg_batch(num_classes=4)
    loss0, grads0 = _losses_and_grads(model, batch)
    model.eval()
    with torch.no_grad():
        logits0 = model(**model.data_preprocessor(copy.deepcopy(batch), False), mode='tensor')
    params = {n: p for n, p in model.named_parameters()}
    assert not _heads_are_channels_last(model)
    assert memory_format.to_channels_last(model) > 0
    assert _heads_are_channels_last(model)
    assert all(p is params[n] for n, p in model.named_parameters())  # the optimizer keeps its parameters
    assert memory_format.to_channels_last(model) == 0  # idempotent
    loss1, grads1 = _losses_and_grads(model, batch)
    model.eval()
    with torch.no_grad():
        logits1 = model(**model.data_preprocessor(copy.deepcopy(batch), False), mode='tensor')
    assert logits1.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(logits1, logits0, rtol=1e-4, atol=1e-5)
    assert loss1 == pytest.approx(loss0, rel=1e-5)
    assert grads1.keys() == grads0.keys()
    for n in grads0:
        torch.testing.assert_close(grads1[n], grads0[n], rtol=1e-3, atol=1e-5 * float(grads0[n].abs().max()) + 1e-8,
                                   msg=lambda m, n=n: f'{n}: {m}')


@pytest.mark.skipif(mmcv_ops.compiled_mmcv_ops() is not None, reason='needs mmcv-lite (torchvision RoIAlign)')
def test_detector_on_torchvision_ops_reads_channels_last_maps():
    """The provided RoIAlign reads channels_last FPN maps correctly: the same RoI features (values and gradients)
    as from the NCHW maps, and the same Mask R-CNN loss. (Whole-model gradients are not compared: a last-bit
    difference in the FPN can move a proposal across an NMS or sampling threshold.)"""
    _, model = _build(DET)
    batch = det_batch()
    loss0, _ = _losses_and_grads(model, batch)
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(model.data_preprocessor(copy.deepcopy(batch), False)['inputs'])
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(64, 2, generator=g) * 120
    wh = 4 + torch.rand(64, 2, generator=g) * 60
    rois = torch.cat([torch.arange(64).remainder(2).float()[:, None], xy, xy + wh], 1)
    extractor = model.roi_head.bbox_roi_extractor
    outs, grads = [], []
    for layout in (torch.contiguous_format, torch.channels_last):
        maps = [f.detach().contiguous(memory_format=layout).requires_grad_() for f in feats[:extractor.num_inputs]]
        out = extractor(maps, rois)
        out.backward(torch.ones_like(out))
        outs.append(out.detach())
        grads.append([m.grad for m in maps])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    memory_format.to_channels_last(model)
    loss1, _ = _losses_and_grads(model, batch)
    assert loss1 == pytest.approx(loss0, rel=1e-3)


def test_refused_with_compiled_mmcv_roi_ops(monkeypatch):
    _, model = _build(DET)
    monkeypatch.setattr(mmcv_ops, 'compiled_mmcv_ops', lambda: '/site-packages/mmcv/_ext.so')
    with pytest.raises(RuntimeError, match=r'compiled mmcv RoI ops .*roi_head\.bbox_roi_extractor\.roi_layers\.0'):
        memory_format.to_channels_last(model)
    _, seg = _build(SEG, bn=True)  # no RoI op: converted with a compiled mmcv too
    assert memory_format.to_channels_last(seg) > 0


def test_ddp_wrapper_only_under_a_launcher():
    cfg = Config.fromfile(SEG)
    from glue.resume import has_custom_hook
    assert has_custom_hook(cfg, 'ChannelsLastHook') and not has_custom_hook(Config.fromfile(DET), 'ChannelsLastHook')
    plain = copy.deepcopy(cfg)
    assert not memory_format.use_channels_last_ddp(plain, 'none') and plain.get('model_wrapper_cfg') is None
    dist = copy.deepcopy(cfg)
    dist.model_wrapper_cfg = dict(type='MMDistributedDataParallel', broadcast_buffers=False, device_ids=None)
    assert memory_format.use_channels_last_ddp(dist, 'pytorch')
    assert dist.model_wrapper_cfg == dict(type='ChannelsLastDDP', broadcast_buffers=False, device_ids=None)
    other = copy.deepcopy(cfg)
    other.model_wrapper_cfg = dict(type='MMFullyShardedDataParallel')
    assert not memory_format.use_channels_last_ddp(other, 'pytorch')  # left alone: the hook converts later
    det = Config.fromfile(DET)
    assert not memory_format.use_channels_last_ddp(det, 'pytorch')  # no hook, no change
