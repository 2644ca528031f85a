#!/usr/bin/env python
"""Run a detector (mmdet) or a segmentor (mmseg) of this repository on one image and draw its predictions.

Usage::

    python tools/image_demo.py IMAGE CONFIG CHECKPOINT [--out FILE] [--device cpu|cuda:0]
                               [--score-thr 0.3] [--cfg-options k=v ...]

The config's ``default_scope`` decides the task. Detection: ``mmdet.apis.init_detector`` /
``inference_detector`` (the config's test pipeline without ``LoadAnnotations``), the boxes and masks scoring
at least ``--score-thr`` drawn by mmdet's ``DetLocalVisualizer``, and the number of such boxes per class
printed. Segmentation: ``mmseg.apis.init_model`` / ``inference_model``, the label map drawn by mmseg's
``SegLocalVisualizer``, and the fraction of pixels per class printed.

``CHECKPOINT`` is a whole detector/segmentor checkpoint (tools/train.py's ``epoch_N.pth`` / ``iter_N.pth``,
or any ``{'state_dict': ...}`` of the same model). It must fit the config: missing or mis-shaped weights
are refused (a backbone-only checkpoint belongs in the backbone's ``init_cfg``, not here). Class names and
colours come from the checkpoint's ``meta.dataset_meta``, else from the config's test dataset.

The library part is ``glue.inference``. The CPU fall-backs of ``glue.runtime`` are applied (SyncBN -> BN, ...).
Checkpoints are read by the safe reader (``glue.read_runner_checkpoint``: weights only plus a named allow-list).

Exit status: 0 done; 2 with a one-line message when the image, config or checkpoint is missing or
unreadable, or when the checkpoint does not fit the config.
"""
import argparse
import sys

from glue.inference import Refused, run_demo


def parse_args(argv=None):
    from mmengine.config import DictAction

    p = argparse.ArgumentParser(description='Draw the predictions of a detector or segmentor on one image '
                                            '(the config\'s default_scope decides which).')
    p.add_argument('image', help='image file')
    p.add_argument('config', help='config file, e.g. configs/toy/conv2former_toy_maskrcnn.py')
    p.add_argument('checkpoint', help='whole-model checkpoint (e.g. work_dirs/x/epoch_12.pth)')
    p.add_argument('--out', help='picture to write (default work_dirs/image_demo/<image>_pred.png)')
    p.add_argument('--device', default=None, help="'cpu' or 'cuda:N' (default: cuda:0 when available)")
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='detection: draw and count boxes scoring at least this (default 0.3)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run_demo(args.image, args.config, args.checkpoint, args.out, args.device, args.score_thr,
                 args.cfg_options)
    except Refused as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
