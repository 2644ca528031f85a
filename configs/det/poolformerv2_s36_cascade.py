# PoolFormerV2-S36 + Cascade Mask R-CNN 3x (COCO), ImageNet-1K initialisation.
# Size -> ConvNeXt recipe row: s12/s18/s24 -> T, s36/m36 -> S, m48/b36 -> B (here: S).
# lr / layer decay: Cascade 3x ConvNeXt-S (2e-4, layer-wise 0.7).
# drop path 0.2: the PoolFormerV2-S36 ImageNet training value (sail-sg/metaformer's ImageNet training setting; no
# downstream value is published for the MetaFormer baselines).
_base_ = '../_base_/det/cascade-mask-rcnn_fpn_3x_coco.py'

checkpoint_file = 'poolformerv2_s36.in1k'  # ImageNet-1K PoolFormerV2-S36 (official sail-sg file)

model = dict(
    backbone=dict(
        type='PoolFormerV2',
        arch='s36',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    optimizer=dict(lr=2e-4), paramwise_cfg=dict(decay_rate=0.7))
