#!/usr/bin/env python
"""Evaluate a trained detector (mmdet) or segmentor (mmseg) on the config's test set.

One tool for both tasks (the config's ``default_scope`` decides); same conventions as
tools/train.py (``--data-root``, ``--cfg-options``, CPU fall-backs; see ``glue.runtime``).

Examples::

    python tools/test.py configs/det/conv2former_t_maskrcnn.py work_dirs/x/epoch_36.pth
    python tools/test.py configs/seg/conv2former_t_upernet.py iter_160000.pth --show-dir vis/
    tools/dist_test.sh configs/det/conv2former_t_cascade.py epoch_36.pth 8 --out results.pkl
    tools/dist_test.sh configs/seg/convnext_t_upernet.py iter_160000.pth 8 --tta   # multi-scale + flip

``--out FILE.pkl`` dumps the predictions (mmdet's DumpDetResults / mmengine's DumpResults).
``--show-dir DIR`` draws predictions (mmdet's DetLocalVisualizer / mmseg's SegLocalVisualizer):
detection pictures go to ``DIR/<image name>``, segmentation pictures to
``DIR/vis_data/vis_image/``. The metrics are printed at the end and, with ``--metrics-out``,
written as JSON.
"""
import argparse
import json
import os
import os.path as osp
import sys

from glue.runtime import (add_common_args, build_runner, init_distributed, load_config, parse_with_common_args,
                          prepare_config, shutdown_distributed)


def enable_visualization(cfg, show_dir=None, show=False, wait_time=2.0, interval=1) -> None:
    hooks = cfg.get('default_hooks') or {}
    if 'visualization' not in hooks:
        raise RuntimeError('the config has no default_hooks.visualization '
                           '(DetVisualizationHook / SegVisualizationHook)')
    hook = hooks['visualization']
    hook['draw'] = True
    hook['interval'] = interval
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        show_dir = osp.abspath(show_dir)  # mmdet would put a relative one under work_dir/<time>/
        if cfg.default_scope == 'mmdet':
            hook['test_out_dir'] = show_dir
        else:
            cfg.visualizer['save_dir'] = show_dir


def add_dump_metric(runner, scope: str, out: str) -> None:
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must name a .pkl file, got {out!r}')
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults as Dump
    else:
        from mmengine.evaluator import DumpResults as Dump
    runner.test_evaluator.metrics.append(Dump(out_file_path=out))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Test a detector or a segmentor (the config decides which).')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump the predictions to this .pkl file')
    parser.add_argument('--show-dir', help='draw the predictions into this folder')
    parser.add_argument('--show', action='store_true', help='show the predictions in a window')
    parser.add_argument('--wait-time', type=float, default=2.0, help='seconds per shown image')
    parser.add_argument('--show-interval', type=int, default=1,
                        help='draw every N-th test batch (default: every batch)')
    parser.add_argument('--metrics-out', help='also write the metrics to this JSON file')
    parser.add_argument('--tta', action='store_true', help='segmentors: multi-scale (test scale x 0.5 .. 1.75) '
                        '+ flip test, as the papers\' MS mIoU (glue/tta.py); refused for detectors')
    return parse_with_common_args(add_common_args(parser), argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.data_root)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show_dir, args.show, args.wait_time, args.show_interval)
    if args.tta:
        from glue.tta import TTAUnsupportedError, enable_tta
        try:
            print(f'--tta: test scales {enable_tta(cfg)}, each with and without flip', flush=True)
        except TTAUnsupportedError as e:
            sys.exit(f'--tta: {e}')
    prepare_config(cfg, args.config, args.launcher, args.work_dir)
    init_distributed(args.launcher, cfg)
    runner = build_runner(cfg)
    if args.out:
        add_dump_metric(runner, cfg.default_scope, args.out)
    metrics = runner.test()
    if runner.rank == 0:
        print('metrics: ' + json.dumps(metrics, sort_keys=True, default=float), flush=True)
        if args.metrics_out:
            os.makedirs(osp.dirname(osp.abspath(args.metrics_out)), exist_ok=True)
            with open(args.metrics_out, 'w') as f:
                json.dump(metrics, f, indent=1, sort_keys=True, default=float)
    shutdown_distributed()
    return metrics


if __name__ == '__main__':
    main()
