# ConvNeXt-L + Mask R-CNN 3x (COCO), ImageNet-22K initialisation.
# Not published for L: base rule (lr 1e-4 / layer-wise decay 0.95 of the Mask R-CNN 3x
# ConvNeXt-T row, drop path 0.7 of convnext_l_cascade.py).
_base_ = '../_base_/det/mask-rcnn_fpn_3x_coco.py'

# official ImageNet-22K ConvNeXt-L
checkpoint_file = 'convnext_large.in22k'

model = dict(
    backbone=dict(
        type='ConvNeXt',
        arch='l',
        drop_path_rate=0.7,
        layer_scale_init_value=1.0,  # as the published configs (the checkpoint overwrites it)
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[192, 384, 768, 1536]))

optim_wrapper = dict(
    type='OptimWrapper',  # fp32: the ConvNeXt-L recipe (fp16 except L/XL)
    optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.95))
