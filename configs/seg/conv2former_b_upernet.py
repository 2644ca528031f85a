# Conv2Former-B + UperNet 160k (ADE20K, 512x512 crops), ImageNet-1K initialisation.
# crop 512: Conv2Former paper; lr / layer decay / drop path: UperNet ConvNeXt-B (IN-1K).
_base_ = '../_base_/seg/upernet_160k_ade20k-512x512.py'

checkpoint_file = 'conv2former_b.in1k'  # ImageNet-1K pre-trained Conv2Former-B

model = dict(
    backbone=dict(
        type='Conv2Former',
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.9))
