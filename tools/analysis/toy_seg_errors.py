#!/usr/bin/env python
"""Per-shape errors of a toy segmentor: which shapes of the toy validation set it gets wrong, whole or at the
edges (``glue.toy_seg_errors``, docs/demo.md section 8)::

    python tools/analysis/toy_seg_errors.py work_dirs/demo/seg/iter_2000.pth \\
        [--config configs/toy/conv2former_toy_upernet.py] [--data data/toy/ade/ADEChallengeData2016] [--json OUT]
"""
import argparse

import segmentation  # noqa: F401  (registers the backbones and the mmcv op fall-backs before mmseg loads)
from glue.runtime import write_json
from glue.toy_seg_errors import evaluate, summarize


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('checkpoint', nargs='?',
                   help='a toy segmentor checkpoint (tools/train.py output; none: random weights)')
    p.add_argument('--config', default='configs/toy/conv2former_toy_upernet.py')
    p.add_argument('--data', default='data/toy/ade/ADEChallengeData2016', help='toy ADE20K-layout set')
    p.add_argument('--split', default='validation')
    p.add_argument('--worst', type=int, default=5, help='list this many worst shapes per class')
    p.add_argument('--json', help='also write every shape\'s row here')
    args = p.parse_args(argv)
    rows, classes = evaluate(args.config, args.checkpoint, args.data, args.split)
    summary = summarize(rows, classes, args.worst)
    print(f'per shape: the share of its pixels predicted as {" / ".join(classes)}')
    for name, s in summary.items():
        print(f'  {name}: {s["majority_right"]} of {s["shapes"]} shapes with the majority of their pixels right')
        for r in s['worst']:
            print(f'    {r["image"]}  {r["pixels"]:5d} px  ' + '  '.join(f'{v:.2f}' for v in r['votes']))
    if args.json:
        write_json(args.json, dict(classes=classes, shapes=rows, summary=summary), indent=1)
    return summary


if __name__ == '__main__':
    main()
