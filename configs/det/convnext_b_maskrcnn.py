# ConvNeXt-B + Mask R-CNN 3x (COCO), ImageNet-1K initialisation.
# Not published for B: base rule (lr 1e-4 / layer-wise decay 0.95 of the Mask R-CNN 3x
# ConvNeXt-T row, drop path 0.7 of convnext_b_cascade.py).
_base_ = '../_base_/det/mask-rcnn_fpn_3x_coco.py'

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
    optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.95))
