# Toy Mask R-CNN for CPU demos and tests: the real conv2former_n_maskrcnn.py recipe with the data,
# resolution, schedule and model width swapped for the synthetic shapes set (tools/make_toy_data.py,
# classes circle / square / triangle, images ~256x256). Trains from scratch (or from a toy checkpoint,
# below) in minutes on 2 CPU cores:
#   python tools/make_toy_data.py --out data/toy
#   python tools/train.py configs/toy/conv2former_toy_maskrcnn.py --work-dir work_dirs/toy_det
# The demo (tools/run_demo.py) first pretrains this backbone as a shape classifier and starts from
# that checkpoint, as a real run starts from ImageNet weights:
#   python tools/toy_pretrain.py configs/toy/conv2former_toy_maskrcnn.py --out work_dirs/toy_cls.pth
#   python tools/train.py configs/toy/conv2former_toy_maskrcnn.py \
#       --cfg-options model.backbone.pretrained=work_dirs/toy_cls.pth
_base_ = '../det/conv2former_n_maskrcnn.py'

data_root = 'data/toy/coco/'
metainfo = dict(
    classes=('circle', 'square', 'triangle'),
    palette=[(220, 20, 60), (0, 128, 255), (60, 180, 75)])
img_scale = (256, 256)
max_epochs = 8  # 12 gave bbox mAP 0.72: 8 keeps it above 0.6 in two thirds of the time (docs/demo.md)
base_lr = 1e-3

# A small Conv2Former trained from scratch (no pretrained weights offline); thin FPN and heads.
# layer_scale_init 1.0 (the official 1e-6 keeps the blocks near identity for hundreds of steps when
# nothing is pretrained); RoIs of the toy shapes (28-100 px) are pooled from P3/P4 instead of all
# from P2 (finest_scale 16 instead of 56), which gives the RoI heads features that see whole shapes.
model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,
            depths=[1, 1, 2, 1],
            dims=[32, 64, 128, 256],
            kernel_size=7,
            layer_scale_init=1.0),
        drop_path_rate=0.0,
        norm_eval=False,  # from scratch: let the stem BN learn its statistics (batch 4)
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64, finest_scale=16),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=64, finest_scale=16),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[int(max_epochs * 0.75)],
        gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',  # fp32: AMP needs a GPU
    optimizer=dict(lr=base_lr),
    paramwise_cfg=dict(decay_rate=0.95))

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=10)
# Reproducible: a fixed seed (mmengine otherwise draws one per run: the demo's former run-to-run spread) for
# the weights, the sampler and the data-loader workers. On CPU with a fixed thread count the kernels are
# deterministic without more, and two runs are bitwise equal (tests/test_dist_reproducible.py,
# tests/test_exact_resume.py). deterministic=True adds nothing on CPU, and on CUDA it makes torch refuse
# the backward of bilinear upsampling (UperNet, losses at full resolution): set it to True on a GPU only
# with ops that have deterministic kernels.
randomness = dict(seed=0, deterministic=False)
