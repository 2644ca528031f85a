# Mask R-CNN + FPN, 1x, the protocol of the STM-Evaluation paper ("Demystify Transformers & Convolutions",
# the STM-Evaluation paper's 1x protocol; OpenGVLab/STM-Evaluation detection/configs/unified_models/mask_rcnn_meta.py),
# family-agnostic: a model config adds the backbone type/arch/drop path/checkpoint and the neck in_channels.
#
# Inherited unchanged from mmdet's shipped R50 Mask R-CNN 1x config (the mmdet 3.x port of the files the
# STM configs inherit): the Mask R-CNN R50-FPN model, COCO instances (data/coco/), single-scale training
# (resize to 1333x800, keep ratio) + random flip 0.5, test at 1333x800, padding to a multiple of 32, batch
# 2/GPU (x 8 GPUs = 16 images), 12 epochs with lr steps at epochs 8 and 11 (x0.1).
# Overridden here: custom_imports, the backbone, the warm-up (1000 iterations, linear from 0.001, as STM's
# lr_config), and the optimizer: AdamW lr 1e-4, betas (0.9, 0.999), wd 0.05, no weight decay on norms,
# biases, layer scales (all 1-D) and the backbone's position tables (no_weight_decay(): PVT pos_embed, Swin
# relative_position_bias_table, Halo height_rel/width_rel), and no layer decay (decay_rate=1.0, through the
# same constructor as every other config so the no-decay rules live in one place).
# fp32 (OptimWrapper): the published runs used mmdet 2.x without fp16.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['detection'], allow_failed_imports=False)
checkpoint_file = None  # every model config names its own checkpoint

model = dict(
    backbone=dict(
        _delete_=True,  # drop mmdet's ResNet; model configs set type/arch/...
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,  # the STM trunks hold no BatchNorm
        with_cp=False,
        # official detection recipe: pretrained stage norms dropped, fresh output norms on every map
        stage_norms='skip',
        out_norm=True),  # + init_cfg=dict(type='Pretrained', ...) in each model config
    neck=dict(in_channels=None))  # set to the backbone's out_channels by each model config

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=1.0, decay_type='layer_wise'))

auto_scale_lr = dict(enable=False, base_batch_size=16)
