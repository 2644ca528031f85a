# ConvNeXt V2-Huge + UperNet 160k (ADE20K, 640x640 crops), FCMAE + ImageNet-22K fine-tuned (384) initialisation.
# ConvNeXt V2 publishes no per-model detection/segmentation values (recipes.md 1.2 / 2.1: swept,
# choice not given), so the ConvNeXt recipe of the matching size is used:
# atto/femto/pico/nano/tiny -> T, base -> B (IN-1K), large -> L, huge -> XL (here: XL).
# crop / lr / layer decay / drop path: UperNet ConvNeXt-XL (IN-22K, 640)
# (published ConvNeXt row: 640, 8e-5, stage-wise 0.9, drop path 0.4).
_base_ = '../_base_/seg/upernet_160k_ade20k-640x640.py'

# official FCMAE + ImageNet-22K fine-tuned (384) ConvNeXt V2-Huge
checkpoint_file = 'convnextv2_huge.fcmae_ft_in22k_in1k_384'

model = dict(
    backbone=dict(
        type='ConvNeXtV2',
        arch='huge',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[352, 704, 1408, 2816]),
    auxiliary_head=dict(in_channels=1408))

optim_wrapper = dict(
    type='OptimWrapper',  # fp32: the ConvNeXt-XL recipe (fp16 except L/XL)
    optimizer=dict(lr=8e-5), paramwise_cfg=dict(decay_rate=0.9))
