"""Exact resume on CPU: a toy UperNet (iteration-based) and a toy Mask R-CNN (epoch-based) run by
tools/train.py, interrupted and continued with --resume, end with the same weights, optimizer state,
lr schedule and logged losses as the uninterrupted run -- bitwise (CPU kernels are deterministic for a
fixed thread count, and the generator states travel in the checkpoint: glue.RNGStateHook). A truncated
last checkpoint makes --resume fall back to the previous complete one, or stop naming the files."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SEG = 'configs/toy/conv2former_toy_upernet.py'
DET = 'configs/toy/conv2former_toy_maskrcnn.py'
COMMON = ['default_hooks.logger.interval=1', 'randomness.seed=0', 'env_cfg.cudnn_benchmark=False']
SEG_OPTS = ['train_cfg.val_begin=1000', 'train_dataloader.batch_size=2', 'train_dataloader.num_workers=1',
            'train_dataloader.persistent_workers=False', 'default_hooks.checkpoint.interval=2',
            'default_hooks.checkpoint.max_keep_ckpts=5'] + COMMON
DET_OPTS = ['train_cfg.val_begin=1000', 'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
            'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=5'] + COMMON


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    from glue.toy_data import make_toy_data
    return make_toy_data(str(tmp_path_factory.mktemp('toy')), seed=0, num_train=4, num_val=2)


def train(config, work_dir, data_root, opts, resume=None):
    cmd = [sys.executable, 'tools/train.py', config, '--work-dir', str(work_dir), '--data-root', data_root,
           '--cfg-options', *opts] + ([] if resume is None else ['--resume'] + ([resume] if resume else []))
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=400)
    return proc.returncode, proc.stdout


def ok(rc, out):
    assert rc == 0, out[-5000:]
    return out


def load(path):
    from glue import read_runner_checkpoint
    return read_runner_checkpoint(str(path), map_location='cpu')


def assert_same_run(a, b):
    """Weights, optimizer state, schedulers, iteration and logged losses of two runner checkpoints."""
    assert a['meta']['iter'] == b['meta']['iter'] and a['meta']['epoch'] == b['meta']['epoch']
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    oa, ob = a['optimizer'], b['optimizer']
    assert oa['param_groups'] == ob['param_groups']  # lr, momentum, weight decay of every group
    assert oa['state'].keys() == ob['state'].keys()
    for i in oa['state']:
        for k, v in oa['state'][i].items():
            assert torch.equal(v, ob['state'][i][k]), (i, k)
    assert a['param_schedulers'] == b['param_schedulers']
    la, lb = a['message_hub']['log_scalars'], b['message_hub']['log_scalars']
    for key in ('train/loss', 'train/lr'):
        ha, hb = la[key].data, lb[key].data
        assert ha[0].tolist() == hb[0].tolist(), key  # every logged value, bitwise
        assert ha[1].tolist() == hb[1].tolist()
    assert len(la['train/loss'].data[0]) == a['meta']['iter']


def test_upernet_resume_is_exact(toy, tmp_path):
    root = toy['ade_root']
    ok(*train(SEG, tmp_path / 'full', root, ['train_cfg.max_iters=4'] + SEG_OPTS))
    ok(*train(SEG, tmp_path / 'cut', root, ['train_cfg.max_iters=2'] + SEG_OPTS))
    out = ok(*train(SEG, tmp_path / 'cut', root, ['train_cfg.max_iters=4'] + SEG_OPTS, resume=''))
    assert 'resumed epoch: 0, iter: 2' in out
    assert_same_run(load(tmp_path / 'full' / 'iter_4.pth'), load(tmp_path / 'cut' / 'iter_4.pth'))
    assert_same_run(load(tmp_path / 'full' / 'iter_2.pth'), load(tmp_path / 'cut' / 'iter_2.pth'))

    # the last checkpoint half-written (a run killed while saving): --resume falls back to iter_2, and the
    # continued run again ends exactly where the uninterrupted one ended
    full4 = load(tmp_path / 'full' / 'iter_4.pth')
    data = (tmp_path / 'full' / 'iter_4.pth').read_bytes()
    (tmp_path / 'full' / 'iter_4.pth').write_bytes(data[:len(data) // 2])
    out = ok(*train(SEG, tmp_path / 'full', root, ['train_cfg.max_iters=4'] + SEG_OPTS, resume=''))
    assert 'iter_4.pth (truncated or not a checkpoint)' in out and 'resumed epoch: 0, iter: 2' in out
    assert_same_run(full4, load(tmp_path / 'full' / 'iter_4.pth'))


def test_maskrcnn_resume_is_exact(toy, tmp_path):
    root = toy['coco_root'] + '/'
    ok(*train(DET, tmp_path / 'full', root, ['train_cfg.max_epochs=2'] + DET_OPTS))
    ok(*train(DET, tmp_path / 'cut', root, ['train_cfg.max_epochs=1'] + DET_OPTS))
    out = ok(*train(DET, tmp_path / 'cut', root, ['train_cfg.max_epochs=2'] + DET_OPTS, resume='auto'))
    assert 'resumed epoch: 1, iter: 2' in out
    assert_same_run(load(tmp_path / 'full' / 'epoch_2.pth'), load(tmp_path / 'cut' / 'epoch_2.pth'))


def _fake_checkpoint(path, complete=True):
    torch.save({'meta': {'iter': 1}, 'state_dict': {'w': torch.zeros(1000)}}, str(path))
    if not complete:
        data = path.read_bytes()
        path.write_bytes(data[:len(data) - 300])


def test_find_resume_checkpoint(tmp_path):
    from glue import find_resume_checkpoint
    assert find_resume_checkpoint(str(tmp_path)) is None  # nothing there: train from scratch
    _fake_checkpoint(tmp_path / 'iter_2.pth')
    _fake_checkpoint(tmp_path / 'iter_4.pth', complete=False)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    with pytest.warns(UserWarning, match=r'skipped .*iter_4.pth \(truncated'):
        assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_2.pth')
    _fake_checkpoint(tmp_path / 'iter_2.pth', complete=False)
    with pytest.raises(RuntimeError, match=r'no complete checkpoint .*iter_4.pth .*iter_2.pth'):
        find_resume_checkpoint(str(tmp_path))


def test_explicit_truncated_checkpoint_names_the_file(tmp_path):
    """--resume PATH / load_from with a broken file: a message naming it, not a crash deep in torch."""
    import detection  # noqa: F401 -- mmengine reads through the safe reader
    from mmengine.runner.checkpoint import _load_checkpoint

    from backbones import CheckpointError
    path = tmp_path / 'iter_8.pth'
    _fake_checkpoint(path, complete=False)
    with pytest.raises(CheckpointError, match=r'cannot read .*iter_8.pth as a PyTorch checkpoint \(truncated'):
        _load_checkpoint(str(path), map_location='cpu')
