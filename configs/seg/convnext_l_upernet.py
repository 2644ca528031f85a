# ConvNeXt-L + UperNet 160k (ADE20K, 640x640 crops), ImageNet-22K initialisation.
# crop / lr / layer decay / drop path: UperNet ConvNeXt-L (IN-22K, 640)
# (published: 640, 1e-4, stage-wise 0.9, drop path 0.4).
_base_ = '../_base_/seg/upernet_160k_ade20k-640x640.py'

# official ImageNet-22K ConvNeXt-L
checkpoint_file = 'convnext_large.in22k'

model = dict(
    backbone=dict(
        type='ConvNeXt',
        arch='l',
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,  # as the published configs (the checkpoint overwrites it)
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))

optim_wrapper = dict(
    type='OptimWrapper',  # fp32: the ConvNeXt-L recipe (fp16 except L/XL)
    optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.9))
