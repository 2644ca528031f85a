# Conv2Former-N + Cascade Mask R-CNN 3x (COCO), ImageNet-1K initialisation.
# lr / layer decay / drop path: Cascade 3x ConvNeXt-T (N -> ConvNeXt-T).
_base_ = '../_base_/det/cascade-mask-rcnn_fpn_3x_coco.py'

checkpoint_file = 'conv2former_n.in1k'  # ImageNet-1K pre-trained Conv2Former-N

model = dict(
    backbone=dict(
        type='Conv2Former',
        arch='n',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(
    optimizer=dict(lr=2e-4), paramwise_cfg=dict(decay_rate=0.7))
