# Conv2Former-B + Cascade Mask R-CNN 3x (COCO), ImageNet-1K initialisation.
# drop path: Conv2Former paper (B 0.9); lr / layer decay: Cascade 3x ConvNeXt-B (IN-1K).
_base_ = '../_base_/det/cascade-mask-rcnn_fpn_3x_coco.py'

checkpoint_file = 'conv2former_b.in1k'  # ImageNet-1K pre-trained Conv2Former-B

model = dict(
    backbone=dict(
        type='Conv2Former',
        arch='b',
        drop_path_rate=0.9,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    optimizer=dict(lr=2e-4), paramwise_cfg=dict(decay_rate=0.8))
