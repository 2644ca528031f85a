#!/usr/bin/env python
"""Parameters and FLOPs of the whole detector or segmentor a config builds (conventions: ``glue.flops``).

Examples::

    python tools/analysis/get_flops.py configs/det/convnext_t_maskrcnn.py       # 1280x800
    python tools/analysis/get_flops.py configs/seg/convnext_t_upernet.py --shape 512 2048
    python tools/analysis/get_flops.py configs/det/caformer_s18_cascade.py --device cpu --json f.json
"""
import argparse
import os.path as osp
import sys

from glue.flops import format_result, get_flops
from glue.runtime import write_json

def parse_args(argv=None):
    from mmengine.config import DictAction

    p = argparse.ArgumentParser(description='Parameters and FLOPs (multiply-adds) of the whole model '
                                'built from a config.')
    p.add_argument('config')
    p.add_argument('--shape', type=int, nargs='+', metavar='H W',
                   help='input height and width (one value: square); default 800 1280 for detection, '
                   'the crop size for segmentation')
    p.add_argument('--device', default='meta', choices=('meta', 'cpu'),
                   help='meta: shapes only, fast (default); cpu: a real forward with random weights')
    p.add_argument('--json', metavar='FILE', help='also write the result as JSON')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    args = p.parse_args(argv)
    if args.shape and len(args.shape) not in (1, 2):
        p.error('--shape takes H W or one size')
    return args


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.config):
        print(f'get_flops.py: error: config not found: {args.config}', file=sys.stderr)
        sys.exit(2)
    shape = None
    if args.shape:
        shape = args.shape * 2 if len(args.shape) == 1 else args.shape
    res = get_flops(args.config, shape, args.device, args.cfg_options)
    print(format_result(res))
    if args.json:
        write_json(args.json, res)
    return res


if __name__ == '__main__':
    main()
