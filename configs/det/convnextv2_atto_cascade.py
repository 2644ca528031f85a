# ConvNeXt V2-Atto + Cascade Mask R-CNN 3x (COCO), FCMAE + ImageNet-1K fine-tuned initialisation.
# ConvNeXt V2 publishes no per-model detection/segmentation values (recipes.md 1.2 / 2.1: swept,
# choice not given), so the ConvNeXt recipe of the matching size is used:
# atto/femto/pico/nano/tiny -> T, base -> B (IN-1K), large -> L, huge -> XL (here: T).
# lr / layer decay / drop path: Cascade 3x ConvNeXt-T
# (published ConvNeXt row: 2e-4, layer-wise 0.7, drop path 0.4).
_base_ = '../_base_/det/cascade-mask-rcnn_fpn_3x_coco.py'

# official FCMAE + ImageNet-1K fine-tuned ConvNeXt V2-Atto
checkpoint_file = 'convnextv2_atto.fcmae_ft_in1k'

model = dict(
    backbone=dict(
        type='ConvNeXtV2',
        arch='atto',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[40, 80, 160, 320]))

optim_wrapper = dict(
    optimizer=dict(lr=2e-4), paramwise_cfg=dict(decay_rate=0.7))
