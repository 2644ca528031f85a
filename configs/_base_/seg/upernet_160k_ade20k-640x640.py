# UperNet, the ConvNeXt ADE20K 160k recipe with 640x640 crops (the IN-22K L/XL variant).
# Same as upernet_160k_ade20k-512x512.py (the two files carry the same overrides,
# tests/test_configs.py checks that they stay in sync), except, from mmseg's shipped
# ConvNeXt-L 640 config: resize to (2560, 640), 640 crops, sliding-window test 640 / stride 426.
_base_ = 'mmseg::convnext/convnext-large_upernet_8xb2-amp-160k_ade20k-640x640.py'

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
