"""Our backbone dropped into mmdet's and mmseg's own shipped configs: build, loss step, optimizer constructor."""
import os

import pytest
import torch

from conftest import FIXTURES, det_batch

mmdet = pytest.importorskip('mmdet')
mmseg = pytest.importorskip('mmseg')

from mmengine.hub import get_config  # noqa: E402

TINY = dict(depths=[1, 1, 2, 1], dims=[16, 32, 48, 64], kernel_size=7)
BACKBONE = dict(type='Conv2Former', arch=TINY, drop_path_rate=0.1, norm_eval=True, init_cfg=None)


def test_mask_rcnn_from_mmdet_shipped_config():
    import detection  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    # the official-code fixture checkpoint, loaded through the detector's init_weights (the runner's path)
    ckpt = os.path.join(FIXTURES, 'conv2former', 'tiny_k11.pth.tar')
    cfg.model.backbone = dict(BACKBONE, arch=dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32], kernel_size=11),
                              init_cfg=dict(type='Pretrained', checkpoint=ckpt))  # replace ResNet-50 wholesale
    cfg.model.neck.in_channels = [8, 16, 24, 32]
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert type(model.backbone).__name__ == 'Conv2Former'
    official = torch.load(ckpt, weights_only=False)['state_dict']
    for k, v in model.backbone.state_dict().items():
        if not k.startswith('out_norms'):
            assert torch.equal(v, official[k]), k
    model.train()
    data = model.data_preprocessor(det_batch(), training=True)
    losses = model(**data, mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(v) for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total) and {'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(losses)
    total.backward()
    assert model.backbone.stages[3][0].layer_scale_1.grad is not None
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(det_batch(1), training=False), mode='predict')
    assert len(preds) == 1


def test_upernet_from_mmseg_shipped_base():
    import segmentation  # noqa: F401
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = get_config('mmseg::_base_/models/upernet_r50.py')
    bn = dict(type='BN', requires_grad=True)  # SyncBN needs a GPU process group
    cfg.model.backbone = BACKBONE
    cfg.model.pretrained = None  # the base names ResNet's open-mmlab:// weights; mmseg passes it to the backbone
    cfg.merge_from_dict(dict(model=dict(
        data_preprocessor=dict(size=(128, 128)),
        decode_head=dict(in_channels=TINY['dims'], channels=32, num_classes=4, norm_cfg=bn),
        auxiliary_head=dict(in_channels=TINY['dims'][2], channels=16, num_classes=4, norm_cfg=bn))))
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128), pad_shape=(128, 128)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, 128, 128), generator=g))
        samples.append(s)
    data = model.data_preprocessor(dict(inputs=[torch.randint(0, 255, (3, 128, 128), generator=g, dtype=torch.uint8)
                                                for _ in range(2)], data_samples=samples), training=True)
    losses = model(**data, mode='loss')
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_layer_decay_constructor_registered_and_applied(scope):
    if scope == 'mmdet':
        import detection  # noqa: F401
        from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
    else:
        import segmentation  # noqa: F401
        from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
    from backbones import Conv2Former

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Conv2Former(arch=dict(depths=[1, 1, 9, 1], dims=[8, 16, 24, 32]))
            self.head = torch.nn.Linear(32, 2)

    model = Toy()
    ctor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type='LayerDecayOptimWrapperConstructor',
        optim_wrapper_cfg=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)),
        paramwise_cfg=dict(decay_rate=0.9, decay_type='layer_wise')))
    wrapper = ctor(model)
    groups = {id(p): g for g in wrapper.optimizer.param_groups for p in g['params']}
    lr = lambda p: groups[id(p)]['lr']  # noqa: E731
    wd = lambda p: groups[id(p)]['weight_decay']  # noqa: E731
    bb = model.backbone
    assert lr(model.head.weight) == pytest.approx(1e-4) and wd(model.head.weight) == 0.05
    assert wd(model.head.bias) == 0 and wd(bb.stages[0][0].layer_scale_1) == 0
    assert lr(bb.downsample_layers[0][0].weight) == pytest.approx(1e-4 * 0.9 ** 7)  # stem: id 0 of 8
    assert lr(bb.stages[3][0].attn.v.weight) == pytest.approx(1e-4 * 0.9)  # last stage: id num_layers
    assert lr(bb.stages[2][8].attn.v.weight) == pytest.approx(1e-4 * 0.9 ** 2)  # 3 + 8 // 3 = 5
    assert len(groups) == sum(1 for p in model.parameters())


def test_constructor_found_outside_any_default_scope():
    """mmengine's build_optim_wrapper outside an mmdet/mmseg scope must still find the constructor."""
    import detection  # noqa: F401
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from backbones import Conv2Former

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Conv2Former(arch=dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32]))

    with DefaultScope.overwrite_default_scope('mmengine'):
        wrapper = build_optim_wrapper(Toy(), dict(
            type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
            constructor='LayerDecayOptimWrapperConstructor', paramwise_cfg=dict(decay_rate=0.9)))
    assert len({g['lr'] for g in wrapper.optimizer.param_groups}) > 1


def test_roi_align_reads_our_maps_like_torchvision():
    """mmcv's RoIAlign (what the RoI heads of Mask R-CNN see) on our backbone's and FPN's maps equals
    torchvision's roi_align, an independent implementation that honours strides. Before the backbones
    returned contiguous maps, mmcv read the channels-last views as stripes: the toy detector trained
    its RPN, never its RoI heads, and reached bbox mAP 0.002. With mmcv-lite, mmcv's RoIAlign IS torchvision's
    (glue/mmcv_ops.py) and the comparison would be empty: the contiguity test in test_backbone_contract.py and
    the channels-last cases of test_mmcv_ops.py guard this instead."""
    import detection  # noqa: F401
    from glue.mmcv_ops import compiled_mmcv_ops
    if compiled_mmcv_ops() is None:
        pytest.skip('mmcv-lite: mmcv RoIAlign runs on torchvision here, nothing independent to compare')
    from mmcv.ops import RoIAlign
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from torchvision.ops import roi_align
    register_all_modules()
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    cfg.model.backbone = dict(BACKBONE)
    cfg.model.neck.in_channels = TINY['dims']
    model = MODELS.build(cfg.model).eval()
    x = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    rois = torch.tensor([[0., 8., 12., 70., 90.], [0., 40., 20., 150., 110.], [0., 0., 0., 159., 127.]])
    with torch.no_grad():
        feats = model.backbone(x)
        maps = list(feats) + list(model.neck(feats)[:4])
        for i, f in enumerate(maps):
            scale = 1.0 / (4 * 2 ** (i % 4))
            ours = RoIAlign(7, spatial_scale=scale, sampling_ratio=2, aligned=True)(f, rois)
            ref = roi_align(f, rois, 7, spatial_scale=scale, sampling_ratio=2, aligned=True)
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5, msg=f'map {i}')
