#!/usr/bin/env python
"""Check every config against the recipe table (``backbones/recipes.py``) and write docs/recipes.md from it.

Examples::

    python tools/analysis/recipes.py             # write docs/recipes.md; exit 1 if a config disagrees
    python tools/analysis/recipes.py --check     # write nothing; exit 1 (naming each key) if a config or the doc
                                                 # disagrees with the table, or a config has no row / a row no config
    python tools/analysis/recipes.py --check configs/det/convnext_t_cascade.py   # only these configs

A config is read as mmengine reads it (its bases included, custom imports not run: ~0.1 s a config); what is
compared is :func:`backbones.recipes.expected` (backbone type / arch / drop path / init checkpoint, lr,
layer-decay rate, precision) and the recipe base it inherits.
"""
import argparse
import difflib
import glob
import os.path as osp
import sys
import warnings

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

from backbones import recipes as R  # noqa: E402
from glue.runtime import fast_config_loading  # noqa: E402

DOC = osp.join(ROOT, 'docs', 'recipes.md')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Check the configs against the recipe table; write docs/recipes.md.')
    p.add_argument('configs', nargs='*', help='config files to check (default: every configs/det, configs/seg one)')
    p.add_argument('--check', action='store_true', help='write nothing; exit 1 if a config or the doc is stale')
    p.add_argument('--out', default=DOC, metavar='FILE', help='the document (default docs/recipes.md)')
    return p.parse_args(argv)


def config_problems(paths):
    from mmengine.config import Config

    problems = []
    with fast_config_loading(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for path in paths:
            try:
                problems += R.mismatches(Config.fromfile(path, import_custom_modules=False), path)
            except KeyError as e:
                problems.append(str(e.args[0]))
    return problems


def main(argv=None) -> int:
    args = parse_args(argv)
    paths = args.configs or [p for d in ('det', 'seg') for p in sorted(glob.glob(osp.join(ROOT, 'configs', d, '*.py')))]
    problems = config_problems(paths)
    diff = ''
    if not args.configs:  # the whole set: every row has its config, and the doc
        problems += [f'{r.path}: a row of the recipe table, but no such config'
                     for r in R.all_recipes() if not osp.exists(osp.join(ROOT, r.path))]
        text, rel = R.render_markdown(), osp.relpath(args.out, ROOT)
        old = open(args.out).read() if osp.exists(args.out) else ''
        if old != text and args.check:
            diff = ''.join(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                rel + ' (committed)', rel + ' (generated)'))
            problems.append(f'{rel} is stale; run: python tools/analysis/recipes.py')
        elif old != text:
            with open(args.out, 'w') as f:
                f.write(text)
            print(f'wrote {rel}')
    if problems:
        sys.stdout.write(diff)
        print('\n'.join(problems))
        return 1
    print(f'{len(paths)} configs agree with backbones/recipes.py')
    return 0


if __name__ == '__main__':
    sys.exit(main())
