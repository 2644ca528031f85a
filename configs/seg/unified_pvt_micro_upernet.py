# U-PVT micro + UperNet 160k (ADE20K, 512x512 crops), ImageNet-1K initialisation.
# Size -> ConvNeXt recipe row: micro/tiny -> T, small -> S, base -> B (here: T).
# lr / layer decay: UperNet ConvNeXt-T (1e-4, stage-wise 0.9). No STM segmentation result is published.
# drop path 0.1: the STM detection value for this size (micro 0.1, tiny/small 0.2, base 0.3).
_base_ = '../_base_/seg/upernet_160k_ade20k-512x512.py'

checkpoint_file = 'unified_pvt_micro.in1k'  # STM-Evaluation release (ImageNet-1K)

model = dict(
    backbone=dict(
        type='UnifiedPVT',
        arch='micro',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[32, 64, 160, 256]),
    auxiliary_head=dict(in_channels=160))

optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.9))
