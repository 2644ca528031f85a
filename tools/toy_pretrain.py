#!/usr/bin/env python
"""Toy "ImageNet" pretraining: classify synthetic shape crops, save a classifier checkpoint.

Trains a (toy) config's backbone as a 4-way shape classifier and saves it in the official classifier
layout, so it goes into a detector or segmentor like a real ImageNet release (details: ``glue.toy_pretrain``)::

    python tools/toy_pretrain.py configs/toy/conv2former_toy_maskrcnn.py --out work_dirs/toy_pretrain.pth
    python tools/train.py configs/toy/conv2former_toy_maskrcnn.py \\
        --cfg-options model.backbone.pretrained=work_dirs/toy_pretrain.pth

Writes ``OUT`` and ``OUT`` with ``.json`` (settings, loss curve, accuracy).
"""
import argparse

from glue.toy_pretrain import CROP_SIZE, SHAPE_RANGE, pretrain

def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', help='a config whose model.backbone is pretrained (e.g. configs/toy/...)')
    p.add_argument('--out', required=True, help='checkpoint to write (.pth)')
    p.add_argument('--steps', type=int, default=1200)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--weight-decay', type=float, default=0.05)
    p.add_argument('--size', type=int, default=CROP_SIZE, help=f'crop size (px, default {CROP_SIZE})')
    p.add_argument('--shape-range', type=float, nargs=2, default=SHAPE_RANGE, metavar=('MIN', 'MAX'),
                   help='a shape\'s equivalent circle diameter, as fractions of the crop size (default %(default)s)')
    p.add_argument('--pool', type=int, default=4096, help='number of distinct training crops')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--init', choices=('lecun', 'official'), default='lecun')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    pretrain(a.config, a.out, steps=a.steps, batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
             size=a.size, shape_range=tuple(a.shape_range), pool=a.pool, seed=a.seed, init=a.init,
             cfg_options=a.cfg_options)


if __name__ == '__main__':
    main()
