#!/usr/bin/env python
"""Training-step time of a detector with mmcv's compiled ops against this project's torchvision-backed ops
(glue/mmcv_ops.py), side by side in one process.

    python tools/analysis/benchmark_ops.py [CONFIG] [--data-root DIR] [--iters 10] [--repeats 5]

The config's runner is built as tools/train.py builds it (CPU adaptations included), with its optimizer and
train dataloader; ``--iters`` batches are drawn once and kept, then each repeat runs them through
``model.train_step`` (forward, loss, backward, optimizer step: what one training iteration does, without the
logging hooks) once with each op set, in alternating order. mmcv's ``roi_align`` and ``nms`` modules are
pointed at mmcv's compiled extension or at ours between the runs; nothing else changes. Reported: the median
per-iteration time of each op set over the repeats and their ratio. Needs a full mmcv with compiled ops for
the comparison (``bash tools/install.sh --full-mmcv`` in another VENV); with mmcv-lite only ours is timed.
Default config: the toy Mask R-CNN on the toy data (written to ``data/toy`` if missing).
"""
import argparse
import statistics
import sys
import time

from glue.runtime import build_runner, load_config, prepare_config

DEFAULT = 'configs/toy/conv2former_toy_maskrcnn.py'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', nargs='?', default=DEFAULT)
    p.add_argument('--data-root', help='dataset root (default: the config\'s; the toy data is generated if absent)')
    p.add_argument('--iters', type=int, default=10, help='training iterations per timed run (default 10)')
    p.add_argument('--repeats', type=int, default=5, help='alternating runs per op set (default 5)')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--work-dir', default='work_dirs/benchmark_ops')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from glue import mmcv_ops
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.config == DEFAULT and not args.data_root:
        from glue.toy_data import make_toy_data
        args.data_root = make_toy_data('data/toy')['coco_root'] + '/'
    cfg = load_config(args.config, dict(train_dataloader=dict(num_workers=0, persistent_workers=False)),
                      args.data_root)
    prepare_config(cfg, args.config, 'none', args.work_dir)
    runner = build_runner(cfg)
    import importlib
    nms_mod = importlib.import_module('mmcv.ops.nms')  # (mmcv.ops.nms is also a function's name)
    roi_mod = importlib.import_module('mmcv.ops.roi_align')
    compiled = roi_mod.ext_module
    lite = mmcv_ops.lite_extension()
    sets = {'torchvision (ours)': lite}
    if mmcv_ops.compiled_mmcv_ops() is not None and not isinstance(compiled, type(lite)):
        sets = {'mmcv compiled': compiled, 'torchvision (ours)': lite}
    else:
        print('no compiled mmcv ops installed: timing ours only', flush=True)
    model = runner.model
    model.train()
    optim = runner.build_optim_wrapper(cfg.optim_wrapper)
    loader = runner.build_dataloader(cfg.train_dataloader)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == args.iters:
            break
    times = {k: [] for k in sets}
    for name, ext in sets.items():  # warm-up, one iteration each
        roi_mod.ext_module = nms_mod.ext_module = ext
        model.train_step(batches[0], optim)
    for r in range(args.repeats):
        order = list(sets) if r % 2 == 0 else list(sets)[::-1]
        for name in order:
            roi_mod.ext_module = nms_mod.ext_module = sets[name]
            t0 = time.perf_counter()
            for b in batches:
                model.train_step(b, optim)
            times[name].append((time.perf_counter() - t0) / len(batches) * 1e3)
            print(f'repeat {r + 1}/{args.repeats} {name}: {times[name][-1]:.1f} ms/iter', flush=True)
    roi_mod.ext_module = nms_mod.ext_module = compiled
    print(f'\n{args.config}: {len(batches)} iterations x {args.repeats} repeats, torch threads '
          f'{torch.get_num_threads()}, batch size {cfg.train_dataloader.batch_size}')
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f'  {k:<20} median {v:8.1f} ms/iter  (min {min(times[k]):.1f}, max {max(times[k]):.1f})')
    if len(med) == 2:
        a, b = med.values()
        print(f'  ratio ours / compiled: {b / a:.3f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
