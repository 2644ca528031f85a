#!/usr/bin/env python
"""Measure every backbone and the T-size Mask R-CNN / UperNet of every family; write the speed document.

Usage::

    python tools/analysis/speed_table.py [--shape 512 512] [--threads 2] [--repeats 3] [--warmup 1]
        [--names all] [--models conv2former_t ... | --no-models] [--work-dir work_dirs/speed]
        [--out docs/speed_table.md] [--render-only]

Runs ``tools/analysis/benchmark_backbones.py`` (every backbone: forward, forward+backward, peak memory)
and ``tools/analysis/benchmark.py`` (each whole model: images/s) as child processes, keeps their logs and
JSON in ``--work-dir``, and renders the document (date, machine, the commands, the tables) with
``glue.speed_table``. ``--render-only`` re-renders from the JSON of an earlier run. On 2 CPU cores the
default run takes about 40 minutes: run it on a quiet machine.
"""
import argparse
import json
import os.path as osp
import sys

from glue.speed_table import WHOLE_MODELS, measure_all, render

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Benchmark every backbone and the T-size whole models; write the '
                                            'speed document.')
    p.add_argument('--shape', nargs=2, type=int, default=[512, 512], metavar=('H', 'W'))
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--names', nargs='+', default=['all'], help="backbone names (default 'all')")
    p.add_argument('--models', nargs='+', default=list(WHOLE_MODELS),
                   help='backbones whose configs/det/<name>_maskrcnn.py and configs/seg/<name>_upernet.py are '
                        'timed whole (default: the T-size of every family)')
    p.add_argument('--no-models', action='store_true', help='backbones only')
    p.add_argument('--work-dir', default='work_dirs/speed', help='logs and JSON of the runs')
    p.add_argument('--out', default='docs/speed_table.md', help='the document to write')
    p.add_argument('--render-only', action='store_true', help='re-render from --work-dir/run.json')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    info_file = osp.join(args.work_dir, 'run.json')
    if args.render_only:
        with open(info_file) as f:
            info = json.load(f)
    else:
        info = measure_all(args.work_dir, args.shape, args.threads, args.repeats, args.warmup, args.names,
                           None if args.no_models else args.models, root=ROOT)
        with open(info_file, 'w') as f:
            json.dump(info, f, indent=1)
    with open(args.out, 'w') as f:
        f.write(render(info))
    print(f'wrote {args.out} (raw numbers and logs in {args.work_dir})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
