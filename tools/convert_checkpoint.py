#!/usr/bin/env python
"""Convert a backbone checkpoint of any supported layout into this repository's layout, checked strictly.

Usage::

    python tools/convert_checkpoint.py SRC DST [--arch NAME] [--arch-cfg JSON] [--keep-head] [--use-ema]
                                       [--prefix P]

``SRC`` is a local file, an http(s) URL or a checkpoint name of ``backbones/hub.py`` (``convnext_tiny.in1k``,
docs/checkpoints.md; downloaded once into the torch hub cache, size and published hash checked; a name also
gives the arch). It is read by the backbones' own loader (``backbones/checkpoint.py``): the official releases
(``state_dict`` / ``model`` wrappers, EMA weights with ``--use-ema``), timm, mmpretrain, ConvNeXt V2 FCMAE,
torchvision, whole mmdet/mmseg checkpoints (their ``backbone.`` part; ``--prefix`` picks another part) and
``.safetensors`` files (timm's hub weights). The family converts the keys (``convert_checkpoint``), the
classifier and cached buffers are dropped, and the result is compared with ``build_backbone(NAME)``: every
missing, unexpected or mis-shaped key refuses the file.

``NAME`` is a table name (``conv2former_t``, ``convnextv2_atto``; see ``backbones.list_backbones()``). Without
``--arch`` the arch is guessed: every family converts the keys and the arch whose parameters match exactly
is taken (``backbones.checkpoint.guess_arch``). A family name alone (``--arch ConvNeXt``) guesses within
that family; with ``--arch-cfg '{"depths": [...], "dims": [...], ...}'`` it builds a custom size.

``DST`` is ``{'state_dict': weights in our layout, 'meta': {arch, family, source, source_sha256, layout,
...}}``: it loads strictly with ``init_cfg=dict(type='Pretrained', checkpoint=DST)``, with
``pretrained=DST`` and with mmengine's ``load_checkpoint``. The output norms of a detection backbone
(``out_norms.*``) are written when the source has them (whole detection checkpoints) and otherwise left to
the model's initialisation. Tensors keep their dtype.

Exit status: 0 written; 2 refused (SRC missing or unreadable, unknown arch, keys that do not match the
arch), with the reason on stderr and no traceback.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

import torch

from backbones import build_backbone, families, get_family, hub, list_backbones
from backbones.checkpoint import (CheckpointError, CheckpointMismatchError, extract_state_dict, format_keys,
                                  guess_arch, key_group, load_pretrained, read_checkpoint, select_prefix,
                                  split_checkpoint_keys)


class Refused(Exception):
    """Reported on stderr, exit status 2."""


# ------------------------------------------------------------------------------------------------ reading
def sha256sum(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def fetch_source(spec: str) -> str:
    """The local file of ``spec``: a path, or a checkpoint name / URL downloaded once into the torch hub
    cache (backbones.hub)."""
    try:
        path = hub.resolve(spec)
    except CheckpointError as e:
        raise Refused(str(e)) from None
    if not osp.isfile(path):
        raise Refused(f'source checkpoint not found: {path}{hub.missing_file_hint(path)}')
    return path


def read_source(path: str) -> dict:
    """The checkpoint dict of a local file, through our safe reader (``torch.load`` files and
    ``.safetensors``)."""
    try:
        return read_checkpoint(path)
    except CheckpointError as e:
        raise Refused(str(e)) from None


def backbone_part(obj: dict, use_ema: bool, prefix) -> tuple:
    """(all weights in the file, the backbone's part, wrapper description)."""
    try:
        sd, wrapper = extract_state_dict(obj, use_ema=use_ema)
        part, used = select_prefix(sd, prefix)
    except CheckpointError as e:
        raise Refused(str(e)) from None
    if used:
        wrapper += f", prefix '{used}'"
    return sd, part, wrapper


# ---------------------------------------------------------------------------------------------- guessing
def _split_for(model, sd: dict) -> dict:
    """The keys load_pretrained keeps (classifier and ignored buffers dropped), output norms aside."""
    return {k: v for k, v in split_checkpoint_keys(model, sd)[0].items() if not k.startswith('out_norms.')}


def _meta_build(cls, arch):
    with torch.device('meta'):
        return cls(arch=arch, out_norm=False)


def candidates(part: dict, only=None):
    """Every (family class, arch name) whose parameters match ``part`` exactly, and the closest family
    (most keys in common, for the error message) when none does."""
    found, closest = [], None
    for name, cls in families().items():
        if only is not None and cls is not only:
            continue
        try:
            conv, _ = cls.convert_checkpoint(dict(part))
            probe = _meta_build(cls, next(iter(cls.arch_settings)))
        except Exception:  # this family cannot read these keys (e.g. V2 weights into ConvNeXt V1)
            continue
        kept = _split_for(probe, conv)
        # stem and first block: their key names do not depend on the size; skip families they rule out
        size_free_keys = [k for k in probe.state_dict()
                     if k.startswith(('downsample_layers.0.', 'stages.0.0.')) and not k.endswith('num_batches_tracked')]
        common = len(set(kept) & set(probe.state_dict()))
        if closest is None or common > closest[1]:
            closest = (name, common)
        if not all(k in kept for k in size_free_keys):
            continue
        arch = guess_arch(cls, kept)
        if arch is not None:
            found.append((cls, arch))
    return found, (closest[0] if closest and closest[1] else None)


def pick(found, path: str, obj: dict):
    """One candidate; several (IdentityFormer and PoolFormerV2 have the same parameters) are told apart
    by the file name or a top-level ``arch`` string, else refused."""
    if len(found) <= 1:
        return found[0] if found else None
    hints = [osp.basename(path).lower()]
    for key in ('arch', 'model_name'):
        if isinstance(obj.get(key), str):
            hints.append(obj[key].lower())
    meta = obj.get('meta')
    if isinstance(meta, dict) and isinstance(meta.get('arch'), str):
        hints.append(meta['arch'].lower())
    named = [(c, a) for c, a in found if any(c.family in h or c.__name__.lower() in h for h in hints)]
    if len(named) == 1:
        return named[0]
    names = ', '.join(f'{c.family}_{a}' for c, a in found)
    raise Refused(f'the keys match several backbones with identical parameters ({names}); '
                  f'choose one with --arch')


# ---------------------------------------------------------------------------------------------- the model
def resolve_model(args, obj: dict, part: dict):
    """Build the target backbone (CPU, default arguments: output norms on).

    Returns ``(model, how it was chosen, custom arch dict or None)``."""
    if args.arch_cfg is not None:
        if not args.arch:
            raise Refused('--arch-cfg needs --arch FAMILY (e.g. --arch Conv2Former)')
        try:
            arch_cfg = json.loads(args.arch_cfg)
        except json.JSONDecodeError as e:
            raise Refused(f'--arch-cfg is not valid JSON: {e}') from None
        if not isinstance(arch_cfg, dict):
            raise Refused('--arch-cfg must be a JSON object such as {"depths": [2, 2, 6, 2], "dims": [...]}')
        try:
            cls = get_family(args.arch)
            if args.arch.lower() not in (cls.__name__.lower(), cls.family):
                raise Refused(f'--arch {args.arch!r} names a size; with --arch-cfg give the family '
                              f'({cls.__name__})')
            return cls(arch=arch_cfg), 'given', arch_cfg
        except (ValueError, TypeError, KeyError) as e:
            raise Refused(str(e)) from None
    if args.arch:
        try:
            cls = get_family(args.arch)
        except ValueError:
            raise Refused(f'unknown arch {args.arch!r}; valid: {", ".join(list_backbones())}') from None
        if args.arch.lower() in (cls.__name__.lower(), cls.family):  # a family: guess its size
            found, _ = candidates(part, only=cls)
            choice = pick(found, args.src, obj)
            if choice is None:
                raise Refused(f'no {cls.__name__} size matches the keys of {args.src} (sizes: '
                              f'{", ".join(cls.arch_settings)}); for a custom size pass --arch-cfg '
                              f'\'{{"depths": [...], "dims": [...]}}\'')
            return build_backbone(f'{cls.family}_{choice[1]}'), f'guessed within {cls.__name__}', None
        try:
            return build_backbone(args.arch), 'given', None
        except (ValueError, TypeError, KeyError) as e:
            raise Refused(str(e.args[0] if e.args else e)) from None
    model, arch_cfg = _from_meta(obj)
    if model is not None:
        return model, "from the file's meta", arch_cfg
    found, closest = candidates(part)
    choice = pick(found, args.src, obj)
    if choice is None:
        hint = (f'; its keys are closest to the {closest} family: give --arch {closest} --arch-cfg '
                f'\'{{"depths": [...], "dims": [...]}}\' for a custom size' if closest else
                f'; it does not look like a checkpoint of any family here (valid names: '
                f'{", ".join(list_backbones())})')
        raise Refused(f'could not guess the arch of {args.src}: no size of any family matches its keys exactly'
                      f'{hint}')
    cls, arch = choice
    return build_backbone(f'{cls.family}_{arch}'), 'guessed from the keys', None


def arch_label(model) -> str:
    if model.arch_name == 'custom':
        return f'{type(model).__name__}(arch=custom)'
    return f'{type(model).family}_{model.arch_name}'


def _from_meta(obj: dict):
    """A file this tool wrote names its family and custom arch dict in ``meta``."""
    meta = obj.get('meta')
    if not (isinstance(meta, dict) and meta.get('tool') == 'tools/convert_checkpoint.py'):
        return None, None
    try:
        cls = families()[meta['family']]
        if meta.get('arch_cfg') is not None:
            return cls(arch=dict(meta['arch_cfg'])), dict(meta['arch_cfg'])
        return build_backbone(f'{cls.family}_{meta["arch_name"]}'), None
    except (KeyError, ValueError, TypeError):
        return None, None


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Convert a backbone checkpoint (official, timm, mmpretrain, FCMAE, torchvision, whole '
                    'mmdet/mmseg ...) into this repository\'s layout, checked strictly against the arch.',
        epilog='Exit status 2 (with the reason, no traceback) when the file is missing or does not match.')
    p.add_argument('src', metavar='SRC', help='checkpoint to convert: a file (.pth/.pt/.pth.tar/.safetensors), an '
                                              'http(s) URL or a checkpoint name (docs/checkpoints.md)')
    p.add_argument('dst', metavar='DST', help='output file ({"state_dict": ..., "meta": ...})')
    p.add_argument('--arch', metavar='NAME',
                   help='backbone table name (conv2former_t, convnextv2_atto, ...) or a family name; '
                        'default: guessed from the keys')
    p.add_argument('--arch-cfg', metavar='JSON',
                   help='custom size for --arch FAMILY, e.g. \'{"depths": [1, 1, 2, 1], "dims": [8, 16, 24, 32], '
                        '"kernel_size": 11}\'')
    p.add_argument('--keep-head', action='store_true',
                   help='also write what the loader drops as classifier (head.*, norm.*, STM conv_head.* and '
                        'stage_norms.*), in our key names')
    p.add_argument('--use-ema', action='store_true', help='take the EMA weights (state_dict_ema / model_ema ...)')
    p.add_argument('--prefix', help="take the keys under this prefix (default: 'backbone.' when present)")
    return p.parse_args(argv)


def convert(args) -> dict:
    entry = None
    if not osp.exists(args.src) and hub.looks_like_name(args.src):
        try:
            entry = hub.get(args.src)
        except CheckpointError as e:
            raise Refused(str(e)) from None
        if not args.arch and args.arch_cfg is None:
            args.arch = entry.arch  # the table knows the size
    t0 = time.time()
    src = args.src = fetch_source(args.src)
    if osp.exists(args.dst) and osp.samefile(args.dst, src):
        raise Refused('DST is SRC: write the converted file elsewhere')
    obj = read_source(src)
    everything, part, wrapper = backbone_part(obj, args.use_ema, args.prefix)
    model, how, arch_cfg = resolve_model(args, obj, part)
    cls = type(model)
    label = arch_label(model)

    try:
        report = load_pretrained(model, obj, prefix=args.prefix, use_ema=args.use_ema)
    except CheckpointMismatchError as e:
        msg = str(e).replace('checkpoint <dict> ', f'checkpoint {src} ', 1)
        if 'no ' in msg.splitlines()[-1] and 'arch matches' in msg.splitlines()[-1]:
            found, closest = candidates(part)
            if found:
                msg += '\n  its keys match ' + ', '.join(f'{c.family}_{a}' for c, a in found) + ': use --arch'
            elif closest and closest != cls.__name__:
                msg += f'\n  its keys are closest to the {closest} family'
            elif closest:
                msg += (f'\n  a custom {cls.__name__} size? pass --arch {cls.__name__} --arch-cfg '
                        f'\'{{"depths": [...], "dims": [...]}}\'')
        raise Refused(msg) from None
    except CheckpointError as e:  # e.g. a layout the family refuses to convert (PoolFormer v1)
        raise Refused(str(e)) from None

    converted, layout = cls.convert_checkpoint(dict(part))
    own = model.state_dict()
    out = {k: converted[k] for k in own if k in converted}  # exactly what was loaded, model order
    if args.keep_head:
        out.update((k, converted[k]) for k in report.dropped_classifier)
    meta = dict(arch=label if model.arch_name != 'custom' else 'custom', family=cls.__name__,
                arch_name=model.arch_name, source=osp.abspath(src), source_sha256=sha256sum(src),
                layout=layout, wrapper=wrapper, tensors=len(out),
                dropped_classifier=len(report.dropped_classifier), dropped_buffers=len(report.dropped_ignored),
                head_kept=bool(args.keep_head), tool='tools/convert_checkpoint.py',
                checkpoint_name=entry.name if entry else None, url=entry.url if entry else None,
                torch=str(torch.__version__), time=time.strftime('%Y-%m-%d %H:%M:%S'))
    if model.arch_name == 'custom':
        meta['arch_cfg'] = arch_cfg
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    tmp = args.dst + '.tmp'
    torch.save({'state_dict': out, 'meta': meta}, tmp)
    os.replace(tmp, args.dst)

    def names(keys, n=8):
        return format_keys(sorted(keys), n)

    def groups(keys):
        return ', '.join(sorted({key_group(k) for k in keys})) if keys else 'none'

    values = sum(v.numel() for k, v in out.items() if k in own)
    print(f'source:  {src}' + (f' (named checkpoint {entry.name}: {entry.url})' if entry else ''))
    print(f'         sha256 {meta["source_sha256"]}; {len(everything)} tensors in {wrapper}'
          + (f' ({len(everything) - len(part)} outside the backbone part not converted)'
             if len(part) != len(everything) else '') + f'; {layout} layout')
    if model.arch_name == 'custom':
        print(f'arch:    {cls.__name__}, custom {json.dumps(meta["arch_cfg"])} ({how})')
    else:
        print(f'arch:    {label} ({cls.__name__}, {how})')
    print(f'kept:    {report.loaded} tensors ({values:,} values) in our layout')
    cls_keys, buf_keys = report.dropped_classifier, report.dropped_ignored
    print(f'dropped: {len(cls_keys)} classifier'
          + (f' ({groups(cls_keys)}): {names(cls_keys)}' if cls_keys else '')
          + (' [written anyway: --keep-head]' if args.keep_head and cls_keys else ''))
    print(f'         {len(buf_keys)} cached buffers'
          + (f' ({groups(buf_keys)}): {names(buf_keys, 4)}' if buf_keys else ''))
    print(f'fresh:   {len(report.fresh)} not in the file, initialised by the model ({groups(report.fresh)})')
    print(f'wrote:   {args.dst} ({len(out)} tensors, {osp.getsize(args.dst) / 2 ** 20:.1f} MiB, '
          f'{time.time() - t0:.1f} s)')
    build = (f"build_backbone('{label}', ...)" if model.arch_name != 'custom'
             else f"{cls.__name__}(arch={json.dumps(meta['arch_cfg'])}, ...)")
    print(f"load:    {build} with init_cfg=dict(type='Pretrained', checkpoint='{args.dst}') "
          f"or pretrained='{args.dst}'")
    return meta


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        convert(args)
    except Refused as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
