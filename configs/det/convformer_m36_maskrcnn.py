# ConvFormer-M36 + Mask R-CNN 3x (COCO), ImageNet-1K initialisation.
# Size -> ConvNeXt recipe row: s12/s18/s24 -> T, s36/m36 -> S, m48/b36 -> B (here: S).
# lr / layer decay: not published for ConvNeXt-S Mask R-CNN 3x -> base rule (the T row: 1e-4,
# layer-wise 0.95).
# drop path 0.4: the ConvFormer-M36 ImageNet training value (sail-sg/metaformer's ImageNet training setting; no
# downstream value is published for the MetaFormer baselines).
_base_ = '../_base_/det/mask-rcnn_fpn_3x_coco.py'

checkpoint_file = 'convformer_m36.in1k'  # ImageNet-1K ConvFormer-M36 (official sail-sg file)

model = dict(
    backbone=dict(
        type='ConvFormer',
        arch='m36',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 576]))

optim_wrapper = dict(
    optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.95))
