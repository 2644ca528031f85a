# ConvNeXt V2-Base + Mask R-CNN 3x (COCO), FCMAE + ImageNet-1K fine-tuned initialisation.
# ConvNeXt V2 publishes no per-model detection/segmentation values (recipes.md 1.2 / 2.1: swept,
# choice not given), so the ConvNeXt recipe of the matching size is used:
# atto/femto/pico/nano/tiny -> T, base -> B (IN-1K), large -> L, huge -> XL (here: B).
# Not published: base rule (lr 1e-4 / layer-wise decay 0.95 of the Mask R-CNN 3x
# ConvNeXt-T row, drop path 0.7 of convnextv2_base_cascade.py).
_base_ = '../_base_/det/mask-rcnn_fpn_3x_coco.py'

# official FCMAE + ImageNet-1K fine-tuned ConvNeXt V2-Base
checkpoint_file = 'convnextv2_base.fcmae_ft_in1k'

model = dict(
    backbone=dict(
        type='ConvNeXtV2',
        arch='base',
        drop_path_rate=0.7,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[128, 256, 512, 1024]))

optim_wrapper = dict(
    optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.95))
