# Conv2Former-T + Mask R-CNN 3x (COCO), ImageNet-1K initialisation.
# lr / layer decay / drop path: Mask R-CNN 3x ConvNeXt-T.
_base_ = '../_base_/det/mask-rcnn_fpn_3x_coco.py'

checkpoint_file = 'conv2former_t.in1k'  # ImageNet-1K pre-trained Conv2Former-T

model = dict(
    backbone=dict(
        type='Conv2Former',
        arch='t',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[72, 144, 288, 576]))

optim_wrapper = dict(
    optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.95))
