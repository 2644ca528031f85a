#!/usr/bin/env python
"""Inference speed (images/s) and peak memory of a WHOLE detector (mmdet) or segmentor (mmseg).

Usage::

    python tools/analysis/benchmark.py CONFIG [CHECKPOINT] [--shape H W] [--device cpu|cuda[:N]]
        [--batch B] [--warmup N] [--repeats N] [--amp] [--threads T] [--keep-resize] [--no-memory]
        [--json FILE] [--cfg-options k=v ...]

The model is built from the config with the inference API (``mmdet.apis.init_detector`` /
``mmseg.apis.init_model``: eval mode, tools/train.py's CPU fall-backs such as SyncBN -> BN), with the
weights of ``CHECKPOINT`` or, without one, random weights (``init_weights()``; the output says so). A
synthetic image (seeded noise) goes through the config's test pipeline (annotation loading removed) and is
packed into a batch of ``--batch`` copies; one step is ``model.test_step(batch)`` under ``torch.no_grad()``:
the data preprocessor (normalisation, padding, transfer to the device), the forward and the
post-processing (NMS, mask pasting / resizing of the label map to the image), i.e. what
``inference_detector`` / ``inference_model`` time minus image decoding and the pipeline.

Input size: ``--shape H W`` is the size the network sees: the image is HxW and the pipeline's resize
transforms are replaced by one to HxW (then the data preprocessor pads, e.g. to a multiple of 32; the
model input shape is printed). ``--keep-resize`` keeps the config's own resizing, so that HxW is the size of
the raw image. Without ``--shape`` a 480x640 image (a typical COCO/ADE20K size) goes through the config's
pipeline unchanged (e.g. 800x1067 for the COCO recipes; the ADE20K recipes slide 512 windows over 512x683).

Timing (as tools/analysis/benchmark_backbones.py, whose helpers this uses): ``--warmup`` untimed steps, then
``--repeats`` steps timed one by one with ``time.perf_counter`` (``torch.cuda.synchronize`` around each on
CUDA); reported as images/s and ms per batch, median [min, max]. ``--amp``: ``torch.autocast`` (float16 on
CUDA, bfloat16 on CPU).

Peak memory (MiB = 2**20 bytes):

CUDA
    ``torch.cuda.max_memory_allocated()`` over a step after ``reset_peak_memory_stats()``: ``peak_total_mib``
    (weights, batch and everything the step allocates) and ``peak_mib`` (the same minus what was allocated
    before the step: activations, workspaces, outputs); the maximum over the timed repeats.
CPU
    a fresh child process (this script re-invoked) builds the same model and batch, resets its peak RSS
    (``/proc/self/clear_refs``), runs ONE step (no warm-up) and reads the peak RSS: ``peak_mib`` is the growth
    over the step (activations, allocator caching, one-off library buffers), ``peak_total_mib`` the whole
    process's peak during the step (Python, libraries, weights and all). Where the reset is not allowed,
    the growth of ``ru_maxrss`` over the step is used (a lower bound; the JSON says which). ``--no-memory``
    skips the child.

Random weights: a detector with random weights keeps a different number of boxes than a trained one (the
box and mask heads then run on more or fewer RoIs), so time with a checkpoint for representative numbers;
the boxes kept per image are printed.

Exit status: 0; 2 for bad arguments (missing config or checkpoint, CUDA requested but not available), with a
one-line message.
"""
import argparse
import contextlib
import copy
import gc
import json
import os.path as osp
import platform
import subprocess
import sys
import tempfile
import time

import torch

from glue.inference import Refused, check_file, init_inference_model, load_inference_config, test_pipeline_cfg
from glue import measure as measure_lib
from glue.measure import MIB, amp_dtype, measure_step_rss, summarize, sync, tool_entry
from glue.runtime import write_json

CHILD_FLAG = '--_memory-child'
CHILD_TAG = '@@WHOLE_MODEL_MEMORY@@ '
DEFAULT_IMAGE = (480, 640)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ model and data
def resolve_device(dev: str) -> torch.device:
    return measure_lib.resolve_device(dev, Refused)


def pipeline_for(cfg, shape, keep_resize: bool) -> list:
    """The test pipeline; with a --shape and without --keep-resize, its resizing becomes one to HxW."""
    pipeline = test_pipeline_cfg(cfg)
    if shape is None or keep_resize:
        return pipeline
    out, replaced = [], False
    for t in pipeline:
        if 'Resize' in str(t.get('type', '')):
            if not replaced:
                out.append(dict(type='Resize', scale=(shape[1], shape[0]), keep_ratio=False))
                replaced = True
            continue
        out.append(t)
    return out


def make_batch(model, shape, batch: int, keep_resize: bool):
    """Pack ``batch`` copies of a seeded synthetic image through the test pipeline."""
    import cv2
    import numpy as np
    from mmcv.transforms import Compose

    h, w = shape if shape is not None else DEFAULT_IMAGE
    rs = np.random.RandomState(0)
    img = rs.randint(0, 256, (h, w, 3)).astype(np.uint8)
    pipeline = Compose(pipeline_for(model.cfg, shape, keep_resize))
    with tempfile.TemporaryDirectory() as d:
        path = osp.join(d, 'synthetic.png')
        cv2.imwrite(path, img)
        data = pipeline(dict(img_path=path, img_id=0))
    return dict(inputs=[data['inputs'].clone() for _ in range(batch)],
                data_samples=[copy.deepcopy(data['data_samples']) for _ in range(batch)])


def make_step(model, data_batch, device: torch.device, amp: bool):
    dtype = amp_dtype(device, amp)

    def step():
        ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            return model.test_step(data_batch)
    return step


def setup(args, device: torch.device):
    """(cfg, model, batch, step) for the arguments."""
    dev = 'cpu' if device.type == 'cpu' else str(device)
    cfg = load_inference_config(args.config, dev, args.cfg_options)
    torch.manual_seed(0)
    model = init_inference_model(cfg, args.checkpoint, dev)
    data_batch = make_batch(model, args.shape, args.batch, args.keep_resize)
    return cfg, model, data_batch, make_step(model, data_batch, device, args.amp)


def describe_outputs(results) -> dict:
    first = results[0]
    if 'pred_instances' in first:
        return dict(boxes_per_image=[int(len(r.pred_instances)) for r in results])
    if 'pred_sem_seg' in first:
        return dict(label_map_shape=list(first.pred_sem_seg.data.shape[-2:]))
    return {}


# ------------------------------------------------------------------------------------------- memory (CPU)
def memory_child(argv) -> dict:
    """Inside the child: build, reset the peak RSS, ONE step, read the peak."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    _, model, _, step = setup(args, torch.device('cpu'))
    return measure_step_rss(step)


def run_memory_child(argv) -> dict:
    cmd = [sys.executable, osp.abspath(__file__), CHILD_FLAG, json.dumps(list(argv))]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_TAG):
            return json.loads(line[len(CHILD_TAG):])
    tail = (proc.stderr.strip().splitlines() or ['(no output)'])[-1]
    return dict(peak_mib=None, peak_total_mib=None, method='child failed', error=f'exit {proc.returncode}: {tail}')


# ---------------------------------------------------------------------------------------------- measuring
def measure(args, device: torch.device) -> dict:
    cfg, model, data_batch, step = setup(args, device)
    params = sum(p.numel() for p in model.parameters())
    model_input = list(model.data_preprocessor(copy.copy(data_batch), False)['inputs'].shape)
    log(f'[{osp.basename(args.config)}] built {type(model).__name__}: {params / 1e6:.2f} M params, '
        f'model input {"x".join(map(str, model_input))}')

    def checked_step():
        try:
            return step()
        except RuntimeError as e:  # e.g. a CPU kernel without a bfloat16 version
            if args.amp:
                raise Refused(f'--amp: the model fails under torch.autocast on {device.type}: '
                              f'{str(e).splitlines()[0]}') from None
            raise

    warmup_ms = []
    for k in range(args.warmup):
        sync(device)
        t0 = time.perf_counter()
        checked_step()
        sync(device)
        warmup_ms.append((time.perf_counter() - t0) * 1e3)
        log(f'  warm-up {k + 1}/{args.warmup}: {warmup_ms[-1]:.1f} ms')
    times, cuda_peaks, cuda_totals, results = [], [], [], None
    for r in range(args.repeats):
        if device.type == 'cuda':
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        sync(device)
        t0 = time.perf_counter()
        results = checked_step()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
        if device.type == 'cuda':
            peak = torch.cuda.max_memory_allocated(device)
            cuda_peaks.append((peak - before) / MIB)
            cuda_totals.append(peak / MIB)
        log(f'  repeat {r + 1}/{args.repeats}: {times[-1]:.1f} ms')
    stats = summarize(times)
    out = dict(model=type(model).__name__, scope=cfg.default_scope, params=params,
               weights=args.checkpoint or 'random', model_input_shape=model_input,
               warmup_ms=warmup_ms, times_ms=times, **stats,
               images_per_s=args.batch * 1e3 / stats['median_ms'],
               images_per_s_min=args.batch * 1e3 / stats['max_ms'],
               images_per_s_max=args.batch * 1e3 / stats['min_ms'],
               **describe_outputs(results))
    del results, step, checked_step, data_batch, model
    gc.collect()
    if device.type == 'cuda':
        out.update(peak_mib=max(cuda_peaks), peak_total_mib=max(cuda_totals),
                   memory_method='cuda max_memory_allocated during a step (minus memory_allocated before it '
                                 'for peak_mib); max over the repeats')
        torch.cuda.empty_cache()
    elif args.no_memory:
        out.update(peak_mib=None, peak_total_mib=None, memory_method=None)
    else:
        log('  memory: one step in a fresh child process')
        mem = run_memory_child(args.argv)
        out.update(peak_mib=mem.get('peak_mib'), peak_total_mib=mem.get('peak_total_mib'),
                   memory_method=mem.get('method'), memory_child=mem)
        if mem.get('error'):
            log(f'  memory measurement failed: {mem["error"]}')
    return out


def header(args, device) -> dict:
    meta = dict(config=args.config, checkpoint=args.checkpoint, torch=torch.__version__,
                python=platform.python_version(), device=str(device), threads=torch.get_num_threads(),
                shape=args.shape, keep_resize=args.keep_resize, batch=args.batch, amp=args.amp,
                amp_dtype=str(amp_dtype(device, args.amp)).replace('torch.', '') if args.amp else None,
                warmup=args.warmup, repeats=args.repeats, argv=args.argv,
                time=time.strftime('%Y-%m-%d %H:%M:%S'))
    if device.type == 'cuda':
        meta.update(device_name=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    else:
        meta['device_name'] = platform.processor() or platform.machine()
    return meta


def report(meta: dict, r: dict, args) -> None:
    def mib(v):
        return '-' if v is None else f'{v:.1f} MiB'

    if args.checkpoint:
        weights = f'weights {r["weights"]}'
    elif r['scope'] == 'mmdet':
        weights = ('RANDOM weights (no checkpoint given: a trained detector keeps a different number of boxes, '
                   'which changes the time of its box/mask heads)')
    else:
        weights = 'RANDOM weights (no checkpoint given)'
    print(f'{r["model"]} ({r["scope"]}) from {args.config}: {r["params"] / 1e6:.2f} M params, {weights}')
    image = ('x'.join(map(str, args.shape)) if args.shape else 'x'.join(map(str, DEFAULT_IMAGE)))
    how = ('the config\'s test pipeline' if args.shape is None or args.keep_resize
           else 'test pipeline, resized to exactly that')
    print(f'device {meta["device"]} ({meta["device_name"]}), {meta["threads"]} threads, torch {meta["torch"]}, '
          f'amp {meta["amp_dtype"] or "off"}; batch {args.batch} x synthetic {image} image ({how}) -> '
          f'model input {"x".join(map(str, r["model_input_shape"]))}')
    print(f'model.test_step, eval, no_grad; warm-up {args.warmup}, repeats {args.repeats}:')
    print(f'  images/s   {r["images_per_s"]:.2f} median [min {r["images_per_s_min"]:.2f}, '
          f'max {r["images_per_s_max"]:.2f}]')
    print(f'  ms/batch   {r["median_ms"]:.1f} median [min {r["min_ms"]:.1f}, max {r["max_ms"]:.1f}]')
    if r.get('memory_method'):
        where = 'CUDA allocated' if meta['device'].startswith('cuda') else 'RSS, fresh process, one step'
        print(f'  peak mem   {mib(r["peak_mib"])} over the step, {mib(r["peak_total_mib"])} in all ({where})')
    elif not args.no_memory:
        print('  peak mem   - (measurement failed)')
    if 'boxes_per_image' in r:
        print(f'  outputs    {r["boxes_per_image"]} boxes kept per image (the model\'s test_cfg)')
    elif 'label_map_shape' in r:
        print(f'  outputs    label maps of {"x".join(map(str, r["label_map_shape"]))}')


def parse_args(argv=None):
    from mmengine.config import DictAction

    p = argparse.ArgumentParser(description='Inference images/s and peak memory of a whole detector or '
                                            'segmentor (model.test_step on a synthetic image).',
                                epilog='See the module docstring for how time and memory are measured.')
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', nargs='?', default=None, help='whole-model checkpoint (default: random weights)')
    p.add_argument('--shape', nargs=2, type=int, default=None, metavar=('H', 'W'),
                   help='network input size (default: a 480x640 image through the config\'s pipeline)')
    p.add_argument('--keep-resize', action='store_true',
                   help='keep the pipeline\'s resizing: --shape is then the raw image size')
    p.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'cuda:N' (default cpu)")
    p.add_argument('--batch', type=int, default=1, help='images per step (default 1)')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps first (default 2)')
    p.add_argument('--repeats', type=int, default=5, help='timed steps (default 5)')
    p.add_argument('--amp', action='store_true', help='torch.autocast: float16 on CUDA, bfloat16 on CPU')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU)')
    p.add_argument('--no-memory', action='store_true', help='CPU: skip the memory child process')
    p.add_argument('--json', metavar='OUT.json', help='write every number here')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or (args.shape and min(args.shape) < 1):
        p.error('--batch, --repeats and --shape must be >= 1, --warmup >= 0')
    if args.threads is not None and args.threads < 1:
        p.error('--threads must be >= 1')
    args.argv = argv
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_file(args.config, 'config')
        check_file(args.checkpoint, 'checkpoint')
        device = resolve_device(args.device)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        if device.type == 'cuda':
            torch.cuda.set_device(device)
            torch.backends.cudnn.benchmark = True
        meta = header(args, device)
        result = measure(args, device)
    except Refused as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        return 2
    report(meta, result, args)
    if args.json:
        write_json(args.json, dict(meta=meta, result=result, images_per_s=result['images_per_s']))
        print(f'raw numbers written to {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(tool_entry(main, memory_child, CHILD_FLAG, CHILD_TAG))
