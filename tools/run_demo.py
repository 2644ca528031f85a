#!/usr/bin/env python
"""The CPU demo: train and evaluate a toy Conv2Former detector and segmentor end to end.

The real workflow in miniature: an ImageNet-style classification checkpoint, then detection and
segmentation fine-tuned from it. Steps (docs/demo.md: the measured time and numbers):
  1. generate the synthetic shapes data (tools/make_toy_data.py; reused when up to date): 160 detection and
     160 segmentation training images, 40 validation images each;
  2. meanwhile, pretrain the toy Conv2Former as a shape classifier (tools/toy_pretrain.py, "toy ImageNet")
     on crops it draws itself, and save it in the official classifier layout;
  3. train Mask R-CNN (configs/toy/conv2former_toy_maskrcnn.py) with tools/dist_train.sh in 2 gloo processes
     (as on 2 GPUs; the config's batch split over them), its backbone loaded from that checkpoint through the
     strict loader (``model.backbone.pretrained=``);
  4. evaluate it with tools/test.py (COCO bbox / segm mAP, pycocotools) and draw its predictions;
  5. train UperNet (configs/toy/conv2former_toy_upernet.py) from the same checkpoint;
  6. evaluate it (mIoU) and draw its predictions;
  7. plot the training-loss curves, draw ``summary.png`` (inputs, ground truth and predictions of a few
     validation images for both tasks, the loss curves, the metrics) and print a summary.
Steps 3-4 and 5-6 run at the same time, one CPU thread per process (3 processes on 2 cores), the detector's at
a lower CPU priority: the segmentor's single process is the longer, serial part and keeps a core to itself.

The seed is set in the toy configs (``randomness``) and the CPU kernels are deterministic for a fixed thread
count, so a second run on the same machine gives the same numbers.

Usage::

    python tools/run_demo.py [--work-dir work_dirs/demo] [--data-dir data/toy]
                             [--pretrain-steps N | --from-scratch]
                             [--det-epochs N] [--seg-iters N] [--only det|seg]
                             [--num-train N] [--num-train-seg N] [--num-val N]
                             [--det-procs N] [--seg-procs N]

Everything lands under the work dir: ``pretrain/`` (the classifier checkpoint, its log and .json
report), ``det/`` and ``seg/`` (checkpoints, mmengine logs, ``train.log`` / ``test.log`` with the
full output, ``metrics.json``, ``vis/`` pictures), ``loss_curves.png``, ``summary.png`` and ``summary.json``.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import threading
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

DET_CONFIG = 'configs/toy/conv2former_toy_maskrcnn.py'
SEG_CONFIG = 'configs/toy/conv2former_toy_upernet.py'
# The segmentor trains in one single-threaded process (serial iterations) beside the detector's two; at a lower
# CPU priority the detector takes what the segmentor leaves of the 2 cores instead of a third of each. Measured
# (docs/demo.md section 7): at nice 10 the segmentor got 98% of a core and trained in 7.5 min instead of 9.8, the
# detector in 8.5 instead of 6.3, the whole demo 14.8 min instead of 16.0
DET_NICE = 10
# lines of the training / testing output echoed to the console (the rest goes to the log files)
PROGRESS_MARKERS = ('Epoch(train)', 'Iter(train)', 'Epoch(val)', 'Iter(val)', 'Epoch(test)',
                    'Iter(test)', 'Saving checkpoint', 'bbox_mAP', 'segm_mAP', 'mIoU', '| ',
                    '+--', 'Error', 'error:', 'Traceback', 'metrics: ', '[toy_pretrain]')


def log(msg: str) -> None:
    print(f'[demo {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def run_step(cmd, log_file: str, env=None, tag: str = '', nice: int = 0) -> None:
    """Run a tool, echo its progress lines (prefixed with ``tag``), keep the full output in ``log_file``;
    ``nice`` > 0 lowers the CPU priority of the tool and its children (``os.nice``)."""
    log(f'{tag}$ ' + ('' if not nice else f'nice -n {nice} ') + ' '.join(cmd))
    os.makedirs(osp.dirname(log_file), exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    tail = []
    with open(log_file, 'w') as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, preexec_fn=(lambda: os.nice(nice)) if nice else None)
        stop = threading.Event()
        if nice:
            threading.Thread(target=lower_autogroup_priority, args=(proc.pid, nice, stop), daemon=True).start()
        for line in proc.stdout:
            f.write(line)
            tail = (tail + [line])[-60:]
            if any(m in line for m in PROGRESS_MARKERS):
                print(f'    {tag}' + line.rstrip()[:220], flush=True)
        rc = proc.wait()
        stop.set()
    if rc != 0:
        sys.stdout.write(''.join(tail))
        raise StepFailed(f'step failed (exit code {rc}); full output in {log_file}')


def _descendants(root: int) -> list:
    """PIDs of the live descendants of ``root`` (Linux /proc; [] elsewhere)."""
    children = {}
    for entry in os.listdir('/proc') if osp.isdir('/proc') else []:
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def lower_autogroup_priority(root: int, nice: int, stop) -> None:
    """Until ``stop`` is set, give every descendant of ``root`` that runs in a session of its own (torchrun starts
    each worker with ``start_new_session``) the CPU priority ``nice`` for its whole session. Where the kernel groups
    the scheduling by session (``/proc/sys/kernel/sched_autogroup_enabled``), a process's own nice value only ranks
    it inside its session, so ``os.nice`` alone leaves each worker an equal share beside the segmentor."""
    own_session, done = os.getsid(0), set()
    while not stop.wait(0.5):
        for pid in _descendants(root):
            if pid in done:
                continue
            try:
                if os.getsid(pid) != own_session:
                    with open(f'/proc/{pid}/autogroup', 'w') as f:
                        f.write(str(nice))
                done.add(pid)
            except OSError:  # gone, no autogroup support, or not permitted: the plain nice value stays
                done.add(pid)


class StepFailed(RuntimeError):
    pass


def run_parallel(jobs: dict) -> dict:
    """Run ``{name: callable}`` at the same time (threads waiting on child processes); their results."""
    results, errors = {}, {}

    def call(name, fn):
        try:
            results[name] = fn()
        except BaseException as e:  # noqa: B902 -- reported below, after the other job finished
            errors[name] = e

    threads = [threading.Thread(target=call, args=item) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit('; '.join(f'{name}: {e}' for name, e in errors.items()))
    return results


def latest(pattern: str) -> str:
    files = sorted(glob.glob(pattern), key=osp.getmtime)
    if not files:
        raise SystemExit(f'nothing matches {pattern}')
    return files[-1]


def newest_scalars(work_dir: str):
    """(iteration, loss) pairs of the newest mmengine run in ``work_dir`` (vis_data/scalars.json)."""
    from glue.demo_summary import read_scalars
    return read_scalars(latest(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))


def train_and_test(task: str, config: str, work_dir: str, data_root: str, train_opts, vis_opts, procs: int = 1,
                   threads: int = 1, nice: int = 0):
    """Train with tools/train.py (``procs`` > 1: tools/dist_train.sh, torchrun with that many gloo processes
    on CPU), evaluate and draw with tools/test.py; returns (metrics, info). Every process runs ``threads``
    CPU threads (the detector and the segmentor train at the same time, one thread per process), at CPU
    priority ``nice``."""
    tag = f'[{task[:3]}] '
    env = dict(OMP_NUM_THREADS=str(threads))
    py = sys.executable
    t0 = time.time()
    if procs > 1:  # the same total batch, split over the processes (as the config's batch is per GPU)
        from mmengine.config import Config
        batch = Config.fromfile(config).train_dataloader.batch_size
        if batch % procs:
            raise SystemExit(f'{config}: batch size {batch} does not split over {procs} processes')
        train_opts = train_opts + [f'train_dataloader.batch_size={batch // procs}']
    args = [config, '--work-dir', work_dir, '--data-root', data_root, '--cfg-options'] + train_opts
    if procs > 1:
        run_step(['bash', 'tools/dist_train.sh', args[0], str(procs)] + args[1:], osp.join(work_dir, 'train.log'),
                 env=dict(env, PYTHON=py), tag=tag, nice=nice)
    else:
        run_step([py, 'tools/train.py'] + args, osp.join(work_dir, 'train.log'), env=env, tag=tag, nice=nice)
    t_train = time.time() - t0
    ckpt = latest(osp.join(work_dir, '*.pth'))
    metrics_file = osp.join(work_dir, 'metrics.json')
    vis_dir = osp.join(work_dir, 'vis')
    t0 = time.time()
    run_step([py, 'tools/test.py', config, ckpt, '--work-dir', osp.join(work_dir, 'test'),
              '--data-root', data_root, '--metrics-out', metrics_file, '--show-dir', vis_dir]
             + vis_opts, osp.join(work_dir, 'test.log'), env=env, tag=tag, nice=nice)
    t_test = time.time() - t0
    with open(metrics_file) as f:
        metrics = json.load(f)
    pictures = sorted(glob.glob(osp.join(vis_dir, '**', '*.png'), recursive=True))
    info = dict(checkpoint=ckpt, pictures_dir=vis_dir, pictures=pictures,
                train_log=osp.join(work_dir, 'train.log'), test_log=osp.join(work_dir, 'test.log'),
                train_seconds=round(t_train, 1), test_seconds=round(t_test, 1))
    log(f'{tag}{task}: trained in {t_train / 60:.1f} min, evaluated in {t_test / 60:.1f} min')
    return metrics, info


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--work-dir', default='work_dirs/demo', help='output folder')
    p.add_argument('--data-dir', default='data/toy', help='toy data folder (generated if needed)')
    p.add_argument('--det-epochs', type=int, help='override the toy detector\'s epochs')
    p.add_argument('--seg-iters', type=int, help='override the toy segmentor\'s iterations')
    p.add_argument('--only', choices=('det', 'seg'), help='run one task only')
    p.add_argument('--det-procs', type=int, default=2,
                   help='train the detector with tools/dist_train.sh in this many gloo processes, as on that '
                   'many GPUs, each with 1/N of the config\'s batch (default 2; 1: tools/train.py)')
    p.add_argument('--seg-procs', type=int, default=1,
                   help='the same for the segmentor (default 1: it trains beside the detector\'s processes, and '
                   'its config\'s plain BN in the pyramid pooling needs the whole batch of 4 in one process)')
    p.add_argument('--num-train', type=int, default=160, help='images in the generated detection train set (default 160)')
    p.add_argument('--num-train-seg', type=int, default=160,
                   help='images in the generated segmentation train set (default 160; 640 and 1280 measured '
                   'in docs/demo.md)')
    p.add_argument('--num-val', type=int, default=40, help='images per generated val set (default 40)')
    p.add_argument('--pretrain-steps', type=int, default=1200,
                   help='steps of the toy classification pretraining (default 1200: 98%% held-out accuracy; with the '
                   'former 96 px crops 800 steps reached 95%% and the segmentor\'s squares fell from 57 to 32 IoU: '
                   'docs/demo.md)')
    p.add_argument('--from-scratch', action='store_true',
                   help='skip the pretraining: both models start from random weights')
    return p.parse_args(argv)


def pretrain_backbone(work_dir: str, steps: int) -> str:
    """Step 2: the toy "ImageNet" checkpoint both toy models start from (tools/toy_pretrain.py)."""
    from glue.toy_pretrain import backbone_from_config
    if backbone_from_config(DET_CONFIG) != backbone_from_config(SEG_CONFIG):
        raise SystemExit(f'{DET_CONFIG} and {SEG_CONFIG} must use the same backbone to share a checkpoint')
    out = osp.join(work_dir, 'pretrain', 'toy_conv2former_cls.pth')
    t0 = time.time()
    run_step([sys.executable, 'tools/toy_pretrain.py', DET_CONFIG, '--out', out, '--steps', str(steps)],
             osp.join(work_dir, 'pretrain', 'pretrain.log'))
    log(f'pretraining: {time.time() - t0:.0f} s; checkpoint {out}')
    return out


def main(argv=None):
    args = parse_args(argv)
    from glue.demo_summary import make_summary, plot_losses
    from glue.toy_data import make_toy_data

    t_start = time.time()
    work_dir = osp.abspath(args.work_dir)
    data_dir = osp.abspath(args.data_dir)
    os.makedirs(work_dir, exist_ok=True)
    log(f'toy data in {data_dir}' + ('' if args.from_scratch else
                                      '; meanwhile pretraining: toy Conv2Former as a shape classifier ("toy ImageNet")'))
    # the pretraining draws its own crops: it runs while the data sets are written
    first = {'data': lambda: make_toy_data(data_dir, num_train=args.num_train, num_val=args.num_val,
                                           num_train_seg=args.num_train_seg, verbose=True)}
    if not args.from_scratch:
        first['pretraining'] = lambda: pretrain_backbone(work_dir, args.pretrain_steps)
    done = run_parallel(first)
    paths = done['data']

    results, curves = {}, {}
    init_opts, start = [], 'from scratch'
    if not args.from_scratch:
        ckpt = done['pretraining']
        with open(osp.splitext(ckpt)[0] + '.json') as f:
            report = json.load(f)
        results['pretraining'] = dict(checkpoint=ckpt, val_accuracy=report['val_accuracy'],
                                      train_seconds=report['train_seconds'],
                                      log=osp.join(work_dir, 'pretrain', 'pretrain.log'))
        init_opts, start = [f'model.backbone.pretrained={ckpt}'], 'from the toy classifier checkpoint'
    jobs = {}
    if args.only in (None, 'det'):
        # evaluation happens once, in tools/test.py (with pictures), not at the end of training
        opts = ['train_cfg.val_begin=1000000'] + init_opts  # no validation at the last epoch either
        if args.det_epochs:
            opts += [f'train_cfg.max_epochs={args.det_epochs}']
        jobs['detection'] = lambda opts=opts: train_and_test(
            'detection', DET_CONFIG, osp.join(work_dir, 'det'), paths['coco_root'] + '/', opts, [],
            procs=args.det_procs, nice=DET_NICE if args.only is None else 0)
    if args.only in (None, 'seg'):
        opts = ['train_cfg.val_begin=1000000'] + init_opts
        if args.seg_iters:
            # the poly schedule (the config's scheduler 1) ends with the training; the 50-iteration
            # linear warm-up (scheduler 0) shrinks for very short runs
            warm = min(50, max(1, args.seg_iters // 4))
            opts += [f'train_cfg.max_iters={args.seg_iters}', f'param_scheduler.0.end={warm}',
                     f'param_scheduler.1.begin={warm}', f'param_scheduler.1.end={args.seg_iters}']
        jobs['segmentation'] = lambda opts=opts: train_and_test(
            'segmentation', SEG_CONFIG, osp.join(work_dir, 'seg'), paths['ade_root'], opts,
            ['--show-interval', '5'], procs=args.seg_procs)
    log(f'{" and ".join(jobs)} at the same time (one CPU thread per process), {start}: '
        'Mask R-CNN + Conv2Former (toy), UperNet + Conv2Former (toy)')
    for task, (metrics, info) in run_parallel(jobs).items():
        results[task] = dict(metrics=metrics, **info)
    if 'detection' in results:
        curves['Mask R-CNN (toy COCO)'] = newest_scalars(osp.join(work_dir, 'det'))
    if 'segmentation' in results:
        curves['UperNet (toy ADE)'] = newest_scalars(osp.join(work_dir, 'seg'))

    loss_png = osp.join(work_dir, 'loss_curves.png')
    plot_losses(curves, loss_png)
    summary_png = osp.join(work_dir, 'summary.png')
    panels, captions = {}, {}
    if 'detection' in results:
        m = results['detection']['metrics']
        panels['detection'] = (results['detection']['pictures'], paths['coco_val_img'])
        captions['detection'] = (f"Mask R-CNN: bbox mAP {m.get('coco/bbox_mAP', float('nan')):.3f}, "
                                 f"segm mAP {m.get('coco/segm_mAP', float('nan')):.3f}")
    if 'segmentation' in results:
        m = results['segmentation']['metrics']
        panels['segmentation'] = (results['segmentation']['pictures'], paths['ade_val_img'])
        captions['segmentation'] = f"UperNet: mIoU {m.get('mIoU', float('nan')):.1f}"
    make_summary(summary_png, panels, curves, captions, rows=3,
                 title=f'toy val sets ({args.num_val} images each); {start}')
    total = time.time() - t_start
    summary = dict(results=results, loss_curves=loss_png, summary_png=summary_png, total_seconds=round(total, 1))
    with open(osp.join(work_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1, default=str)

    print('\n' + '=' * 78)
    print(f'Demo finished in {total / 60:.1f} min. Work dir: {work_dir}')
    if 'pretraining' in results:
        r = results['pretraining']
        print(f"  Pretraining (toy shape classifier, 4 classes): held-out accuracy {r['val_accuracy']:.1f}%,"
              f" {r['train_seconds'] / 60:.1f} min; checkpoint {r['checkpoint']}")
    if 'detection' in results:
        r = results['detection']
        m = r['metrics']
        print(f"  Detection (Mask R-CNN, toy COCO val, {args.num_val} images): "
              f"bbox mAP {m.get('coco/bbox_mAP', float('nan')):.3f}"
              f" (AP50 {m.get('coco/bbox_mAP_50', float('nan')):.3f}), segm mAP "
              f"{m.get('coco/segm_mAP', float('nan')):.3f} (AP50 {m.get('coco/segm_mAP_50', float('nan')):.3f})")
    if 'segmentation' in results:
        m = results['segmentation']['metrics']
        print(f"  Segmentation (UperNet, toy ADE val, {args.num_val} images): "
              f"mIoU {m.get('mIoU', float('nan')):.2f}%"
              f" (aAcc {m.get('aAcc', float('nan')):.2f}%, mAcc {m.get('mAcc', float('nan')):.2f}%;"
              ' predicting background everywhere gives 22.09)')
    for task, r in results.items():
        if task == 'pretraining':
            continue
        print(f'  {task}:')
        print(f"    checkpoint: {r['checkpoint']}")
        print(f"    pictures:   {r['pictures_dir']} ({len(r['pictures'])} files, e.g. "
              f"{', '.join(osp.basename(p) for p in r['pictures'][:3])})")
        print(f"    logs:       {r['train_log']}, {r['test_log']}")
        print(f"    time:       train {r['train_seconds'] / 60:.1f} min, test {r['test_seconds'] / 60:.1f} min")
    print(f'  loss curves: {loss_png}')
    print(f'  picture:     {summary_png} (inputs, ground truth, predictions, loss curves)')
    print(f"  summary:     {osp.join(work_dir, 'summary.json')}")
    print('=' * 78)
    return summary


if __name__ == '__main__':
    main()
