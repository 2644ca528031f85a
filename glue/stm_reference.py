"""Our unified backbones (``backbones/unified.py``) against the official STM-Evaluation code, same weights.

The official code (https://github.com/OpenGVLab/STM-Evaluation, written for commit ``b62c471``) is NOT part of
this project and is never imported by it, except here, at run time, from a copy the user fetched and names by
path (``git clone https://github.com/OpenGVLab/STM-Evaluation``; only
``detection/mmdet_custom/models/backbones/{meta_arch.py,blocks/*.py}`` and
``classification/ops/functions/ms_deform_attn_func.py`` are read). The comparison is the official **detection**
backbones (``UnifiedHalonet``, ``UnifiedPVT``, ``UnifiedSwinTransformer``, ``UnifiedConvNeXt``,
``UnifiedDCNv3``; the code behind the published COCO numbers), built with the size's settings, against ours.

Loading the official files (nothing is written to the copy; the source text is patched in memory and executed
as the private package ``_stm_official_<hash>``, separate from anything installed):

1. mmdet 2.x imports that mmdet 3.x lacks: ``from mmdet.models.builder import BACKBONES`` and ``from mmdet.utils
   import get_root_logger`` come from a stub module (``BACKBONES.register_module()`` returns the class
   unchanged; the logger is a ``logging`` logger).
2. timm 1.0 moved modules: ``timm.models.layers[.halo_attn]`` -> ``timm.layers[.halo_attn]``; timm 1.0's
   ``window_partition`` / ``window_reverse`` take an ``(h, w)`` tuple, so the stub wraps them for the
   official int window size (timm's own ``WindowAttention`` is used, as officially).
3. ``import einops`` (only ``LayerNormProxy``'s two permutes) comes from a stub with those two patterns.
4. DCNv3: ``import MultiScaleDeformableAttention as MSDA`` (the compiled CUDA extension) becomes ``MSDA = None``
   and the block module's ``MSDeformAttnFunction`` is replaced by an object whose ``apply(value, shapes, start,
   loc, attn, step)`` calls the official pure-PyTorch ``ms_deform_attn_core_pytorch`` (same commit,
   ``grid_sample``-based, the algorithm of the CUDA kernel): the official CPU path.

Every patch names the exact text it replaces; a copy where that text is absent (another commit) is refused
with a message naming the file and the line, rather than silently running something else. The blocks
package's ``__init__`` (which imports all five, the compiled op included) is not executed: the needed block
files are loaded one by one.

The comparison (:func:`compare_and_time`): both models are built for one name (``unified_<mixer>_<size>``),
the official one is randomised (seeded, non-trivial: layer scales, norms, position tables, DCN offsets;
:func:`randomise_official_`), its ``state_dict()`` is loaded into ours through our strict loader
(``load_pretrained``: the official detection layout, ``out_norm_{i}`` -> ``out_norms.{i}``), one eval forward
of both on the benchmark input is compared stage by stage (``torch.allclose``, ``rtol=atol=1e-4``), and only
then both are timed, interleaved (warm-ups, then repeat 1 of each, repeat 2 in reverse order, ...), in two
modes: ``fwd`` (eval, ``no_grad``) and ``fwdbwd`` (train, ``sum(out.mean()).backward()``, gradients set to
None outside the timing). Each step records wall time (``time.perf_counter``) and process CPU time
(``time.process_time``, all threads; less sensitive to other load on a shared machine). Ratios are
ours / official (<= 1.0: ours is faster).
"""
import hashlib
import importlib.util
import logging
import os
import os.path as osp
import sys
import time
import types
import warnings
from typing import Dict, List, Optional, Sequence

import torch

from glue.measure import compare_outputs, load_same_weights, summarize

OFFICIAL_COMMIT = 'b62c471'
OFFICIAL_URL = 'https://github.com/OpenGVLab/STM-Evaluation'
BACKBONES_DIR = osp.join('detection', 'mmdet_custom', 'models', 'backbones')
MSDA_FUNC_FILE = osp.join('classification', 'ops', 'functions', 'ms_deform_attn_func.py')

# our family -> (official block file, official class)
MIXERS = {
    'unified_halo': ('halonet', 'UnifiedHalonet'),
    'unified_pvt': ('pvt', 'UnifiedPVT'),
    'unified_swin': ('swin', 'UnifiedSwinTransformer'),
    'unified_convnext': ('convnext', 'UnifiedConvNeXt'),
    'unified_dcn_v3': ('dcn_v3', 'UnifiedDCNv3'),
}
MODES = ('fwd', 'fwdbwd')
RTOL = ATOL = 1e-4
OUT_INDICES = (0, 1, 2, 3)


class OfficialCodeError(ValueError):
    """The official code is missing at the given path, or differs from what the loader patches."""


# ---------------------------------------------------------------------------------------------- loading
def required_files(path: str) -> List[str]:
    files = [osp.join(BACKBONES_DIR, 'meta_arch.py')]
    files += [osp.join(BACKBONES_DIR, 'blocks', f'{f}.py') for f, _ in MIXERS.values()]
    return [osp.join(path, f) for f in files + [MSDA_FUNC_FILE]]


def check_official_path(path: Optional[str]) -> str:
    """The absolute path of a usable STM-Evaluation copy, or an :class:`OfficialCodeError` saying what is
    missing and how to get it."""
    how = (f'fetch it with `git clone {OFFICIAL_URL}` (written for commit {OFFICIAL_COMMIT}) and pass the '
           f'clone\'s root directory')
    if not path:
        raise OfficialCodeError(f'no path to the official STM-Evaluation code given; {how}')
    root = osp.abspath(osp.expanduser(path))
    if not osp.isdir(root):
        raise OfficialCodeError(f'{path!r} is not a directory; {how}')
    missing = [osp.relpath(f, root) for f in required_files(root) if not osp.isfile(f)]
    if missing:
        raise OfficialCodeError(f'{path!r} is not an STM-Evaluation checkout: missing {", ".join(missing)}; {how}')
    return root


def _rearrange(x: torch.Tensor, pattern: str) -> torch.Tensor:
    perms = {'b c h w -> b h w c': (0, 2, 3, 1), 'b h w c -> b c h w': (0, 3, 1, 2)}
    if pattern not in perms:
        raise NotImplementedError(f'einops stub: pattern {pattern!r} (only {list(perms)})')
    return x.permute(*perms[pattern])


def _shims(pkg: str) -> types.ModuleType:
    """The stub module replacing mmdet 2.x / einops / the timm 0.6 window helpers for the official files."""
    from timm.models import swin_transformer as timm_swin

    mod = types.ModuleType(f'{pkg}._shims')

    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    mod.BACKBONES = _Registry()
    mod.get_root_logger = lambda *a, **k: logging.getLogger('stm_official')
    mod.WindowAttention = timm_swin.WindowAttention
    mod.window_partition = lambda x, ws: timm_swin.window_partition(x, (ws, ws))
    mod.window_reverse = lambda w, ws, H, W: timm_swin.window_reverse(w, (ws, ws), H, W)
    mod.einops = types.SimpleNamespace(rearrange=_rearrange)
    return mod


def _patches(shim: str) -> Dict[str, List[tuple]]:
    """file (relative to the checkout) -> [(old text, new text), ...]; every old text must occur."""
    backbones = {osp.join(BACKBONES_DIR, 'meta_arch.py'): [
        ('from mmdet.utils import get_root_logger', f'from {shim} import get_root_logger'),
        ('from timm.models.layers import', 'from timm.layers import'),
    ]}
    common = [('from mmdet.models.builder import BACKBONES', f'from {shim} import BACKBONES'),
              ('from timm.models.layers import', 'from timm.layers import')]
    extra = {
        'halonet': [('from timm.models.layers.halo_attn import rel_logits_1d',
                     'from timm.layers.halo_attn import rel_logits_1d')],
        'swin': [('from timm.models.swin_transformer import WindowAttention, window_partition, window_reverse',
                  f'from {shim} import WindowAttention, window_partition, window_reverse')],
        'dcn_v3': [('import einops', f'from {shim} import einops'),
                   ('import MultiScaleDeformableAttention as MSDA', 'MSDA = None  # compiled op: not used on CPU')],
        'convnext': [], 'pvt': [],
    }
    for f, _ in MIXERS.values():
        backbones[osp.join(BACKBONES_DIR, 'blocks', f'{f}.py')] = common + extra[f]
    backbones[MSDA_FUNC_FILE] = [('import MultiScaleDeformableAttention as MSDA',
                                  'MSDA = None  # compiled op: not used on CPU')]
    return backbones


def _exec_module(name: str, filename: str, source: str, package: str, is_pkg: bool = False):
    spec = importlib.util.spec_from_loader(name, loader=None, origin=filename, is_package=is_pkg)
    mod = importlib.util.module_from_spec(spec)
    mod.__file__ = filename
    mod.__package__ = package
    if is_pkg:
        mod.__path__ = [osp.dirname(filename)]
    sys.modules[name] = mod
    try:
        exec(compile(source, filename, 'exec'), mod.__dict__)
    except Exception:
        del sys.modules[name]
        raise
    return mod


_LOADED: Dict[str, types.ModuleType] = {}


def load_official(path: str) -> types.ModuleType:
    """Load the official detection backbones from the checkout at ``path`` (patched in memory, see the
    module docstring). Returns the package module; ``pkg.blocks.<file>.<Class>`` are the models and
    ``pkg.ms_deform_attn_core_pytorch`` the official pure-PyTorch deformable sampling. Cached per path."""
    root = check_official_path(path)
    if root in _LOADED:
        return _LOADED[root]
    pkg = '_stm_official_' + hashlib.sha1(root.encode()).hexdigest()[:10]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)  # torch.cuda.amp.custom_fwd in the official files
            top = _load_package(root, pkg)
    except Exception as e:
        for k in [k for k in sys.modules if k == pkg or k.startswith(pkg + '.')]:
            del sys.modules[k]
        if isinstance(e, OfficialCodeError):
            raise
        raise OfficialCodeError(f'the official code at {root} failed to load: {type(e).__name__}: {e}') from e
    _LOADED[root] = top
    return top


def _load_package(root: str, pkg: str) -> types.ModuleType:
    shim = f'{pkg}._shims'
    patches = _patches(shim)

    def source(rel: str) -> str:
        filename = osp.join(root, rel)
        with open(filename, encoding='utf-8') as f:
            text = f.read()
        for old, new in patches.get(rel, []):
            if old not in text:
                raise OfficialCodeError(f'{filename}: expected the line {old!r} (commit {OFFICIAL_COMMIT}); this '
                                        f'copy differs, so it cannot be loaded safely')
            text = text.replace(old, new)
        return text

    bdir = osp.join(root, BACKBONES_DIR)
    top = types.ModuleType(pkg)
    top.__path__, top.__package__, top.__file__ = [bdir], pkg, osp.join(bdir, '__init__.py')
    sys.modules[pkg] = top
    sys.modules[shim] = _shims(pkg)
    top.meta_arch = _exec_module(f'{pkg}.meta_arch', osp.join(bdir, 'meta_arch.py'),
                                 source(osp.join(BACKBONES_DIR, 'meta_arch.py')), pkg)
    blocks = types.ModuleType(f'{pkg}.blocks')
    blocks.__path__, blocks.__package__ = [osp.join(bdir, 'blocks')], f'{pkg}.blocks'
    sys.modules[f'{pkg}.blocks'] = blocks
    top.blocks = blocks
    for f, _ in MIXERS.values():
        rel = osp.join(BACKBONES_DIR, 'blocks', f'{f}.py')
        setattr(blocks, f, _exec_module(f'{pkg}.blocks.{f}', osp.join(root, rel), source(rel), f'{pkg}.blocks'))
    msda = _exec_module(f'{pkg}.ms_deform_attn_func', osp.join(root, MSDA_FUNC_FILE), source(MSDA_FUNC_FILE), pkg)
    core = msda.ms_deform_attn_core_pytorch

    class PytorchMSDA:
        """Stands in for the compiled ``MSDeformAttnFunction``: the official pure-PyTorch core."""

        @staticmethod
        def apply(value, shapes, level_start_index, locations, weights, im2col_step):
            return core(value, shapes, locations, weights)

    blocks.dcn_v3.MSDeformAttnFunction = PytorchMSDA
    top.ms_deform_attn_core_pytorch = core
    return top


# ---------------------------------------------------------------------------------------------- models
def official_kwargs(family: str, arch: dict) -> dict:
    """The official ``MetaArch`` arguments for one of our resolved ``arch`` dicts (the published configs'
    keys: ``configs/unified_models/*/mask_rcnn_*.py`` of STM-Evaluation)."""
    kw = dict(dims=list(arch['dims']), depths=list(arch['depths']), drop_path_rate=0.0,
              layer_scale_init_value=arch['layer_scale_init'], out_indices=OUT_INDICES)
    heads = list(arch.get('num_heads') or [])
    if family == 'unified_halo':
        kw['block_kwargs'] = dict(num_heads=heads, block_size=arch['block_size'], halo_size=arch['halo_size'],
                                  mlp_ratio=arch['mlp_ratio'])
    elif family == 'unified_swin':
        kw['block_kwargs'] = dict(num_heads=heads, window_size=arch['window_size'], mlp_ratio=arch['mlp_ratio'])
    elif family == 'unified_pvt':
        kw['img_size'] = arch['img_size']
        kw['block_kwargs'] = dict(num_heads=heads, mlp_ratios=list(arch['mlp_ratios']), qkv_bias=arch['qkv_bias'],
                                  sr_ratios=list(arch['sr_ratios']))
    elif family == 'unified_convnext':
        kw['block_kwargs'] = dict(kernel_size=arch['kernel_size'])
    elif family == 'unified_dcn_v3':
        kw['block_kwargs'] = dict(num_heads=heads, deform_points=arch['deform_points'],
                                  kernel_size=arch['dw_kernel'], deform_padding=arch['deform_padding'],
                                  offsets_scaler=arch['offsets_scaler'], mlp_ratio=arch['mlp_ratio'])
        kw['forward_kwargs'] = dict(deform_points=arch['deform_points'], deform_padding=arch['deform_padding'])
    else:
        raise ValueError(f'{family!r} has no official counterpart; valid families: {", ".join(MIXERS)}')
    return kw


def unified_names() -> List[str]:
    from backbones import list_backbones
    return [n for n in list_backbones() if any(n.startswith(f + '_') for f in MIXERS)]


def resolve_names(names: Sequence[str]) -> List[str]:
    """Our table names (``all`` = every unified name); anything else is a ValueError listing the valid ones."""
    valid = unified_names()
    out = []
    for n in names:
        for m in (valid if n == 'all' else [n]):
            if m not in valid:
                raise ValueError(f'{m!r} has no official STM-Evaluation counterpart; valid names: '
                                 f'{", ".join(valid)} (or all)')
            if m not in out:
                out.append(m)
    return out


def build_ours(name: str) -> torch.nn.Module:
    from backbones import build_backbone
    return build_backbone(name, out_indices=OUT_INDICES)


def build_official(pkg: types.ModuleType, ours: torch.nn.Module) -> torch.nn.Module:
    family = type(ours).family
    fname, cls_name = MIXERS[family]
    cls = getattr(getattr(pkg.blocks, fname), cls_name)
    return cls(**official_kwargs(family, ours.arch))


def randomise_official_(model: torch.nn.Module, seed: int = 0) -> int:
    """Seeded non-trivial weights (in place; the scheme of tests/fixtures/unified/README.md): layer scales
    (``gamma*``) ~U(0.5, 1.5); position tables ~N(0, 0.5^2); LayerNorm weights ~U(0.5, 1.5), biases and other
    biases ~N(0, 0.1^2); other weights ~N(0, 1/fan_in); DCN ``sampling_offsets`` weights x2 and bias ~N(0, 1)
    (points move by 1-2 px). Returns the number of tensors set."""
    g = torch.Generator().manual_seed(seed)
    tables = ('pos_embed', 'height_rel', 'width_rel', 'relative_position_bias_table')
    n = 0
    with torch.no_grad():
        for mname, m in model.named_modules():
            for pname, p in m.named_parameters(recurse=False):
                if pname.startswith('gamma'):
                    new = torch.rand(p.shape, generator=g) + 0.5
                elif pname in tables:
                    new = torch.randn(p.shape, generator=g) * 0.5
                elif isinstance(m, torch.nn.LayerNorm) and pname == 'weight':
                    new = torch.rand(p.shape, generator=g) + 0.5
                elif pname == 'bias':
                    new = torch.randn(p.shape, generator=g) * (1.0 if mname.endswith('sampling_offsets') else 0.1)
                else:
                    fan_in = p[0].numel() if p.ndim > 1 else p.numel()
                    new = torch.randn(p.shape, generator=g) / fan_in ** 0.5
                    if mname.endswith('sampling_offsets'):
                        new = new * 2
                p.copy_(new)
                n += 1
    return n


# ---------------------------------------------------------------------------------------------- timing
def make_step(model: torch.nn.Module, x: torch.Tensor, mode: str):
    if mode == 'fwd':
        def step():
            with torch.no_grad():
                model(x)
    else:
        def step():
            loss = sum(o.float().mean() for o in model(x))
            loss.backward()
    return step


def time_interleaved(models: Sequence[torch.nn.Module], x: torch.Tensor, mode: str, warmup: int,
                     repeats: int, log=None) -> List[dict]:
    """Time ``models`` on ``x`` interleaved (warm-ups, then repeat r of each, reversed order on odd r).
    Returns per model ``dict(wall_ms=[...], cpu_ms=[...], warmup_ms=[...])`` plus their summaries."""
    for m in models:
        m.train(mode == 'fwdbwd')
        m.zero_grad(set_to_none=True)
    steps = [make_step(m, x, mode) for m in models]
    res = [dict(warmup_ms=[], wall_ms=[], cpu_ms=[]) for _ in models]
    order = list(range(len(models)))
    for k in range(warmup + repeats):
        seq = order if k % 2 == 0 else order[::-1]
        for i in seq:
            models[i].zero_grad(set_to_none=True)
            c0, t0 = time.process_time(), time.perf_counter()
            steps[i]()
            t1, c1 = time.perf_counter(), time.process_time()
            if k < warmup:
                res[i]['warmup_ms'].append((t1 - t0) * 1e3)
            else:
                res[i]['wall_ms'].append((t1 - t0) * 1e3)
                res[i]['cpu_ms'].append((c1 - c0) * 1e3)
        if log and k >= warmup:
            log(f'  {mode} repeat {k - warmup + 1}/{repeats}: '
                + ', '.join(f'{res[i]["wall_ms"][-1]:.1f} ms' for i in order))
    for r in res:
        r['wall'] = summarize(r['wall_ms'])
        r['cpu'] = summarize(r['cpu_ms'])
    for m in models:
        m.zero_grad(set_to_none=True)
    return res


def compare_and_time(path: str, name: str, shape=(224, 224), batch: int = 1, modes: Sequence[str] = MODES,
                     warmup: int = 2, repeats: int = 7, seed: int = 0, log=None) -> dict:
    """Build ours and the official model for ``name``, give both the same randomised weights, compare the
    four stage outputs, then time both interleaved. Returns a JSON-able dict (see :func:`format_table`)."""
    log = log or (lambda msg: None)
    pkg = load_official(path)
    torch.manual_seed(seed)
    ours = build_ours(name)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # the official meshgrid without indexing=
        official = build_official(pkg, ours)
    n_set = randomise_official_(official, seed)
    report = load_same_weights(official, ours)
    params = [sum(p.numel() for p in m.parameters()) for m in (ours, official)]
    log(f'[{name}] official {type(official).__name__}: {n_set} tensors randomised, loaded into ours '
        f'({report.layout} layout, {report.loaded} tensors)')
    x = torch.randn(batch, 3, *shape, generator=torch.Generator().manual_seed(seed))
    ours.eval(), official.eval()
    raw = ([], [])  # the stage outputs before the output norms (official out_norm_{i}, ours out_norms.{i})
    hooks = [ours.out_norms[i].register_forward_pre_hook(lambda m, a: raw[0].append(a[0])) for i in OUT_INDICES]
    hooks += [getattr(official, f'out_norm_{i}').register_forward_pre_hook(lambda m, a: raw[1].append(a[0]))
              for i in OUT_INDICES]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # the official meshgrid without indexing=
        cmp = compare_outputs(list(ours(x)), list(official(x)), RTOL, ATOL)
    for h in hooks:
        h.remove()
    cmp['raw'] = compare_outputs(*raw, RTOL, ATOL)
    cmp['identical'] = cmp['identical'] and cmp['raw']['identical']
    log(f'[{name}] outputs: ' + ('identical' if cmp['identical'] else 'DIFFERENT')
        + f' (max abs diff {cmp["max_abs_diff"]:.2e}, {cmp["tolerance"]})')
    out = dict(name=name, official_class=type(official).__name__, params_ours=params[0],
               params_official=params[1], layout=report.layout, compare=cmp, shape=list(shape), batch=batch)
    if not cmp['identical']:
        return out
    for mode in modes:
        o, r = time_interleaved([ours, official], x, mode, warmup, repeats, log=log)
        out[mode] = dict(ours=o, official=r,
                         wall_ratio=o['wall']['median_ms'] / r['wall']['median_ms'],
                         cpu_ratio=o['cpu']['median_ms'] / r['cpu']['median_ms'],
                         min_wall_ratio=o['wall']['min_ms'] / r['wall']['min_ms'])
        log(f'[{name}] {mode}: ours {o["wall"]["median_ms"]:.1f} ms, official {r["wall"]["median_ms"]:.1f} ms '
            f'(wall ratio {out[mode]["wall_ratio"]:.2f}, cpu ratio {out[mode]["cpu_ratio"]:.2f})')
    return out


LABEL = {'fwd': 'fwd', 'fwdbwd': 'fwd+bwd'}


def format_table(results: Sequence[dict], modes: Sequence[str] = MODES) -> str:
    """A Markdown table: per name, the output check and per mode the medians and ratios ours / official."""
    head = ['name', 'outputs (max abs diff: returned / raw stage outputs)']
    for m in modes:
        head += [f'{LABEL[m]} ours / official ms (median)', f'{LABEL[m]} ratio wall', f'{LABEL[m]} ratio CPU',
                 f'{LABEL[m]} ratio min wall']
    rows = []
    for r in results:
        c = r['compare']
        row = [r['name'], f'{"OK" if c["identical"] else "DIFFERENT"} ({c["max_abs_diff"]:.1e} / '
                          f'{c["raw"]["max_abs_diff"]:.1e})']
        for m in modes:
            if m not in r:
                row += ['-', '-', '-', '-']
                continue
            d = r[m]
            row += [f'{d["ours"]["wall"]["median_ms"]:.1f} / {d["official"]["wall"]["median_ms"]:.1f}',
                    f'{d["wall_ratio"]:.2f}', f'{d["cpu_ratio"]:.2f}', f'{d["min_wall_ratio"]:.2f}']
        rows.append(row)
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '|'.join(' --- ' for _ in head) + '|']
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return '\n'.join(lines)


def run_cli(args, log=None) -> int:
    """``benchmark_backbones.py NAME... --stm-official PATH``: compare and time every name; prints the table
    (and writes ``--json``). Exit status 0, 1 when outputs differ, 2 for a bad path or name."""
    import json
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        names = resolve_names(args.names)
        if not names:
            raise ValueError(f'--stm-official needs unified names; valid names: {", ".join(unified_names())}')
        if args.device != 'cpu':
            raise ValueError('--stm-official runs on CPU only (the official DCNv3 runs its pure-PyTorch core)')
        if args.amp:
            raise ValueError('--stm-official compares float32 models; --amp is not supported')
        root = check_official_path(args.stm_official)
        load_official(root)
    except (OfficialCodeError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    meta = dict(torch=torch.__version__, threads=torch.get_num_threads(), shape=list(args.shape), batch=args.batch,
                warmup=args.warmup, repeats=args.repeats, modes=list(args.modes), official=root,
                time=time.strftime('%Y-%m-%d %H:%M:%S'))
    print(f'torch {meta["torch"]} | cpu | threads {meta["threads"]} | input {args.batch}x3x{args.shape[0]}x'
          f'{args.shape[1]} | warmup {args.warmup}, repeats {args.repeats} | official code: {root}', flush=True)
    results = [compare_and_time(root, n, tuple(args.shape), args.batch, args.modes, args.warmup, args.repeats,
                                log=log) for n in names]
    print()
    print(format_table(results, args.modes))
    print('\nratios = ours / official median (wall: time.perf_counter; CPU: time.process_time of the process), '
          'and of the fastest step (min wall, the least disturbed by other load); <= 1.00 means ours is faster. Outputs: the four stage outputs of one eval forward, same weights, '
          f'torch.allclose rtol={RTOL:g} atol={ATOL:g}.')
    if args.json:
        d = osp.dirname(osp.abspath(args.json))
        os.makedirs(d, exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(dict(meta=meta, results=results), f, indent=2)
        print(f'\nraw numbers written to {args.json}')
    bad = [r['name'] for r in results if not r['compare']['identical']]
    if bad:
        print(f'error: outputs differ from the official code for {", ".join(bad)}', file=sys.stderr)
        return 1
    return 0
