# Conv2Former-S + Mask R-CNN 3x (COCO), ImageNet-1K initialisation.
# Not published for S: base rule (lr / decay of the ConvNeXt-T row,
# drop path of conv2former_s_cascade.py).
_base_ = '../_base_/det/mask-rcnn_fpn_3x_coco.py'

checkpoint_file = 'conv2former_s.in1k'  # ImageNet-1K pre-trained Conv2Former-S

model = dict(
    backbone=dict(
        type='Conv2Former',
        arch='s',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[72, 144, 288, 576]))

optim_wrapper = dict(
    optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.95))
