"""A rank that dies during distributed training: tools/dist_train.sh (torchrun, 2 gloo processes on CPU)
ends with a non-zero exit and says which rank failed, within a bounded time -- no hang of the surviving
rank in its next all-reduce. The death is injected by a hook module on the test's PYTHONPATH, loaded
through the config's custom_imports; the tools are unchanged."""
import os
import os.path as osp
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip('mmseg')

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

KILLER = '''
import os
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DieOnRank1(Hook):
    """Rank 1 exits abruptly (as a killed or crashed process) after its first training iteration."""
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if os.environ.get('RANK') == '1':
            os._exit(3)
'''


def test_dead_rank_ends_the_job(tmp_path):
    from glue.toy_data import make_toy_data
    data = make_toy_data(str(tmp_path / 'toy'), seed=0, num_train=4, num_val=2)
    (tmp_path / 'die_on_rank1.py').write_text(KILLER)
    cfg = tmp_path / 'killed.py'
    cfg.write_text(f"_base_ = {osp.join(ROOT, 'configs/toy/conv2former_toy_upernet.py')!r}\n"
                   "custom_imports = dict(imports=['segmentation', 'die_on_rank1'], allow_failed_imports=False)\n"
                   "custom_hooks = [dict(type='DieOnRank1')]\n")
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PORT=str(port), PYTHON=sys.executable, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')]))
    start = time.monotonic()
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(cfg), '2', '--work-dir', str(tmp_path / 'work'),
         '--data-root', data['ade_root'], '--cfg-options', 'train_cfg.max_iters=6', 'train_cfg.val_begin=100',
         'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0', 'default_hooks.logger.interval=1',
         'env_cfg.dist_cfg.timeout=60'],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    elapsed = time.monotonic() - start
    out = proc.stdout
    assert proc.returncode != 0, out[-4000:]
    assert 'exitcode  : 3' in out, out[-4000:]  # torchrun's failure report names the rank and its code
    assert 'rank      : 1' in out or 'local_rank: 1' in out, out[-4000:]
    assert not (tmp_path / 'work' / 'iter_6.pth').exists()
    print(f'job ended with exit code {proc.returncode} after {elapsed:.0f} s')
