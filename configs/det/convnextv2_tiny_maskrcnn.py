# ConvNeXt V2-Tiny + Mask R-CNN 3x (COCO), FCMAE + ImageNet-1K fine-tuned initialisation.
# ConvNeXt V2 publishes no per-model detection/segmentation values (recipes.md 1.2 / 2.1: swept,
# choice not given), so the ConvNeXt recipe of the matching size is used:
# atto/femto/pico/nano/tiny -> T, base -> B (IN-1K), large -> L, huge -> XL (here: T).
# Not published: base rule (lr 1e-4 / layer-wise decay 0.95 of the Mask R-CNN 3x
# ConvNeXt-T row, drop path 0.4 of convnextv2_tiny_cascade.py).
_base_ = '../_base_/det/mask-rcnn_fpn_3x_coco.py'

# official FCMAE + ImageNet-1K fine-tuned ConvNeXt V2-Tiny
checkpoint_file = 'convnextv2_tiny.fcmae_ft_in1k'

model = dict(
    backbone=dict(
        type='ConvNeXtV2',
        arch='tiny',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.95))
