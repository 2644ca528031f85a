# IdentityFormer-M48 + Cascade Mask R-CNN 3x (COCO), ImageNet-1K initialisation.
# Size -> ConvNeXt recipe row: s12/s18/s24 -> T, s36/m36 -> S, m48/b36 -> B (here: B).
# lr / layer decay: Cascade 3x ConvNeXt-B (IN-1K) (2e-4, layer-wise 0.8).
# drop path 0.4: the IdentityFormer-M48 ImageNet training value (sail-sg/metaformer's ImageNet training setting; no
# downstream value is published for the MetaFormer baselines).
_base_ = '../_base_/det/cascade-mask-rcnn_fpn_3x_coco.py'

checkpoint_file = 'identityformer_m48.in1k'  # ImageNet-1K IdentityFormer-M48 (official sail-sg file)

model = dict(
    backbone=dict(
        type='IdentityFormer',
        arch='m48',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    optimizer=dict(lr=2e-4), paramwise_cfg=dict(decay_rate=0.8))
