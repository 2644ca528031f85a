# Cascade Mask R-CNN + FPN, the ConvNeXt 3x COCO recipe, family-agnostic (see
# mask-rcnn_fpn_3x_coco.py for what is inherited and why; the two files carry the same
# overrides, tests/test_configs.py checks that they stay in sync).
#
# Inherited from mmdet's shipped ConvNeXt-T Cascade config: the three "4conv1fc" box heads
# (ConvFCBBoxHead, 4 shared 3x3 convs + 1 FC) with SyncBN and GIoU loss (weight 10.0,
# decoded boxes), the DETR-style augmentation, batch 2/GPU, 36 epochs, steps 27/33.
_base_ = 'mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'  # noqa

custom_imports = dict(imports=['detection'], allow_failed_imports=False)
checkpoint_file = None  # every model config names its own checkpoint

model = dict(
    backbone=dict(
        _delete_=True,  # drop mmdet's mmpretrain.ConvNeXt; model configs set type/arch/...
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        # norm_eval=True: with 2 images per GPU, BatchNorm batch statistics are too noisy to
        # train, so BN layers (e.g. the Conv2Former stem) stay in eval mode and keep their
        # ImageNet running statistics. No effect on LayerNorm-only backbones.
        norm_eval=True,
        with_cp=False,
        out_norm=True),  # + init_cfg=dict(type='Pretrained', ...) in each model config
    neck=dict(in_channels=None))  # set to the backbone's out_channels by each model config

max_epochs = 36
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1)
]

# fp16 (AmpOptimWrapper); L/XL configs switch to type='OptimWrapper' (fp32).
# Defaults are the Cascade 3x ConvNeXt-T row (lr 2e-4, layer-wise decay 0.7).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=0.7, decay_type='layer_wise'))
