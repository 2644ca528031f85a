"""mmengine reads checkpoints through ``backbones.read_checkpoint``.

mmengine 0.10's ``CheckpointLoader`` reads local files and http(s) URLs with a bare ``torch.load``; its
runner checkpoints pickle mmengine's ``HistoryBuffer`` and numpy metrics, which torch's default weights-only
load refuses -- hence the temptation to switch weights-only off for the whole process. Instead,
:func:`use_safe_checkpoint_loader` registers the two schemes again (``''``: local paths, ``http://`` and
``https://``) with :func:`read_runner_checkpoint`: ``torch.load(weights_only=True)`` plus the named
allow-list of :mod:`backbones.checkpoint` (HistoryBuffer as the real class, behind a checked
``__setstate__``). Everything that goes through ``mmengine.runner.CheckpointLoader`` -- ``--resume``,
``load_from``, tools/test.py, tools/image_demo.py, mmdet's / mmseg's own tools and ``init_detector`` --
reads safely once ``detection`` or ``segmentation`` is imported (which configs do through
``custom_imports``). Other schemes (``open-mmlab://``, ``torchvision://``, ``s3://`` ...) keep mmengine's
loaders, i.e. torch's default ``weights_only=True`` without our allow-list.
"""
import os

from backbones import hub
from backbones.checkpoint import read_checkpoint

__all__ = ['read_runner_checkpoint', 'use_safe_checkpoint_loader']


def read_runner_checkpoint(filename, map_location=None) -> dict:
    """A local file, an http(s) URL or a checkpoint name, read safely with mmengine's runner state restored
    (for resuming). URLs and names are resolved by :func:`backbones.hub.resolve` (downloaded once into
    torch's hub cache): rank 0 downloads while the other ranks wait, as mmengine does."""
    filename = os.path.expanduser(str(filename))
    if not os.path.exists(filename):
        from mmengine.dist import barrier, get_dist_info
        rank, world_size = get_dist_info()
        if rank == 0:
            local = hub.resolve(filename)
        if world_size > 1:
            barrier()
            if rank > 0:
                local = hub.resolve(filename)
        filename = local
    return read_checkpoint(filename, map_location, runner_state=True)


def load_from_local_safe(filename, map_location=None):
    return read_runner_checkpoint(filename, map_location)


def load_from_http_safe(filename, map_location=None, model_dir=None, progress=None):
    return read_runner_checkpoint(filename, map_location)


def use_safe_checkpoint_loader() -> None:
    """Register our reader for local paths and http(s) URLs in mmengine's ``CheckpointLoader``
    (idempotent; mmengine logs 'Loads checkpoint by local_safe backend')."""
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_safe, force=True)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=load_from_http_safe, force=True)
