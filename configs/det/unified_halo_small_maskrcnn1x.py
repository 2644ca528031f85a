# U-Halo small + Mask R-CNN 1x (COCO): the published STM-Evaluation protocol (12 epochs, steps 8/11,
# 1000-iter warm-up, single scale 1333x800 + flip, AdamW lr 1e-4 wd 0.05, no layer decay, 16 images).
# drop path 0.2: the STM detection value for this size (micro 0.1, tiny/small 0.2, base 0.3).
_base_ = '../_base_/det/mask-rcnn_fpn_1x_coco_stm.py'

checkpoint_file = 'unified_halo_small.in1k'  # STM-Evaluation release (ImageNet-1K)

model = dict(
    backbone=dict(
        type='UnifiedHalo',
        arch='small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))
