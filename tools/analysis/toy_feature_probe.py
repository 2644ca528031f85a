#!/usr/bin/env python
"""Linear probes of a toy backbone's frozen features: how well do they separate circle / square / triangle per
pixel (what a decode head starts from) and pooled over each shape (what a RoI head gets)? See
``glue.toy_feature_probe`` and docs/demo.md.

    python tools/analysis/toy_feature_probe.py [--checkpoint work_dirs/demo/pretrain/toy_conv2former_cls.pth]
        [--config configs/toy/conv2former_toy_upernet.py] [--data data/toy/ade/ADEChallengeData2016] [--size 192]

Without ``--checkpoint`` the backbone keeps its random initialisation (the baseline).
"""
import argparse

from glue.toy_feature_probe import probe
from glue.runtime import write_json


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoint', help='toy pretraining checkpoint (default: random weights)')
    p.add_argument('--config', default='configs/toy/conv2former_toy_upernet.py')
    p.add_argument('--data', default='data/toy/ade/ADEChallengeData2016', help='toy ADE20K-layout set')
    p.add_argument('--size', type=int, default=192, help='images resized to size x size')
    p.add_argument('--limit', type=int, help='at most this many images per split')
    p.add_argument('--json', help='also write the results here')
    args = p.parse_args(argv)
    res = probe(args.config, args.data, args.checkpoint, args.size, args.limit)
    print(f'3-way shape accuracy (%, chance 33.3), train / val; backbone: {args.checkpoint or "random"}')
    for name, r in res.items():
        print(f'  {name:9s} per pixel {r["pixel"][0]:5.1f} / {r["pixel"][1]:5.1f}   '
              f'pooled per shape {r["pooled"][0]:5.1f} / {r["pooled"][1]:5.1f}')
    if args.json:
        write_json(args.json, res, indent=1)
    return res


if __name__ == '__main__':
    main()
