# ConvNeXt-S + Cascade Mask R-CNN 3x (COCO), ImageNet-1K initialisation.
# lr / layer decay / drop path: Cascade 3x ConvNeXt-S
# (published: 2e-4, layer-wise 0.7, drop path 0.6).
_base_ = '../_base_/det/cascade-mask-rcnn_fpn_3x_coco.py'

# official ImageNet-1K ConvNeXt-S
checkpoint_file = 'convnext_small.in1k'

model = dict(
    backbone=dict(
        type='ConvNeXt',
        arch='s',
        drop_path_rate=0.6,
        layer_scale_init_value=1.0,  # as the published configs (the checkpoint overwrites it)
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    optimizer=dict(lr=2e-4), paramwise_cfg=dict(decay_rate=0.7))
