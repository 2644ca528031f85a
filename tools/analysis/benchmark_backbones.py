#!/usr/bin/env python
"""Speed and memory of backbones: inference forward and training forward+backward.

Examples::

    python tools/analysis/benchmark_backbones.py conv2former_t
    python tools/analysis/benchmark_backbones.py conv2former_n conv2former_t \\
        --reference conv2former_t=convnext_tiny --repeats 3 --json bench.json
    python tools/analysis/benchmark_backbones.py all --device cuda --amp --batch 2
    python tools/analysis/benchmark_backbones.py conv2former_t --shape 512 512 --modes fwd --threads 8

Every ``NAME`` is one of ``backbones.list_backbones()`` (``all`` = every one of them), built with
``build_backbone(NAME, out_indices=(0, 1, 2, 3))`` and random weights. The input is
``randn(B, 3, H, W)`` (default 1x3x800x1216, the usual detection size). Two modes are measured:

``fwd``
    eval mode, ``torch.no_grad()``: inference.
``fwdbwd``
    train mode, ``loss = sum(out.mean() for out in outputs)``, ``loss.backward()``; gradients are
    zeroed (set to ``None``, outside the timing) before every step, so each step allocates them
    afresh.

Timing: ``--warmup`` untimed steps, then ``--repeats`` steps timed one by one with
``time.perf_counter`` (``torch.cuda.synchronize`` before and after on CUDA); the table shows the
median and [min, max]; ``--json`` keeps every repeat. ``--amp`` runs the forward under
``torch.autocast`` (bfloat16 on CPU, float16 on CUDA; no GradScaler, the loss is only timed).
``--threads`` sets ``torch.set_num_threads`` (CPU intra-op threads). On CUDA,
``torch.backends.cudnn.benchmark`` is switched on (fixed input size); the warm-up absorbs its search.

Peak memory (MiB = 2**20 bytes) of one step, measured differently per device:

CUDA
    ``torch.cuda.max_memory_allocated()`` after ``torch.cuda.reset_peak_memory_stats()``, minus
    ``torch.cuda.memory_allocated()`` just before the step: the tensors the step itself needs
    (activations, gradients, workspaces), not the weights, the input or the caching allocator's
    reserve. Measured on every timed repeat, the maximum is reported.
CPU
    PyTorch does not count CPU allocations, so every (model, mode) pair is run once more in a fresh
    child process (this script re-invoked with a hidden flag) that builds the model and the input,
    reads its resident set size (RSS), runs ONE step (no warm-up) and reads its peak RSS. The number
    is peak RSS minus RSS before the step: what the step adds on top of weights and input, including
    allocator caching and one-off library buffers (oneDNN, thread pools; a few MiB). The peak is
    reset first through ``/proc/self/clear_refs`` (Linux), so a higher peak while building the model
    does not hide the step's; where that is not allowed, the growth of
    ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` over the step is used instead, which can only
    under-estimate (the JSON says which method was used). ``--no-memory`` skips these children.

References: ``--reference OURS=TIMM_NAME`` (repeatable, e.g. ``conv2former_t=convnext_tiny``) also
measures ``timm.create_model(TIMM_NAME, pretrained=False, features_only=True, out_indices=(0, 1, 2, 3))``
on the same input with the same settings. Our model and its references are measured interleaved
(warm-ups, then repeat 1 of each, repeat 2 of each in reverse order, ...), so slow drifts of the
machine (clocks, other load) hit both alike. The table gives, on each reference row, the ratio
OURS / REFERENCE for params, both medians and both peaks: a time ratio <= 1.0 means ours is faster.
``OURS`` is added to the names when it is not among them.

``--same-weights`` makes the comparison exact: each reference is then the FULL timm model
(``timm.create_model(TIMM_NAME)``) run through ``forward_intermediates(x, indices=[0, 1, 2, 3],
intermediates_only=True)`` (the same stage outputs as ``features_only``, no head), its weights are
randomised away from the init (seeded; layer scales, GRN, norms and biases become non-trivial: with the
init's 1e-6 layer scales every block is nearly the identity and any two implementations agree), and
its ``state_dict()`` is loaded into ours through our own strict loader (``load_pretrained``, which
converts timm's layout). Ours is built with ``out_norm=False`` (raw stage outputs, as timm's). Before
timing, one inference forward of both on the benchmark input is compared stage by stage: the table
gives the max abs difference and the max difference relative to the largest magnitude of timm's
stage output, and ``OK`` when ``torch.allclose(ours, timm, rtol=1e-4, atol=1e-4)`` holds on every
stage (float32 re-association alone moves the deep stages of the large models by ~1e-5). A reference
whose weights do not load into ours (another architecture) is a usage error naming the keys.
``--timm-twin`` adds, for every NAME, the timm model of the same name as its reference where timm has
one (ConvNeXt, ConvNeXt V2, PoolFormerV2, ConvFormer, CAFormer).

``--compile [BACKEND]`` (default backend ``inductor``) adds, for every NAME, a row ``NAME [compiled]``: the
same model and weights built with ``compile=glue.measure.compile_options(BACKEND)`` (the trunk through
``torch.compile(fullgraph=True, dynamic=False)``; a graph break is an error), measured interleaved with the
eager one. Its ``x ... ms`` columns are eager / compiled (> 1.00: compiling is faster); the first warm-up
step includes the compilation (reported, and kept in the JSON as ``warmup_ms``), and the compiled outputs
are compared with the eager ones (``||compiled - eager|| / ||eager||`` per stage, eval mode). Its memory is
not measured (the one-step child would measure the compiler).

``--stm-official PATH`` (unified names only, CPU): instead of the above, each NAME is compared with the
official STM-Evaluation detection backbone read at run time from a fetched copy of that code at PATH (never
part of this project), with the same randomised weights, outputs checked, then both timed interleaved
(wall and process CPU time); see ``glue/stm_reference.py`` and docs/speed.md.

``--check-outputs`` runs one inference forward of each model and prints the output SHAPES (and
whether ours and each reference agree); with ``--same-weights`` the values are compared as above.

Exit status: 0 on success; 1 when ``--same-weights`` finds different outputs; 2 for bad arguments
(unknown backbone or timm name, CUDA requested but not available, weights that do not load), with a
message and no traceback.
"""
import argparse
import contextlib
import gc
import json
import os.path as osp
import platform
import subprocess
import sys
import time

import torch

from glue.measure import (MIB, amp_dtype, compare_outputs, compile_options, load_same_weights, measure_step_rss,
                          proc_status_kib, relative_errors, resolve_device, summarize, sync, tool_entry)
from glue.runtime import write_json

MODES = ('fwd', 'fwdbwd')
MODE_LABEL = {'fwd': 'fwd', 'fwdbwd': 'fwd+bwd'}
OUT_INDICES = (0, 1, 2, 3)
CHILD_FLAG = '--_memory-child'
CHILD_TAG = '@@BENCH_MEMORY@@ '

MEMORY_NOTE = {
    'cuda': ('peak MiB (CUDA) = torch.cuda.max_memory_allocated() during one step minus '
             'torch.cuda.memory_allocated() before it: activations/gradients/workspaces of the step, '
             'excluding weights, input and the allocator cache; max over the timed repeats.'),
    'cpu': ('peak MiB (CPU) = peak RSS growth over ONE step (no warm-up) in a fresh child process, '
            'relative to its RSS right before the step (weights and input already allocated); includes '
            'allocator caching and one-off library buffers.'),
}


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------
# models and steps


class TimmIntermediates(torch.nn.Module):
    """A full timm model returning its stage outputs (``forward_intermediates``), head not run."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_intermediates(x, indices=list(OUT_INDICES), intermediates_only=True)


def build_model(kind: str, name: str, backend: str = 'inductor') -> torch.nn.Module:
    """kind: ``ours``, ``ours_raw`` (``out_norm=False``), ``ours_compiled``, ``timm`` (features_only) or
    ``timm_full``."""
    if kind in ('ours', 'ours_raw', 'ours_compiled'):
        from backbones import build_backbone
        extra = dict(out_norm=False) if kind == 'ours_raw' else {}
        if kind == 'ours_compiled':
            extra['compile'] = compile_options(backend)
        return build_backbone(name, out_indices=OUT_INDICES, **extra)
    import timm
    if kind == 'timm_full':
        return TimmIntermediates(timm.create_model(name, pretrained=False))
    return timm.create_model(name, pretrained=False, features_only=True, out_indices=OUT_INDICES)


def randomise_(model: torch.nn.Module, seed: int = 0) -> None:
    """Seeded non-trivial weights: matrices/kernels ~N(0, 0.3^2 / fan_in), biases ~N(0, 0.1^2), residual
    scales ~U(0.5, 1), every other 1-D parameter (norm weights, layer scales, GRN, StarReLU) ~U(0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 / p[0].numel() ** 0.5)
            elif n.endswith('bias') or n.endswith('beta'):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif 'res_scale' in n:
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.5)
            else:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)


def transfer_weights(ours: torch.nn.Module, theirs: 'TimmIntermediates') -> str:
    """Load the timm model's weights into ours through our strict loader; returns the layout seen."""
    report = load_same_weights(theirs.model, ours)
    return f'{report.layout}, {report.loaded} tensors loaded, {len(report.dropped_classifier)} head keys dropped'


def as_outputs(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return list(out.values())
    return list(out)



def set_mode(model: torch.nn.Module, mode: str) -> None:
    model.train(mode == 'fwdbwd')
    model.zero_grad(set_to_none=True)


def make_step(model: torch.nn.Module, x: torch.Tensor, mode: str, dtype):
    """A closure running one step: fwd (eval, no_grad) or fwd+bwd (train)."""
    def autocast():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=dtype)

    if mode == 'fwd':
        def step():
            with torch.no_grad(), autocast():
                model(x)
    else:  # the caller zeroes the gradients (set to None) before each step, outside the timing
        def step():
            with autocast():
                loss = sum(o.float().mean() for o in as_outputs(model(x)))
            loss.backward()
    return step


def make_input(shape, batch, device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, shape[0], shape[1], generator=gen).to(device)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())



# ----------------------------------------------------------------------------------------------------
# CPU memory: one measurement in a fresh child process






def memory_child(spec: dict) -> dict:
    """Runs inside the child: build, measure RSS, one step, peak RSS."""
    torch.set_num_threads(spec['threads'])
    rss_start = proc_status_kib('VmRSS')
    torch.manual_seed(0)
    model = build_model(spec['kind'], spec['name'])
    set_mode(model, spec['mode'])
    x = make_input(spec['shape'], spec['batch'], torch.device('cpu'))
    step = make_step(model, x, spec['mode'], amp_dtype(torch.device('cpu'), spec['amp']))
    out = measure_step_rss(step)
    out['rss_start_mib'] = None if rss_start is None else rss_start / 1024.0
    return out


def run_memory_child(kind, name, mode, args) -> dict:
    spec = dict(kind=kind, name=name, mode=mode, shape=list(args.shape), batch=args.batch,
                threads=args.threads, amp=args.amp)
    cmd = [sys.executable, osp.abspath(__file__), CHILD_FLAG, json.dumps(spec)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_TAG):
            return json.loads(line[len(CHILD_TAG):])
    tail = (proc.stderr.strip().splitlines() or ['(no output)'])[-1]
    return dict(peak_mib=None, method='child failed', error=f'exit {proc.returncode}: {tail}')


# ----------------------------------------------------------------------------------------------------
# arguments


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Time and measure the memory of backbones (forward / forward+backward).',
        epilog='See the module docstring for how memory is measured on CPU and CUDA.')
    p.add_argument('names', nargs='*', metavar='NAME',
                   help="backbone names from backbones.list_backbones(), or 'all'")
    p.add_argument('--shape', nargs=2, type=int, default=[800, 1216], metavar=('H', 'W'),
                   help='input height and width (default 800 1216)')
    p.add_argument('--batch', type=int, default=1, help='batch size (default 1)')
    p.add_argument('--repeats', type=int, default=5, help='timed steps per model and mode (default 5)')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps first (default 2)')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda' / 'cuda:N' (default cpu)")
    p.add_argument('--amp', action='store_true', help='torch.autocast: bfloat16 on CPU, float16 on CUDA')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch default)')
    p.add_argument('--reference', nargs='+', default=[], metavar='NAME=TIMM_NAME', action='extend',
                   help='also benchmark a timm features_only model and print ours/timm ratios')
    p.add_argument('--modes', nargs='+', choices=MODES, default=list(MODES), help='modes (default both)')
    p.add_argument('--json', metavar='OUT.json', help='write every raw number here')
    p.add_argument('--timm-twin', action='store_true',
                   help='for every NAME timm also has, benchmark timm\'s model of that name beside it')
    p.add_argument('--same-weights', action='store_true',
                   help='load each (randomised) timm reference\'s weights into ours and check the outputs '
                        'are identical before timing (one reference per name)')
    p.add_argument('--check-outputs', action='store_true',
                   help='print output shapes of ours and references (values too with --same-weights)')
    p.add_argument('--no-memory', action='store_true', help='skip the memory measurement')
    p.add_argument('--compile', nargs='?', const='inductor', metavar='BACKEND',
                   help='also measure every NAME through torch.compile (default backend inductor)')
    p.add_argument('--stm-official', metavar='PATH',
                   help='unified NAMEs only: compare and time against the official STM-Evaluation code '
                        'read from this fetched copy, same weights (glue/stm_reference.py; CPU)')
    args = p.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or min(args.shape) < 1:
        p.error('--batch, --repeats and --shape must be >= 1, --warmup >= 0')
    if args.threads is not None and args.threads < 1:
        p.error('--threads must be >= 1')
    if args.compile is not None:
        backends = torch._dynamo.list_backends(exclude_tags=())
        if args.compile not in backends:
            p.error(f'--compile: unknown backend {args.compile!r} (give names before --compile, or a backend: '
                    f'{", ".join(backends)})')
        if args.same_weights:
            p.error('--compile and --same-weights cannot be combined')
    if not args.names and not args.reference:
        p.error('give at least one backbone NAME (or --reference NAME=TIMM_NAME)')
    args.modes = [m for m in MODES if m in args.modes]
    return args


def resolve(args):
    """Validate everything before measuring anything. Returns (device, [(ours, [timm names])])."""
    device = resolve_device(args.device, UsageError)

    from backbones import build_backbone, list_backbones
    valid = list_backbones()

    def check_ours(name):
        if name in valid:
            return name
        try:  # aliases / family names are accepted by build_backbone; unknown names raise with the list
            build_backbone(name, out_indices=OUT_INDICES)
        except (ValueError, KeyError) as e:
            msg = e.args[0] if e.args else str(e)
            raise UsageError(f'{msg}' if 'valid names' in str(msg)
                             else f'{name!r}: {msg}; valid names: {", ".join(valid)}') from None
        return name

    names = []
    for n in args.names:
        for m in (valid if n == 'all' else [n]):
            if m not in names:
                names.append(check_ours(m))

    refs = {}
    if args.reference or args.timm_twin:
        try:
            import timm
        except ImportError as e:
            raise UsageError(f'--reference / --timm-twin need timm: {e}') from None
        for item in args.reference:
            ours, sep, theirs = item.partition('=')
            ours, theirs = ours.strip(), theirs.strip()
            if not sep or not ours or not theirs:
                raise UsageError(f'--reference expects OURS=TIMM_NAME, got {item!r}')
            if not timm.is_model(theirs):
                close = timm.list_models(f'*{theirs.split("_")[0]}*')[:12]
                raise UsageError(f'unknown timm model {theirs!r}'
                                 + (f'; similar: {", ".join(close)}' if close else ''))
            if ours not in names:
                names.append(check_ours(ours))
                log(f'note: {ours} added to the names (it has a reference)')
            if theirs not in refs.setdefault(ours, []):
                refs[ours].append(theirs)
    if args.timm_twin:
        for n in names:
            if timm.is_model(n) and n not in refs.setdefault(n, []):
                refs[n].append(n)
        twins = [n for n in names if refs.get(n)]
        if not twins:
            raise UsageError('--timm-twin: timm has none of ' + ', '.join(names))
    if args.same_weights:
        if not any(refs.values()):
            raise UsageError('--same-weights needs references (--reference OURS=TIMM_NAME or --timm-twin)')
        for n, r in refs.items():
            if len(r) > 1:
                raise UsageError(f'--same-weights takes one reference per name; {n} has {", ".join(r)}')
    return device, [(n, refs.get(n, [])) for n in names]


# ----------------------------------------------------------------------------------------------------
# measuring



def bench_group(ours, theirs, device, x, args) -> list:
    """Measure our model and its references interleaved; one result dict per model."""
    dtype = amp_dtype(device, args.amp)
    same = args.same_weights and bool(theirs)
    entries = [dict(kind='ours_raw' if same else 'ours', model=ours, label=ours, reference_for=None)]
    entries += [dict(kind='timm_full' if same else 'timm', model=t, label=f'timm:{t}', reference_for=ours)
                for t in theirs]
    if args.compile:
        entries.append(dict(kind='ours_compiled', model=ours, label=f'{ours} [compiled]', reference_for=ours))
    models = []
    for e in entries:
        log(f'[{e["label"]}] building')
        torch.manual_seed(0)
        m = build_model(e['kind'], e['model'], args.compile)
        if e['kind'] == 'ours_compiled':
            m.load_state_dict(models[0].state_dict())
        if same and e['kind'] == 'timm_full':
            randomise_(m)
            try:
                e['weights'] = transfer_weights(models[0], m)
            except Exception as err:  # noqa: BLE001 -- a mismatch is reported as a usage error
                raise UsageError(f'--same-weights: the weights of timm {e["model"]} do not load into '
                                 f'{ours}:\n{err}') from None
            log(f'[{e["label"]}] weights loaded into {ours}: {e["weights"]}')
        e['params'] = n_params(m)
        models.append(m)
    models = [m.to(device) for m in models]

    if same:
        for m in models:
            m.eval()
        with torch.no_grad():
            ref_outs = [as_outputs(m(x)) for m in models]
        for e, outs in zip(entries[1:], ref_outs[1:]):
            e['same_weights'] = compare_outputs(ref_outs[0], outs)
            worst = max((s.get('max_abs_diff', float('inf')) for s in e['same_weights']['stages']), default=0)
            log(f'[{e["label"]}] outputs vs {ours}: '
                + ('identical' if e['same_weights']['identical'] else 'DIFFERENT')
                + f' (max abs diff {worst:.2e})')
        del ref_outs

    if args.check_outputs:
        for e, m in zip(entries, models):
            m.eval()
            with torch.no_grad():
                outs = as_outputs(m(x))
            e['output_shapes'] = [list(o.shape) for o in outs]
            del outs
        for e in entries[1:]:
            e['shapes_match_ours'] = e['output_shapes'] == entries[0]['output_shapes']

    for e, m in zip(entries, models):
        if e['kind'] == 'ours_compiled':
            models[0].eval(), m.eval()
            with torch.no_grad():
                t0 = time.perf_counter()
                out = m(x)
                e['compile_s'] = time.perf_counter() - t0
                e['rel_err_vs_eager'] = relative_errors(out, models[0](x))
            log(f'[{e["label"]}] compiled in {e["compile_s"]:.1f} s; ||compiled - eager|| / ||eager|| per stage: '
                + ', '.join(f'{v:.1e}' for v in e['rel_err_vs_eager']))

    for mode in args.modes:
        steps = []
        for e, m in zip(entries, models):
            set_mode(m, mode)
            steps.append(make_step(m, x, mode, dtype))
            e[mode] = dict(warmup_ms=[], times_ms=[], cuda_peak_mib=[])
        order = list(range(len(entries)))
        for k in range(args.warmup):
            for i in order:
                models[i].zero_grad(set_to_none=True)
                sync(device)
                t0 = time.perf_counter()
                steps[i]()
                sync(device)
                entries[i][mode]['warmup_ms'].append((time.perf_counter() - t0) * 1e3)
            log(f'[{ours}] {MODE_LABEL[mode]} warm-up {k + 1}/{args.warmup}: '
                + ', '.join(f'{entries[i]["label"]} {entries[i][mode]["warmup_ms"][-1]:.1f} ms' for i in order))
        for r in range(args.repeats):
            for i in (order if r % 2 == 0 else order[::-1]):
                models[i].zero_grad(set_to_none=True)  # last step's gradients are not counted as held
                if device.type == 'cuda':
                    sync(device)
                    torch.cuda.reset_peak_memory_stats(device)
                    before = torch.cuda.memory_allocated(device)
                sync(device)
                t0 = time.perf_counter()
                steps[i]()
                sync(device)
                entries[i][mode]['times_ms'].append((time.perf_counter() - t0) * 1e3)
                if device.type == 'cuda':
                    peak = torch.cuda.max_memory_allocated(device) - before
                    entries[i][mode]['cuda_peak_mib'].append(peak / MIB)
            log(f'[{ours}] {MODE_LABEL[mode]} repeat {r + 1}/{args.repeats}: '
                + ', '.join(f'{entries[i]["label"]} {entries[i][mode]["times_ms"][-1]:.1f} ms' for i in order))
        for e in entries:
            e[mode].update(summarize(e[mode]['times_ms']))
            if device.type == 'cuda':
                e[mode]['peak_mib'] = max(e[mode]['cuda_peak_mib'])
                e[mode]['memory_method'] = 'cuda max_memory_allocated - memory_allocated before'
            else:
                del e[mode]['cuda_peak_mib']
        for m in models:
            m.zero_grad(set_to_none=True)

    del models, steps, m
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()

    if device.type == 'cpu':
        for e in entries:
            for mode in args.modes:
                if args.no_memory or e['kind'] == 'ours_compiled':
                    e[mode]['peak_mib'] = None
                    continue
                log(f'[{e["label"]}] {MODE_LABEL[mode]} memory (fresh child process)')
                mem = run_memory_child(e['kind'], e['model'], mode, args)
                e[mode]['peak_mib'] = mem.get('peak_mib')
                e[mode]['memory_method'] = mem.get('method')
                e[mode]['memory_child'] = mem
                if mem.get('error'):
                    log(f'  memory measurement failed: {mem["error"]}')
    return entries


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def add_ratios(results, modes) -> list:
    by_label = {e['label']: e for e in results}
    ratios = []
    for e in results:
        if e['reference_for'] is None:
            continue
        o = by_label[e['reference_for']]
        r = dict(ours=o['label'], reference=e['label'], params=ratio(o['params'], e['params']))
        for mode in modes:
            r[f'{mode}_median'] = ratio(o[mode]['median_ms'], e[mode]['median_ms'])
            r[f'{mode}_peak_mem'] = ratio(o[mode].get('peak_mib'), e[mode].get('peak_mib'))
        e['ratio_ours_over_this'] = r
        ratios.append(r)
    return ratios


# ----------------------------------------------------------------------------------------------------
# output


def fmt_table(results, modes, with_ratios) -> str:
    def num(v, f='{:.1f}'):
        return '-' if v is None else f.format(v)

    head = ['name', 'params (M)']
    head += [f'{MODE_LABEL[m]} ms median [min, max]' for m in modes]
    head += [f'{MODE_LABEL[m]} peak MiB' for m in modes]
    if with_ratios:
        head += ['x params'] + [f'x {MODE_LABEL[m]} ms' for m in modes] + [f'x {MODE_LABEL[m]} MiB' for m in modes]
    rows = []
    for e in results:
        row = [('  vs ' if e['reference_for'] else '') + e['label'], f'{e["params"] / 1e6:.2f}']
        row += [f'{e[m]["median_ms"]:.1f} [{e[m]["min_ms"]:.1f}, {e[m]["max_ms"]:.1f}]' for m in modes]
        row += [num(e[m].get('peak_mib')) for m in modes]
        if with_ratios:
            r = e.get('ratio_ours_over_this')
            if r is None:
                row += [''] * (1 + 2 * len(modes))
            else:
                row += [num(r['params'], '{:.2f}')] + [num(r[f'{m}_median'], '{:.2f}') for m in modes]
                row += [num(r[f'{m}_peak_mem'], '{:.2f}') for m in modes]
        rows.append(row)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    line = lambda cells: '  '.join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(head), line(['-' * w for w in widths])] + [line(r) for r in rows]
    if with_ratios:
        out.append('x columns (on "vs" rows) = ours / that reference; a time ratio <= 1.00 means ours is faster'
                   + (' (on "[compiled]" rows: eager / compiled, > 1.00 means compiling is faster).'
                      if any(e['kind'] == 'ours_compiled' for e in results) else '.'))
    for e in results:
        if 'rel_err_vs_eager' in e:
            out.append(f'{e["label"]}: first call (compilation) {e["compile_s"]:.1f} s; ||compiled - eager|| / '
                       f'||eager|| per stage: ' + ', '.join(f'{v:.1e}' for v in e['rel_err_vs_eager']))
    return '\n'.join(out)


def header(device, args) -> dict:
    meta = dict(torch=torch.__version__, python=platform.python_version(), device=str(device),
                threads=args.threads, shape=list(args.shape), batch=args.batch, amp=args.amp,
                amp_dtype=str(amp_dtype(device, args.amp)).replace('torch.', '') if args.amp else None,
                warmup=args.warmup, repeats=args.repeats, modes=args.modes, compile=args.compile,
                memory=None if args.no_memory and device.type == 'cpu' else MEMORY_NOTE[device.type],
                argv=sys.argv[1:], time=time.strftime('%Y-%m-%d %H:%M:%S'))
    if device.type == 'cuda':
        meta['device_name'] = torch.cuda.get_device_name(device)
        meta['cuda'] = torch.version.cuda
        meta['cudnn_benchmark'] = True
    else:
        meta['device_name'] = platform.processor() or platform.machine()
    try:
        import timm
        meta['timm'] = timm.__version__
    except ImportError:
        pass
    return meta


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.stm_official:
        from glue.stm_reference import run_cli
        return run_cli(args)
    try:
        device, groups = resolve(args)
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    if device.type == 'cuda':
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True

    meta = header(device, args)
    print(f'torch {meta["torch"]} | device {meta["device"]} ({meta["device_name"]}) | threads {args.threads} | '
          f'input {args.batch}x3x{args.shape[0]}x{args.shape[1]} (batch {args.batch}) | '
          f'amp {meta["amp_dtype"] or "off"} | warmup {args.warmup}, repeats {args.repeats}'
          + (' | cudnn.benchmark on' if device.type == 'cuda' else ''), flush=True)
    if meta['memory']:
        print(meta['memory'], flush=True)

    x = make_input(args.shape, args.batch, device)
    results = []
    try:
        for ours, theirs in groups:
            results += bench_group(ours, theirs, device, x, args)
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    ratios = add_ratios(results, args.modes)

    print()
    print(fmt_table(results, args.modes, bool(ratios)))
    if args.same_weights:
        print('\nsame weights (timm\'s randomised weights loaded into ours; eval forward on the input above; '
              'max |ours - timm| per stage, and relative to max |timm|):')
        for e in results:
            sw = e.get('same_weights')
            if sw is None:
                continue
            stages = '; '.join(
                (f'{s["max_abs_diff"]:.1e} ({s["max_rel_diff"]:.1e})' if 'max_abs_diff' in s
                 else f'shape {s["shape_ours"]} vs {s["shape_ref"]}') for s in sw['stages'])
            print(f'  {e["reference_for"]} vs {e["label"]}: '
                  + ('OK identical' if sw['identical'] else 'DIFFERENT') + f' [{sw["tolerance"]}]  {stages}')
    if args.check_outputs:
        print('\noutput shapes' + ('' if args.same_weights else
                                        ' (shapes only; weights are not transferred, values are not compared)')
              + ':')
        for e in results:
            shapes = ', '.join('x'.join(map(str, s)) for s in e['output_shapes'])
            tail = ''
            if 'shapes_match_ours' in e:
                tail = '  -> same as ours' if e['shapes_match_ours'] else '  -> DIFFERENT from ours'
            print(f'  {e["label"]}: {shapes}{tail}')
    if args.json:
        write_json(args.json, dict(meta=meta, results=results, ratios=ratios))
        print(f'\nraw numbers written to {args.json}')
    different = [e['label'] for e in results if e.get('same_weights') and not e['same_weights']['identical']]
    if different:
        print(f'error: outputs differ from ours for {", ".join(different)}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(tool_entry(main, memory_child, CHILD_FLAG, CHILD_TAG))
