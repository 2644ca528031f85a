# Mask R-CNN + FPN, the ConvNeXt 3x COCO recipe (ConvNeXt paper / its object_detection configs),
# family-agnostic: a model config only adds the backbone type/arch/drop path/checkpoint, the
# neck in_channels, and the per-size lr / layer-decay rate.
#
# Inherited unchanged from mmdet's shipped ConvNeXt-T config: the Mask R-CNN R50-FPN model,
# the COCO instance dataset (data/coco/, test at 1333x800), the DETR-style multi-scale + crop
# train augmentation, batch 2/GPU (x 8 GPUs = 16), 36 epochs with steps at 27/33.
# Overridden here: custom_imports (mmdet's file imports mmpretrain), the backbone, the 500-iter
# warm-up (mmdet's file uses 1000, the ConvNeXt recipe 500), and the optimizer wrapper (our
# layer-decay constructor instead of mmdet's LearningRateDecayOptimizerConstructor; no
# hard-coded num_layers, the constructor derives it from the backbone).
#
# Rule for values no source publishes (Mask R-CNN 3x for S/B/L): lr 1e-4 and layer-wise decay
# 0.95 of the published Mask R-CNN 3x ConvNeXt-T row; drop path = the drop path this repo's
# Cascade 3x config of the same model uses (the only per-size detection value published).
_base_ = 'mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py'

custom_imports = dict(imports=['detection'], allow_failed_imports=False)
checkpoint_file = None  # every model config names its own checkpoint

model = dict(
    backbone=dict(
        _delete_=True,  # drop mmdet's mmpretrain.ConvNeXt; model configs set type/arch/...
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        # norm_eval=True: with 2 images per GPU, BatchNorm batch statistics are too noisy to
        # train, so BN layers (e.g. the Conv2Former stem) stay in eval mode and keep their
        # ImageNet running statistics. No effect on LayerNorm-only backbones.
        norm_eval=True,
        with_cp=False,
        out_norm=True),  # + init_cfg=dict(type='Pretrained', ...) in each model config
    neck=dict(in_channels=None))  # set to the backbone's out_channels by each model config

max_epochs = 36
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1)
]

# fp16 (AmpOptimWrapper); L/XL configs switch to type='OptimWrapper' (fp32).
# Weight decay 0.05; 1-D parameters (norms, biases, layer scales) get none (constructor).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=0.95, decay_type='layer_wise'))
