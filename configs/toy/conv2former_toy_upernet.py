# Toy UperNet for CPU demos and tests: the real conv2former_n_upernet.py recipe with the data,
# resolution, schedule and model width swapped for the synthetic shapes set (tools/make_toy_data.py,
# ADE20K layout, classes background / circle / square / triangle, images ~256x256). Trains from
# scratch (or from a toy checkpoint, below) in minutes on 2 CPU cores:
#   python tools/make_toy_data.py --out data/toy
#   python tools/train.py configs/toy/conv2former_toy_upernet.py --work-dir work_dirs/toy_seg
# The demo (tools/run_demo.py) first pretrains this backbone as a shape classifier and starts from
# that checkpoint, as a real run starts from ImageNet weights:
#   python tools/toy_pretrain.py configs/toy/conv2former_toy_upernet.py --out work_dirs/toy_cls.pth
#   python tools/train.py configs/toy/conv2former_toy_upernet.py \
#       --cfg-options model.backbone.pretrained=work_dirs/toy_cls.pth
_base_ = '../seg/conv2former_n_upernet.py'

data_root = 'data/toy/ade/ADEChallengeData2016'
metainfo = dict(
    classes=('background', 'circle', 'square', 'triangle'),
    palette=[[120, 120, 120], [255, 0, 0], [0, 255, 0], [0, 0, 255]])
crop_size = (192, 192)
# training resizes to 0.64-1.29 of img_scale (the old (240, 192) x 0.75-1.5: the same absolute range) and crops;
# the test scale sits at 1.14x, inside that range: on three models it gave 2.5-4.4 mIoU more than (280, 224)
# (and (280, 224) 4 more than (240, 192)): the shapes are told apart better a little larger (docs/demo.md)
img_scale = (280, 224)
test_scale = (320, 256)
# measured: 400 iterations only learn the class prior (mIoU 22.1, all background); from one checkpoint, 1000 / 1500 /
# 2000 / 2500 iterations gave squares 11.8 / 56.9 / 60.8 / 64.3 IoU (docs/demo.md)
max_iters = 2000
base_lr = 4e-3  # the heads' lr; the backbone's is far lower (decay_rate below)
# the recipe's SyncBN: in one process it becomes BN, under the launcher on CPU our CPU SyncBN (glue.runtime); the
# pyramid pooling's BN over a 1x1 pool needs the statistics of the whole batch, not of one process's 2 images
norm_cfg = dict(type='SyncBN', requires_grad=True)

# A small Conv2Former trained from scratch (no pretrained weights offline); thin heads.
model = dict(
    # LeCun-normal init (std 1/sqrt(fan_in)) of every conv before the heads apply their own: the
    # official trunc-normal(0.02) makes the modulation product a * v of each block ~1e-4 of the
    # residual, so the blocks barely train in minutes (toy probe, 300 steps: mIoU 26.7 -> 31.0).
    init_cfg=dict(type='Kaiming', layer='Conv2d', mode='fan_in', nonlinearity='linear',
                  distribution='normal'),
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, depths=[1, 1, 2, 1], dims=[32, 64, 128, 256], kernel_size=7,
                  layer_scale_init=1.0),  # from scratch: 1e-6 keeps blocks near identity too long
        drop_path_rate=0.0,
        norm_eval=False,  # from scratch: let the stem BN learn its statistics
        init_cfg=None),
    # the decode head reads stages 2-4 (strides 8-32), not the stride-4 stage 1: its FPN and 3x3 fpn_bottleneck
    # then run on 24x24 instead of 48x48 maps, and an iteration takes 0.23 s instead of 0.35 s (1 thread) with
    # the same mIoU (72.2 against 69.8 for one checkpoint, docs/demo.md); shapes are 16-112 px
    decode_head=dict(
        in_channels=[64, 128, 256], in_index=[1, 2, 3], channels=64, num_classes=4, norm_cfg=norm_cfg,
        # the loss on the hard pixels (the GT class's probability < 0.7, at least 20k of the 147k of a batch):
        # 87% of the pixels are easy background; one checkpoint: squares 44 -> 49 IoU, mIoU 69.8 -> 71.8
        sampler=dict(type='OHEMPixelSampler', thresh=0.7, min_kept=20000)),
    auxiliary_head=dict(in_channels=128, channels=32, num_classes=4, norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'))  # toy images are small

# ADE20KDataset only accepts (a subset of) the 150 ADE classes: use BaseSegDataset with the
# ADE conventions (label 0 = ignored, reduce_zero_label=True) and PNG images.
toy_dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    reduce_zero_label=True,
    img_suffix='.png',
    seg_map_suffix='.png')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.64, 1.29), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=test_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        toy_dataset,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    dataset=dict(
        toy_dataset,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# the decode head reads stages 2-4, so the backbone's stage-1 output norm gets no gradient: DDP (--seg-procs 2,
# tests/test_dist_reproducible.py) must be told
find_unused_parameters = True
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=50, end=max_iters)
]
optim_wrapper = dict(
    type='OptimWrapper',  # fp32: AMP needs a GPU
    optimizer=dict(lr=base_lr),
    # Layer-wise lr decay 0.5 (the recipe's 0.9 is for ImageNet backbones fine-tuned at lr 1e-4): the toy heads
    # need a high lr to learn in 2000 iterations, and with 0.9 the backbone's last stage trained at 0.73x that
    # lr, lost the shape identity its pretraining gave it, and the segmentor labelled every shape "circle"
    # (mIoU 33; 0.35 / 0.5 / 0.65 gave 66.5 / 69.8 / 59.8 at lr 2e-3: docs/demo.md). With 0.5 the last stage
    # trains at 1/8 of the heads' lr, the stem at 1/128.
    paramwise_cfg=dict(decay_rate=0.5))

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
log_processor = dict(window_size=10)
# channels_last convolutions in the heads: on CPU the toy UperNet trains 1.2-1.35x faster per iteration (the 3x3
# fpn_bottleneck's backward 186 -> 74 ms; glue/memory_format.py, docs/speed.md)
custom_hooks = [dict(type='ChannelsLastHook')]
# Reproducible: a fixed seed (mmengine otherwise draws one per run: the demo's former run-to-run spread) for
# the weights, the sampler and the data-loader workers. On CPU with a fixed thread count the kernels are
# deterministic without more, and two runs are bitwise equal (tests/test_dist_reproducible.py,
# tests/test_exact_resume.py). deterministic=True adds nothing on CPU, and on CUDA it makes torch refuse
# the backward of bilinear upsampling (UperNet, losses at full resolution): set it to True on a GPU only
# with ops that have deterministic kernels.
randomness = dict(seed=0, deterministic=False)
