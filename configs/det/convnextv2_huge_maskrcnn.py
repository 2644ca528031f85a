# ConvNeXt V2-Huge + Mask R-CNN 3x (COCO), FCMAE + ImageNet-22K fine-tuned (384) initialisation.
# ConvNeXt V2 publishes no per-model detection/segmentation values (recipes.md 1.2 / 2.1: swept,
# choice not given), so the ConvNeXt recipe of the matching size is used:
# atto/femto/pico/nano/tiny -> T, base -> B (IN-1K), large -> L, huge -> XL (here: XL).
# Not published: base rule (lr 1e-4 / layer-wise decay 0.95 of the Mask R-CNN 3x
# ConvNeXt-T row, drop path 0.8 of convnextv2_huge_cascade.py).
_base_ = '../_base_/det/mask-rcnn_fpn_3x_coco.py'

# official FCMAE + ImageNet-22K fine-tuned (384) ConvNeXt V2-Huge
checkpoint_file = 'convnextv2_huge.fcmae_ft_in22k_in1k_384'

model = dict(
    backbone=dict(
        type='ConvNeXtV2',
        arch='huge',
        drop_path_rate=0.8,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[352, 704, 1408, 2816]))

optim_wrapper = dict(
    type='OptimWrapper',  # fp32: the ConvNeXt-XL recipe (fp16 except L/XL)
    optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.95))
