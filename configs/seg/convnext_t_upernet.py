# ConvNeXt-T + UperNet 160k (ADE20K, 512x512 crops), ImageNet-1K initialisation.
# crop / lr / layer decay / drop path: UperNet ConvNeXt-T
# (published: 512, 1e-4, stage-wise 0.9, drop path 0.4).
_base_ = '../_base_/seg/upernet_160k_ade20k-512x512.py'

# official ImageNet-1K ConvNeXt-T
checkpoint_file = 'convnext_tiny.in1k'

model = dict(
    backbone=dict(
        type='ConvNeXt',
        arch='t',
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,  # as the published configs (the checkpoint overwrites it)
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.9))
