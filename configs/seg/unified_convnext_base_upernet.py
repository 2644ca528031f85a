# U-ConvNeXt base + UperNet 160k (ADE20K, 512x512 crops), ImageNet-1K initialisation.
# Size -> ConvNeXt recipe row: micro/tiny -> T, small -> S, base -> B (here: B).
# lr / layer decay: UperNet ConvNeXt-B (1e-4, stage-wise 0.9). No STM segmentation result is published.
# drop path 0.3: the STM detection value for this size (micro 0.1, tiny/small 0.2, base 0.3).
_base_ = '../_base_/seg/upernet_160k_ade20k-512x512.py'

checkpoint_file = 'unified_convnext_base.in1k'  # STM-Evaluation release (ImageNet-1K)

model = dict(
    backbone=dict(
        type='UnifiedConvNeXt',
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))

optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.9))
