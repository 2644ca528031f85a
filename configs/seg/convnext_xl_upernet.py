# ConvNeXt-XL + UperNet 160k (ADE20K, 640x640 crops), ImageNet-22K initialisation.
# crop / lr / layer decay / drop path: UperNet ConvNeXt-XL (IN-22K, 640)
# (published: 640, 8e-5, stage-wise 0.9, drop path 0.4).
_base_ = '../_base_/seg/upernet_160k_ade20k-640x640.py'

# official ImageNet-22K ConvNeXt-XL
checkpoint_file = 'convnext_xlarge.in22k'

model = dict(
    backbone=dict(
        type='ConvNeXt',
        arch='xl',
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,  # as the published configs (the checkpoint overwrites it)
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[256, 512, 1024, 2048]),
    auxiliary_head=dict(in_channels=1024))

optim_wrapper = dict(
    type='OptimWrapper',  # fp32: the ConvNeXt-XL recipe (fp16 except L/XL)
    optimizer=dict(lr=8e-5), paramwise_cfg=dict(decay_rate=0.9))
