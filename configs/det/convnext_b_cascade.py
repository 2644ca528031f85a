# ConvNeXt-B + Cascade Mask R-CNN 3x (COCO), ImageNet-1K initialisation.
# lr / layer decay / drop path: Cascade 3x ConvNeXt-B (IN-1K)
# (published: 2e-4, layer-wise 0.8, drop path 0.7).
_base_ = '../_base_/det/cascade-mask-rcnn_fpn_3x_coco.py'

# official ImageNet-1K ConvNeXt-B
checkpoint_file = 'convnext_base.in1k'

model = dict(
    backbone=dict(
        type='ConvNeXt',
        arch='b',
        drop_path_rate=0.7,
        layer_scale_init_value=1.0,  # as the published configs (the checkpoint overwrites it)
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[128, 256, 512, 1024]))

optim_wrapper = dict(
    optimizer=dict(lr=2e-4), paramwise_cfg=dict(decay_rate=0.8))
