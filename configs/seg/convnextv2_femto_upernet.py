# ConvNeXt V2-Femto + UperNet 160k (ADE20K, 512x512 crops), FCMAE + ImageNet-1K fine-tuned initialisation.
# ConvNeXt V2 publishes no per-model detection/segmentation values (recipes.md 1.2 / 2.1: swept,
# choice not given), so the ConvNeXt recipe of the matching size is used:
# atto/femto/pico/nano/tiny -> T, base -> B (IN-1K), large -> L, huge -> XL (here: T).
# crop / lr / layer decay / drop path: UperNet ConvNeXt-T
# (published ConvNeXt row: 512, 1e-4, stage-wise 0.9, drop path 0.4).
_base_ = '../_base_/seg/upernet_160k_ade20k-512x512.py'

# official FCMAE + ImageNet-1K fine-tuned ConvNeXt V2-Femto
checkpoint_file = 'convnextv2_femto.fcmae_ft_in1k'

model = dict(
    backbone=dict(
        type='ConvNeXtV2',
        arch='femto',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[48, 96, 192, 384]),
    auxiliary_head=dict(in_channels=192))

optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.9))
