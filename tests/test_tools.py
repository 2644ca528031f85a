"""End-to-end checks of the entry points on CPU: tools/dist_train.sh with 2 gloo processes on the
toy detection config, and a tools/train.py -> tools/test.py round trip on the toy segmentation
config. Both run a few iterations on a tiny generated toy set (a few images)."""
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

DET_TOY = 'configs/toy/conv2former_toy_maskrcnn.py'
SEG_TOY = 'configs/toy/conv2former_toy_upernet.py'
TIMEOUT = 420


def _python():
    return sys.executable  # the environment the suite runs in (make test: $(VENV)/bin/python)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run(cmd, env=None, timeout=TIMEOUT):
    full_env = dict(os.environ, PYTHON=_python(), **(env or {}))
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return proc.returncode, proc.stdout


def _assert_ok(rc, out):
    assert rc == 0, f'exit code {rc}; output tail:\n{out[-6000:]}'


@pytest.fixture(scope='module')
def toy_data(tmp_path_factory):
    from glue.toy_data import make_toy_data

    out = tmp_path_factory.mktemp('toy')
    paths = make_toy_data(str(out), seed=0, num_train=8, num_val=4)
    return paths


def test_dist_train_two_cpu_processes(toy_data, tmp_path):
    """torchrun with 2 processes (gloo on CPU) trains to completion and writes a checkpoint;
    PORT is honoured; --data-root rewrites the dataset roots and the CocoMetric ann_file."""
    port = _free_port()
    work_dir = tmp_path / 'det'
    rc, out = _run(
        ['bash', 'tools/dist_train.sh', DET_TOY, '2', '--work-dir', str(work_dir),
         '--data-root', toy_data['coco_root'] + '/',
         '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
         'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
         'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0',
         'default_hooks.logger.interval=1'],
        env=dict(PORT=str(port)))
    _assert_ok(rc, out)
    assert f'port={port}' in out
    assert 'Distributed training: True' in out or "'world_size': 2" in out or 'world_size: 2' in out
    assert (work_dir / 'epoch_1.pth').is_file(), sorted(os.listdir(work_dir))
    assert 'coco/bbox_mAP' in out  # the evaluation ran against the generated annotations


def test_dist_train_usage():
    rc, out = _run(['bash', 'tools/dist_train.sh'], timeout=30)
    assert rc == 2 and 'usage' in out


def test_train_test_round_trip_seg(toy_data, tmp_path):
    """Single-process tools/train.py then tools/test.py on the toy UperNet: mIoU is reported."""
    work_dir = tmp_path / 'seg'
    ade = toy_data['ade_root']
    rc, out = _run(
        [_python(), 'tools/train.py', SEG_TOY, '--work-dir', str(work_dir), '--data-root', ade,
         '--cfg-options', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
         'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
         'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0',
         'default_hooks.logger.interval=1'])
    _assert_ok(rc, out)
    ckpt = work_dir / 'iter_4.pth'
    assert ckpt.is_file(), sorted(os.listdir(work_dir))
    assert 'mIoU' in out

    metrics_file = tmp_path / 'metrics.json'
    show_dir = tmp_path / 'vis'
    rc, out = _run(
        [_python(), 'tools/test.py', SEG_TOY, str(ckpt), '--work-dir', str(tmp_path / 'seg_test'),
         '--data-root', ade, '--metrics-out', str(metrics_file), '--show-dir', str(show_dir),
         '--out', str(tmp_path / 'preds.pkl'),
         '--cfg-options', 'test_dataloader.num_workers=0'])
    _assert_ok(rc, out)
    assert 'mIoU' in out and 'metrics: ' in out
    metrics = json.loads(metrics_file.read_text())
    assert 0.0 <= metrics['mIoU'] <= 100.0
    assert (tmp_path / 'preds.pkl').is_file()
    drawn = [f for _, _, files in os.walk(show_dir) for f in files if f.endswith('.png')]
    assert len(drawn) == 4  # one picture per validation image


def test_config_runs_under_mmseg_own_train_tool(toy_data, tmp_path):
    """The installed package is found by mmseg's own tools/train.py (shipped in the mmseg wheel) run from
    outside the repository with nothing on PYTHONPATH: the config's custom_imports register our backbone."""
    import mmseg
    tool = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'train.py')
    if not osp.isfile(tool):
        pytest.skip('this mmseg wheel ships no tools/train.py')
    ade = toy_data['ade_root']
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    proc = subprocess.run(
        [sys.executable, tool, osp.join(ROOT, SEG_TOY), '--work-dir', str(tmp_path / 'w'), '--cfg-options',
         f'train_dataloader.dataset.data_root={ade}', f'val_dataloader.dataset.data_root={ade}',
         f'test_dataloader.dataset.data_root={ade}', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
         'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False',
         'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
         'default_hooks.logger.interval=1'],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
    _assert_ok(proc.returncode, proc.stdout)
    assert 'Conv2Former' in proc.stdout and 'mIoU' in proc.stdout


def test_run_demo_end_to_end(tmp_path):
    """The main job (make demo) at a tiny scale: pretraining -> detector (tools/dist_train.sh, 2 processes) and
    segmentor started from its checkpoint -> evaluation, pictures, loss curves, summary.png and a summary
    naming them."""
    work, data = tmp_path / 'demo', tmp_path / 'toy'
    rc, out = _run([_python(), 'tools/run_demo.py', '--work-dir', str(work), '--data-dir', str(data),
                    '--num-train', '8', '--num-train-seg', '6', '--num-val', '5', '--pretrain-steps', '4', '--det-epochs', '1',
                    '--seg-iters', '4'])
    _assert_ok(rc, out)
    summary = json.loads((work / 'summary.json').read_text())
    res = summary['results']
    assert set(res) == {'pretraining', 'detection', 'segmentation'}
    ckpt = res['pretraining']['checkpoint']
    assert osp.isfile(ckpt) and 'held-out accuracy' in out
    for task, key in (('det', 'coco/bbox_mAP'), ('seg', 'mIoU')):
        train_log = (work / task / 'train.log').read_text()
        assert 'loaded 125 tensors' in train_log and ckpt in train_log  # the backbone came from the pretraining
        assert key in res['detection' if task == 'det' else 'segmentation']['metrics']
    assert len(res['detection']['pictures']) == 5 and len(res['segmentation']['pictures']) == 1  # every 5th (mmseg)
    assert osp.isfile(summary['loss_curves']) and 'Demo finished' in out
    # the detector went through the real launcher: torchrun, 2 gloo processes, the batch of 4 split over them
    det_log = (work / 'det' / 'train.log').read_text()
    assert '[dist_train] nodes=1 node_rank=0 procs_per_node=2' in det_log and 'batch_size=2' in out
    from PIL import Image
    with Image.open(summary['summary_png']) as img:  # one picture: 3 rows of pictures and the loss curves
        assert img.size[0] > 600 and img.size[1] > 400


@pytest.mark.parametrize('script, args, tail', [
    ('slurm_train.sh', ['cfg.py', 'wd', '--amp'], ['tools/train.py', 'cfg.py', '--work-dir=wd', '--launcher=slurm',
                                                  '--amp']),
    ('slurm_test.sh', ['cfg.py', 'ck.pth', '--out', 'x'], ['tools/test.py', 'cfg.py', 'ck.pth', '--launcher=slurm',
                                                          '--out', 'x']),
])
def test_slurm_launchers_build_the_srun_command(tmp_path, script, args, tail):
    """A fake ``srun`` on PATH records what the launcher runs: tasks per GPU, PORT as MASTER_PORT."""
    fake = tmp_path / 'srun'
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "MASTER_PORT=${MASTER_PORT:-unset}" "$@"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f'{tmp_path}:{os.environ["PATH"]}', GPUS='16', PORT='29555', PYTHON='py')
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools', script), 'part', 'job', *args], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.split('\n')
    assert out[0] == 'MASTER_PORT=29555'
    for opt in ('-p', 'part', '--job-name=job', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8'):
        assert opt in out, opt
    i = out.index('py')
    assert out[i + 1] == '-u' and out[i + 2].endswith(tail[0])
    assert out[i + 3:i + 3 + len(tail) - 1] == tail[1:]
    usage = subprocess.run(['bash', osp.join(ROOT, 'tools', script), 'a', 'b'], capture_output=True, text=True)
    assert usage.returncode == 2 and 'usage:' in usage.stderr
