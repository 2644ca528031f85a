#!/usr/bin/env python
"""The named checkpoints of ``backbones/hub.py``: list them, download them ahead of a run, write the doc.

Examples::

    python tools/checkpoints.py list [convnext_tiny]       # names (of one backbone), where each is cached
    python tools/checkpoints.py download convnext_tiny.in1k caformer_s18.in22k   # once, before a multi-GPU run
    python tools/checkpoints.py doc [--check]              # write / check docs/checkpoints.md

``download`` prints the local file of each name (already cached files are not fetched again). ``doc --check``
exits 1 (with a diff) when docs/checkpoints.md differs from what the table generates.
"""
import argparse
import difflib
import os
import os.path as osp
import sys

from backbones import hub
from backbones.checkpoint import CheckpointError

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

DOC = osp.join(ROOT, 'docs', 'checkpoints.md')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Named checkpoints: list, download, document.')
    sub = p.add_subparsers(dest='cmd', required=True)
    ls = sub.add_parser('list', help='the names (of one backbone) and their cache state')
    ls.add_argument('arch', nargs='?', help="a backbone name such as 'convnext_tiny'")
    dl = sub.add_parser('download', help='download named checkpoints (or URLs) into the torch hub cache')
    dl.add_argument('names', nargs='+')
    doc = sub.add_parser('doc', help='write docs/checkpoints.md from the table')
    doc.add_argument('--check', action='store_true', help='write nothing; exit 1 if the doc is stale')
    doc.add_argument('--out', default=DOC)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cmd == 'list':
        names = hub.list_checkpoints(args.arch)
        if not names:
            print(f'error: no checkpoint of {args.arch!r}', file=sys.stderr)
            return 2
        for n in names:
            c = hub.CHECKPOINTS[n]
            state = 'cached' if osp.isfile(hub.local_path(c)) else ('manual download' if c.url is None else '')
            print(f'{n:48s} {c.pretrain:20s} {c.resolution:4d}  {state}')
        return 0
    if args.cmd == 'download':
        for name in args.names:
            try:
                print(f'{name}: {hub.resolve(name)}', flush=True)
            except CheckpointError as e:
                print(f'error: {e}', file=sys.stderr)
                return 2
        return 0
    text = hub.render_markdown()
    if args.check:
        old = open(args.out).read() if osp.exists(args.out) else ''
        if old != text:
            rel = osp.relpath(args.out, ROOT)
            sys.stdout.write(''.join(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                          rel + ' (committed)', rel + ' (generated)')))
            print(f'{rel} is stale; run: python tools/checkpoints.py doc')
            return 1
        print(f'{osp.relpath(args.out, ROOT)} is up to date ({len(hub.CHECKPOINTS)} checkpoints)')
        return 0
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        f.write(text)
    print(f'wrote {osp.relpath(args.out, ROOT)} ({len(hub.CHECKPOINTS)} checkpoints)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
