# Conv2Former-T + UperNet 160k (ADE20K, 512x512 crops), ImageNet-1K initialisation.
# crop 512: Conv2Former paper; lr / layer decay / drop path: UperNet ConvNeXt-T.
_base_ = '../_base_/seg/upernet_160k_ade20k-512x512.py'

checkpoint_file = 'conv2former_t.in1k'  # ImageNet-1K pre-trained Conv2Former-T

model = dict(
    backbone=dict(
        type='Conv2Former',
        arch='t',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[72, 144, 288, 576]),
    auxiliary_head=dict(in_channels=288))

optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.9))
