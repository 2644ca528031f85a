"""Every shipped model kind (Mask R-CNN, Cascade Mask R-CNN, UperNet) trains a step and predicts with only the ops glue/mmcv_ops.py provides: the list of ops the configs need
is measured here, not guessed. Runs with mmcv-lite (the default install); with a full compiled mmcv the
ops are mmcv's own and the op-list assertion is skipped."""
import copy
import os.path as osp

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmengine.config import Config  # noqa: E402

from conftest import det_batch, seg_batch  # noqa: E402
from glue import mmcv_ops  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY = dict(type='Conv2Former', arch=dict(depths=[1, 1, 1, 1], dims=[8, 16, 24, 32], kernel_size=7),
            init_cfg=None)
# one config per model kind: the 1x (STM) and 3x Mask R-CNN bases and the 512 / 640 UperNet bases build
# the same heads (they differ in schedule and data only)
RECIPES = ['det/conv2former_t_maskrcnn.py', 'det/conv2former_t_cascade.py', 'seg/conv2former_t_upernet.py']
LITE = mmcv_ops.compiled_mmcv_ops() is None


def _tiny(cfg):
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone = dict(TINY)
    chans = [8, 16, 24, 32]
    if cfg.default_scope == 'mmdet':  # fewer proposals / RoI samples: the same ops, a fraction of the work
        cfg.model.neck.in_channels = chans
        for rpn in (cfg.model.train_cfg.rpn_proposal, cfg.model.test_cfg.rpn):
            rpn.nms_pre, rpn.max_per_img = 200, 32
        rcnn = cfg.model.train_cfg.rcnn
        for stage in (rcnn if isinstance(rcnn, list) else [rcnn]):
            stage.sampler.num = 32
    else:
        cfg.model.decode_head.channels = 32
        cfg.model.auxiliary_head.channels = 16
        cfg.model.decode_head.in_channels = chans
        cfg.model.auxiliary_head.in_channels = chans[2]
        bn = dict(type='BN', requires_grad=True)  # torch's SyncBN needs a process group
        cfg.model.decode_head.norm_cfg = bn
        cfg.model.auxiliary_head.norm_cfg = bn
    return cfg


@pytest.mark.parametrize('rel', RECIPES)
def test_recipe_trains_and_predicts_on_provided_ops(rel):
    from mmengine.registry import DefaultScope
    cfg = _tiny(Config.fromfile(osp.join(ROOT, 'configs', rel)))
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    mmcv_ops.CALLED.clear()
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.train()
        det = cfg.default_scope == 'mmdet'
        data = det_batch(2, 128, 160) if det else seg_batch(2, 128, 160)
        data = model.data_preprocessor(data, training=True)
        losses = model(**data, mode='loss')
        total = sum(v.sum() if torch.is_tensor(v) else sum(v) for k, v in losses.items() if 'loss' in k)
        assert torch.isfinite(total)
        total.backward()
        model.eval()
        with torch.no_grad():
            data = det_batch(1, 128, 160) if det else seg_batch(1, 128, 160)
            preds = model(**model.data_preprocessor(data, training=False), mode='predict')
    assert len(preds) == 1
    if not LITE:
        pytest.skip('a compiled mmcv is installed: its own ops ran')
    called = set(mmcv_ops.CALLED)
    assert called <= set(mmcv_ops.PROVIDED), called - set(mmcv_ops.PROVIDED)
    if det:  # RoI heads, mask targets (roi_align on the masks) and RPN / test NMS
        assert {'roi_align_forward', 'roi_align_backward', 'nms'} <= called, called
    else:
        assert not called, called
