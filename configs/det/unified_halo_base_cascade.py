# U-Halo base + Cascade Mask R-CNN 3x (COCO), ConvNeXt 3x recipe, ImageNet-1K initialisation.
# Size -> ConvNeXt recipe row: micro/tiny -> T, small -> S, base -> B (here: B).
# lr / layer decay: Cascade 3x ConvNeXt-B (2e-4, layer-wise 0.8).
# drop path 0.3: the STM detection value for this size (micro 0.1, tiny/small 0.2, base 0.3).
_base_ = '../_base_/det/cascade-mask-rcnn_fpn_3x_coco.py'

checkpoint_file = 'unified_halo_base.in1k'  # STM-Evaluation release (ImageNet-1K)

model = dict(
    backbone=dict(
        type='UnifiedHalo',
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[128, 256, 512, 1024]))

optim_wrapper = dict(
    optimizer=dict(lr=2e-4), paramwise_cfg=dict(decay_rate=0.8))
