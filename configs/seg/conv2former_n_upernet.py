# Conv2Former-N + UperNet 160k (ADE20K, 512x512 crops), ImageNet-1K initialisation.
# lr / layer decay / drop path: UperNet ConvNeXt-T (N -> ConvNeXt-T).
_base_ = '../_base_/seg/upernet_160k_ade20k-512x512.py'

checkpoint_file = 'conv2former_n.in1k'  # ImageNet-1K pre-trained Conv2Former-N

model = dict(
    backbone=dict(
        type='Conv2Former',
        arch='n',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))

optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.9))
