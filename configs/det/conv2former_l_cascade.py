# Conv2Former-L + Cascade Mask R-CNN 3x (COCO), ImageNet-22K initialisation.
# lr / layer decay / drop path: Cascade 3x ConvNeXt-L (IN-22K).
_base_ = '../_base_/det/cascade-mask-rcnn_fpn_3x_coco.py'

checkpoint_file = 'conv2former_l.in22k_ft_in1k'  # ImageNet-22K pre-trained, 1K fine-tuned Conv2Former-L

model = dict(
    backbone=dict(
        type='Conv2Former',
        arch='l',
        drop_path_rate=0.7,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[128, 256, 512, 1024]))

optim_wrapper = dict(
    type='OptimWrapper',  # fp32 for L (the recipe uses fp16 except L/XL)
    optimizer=dict(lr=1e-4), paramwise_cfg=dict(decay_rate=0.7))
