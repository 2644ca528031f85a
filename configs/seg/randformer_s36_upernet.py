# RandFormer-S36 + UperNet 160k (ADE20K, 512x512 crops), ImageNet-1K initialisation.
# Size -> ConvNeXt recipe row: s12/s18/s24 -> T, s36/m36 -> S, m48/b36 -> B (here: S).
# lr / layer decay: UperNet ConvNeXt-S (1e-4, stage-wise 0.9).
# drop path 0.2: the RandFormer-S36 ImageNet training value (sail-sg/metaformer's ImageNet training setting; no
# downstream value is published for the MetaFormer baselines).
_base_ = '../_base_/seg/upernet_160k_ade20k-512x512.py'

checkpoint_file = 'randformer_s36.in1k'  # ImageNet-1K RandFormer-S36 (official sail-sg file)

model = dict(
    backbone=dict(
        type='RandFormer',
        arch='s36',
        drop_path_rate=0.2,
        # stage 3-4 random-mixing matrices (14x14 / 7x7 grids) resampled to each input's grid
        rand_resample='bilinear',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))

optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.9))
