"""Exact resume: an interrupted run continued with ``--resume`` ends where the uninterrupted run ends.

mmengine restores weights, optimizer, schedulers, the iteration counter and the message hub, and replays
the data order (sampler seeds per epoch; an iteration-based loop skips the batches already trained on).
It does not restore the random number generators, so everything random after the resume point draws
other numbers than the uninterrupted run would: mmdet's proposal samplers, dropout in the heads, the data
augmentation of transforms that run in the main process. :class:`RNGStateHook` saves the python / numpy /
torch (and CUDA) generator states in every checkpoint and, when a run resumes, puts them back just before
its first epoch starts, which is the point where the uninterrupted run saved them (after the checkpoint
nothing random runs before the next epoch or iteration starts, unless a validation runs in between).

What the data loader workers draw is reproduced by mmengine itself (each worker is seeded from the run's
seed and its rank / worker id), except two cases where the replay cannot match: an iteration-based loop
with ``num_workers=0`` (skipping batches runs their random transforms again in the main process) and
``persistent_workers=True`` across epochs (the workers' generators continue in one run, start over in the
other). The tests use ``num_workers=0`` for the epoch-based detector and ``num_workers=1`` for the
iteration-based segmentor.

:func:`find_resume_checkpoint` backs ``--resume`` without a path: the newest checkpoint of the work dir
that is complete (a zip archive whose central directory is intact -- a run killed while writing leaves a
truncated file), skipping and naming broken ones; if every candidate is broken it stops with an error
naming them.
"""
import glob
import logging
import os.path as osp
import random
import re
import warnings
import zipfile
from typing import List, Optional

__all__ = ['RNGStateHook', 'find_resume_checkpoint', 'prepare_resume', 'capture_rng_state', 'restore_rng_state']

logger = logging.getLogger('backbones')

RNG_KEY = 'rng_state'


def capture_rng_state() -> dict:
    import numpy as np
    import torch

    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(_as_tuple(state['python']))
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _hook_base():
    from mmengine.hooks import Hook
    return Hook


def has_custom_hook(cfg, name: str) -> bool:
    """Whether the config's ``custom_hooks`` hold a hook of type ``name`` (a scope prefix is ignored)."""
    return any(isinstance(h, dict) and str(h.get('type', '')).split('.')[-1] == name
               for h in cfg.get('custom_hooks') or [])


class RNGStateHook(_hook_base()):
    """Save the generator states with every checkpoint; restore them when resuming (see module doc)."""

    priority = 'VERY_LOW'

    def __init__(self):
        self._pending = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = capture_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if getattr(runner, '_resume', False) and isinstance(checkpoint.get(RNG_KEY), dict):
            self._pending = checkpoint[RNG_KEY]

    def before_train_epoch(self, runner) -> None:
        if self._pending is not None:
            restore_rng_state(self._pending)
            self._pending = None


def checkpoint_is_complete(path: str) -> bool:
    """A torch zip checkpoint with its central directory and ``data.pkl`` (no unpickling, no data read)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith('/data.pkl') or n == 'data.pkl' for n in z.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _candidates(work_dir: str) -> List[str]:
    last = []
    marker = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(marker):
        with open(marker) as f:
            name = f.read().strip()
        if name:
            last = [name if osp.isabs(name) else osp.join(work_dir, name)]

    def number(p):
        m = re.search(r'(\d+)\.pth$', osp.basename(p))
        return int(m.group(1)) if m else -1
    others = sorted(glob.glob(osp.join(work_dir, '*.pth')), key=lambda p: (osp.getmtime(p), number(p)), reverse=True)
    return last + [p for p in others if p not in last]


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The newest complete checkpoint in ``work_dir`` (``last_checkpoint`` first), or None if there is none;
    raises RuntimeError naming the files when all of them are broken."""
    broken = []
    for path in _candidates(work_dir):
        if not osp.isfile(path):
            broken.append(f'{path} (missing)')
            continue
        if checkpoint_is_complete(path):
            if broken:
                warnings.warn(f'--resume: skipped {", ".join(broken)}; resuming from {path}', UserWarning,
                              stacklevel=2)
            return path
        broken.append(f'{path} (truncated or not a checkpoint)')
    if broken:
        raise RuntimeError(f'--resume: no complete checkpoint in {work_dir}: {", ".join(broken)}; remove the '
                           f'broken files to start from scratch, or pass --resume PATH')
    return None


def prepare_resume(cfg) -> None:
    """Add :class:`RNGStateHook` to the config's custom hooks (idempotent) and, for ``resume=True`` without
    a path (``--resume`` / ``--resume auto``), pick the newest complete checkpoint of the work dir."""
    if not has_custom_hook(cfg, 'RNGStateHook'):
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [dict(type='RNGStateHook')]
    if cfg.get('resume') and not cfg.get('load_from') and cfg.get('work_dir') and osp.isdir(cfg.work_dir):
        found = find_resume_checkpoint(cfg.work_dir)
        if found is not None:
            cfg.load_from = found
