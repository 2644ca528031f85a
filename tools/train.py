#!/usr/bin/env python
"""Train a detector (mmdet) or a segmentor (mmseg) from a config of this repository.

One tool for both tasks: the config's ``default_scope`` ('mmdet' or 'mmseg') and its
``custom_imports`` ('detection' or 'segmentation', which register the backbones and the
layer-decay optimizer constructor) decide. The repository is an installed package
(``make install`` / ``pip install -e .``), so the tool runs from any working directory.

Examples::

    python tools/train.py configs/det/conv2former_t_maskrcnn.py
    python tools/train.py configs/seg/conv2former_t_upernet.py --work-dir work_dirs/t_upernet \\
        --cfg-options train_dataloader.batch_size=4 --data-root /datasets/ade/ADEChallengeData2016
    tools/dist_train.sh configs/det/conv2former_t_cascade.py 8          # 8 GPUs, torchrun
    python tools/train.py CONFIG --resume                                # latest ckpt in work dir

On a machine without CUDA the config is adapted (gloo, SyncBN -> CPU SyncBN across processes or BN in one,
fp32): see ``glue.runtime``.
"""
import argparse

from glue.runtime import (add_common_args, build_runner, init_distributed, load_config, parse_with_common_args,
                          prepare_config, shutdown_distributed)


# ------------------------------------------------------------------------------------ CLI
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a detector or a segmentor (the config decides which).')
    parser.add_argument('config', help='config file, e.g. configs/det/conv2former_t_maskrcnn.py')
    parser.add_argument('--amp', action='store_true',
                        help='mixed-precision training (AmpOptimWrapper; ignored without CUDA)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch size / auto_scale_lr.base_batch_size)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or without a path from the latest '
                        'checkpoint in the work dir')
    return parse_with_common_args(add_common_args(parser), argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.data_root)

    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if not cfg.get('auto_scale_lr', {}).get('base_batch_size'):
            raise RuntimeError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume

    prepare_config(cfg, args.config, args.launcher, args.work_dir)
    init_distributed(args.launcher, cfg)
    runner = build_runner(cfg)
    runner.train()
    shutdown_distributed()
    return runner


if __name__ == '__main__':
    main()
