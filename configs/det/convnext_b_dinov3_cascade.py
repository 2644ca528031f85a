# ConvNeXt-B + Cascade Mask R-CNN 3x (COCO), DINOv3 initialisation:
# convnext_base.dinov3_lvd1689m (distilled from the DINOv3 ViT-7B on LVD-1689M; timm's hub file, DINOv3 License).
# Recipe: none is published for fine-tuning these models in this form, so this config is convnext_b_cascade.py
# (the ConvNeXt-B recipe of this repository: lr, layer decay, drop path, schedule, crop, precision) with only
# the initialisation changed, and the two runs compare initialisations. The output norms are new, as for every
# ConvNeXt here (the file's final head norm is dropped); the inputs keep the ImageNet mean / std, which timm's
# pretrained cfg gives for these weights too. The README's DINOv3 section says more.
_base_ = './convnext_b_cascade.py'

checkpoint_file = 'convnext_base.dinov3_lvd1689m'

model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
