"""The speed table of every backbone and of the whole T-size models, as one reproducible document.

``tools/analysis/speed_table.py`` runs the two benchmark tools as child processes (they stay the only
place where time and memory are measured) and renders their JSON output with :func:`render`:

1. ``tools/analysis/benchmark_backbones.py all --shape H W --json ...``: every registered backbone,
   forward and forward+backward time and peak memory;
2. ``tools/analysis/benchmark.py CONFIG --shape H W --no-memory --json ...`` for the Mask R-CNN and UperNet
   configs of each family's T-size (:data:`WHOLE_MODELS`): ``model.test_step`` images/s.

The document states the date, the machine and the exact commands above each table, so a reader can
re-run any row.
"""
import json
import os
import os.path as osp
import platform
import re
import shlex
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

# the T-size of every family (MetaFormer: the smallest of each of its five models), as named in configs/
WHOLE_MODELS = ('conv2former_t', 'convnext_t', 'convnextv2_tiny', 'identityformer_s12', 'randformer_s12',
                'poolformerv2_s12', 'convformer_s18', 'caformer_s18', 'unified_convnext_tiny',
                'unified_halo_tiny', 'unified_pvt_tiny', 'unified_swin_tiny', 'unified_dcn_v3_tiny')
TASKS = (('Mask R-CNN', 'maskrcnn', 'configs/det/{}_maskrcnn.py'),
         ('UperNet', 'upernet', 'configs/seg/{}_upernet.py'))


def machine() -> str:
    """'<cpu model> (family F model M, <ISA>), <n> logical cores, <mem> GiB' from /proc (Linux), else what
    platform knows. The family/model and torch's CPU capability (AVX512, AVX2, ...) tell apart machines that
    share a model name ('AMD EPYC' is a Zen 2 with AVX2 only or a Zen 4 with AVX-512): oneDNN picks its
    kernels by the instruction set, and the ratios of docs/speed.md differ between them."""
    cpu = platform.processor() or platform.machine()
    info = {}
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key in ('model name', 'cpu family', 'model') and key not in info:
                    info[key] = value.strip()
                if not line.strip():  # the first processor's block is enough
                    break
        cpu = info.get('model name', cpu)
    except OSError:
        pass
    extra = []
    if 'cpu family' in info and 'model' in info:
        extra.append(f'family {info["cpu family"]} model {info["model"]}')
    try:
        import torch
        extra.append(torch.backends.cpu.get_cpu_capability())
    except (ImportError, AttributeError):
        pass
    if extra:
        cpu += f' ({", ".join(extra)})'
    mem = ''
    try:
        with open('/proc/meminfo') as f:
            kib = int(f.readline().split()[1])
        mem = f', {kib / 2 ** 20:.0f} GiB memory'
    except (OSError, ValueError, IndexError):
        pass
    return f'{cpu}, {os.cpu_count()} logical cores{mem}'


def _command(tool: str, args: Sequence[str]) -> List[str]:
    return [sys.executable, tool, *args]


def _show(cmd: Sequence[str]) -> str:
    """The command as a reader types it from the repository root (``python tools/...``)."""
    return _relative(' '.join(shlex.quote(c) for c in ['python', *cmd[1:]]))


def _relative(command: str) -> str:
    return re.sub(r'\S*/(tools/)', r'\1', command)


def run(cmd: List[str], log_file: str) -> None:
    """Run one benchmark tool; its output goes to ``log_file``, its progress lines to the console."""
    os.makedirs(osp.dirname(osp.abspath(log_file)), exist_ok=True)
    print('$ ' + _show(cmd), flush=True)
    with open(log_file, 'w') as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log_file) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f'{_show(cmd)} failed (exit {proc.returncode}); log {log_file}:\n{tail}')


def backbone_args(shape, threads: int, repeats: int, warmup: int, names: Sequence[str], out: str) -> List[str]:
    return [*names, '--shape', str(shape[0]), str(shape[1]), '--threads', str(threads),
            '--repeats', str(repeats), '--warmup', str(warmup), '--json', out]


def model_args(config: str, shape, threads: int, repeats: int, warmup: int, out: str) -> List[str]:
    return [config, '--shape', str(shape[0]), str(shape[1]), '--threads', str(threads),
            '--repeats', str(repeats), '--warmup', str(warmup), '--no-memory', '--json', out]


def measure_all(work_dir: str, shape=(512, 512), threads: int = 2, repeats: int = 3, warmup: int = 1,
                names: Sequence[str] = ('all', ), models: Optional[Sequence[str]] = WHOLE_MODELS,
                root: str = '.') -> dict:
    """Run both tools; returns ``dict(backbones=path, models=[(family, task, path)], commands=...)``."""
    t0 = time.time()
    out = osp.join(work_dir, 'backbones.json')
    bb_cmd = _command(osp.join(root, 'tools/analysis/benchmark_backbones.py'),
                      backbone_args(shape, threads, repeats, warmup, names, out))
    run(bb_cmd, osp.join(work_dir, 'backbones.log'))
    print(f'  backbones done in {time.time() - t0:.0f} s', flush=True)
    model_runs, model_cmds = [], []
    for i, name in enumerate(models or ()):
        for task, slug, pattern in TASKS:
            config = pattern.format(name)
            js = osp.join(work_dir, f'{name}_{slug}.json')
            cmd = _command(osp.join(root, 'tools/analysis/benchmark.py'),
                           model_args(config, shape, threads, repeats, warmup, js))
            run(cmd, js[:-5] + '.log')
            model_runs.append((name, task, js))
            model_cmds.append(_show(cmd))
        print(f'  whole models {i + 1}/{len(models)} ({name}) after {time.time() - t0:.0f} s', flush=True)
    return dict(backbones=out, backbone_command=_show(bb_cmd), models=model_runs, model_commands=model_cmds,
                seconds=round(time.time() - t0), machine=machine())


def _ms(d: Optional[dict]) -> str:
    return '-' if not d else f'{d["median_ms"]:.0f}'


def _mib(v) -> str:
    return '-' if v is None else f'{v:.0f}'


def backbone_table(data: dict) -> List[str]:
    rows = ['| backbone | params (M) | fwd ms | fwd+bwd ms | fwd peak MiB | fwd+bwd peak MiB |',
            '|---|---:|---:|---:|---:|---:|']
    for e in data['results']:
        if e.get('reference_for'):
            continue
        rows.append(f'| {e["label"]} | {e["params"] / 1e6:.1f} | {_ms(e.get("fwd"))} | {_ms(e.get("fwdbwd"))} '
                    f'| {_mib((e.get("fwd") or {}).get("peak_mib"))} '
                    f'| {_mib((e.get("fwdbwd") or {}).get("peak_mib"))} |')
    return rows


def model_table(runs: Sequence[tuple]) -> List[str]:
    by_name: Dict[str, dict] = {}
    for name, task, path in runs:
        with open(path) as f:
            by_name.setdefault(name, {})[task] = json.load(f)['result']
    head = ' | '.join(f'{t} images/s | {t} params (M)' for t, _, _ in TASKS)
    rows = [f'| T-size backbone | {head} |', '|---|' + '---:|' * (2 * len(TASKS))]
    for name, tasks in by_name.items():
        cells = []
        for t, _, _ in TASKS:
            r = tasks.get(t)
            cells += (['-', '-'] if r is None else [f'{r["images_per_s"]:.2f}', f'{r["params"] / 1e6:.1f}'])
        rows.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return rows


def render(run_info: dict, title: str = 'Speed of every backbone and of the T-size models (CPU)') -> str:
    with open(run_info['backbones']) as f:
        data = json.load(f)
    meta = data['meta']
    shape = 'x'.join(map(str, meta['shape']))
    lines = [f'# {title}', '',
             f'Generated by `python tools/analysis/speed_table.py` on {meta["time"][:10]}: '
             f'{run_info.get("machine") or machine()}; '
             f'torch {meta["torch"]}, Python {meta["python"]}, {meta["threads"]} threads, fp32, batch '
             f'{meta["batch"]}, input {shape}. Every time is the median of {meta["repeats"]} timed steps after '
             f'{meta["warmup"]} untimed; the whole run took {run_info.get("seconds", "?")} s.', '',
             '## Backbones: forward and forward+backward', '',
             'Forward: eval mode, `torch.no_grad()`. Forward+backward: training mode, the sum of the outputs '
             'as the loss. Peak memory: the growth of the resident set over one step in a fresh process '
             '(see the docstring of `tools/analysis/benchmark_backbones.py`).', '',
             '```', _relative(run_info['backbone_command']), '```', '']
    lines += backbone_table(data)
    if run_info.get('models'):
        lines += ['', '', '## Whole models: inference images/s', '',
                  f'`model.test_step` (data preprocessor, forward, post-processing) on one synthetic {shape} '
                  'image, random weights (a trained detector keeps a different number of boxes), the '
                  'recipe configs as they are. One command per config, e.g.:', '',
                  '```', _relative(run_info['model_commands'][0]), '```', '']
        lines += model_table(run_info['models'])
    return '\n'.join(lines) + '\n'
