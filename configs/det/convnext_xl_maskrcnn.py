# ConvNeXt-XL + Mask R-CNN 3x (COCO), ImageNet-22K initialisation.
# Not published for XL: base rule (lr 1e-4 / layer-wise decay 0.95 of the Mask R-CNN 3x
# ConvNeXt-T row, drop path 0.8 of convnext_xl_cascade.py).
_base_ = '../_base_/det/mask-rcnn_fpn_3x_coco.py'

# official ImageNet-22K ConvNeXt-XL
checkpoint_file = 'convnext_xlarge.in22k'

model = dict(
    backbone=dict(
        type='ConvNeXt',
        arch='xl',
        drop_path_rate=0.8,
        layer_scale_init_value=1.0,  # as the published configs (the checkpoint overwrites it)
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[256, 512, 1024, 2048]))

optim_wrapper = dict(
    type='OptimWrapper',  # fp32: the ConvNeXt-XL recipe (fp16 except L/XL)
    optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.95))
