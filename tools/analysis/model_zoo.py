#!/usr/bin/env python
"""Generate docs/model_zoo.md from configs/det and configs/seg (configs/toy is left out).

Examples::

    python tools/analysis/model_zoo.py            # fill missing / stale FLOPs, write the cache and the doc
    python tools/analysis/model_zoo.py --check    # exit 1 (with a diff) if the doc or the cache is stale
    python tools/analysis/model_zoo.py --recompute  # count every config again

One table per task and method (Mask R-CNN 3x, Mask R-CNN 1x STM protocol, Cascade Mask R-CNN 3x, UperNet
160k); per config: the config, the backbone (table name), the named checkpoint its ``init_cfg`` starts from, the
parameters of the whole model, the FLOPs at the standard input, and the published result of the same
backbone and method where a paper gives one (``PUBLISHED`` below, transcribed from the reference recipes;
blank: none published).

Parameters and FLOPs come from ``tools/analysis/get_flops.py`` (its module doc has the conventions: one
multiply-add = one FLOP; detectors as mmdet 2.x ``forward_dummy`` with 1000 / 100 RoIs; segmentors
backbone + decode head), run on torch's **meta device** (shapes only, ~0.5 s a config; the counts equal a
real CPU forward's, tests/test_model_zoo_flops.py checks that). Inputs: 800x1280 for detection, the
config's crop size (512x512 or 640x640) for segmentation.

Both are stored in a committed cache, ``docs/model_zoo_flops.json`` (``--flops-cache``), keyed by
``<det|seg>/<config name>@<H>x<W>`` and holding ``get_flops.model_hash`` of the config (the model dict
without init_cfg, plus the counting conventions): an entry whose hash no longer matches is stale. A plain
run recounts missing and stale entries (all ~200 configs: 2-3 minutes on 2 CPU cores), drops entries of
configs that no longer exist and rewrites the doc. ``--check`` loads the configs (~20 s), counts nothing,
and exits 1 when an entry is missing or stale or when docs/model_zoo.md differs from what it would write.
"""
import argparse
import difflib
import glob
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

from glue import flops as G
from glue.runtime import fast_config_loading  # noqa: F401 (tests use it from here too)

DOC = osp.join(ROOT, 'docs', 'model_zoo.md')
CACHE = osp.join(ROOT, 'docs', 'model_zoo_flops.json')
TASK_DIRS = ('det', 'seg')

# (suffix of the config name, table title, what the published column holds)
METHODS = (
    ('maskrcnn', 'COCO: Mask R-CNN 3x (ConvNeXt recipe)', 'box / mask AP'),
    ('maskrcnn1x', 'COCO: Mask R-CNN 1x (STM-Evaluation protocol)', 'box / mask AP'),
    ('cascade', 'COCO: Cascade Mask R-CNN 3x (ConvNeXt recipe)', 'box / mask AP'),
    ('upernet', 'ADE20K: UperNet 160k', 'mIoU single / multi-scale'),
)

# Published results of the same backbone and method (the papers' COCO and ADE20K tables), by config name.
# (value, footnote key or None). Never filled by guess: a config without a published row stays blank.
PUBLISHED = {
    'det/convnext_t_maskrcnn': ('46.2 / 41.7', None),
    'det/convnext_t_cascade': ('50.4 / 43.7', None),
    'det/convnext_s_cascade': ('51.9 / 45.0', None),
    'det/convnext_b_cascade': ('52.7 / 45.6', None),
    'det/convnextv2_base_maskrcnn': ('52.9 / 46.6', 'v2det'),
    'det/conv2former_t_maskrcnn': ('48.0 / -', 'secondary'),
    'det/unified_halo_micro_maskrcnn1x': ('40.3 / 37.3', None),
    'det/unified_halo_tiny_maskrcnn1x': ('46.9 / 42.4', None),
    'det/unified_halo_small_maskrcnn1x': ('48.2 / 43.3', None),
    'det/unified_halo_base_maskrcnn1x': ('49.0 / 43.8', None),
    'det/unified_pvt_micro_maskrcnn1x': ('35.9 / 34.2', None),
    'det/unified_pvt_tiny_maskrcnn1x': ('44.2 / 40.6', None),
    'det/unified_pvt_small_maskrcnn1x': ('46.1 / 41.9', None),
    'det/unified_pvt_base_maskrcnn1x': ('46.4 / 42.3', None),
    'det/unified_swin_micro_maskrcnn1x': ('36.6 / 34.6', None),
    'det/unified_swin_tiny_maskrcnn1x': ('44.3 / 40.5', None),
    'det/unified_swin_small_maskrcnn1x': ('46.4 / 42.1', None),
    'det/unified_swin_base_maskrcnn1x': ('47.0 / 42.2', None),
    'det/unified_convnext_micro_maskrcnn1x': ('39.2 / 36.4', None),
    'det/unified_convnext_tiny_maskrcnn1x': ('44.3 / 40.5', None),
    'det/unified_convnext_small_maskrcnn1x': ('45.6 / 41.2', None),
    'det/unified_convnext_base_maskrcnn1x': ('46.7 / 42.2', None),
    'det/unified_dcn_v3_micro_maskrcnn1x': ('39.5 / 36.6', None),
    'det/unified_dcn_v3_tiny_maskrcnn1x': ('47.2 / 42.5', None),
    'det/unified_dcn_v3_small_maskrcnn1x': ('47.8 / 43.0', None),
    'det/unified_dcn_v3_base_maskrcnn1x': ('48.7 / 43.8', None),
    'seg/convnext_t_upernet': ('46.0 / 46.7', None),
    'seg/convnext_s_upernet': ('48.7 / 49.6', None),
    'seg/convnext_b_upernet': ('49.1 / 49.9', None),
    'seg/convnext_l_upernet': ('53.2 / 53.7', None),
    'seg/convnext_xl_upernet': ('53.6 / 54.0', None),
    'seg/convnextv2_base_upernet': ('- / 52.1', 'v2seg'),
    'seg/convnextv2_large_upernet': ('- / 53.7', 'v2seg'),
    'seg/convnextv2_huge_upernet': ('- / 55.0', 'v2seg'),
    'seg/conv2former_t_upernet': ('48.0', 'secondary_ms'),
    'seg/conv2former_l_upernet': ('54.3', 'secondary_ms'),
    'seg/convformer_s18_upernet': ('47.5 / 48.6', None),
    'seg/convformer_s36_upernet': ('49.6 / 50.7', None),
    'seg/convformer_m36_upernet': ('50.4 / 51.3', None),
    'seg/caformer_s18_upernet': ('48.1 / 48.9', None),
    'seg/caformer_s36_upernet': ('50.6 / 50.8', None),
    'seg/caformer_m36_upernet': ('51.7 / 51.7', None),
}
FOOTNOTES = {
    'secondary': 'secondary source (the reference recipes mark it so); mask AP not published.',
    'secondary_ms': 'secondary source; whether single- or multi-scale is not stated.',
    'v2det': 'ConvNeXt V2 paper: FCMAE pre-training, large-scale jitter 1024x1024, batch 32, soft-NMS; '
             'this config runs the ConvNeXt 3x recipe instead.',
    'v2seg': 'ConvNeXt V2 paper: multi-scale test only; its lr / layer decay / drop path were swept and '
             'the chosen values are not published.',
}


# ---------------------------------------------------------------------------------- configs
def config_paths():
    return [p for d in TASK_DIRS for p in sorted(glob.glob(osp.join(ROOT, 'configs', d, '*.py')))]


def config_name(path):
    """'configs/det/convnext_t_maskrcnn.py' -> 'det/convnext_t_maskrcnn'."""
    return f'{osp.basename(osp.dirname(path))}/{osp.splitext(osp.basename(path))[0]}'


def method_of(name):
    stem = name.split('/')[-1]
    for suffix, _, _ in sorted(METHODS, key=lambda m: -len(m[0])):
        if stem.endswith('_' + suffix):
            return suffix
    raise ValueError(f'{name}: the config name must end with one of {[m[0] for m in METHODS]}')


def describe(path):
    """What the table needs from a config, without building anything."""
    import warnings

    from backbones import families

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        cfg = G.load_config(path)
    name = config_name(path)
    bb = cfg.model.backbone
    cls = families().get(bb.type)
    size, order = str(bb.get('arch')), 0
    if cls is not None and isinstance(bb.get('arch'), str):
        size = cls.resolve_arch(bb.arch)[0]
        order = list(cls.arch_settings).index(size)
    family_order = list(families()).index(bb.type) if cls is not None else len(families())
    ckpt = (bb.get('init_cfg') or {}).get('checkpoint')
    shape = G.default_shape(cfg)
    return dict(name=name, path=osp.relpath(path, ROOT), method=method_of(name),
                backbone=f'{cls.family}_{size}' if cls is not None else f'{bb.type} {size}',
                sort=(family_order, order, len(name), name),  # a config before its variants (_dinov3_)
                checkpoint=ckpt, shape=shape,
                key=f'{name}@{shape[0]}x{shape[1]}', hash=G.model_hash(cfg), cfg=cfg)


# ------------------------------------------------------------------------------------- cache
def load_cache(path):
    if not osp.exists(path):
        return {}
    with open(path) as f:
        return json.load(f).get('entries', {})


def save_cache(path, entries):
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    data = dict(
        about='Parameters and FLOPs (multiply-adds) per config, written by tools/analysis/model_zoo.py '
              '(counted by tools/analysis/get_flops.py on the meta device). Key: <task>/<config>@<H>x<W>; '
              'hash: get_flops.model_hash of the config (an entry with another hash is stale).',
        counter_version=G.COUNTER_VERSION,
        entries={})
    head = json.dumps(data, indent=1)[:-len('{}\n}')]  # one line per entry: small, readable diffs
    body = ',\n'.join(f'  {json.dumps(k)}: {json.dumps(entries[k])}' for k in sorted(entries))
    with open(path, 'w') as f:
        f.write(head + '{\n' + body + '\n }\n}\n')


def count_entry(info, device='meta'):
    r = G.get_flops(info['path'], info['shape'], device, cfg=info['cfg'])
    return dict(hash=info['hash'], params=r['params'], flops=r['flops'],
                params_modules=r['params_modules'], flops_modules=r['flops_modules'],
                flops_ops={k: v for k, v in r['flops_ops'].items() if v}, device=device)


# -------------------------------------------------------------------------------------- doc
def _fmt(n, unit):
    return f'{n / unit:.1f}'


def render(infos, entries):
    lines = [
        '# Model zoo',
        '',
        '<!-- Generated by tools/analysis/model_zoo.py from configs/det and configs/seg; do not edit by '
        'hand. Regenerate with `python tools/analysis/model_zoo.py`; '
        '`python tools/analysis/model_zoo.py --check` fails when this file is stale. -->',
        '',
        'Every detection and segmentation config of this repository, with the named checkpoint its '
        '`init_cfg` starts from ([checkpoints.md](checkpoints.md): the release file behind each name), the '
        'size and cost of the whole '
        'model, and the published result of the same backbone and method where a paper gives one '
        '(blank: none published). No trained results of our own are listed yet.',
        '',
        '- **params**: every parameter of the detector / segmentor (the segmentor\'s auxiliary head '
        'included), in millions.',
        '- **GFLOPs**: multiply-adds of one image, in 10^9 (one multiply-add = one FLOP, the papers\' '
        'convention), counted by `tools/analysis/get_flops.py`: convolutions, linear layers, matmuls, '
        'attention (QK^T and AV) and DCNv3\'s bilinear sampling (4 per sampled value). Detectors at '
        '1280x800 as mmdet 2.x `forward_dummy` (RPN on the image, box heads on 1000 RoIs, mask heads on '
        '100); segmentors at their crop size, backbone + decode head.',
        '- Calibration against the ConvNeXt paper: Mask R-CNN ConvNeXt-T 48.1M / 261.9G (paper 48M / '
        '262G), Cascade Mask R-CNN ConvNeXt-T 85.9M / 740.2G (86M / 741G), UperNet ConvNeXt-T at '
        '2048x512 (`--shape 512 2048`) 60.2M / 938.5G (60M / 939G).',
    ]
    notes = {}
    for suffix, title, metric in METHODS:
        rows = sorted((i for i in infos if i['method'] == suffix), key=lambda i: i['sort'])
        if not rows:
            continue
        det = rows[0]['name'].startswith('det/')
        lines += ['', f'## {title}', '']
        if det:
            lines += [f'| config | backbone | checkpoint | params (M) | GFLOPs (1280x800) | published {metric} |',
                      '|---|---|---|---:|---:|---|']
        else:
            lines += [f'| config | backbone | checkpoint | params (M) | input | GFLOPs | published {metric} |',
                      '|---|---|---|---:|---|---:|---|']
        for i in rows:
            e = entries.get(i['key'])
            params = _fmt(e['params'], 1e6) if e else '?'
            flops = _fmt(e['flops'], 1e9) if e else '?'
            ckpt = f"`{osp.basename(i['checkpoint'])}`" if i['checkpoint'] else '(none)'
            value, note = PUBLISHED.get(i['name'], ('', None))
            if note:
                notes.setdefault(note, len(notes) + 1)
                value += f' [{notes[note]}]'
            link = f"[{i['name'].split('/')[-1]}](../{i['path']})"
            if det:
                lines.append(f"| {link} | {i['backbone']} | {ckpt} | {params} | {flops} | {value} |")
            else:
                shape = f"{i['shape'][1]}x{i['shape'][0]}"
                lines.append(f"| {link} | {i['backbone']} | {ckpt} | {params} | {shape} | {flops} | {value} |")
    if notes:
        lines += ['', 'Notes on the published column:', '']
        lines += [f'{n}. {FOOTNOTES[k]}' for k, n in sorted(notes.items(), key=lambda kv: kv[1])]
    return '\n'.join(lines) + '\n'


# --------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Generate docs/model_zoo.md (and its FLOPs cache).')
    p.add_argument('--check', action='store_true',
                   help='compute nothing; exit 1 if the doc is stale or a config lacks a current cache entry')
    p.add_argument('--flops-cache', default=CACHE, metavar='FILE',
                   help='the parameter / FLOPs cache (default docs/model_zoo_flops.json)')
    p.add_argument('--out', default=DOC, metavar='FILE', help='the document (default docs/model_zoo.md)')
    p.add_argument('--recompute', action='store_true', help='count every config again')
    p.add_argument('--device', default='meta', choices=('meta', 'cpu'),
                   help='where missing entries are counted (default meta; cpu: a real forward, slow)')
    return p.parse_args(argv)


def collect():
    """describe() of every config under configs/det and configs/seg."""
    with fast_config_loading():
        return [describe(p) for p in config_paths()]


def stale_entries(infos, entries):
    """(missing, stale): configs without a cache entry / whose entry has another model hash."""
    missing = [i for i in infos if i['key'] not in entries]
    stale = [i for i in infos if i['key'] in entries and entries[i['key']].get('hash') != i['hash']]
    return missing, stale


def check(infos, entries, out):
    """Problems (list of lines) and the unified diff of ``out`` against what would be written."""
    missing, stale = stale_entries(infos, entries)
    problems = [f"no cached FLOPs for {i['key']}" for i in missing]
    problems += [f"stale cached FLOPs for {i['key']} (the model config changed)" for i in stale]
    bad = {i['key'] for i in missing + stale}
    text = render(infos, {i['key']: entries[i['key']] for i in infos if i['key'] not in bad})
    old = open(out).read() if osp.exists(out) else ''
    diff = ''
    if old != text:
        rel = osp.relpath(out, ROOT)
        diff = ''.join(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                            rel + ' (committed)', rel + ' (generated)'))
        problems.append(f'{rel} is stale')
    return problems, diff


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    infos = collect()
    entries = load_cache(args.flops_cache)

    if args.check:
        problems, diff = check(infos, entries, args.out)
        if problems:
            sys.stdout.write(diff)
            print('\n'.join(problems))
            print('run: python tools/analysis/model_zoo.py')
            return 1
        print(f'{osp.relpath(args.out, ROOT)} is up to date ({len(infos)} configs, '
              f'{time.time() - t0:.1f} s)')
        return 0

    missing, stale = stale_entries(infos, entries)
    todo = infos if args.recompute else missing + stale
    for n, i in enumerate(todo, 1):
        t = time.time()
        entries[i['key']] = count_entry(i, args.device)
        e = entries[i['key']]
        print(f"[{n}/{len(todo)}] {i['key']}: {e['params'] / 1e6:.2f}M params, "
              f"{e['flops'] / 1e9:.2f} GFLOPs ({time.time() - t:.1f} s)", flush=True)
    keys = {i['key'] for i in infos}
    dropped = sorted(k for k in entries if k not in keys)
    for k in dropped:
        del entries[k]
    save_cache(args.flops_cache, entries)
    text = render(infos, entries)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        f.write(text)
    print(f'{len(infos)} configs ({len(todo)} counted, {len(dropped)} dropped from the cache) -> '
          f'{osp.relpath(args.out, ROOT)}, {osp.relpath(args.flops_cache, ROOT)} '
          f'({time.time() - t0:.1f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
