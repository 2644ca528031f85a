# ConvNeXt-B + UperNet 160k (ADE20K, 512x512 crops), ImageNet-1K initialisation.
# crop / lr / layer decay / drop path: UperNet ConvNeXt-B (IN-1K, 512)
# (published: 512, 1e-4, stage-wise 0.9, drop path 0.4).
_base_ = '../_base_/seg/upernet_160k_ade20k-512x512.py'

# official ImageNet-1K ConvNeXt-B
checkpoint_file = 'convnext_base.in1k'

model = dict(
    backbone=dict(
        type='ConvNeXt',
        arch='b',
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,  # as the published configs (the checkpoint overwrites it)
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))

optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.9))
