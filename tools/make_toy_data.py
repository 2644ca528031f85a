#!/usr/bin/env python
"""Write the two small synthetic ("toy") datasets: images of 1-4 shapes (circle, square, triangle) over random
smooth textures, as a COCO-style detection set and an ADE20K-style segmentation set.

Usage::

    python tools/make_toy_data.py [--out data/toy] [--seed 0]
                                  [--num-train 160] [--num-train-seg N] [--num-val 40] [--force]

Same arguments -> byte-identical files; nothing is rewritten when ``<out>/manifest.json`` matches (``--force``
regenerates). The generator and the layout are documented in ``glue.toy_data``.
"""
import argparse
import sys

from glue.toy_data import make_toy_data

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default='data/toy',
                   help='output folder (default: data/toy)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--num-train', type=int, default=160,
                   help='train images per dataset (default: 160)')
    p.add_argument('--num-train-seg', type=int,
                   help='train images of the segmentation set (default: --num-train)')
    p.add_argument('--num-val', type=int, default=40,
                   help='val images per dataset (default: 40)')
    p.add_argument('--force', action='store_true',
                   help='regenerate even if the manifest matches')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    make_toy_data(args.out, seed=args.seed, num_train=args.num_train, num_train_seg=args.num_train_seg,
                  num_val=args.num_val, force=args.force, verbose=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
