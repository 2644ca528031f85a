# U-ConvNeXt micro + Mask R-CNN 3x (COCO), ConvNeXt 3x recipe, ImageNet-1K initialisation.
# Size -> ConvNeXt recipe row: micro/tiny -> T, small -> S, base -> B (here: T).
# lr / layer decay: Mask R-CNN 3x ConvNeXt-T (1e-4, layer-wise 0.95; the only published 3x Mask R-CNN row).
# drop path 0.1: the STM detection value for this size (micro 0.1, tiny/small 0.2, base 0.3).
_base_ = '../_base_/det/mask-rcnn_fpn_3x_coco.py'

checkpoint_file = 'unified_convnext_micro.in1k'  # STM-Evaluation release (ImageNet-1K)

model = dict(
    backbone=dict(
        type='UnifiedConvNeXt',
        arch='micro',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[32, 64, 128, 256]))

optim_wrapper = dict(
    optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.95))
