# UperNet, the ConvNeXt ADE20K 160k recipe (ConvNeXt paper / its semantic_segmentation configs),
# 512x512 crops, family-agnostic: a model config only adds the backbone type/arch/drop path/
# checkpoint, the head in_channels, and the per-size lr / layer-decay rate.
#
# Inherited unchanged from mmseg's shipped ConvNeXt-T UperNet config: UperHead (512 channels)
# + FCN auxiliary head on stage 3 (in_index 2, loss weight 0.4), SyncBN in both heads; ADE20K
# (data/ade/ADEChallengeData2016, 150 classes) with resize to (2048, 512) ratio 0.5-2.0, 512
# crop, flip, photometric distortion; batch 2/GPU (x 8 GPUs = 16); 160k iterations; linear
# warm-up 1500 iters then poly (power 1.0, min lr 0); sliding-window test 512 / stride 341.
# Overridden here: custom_imports (mmseg's file imports mmpretrain), the backbone, and the
# optimizer wrapper (our layer-decay constructor instead of mmseg's
# LearningRateDecayOptimizerConstructor; num_layers is derived from the backbone).
_base_ = 'mmseg::convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py'

custom_imports = dict(imports=['segmentation'], allow_failed_imports=False)
checkpoint_file = None  # every model config names its own checkpoint

model = dict(
    backbone=dict(
        _delete_=True,  # drop mmseg's mmpretrain.ConvNeXt; model configs set type/arch/...
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        # norm_eval=True: with 2 images per GPU, BatchNorm batch statistics are too noisy to
        # train, so BN layers (e.g. the Conv2Former stem) stay in eval mode and keep their
        # ImageNet running statistics. No effect on LayerNorm-only backbones.
        norm_eval=True,
        with_cp=False,
        out_norm=True),  # + init_cfg=dict(type='Pretrained', ...) in each model config
    decode_head=dict(in_channels=None),  # the backbone's out_channels (model configs)
    auxiliary_head=dict(in_channels=None))  # the backbone's out_channels[2]

# fp16 (AmpOptimWrapper, dynamic loss scale by default); AdamW wd 0.05 (no decay on 1-D
# params, handled by the constructor); stage-wise layer decay 0.9.
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise'))
