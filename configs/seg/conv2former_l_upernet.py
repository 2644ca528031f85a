# Conv2Former-L + UperNet 160k (ADE20K, 640x640 crops), ImageNet-22K initialisation.
# crop 640: Conv2Former paper; lr / layer decay / drop path: UperNet ConvNeXt-L (IN-22K, 640).
_base_ = '../_base_/seg/upernet_160k_ade20k-640x640.py'

checkpoint_file = 'conv2former_l.in22k_ft_in1k'  # ImageNet-22K pre-trained, 1K fine-tuned Conv2Former-L

model = dict(
    backbone=dict(
        type='Conv2Former',
        arch='l',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))

optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.9))
