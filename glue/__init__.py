"""The thin OpenMMLab glue shared by ``detection`` and ``segmentation`` (needs mmengine only).

Importing ``glue`` (and its torch-only modules, such as :mod:`glue.measure`, which the backbone benchmark
uses) needs torch alone: what needs mmengine is imported when it is used, so the benchmark runs on a
machine with torch and timm only (a GPU box without OpenMMLab packages).

``register(models, optim_constructors)`` puts every backbone family of the table and the layer-decay
optimizer constructor into one OpenMMLab scope's registries; ``detection`` calls it with mmdet's
registries and ``segmentation`` with mmseg's. It also makes mmengine read checkpoints through our safe
reader (:mod:`glue.checkpoints`).
"""
import logging

from . import mmcv_ops

mmcv_ops.install()  # before anything imports mmcv.ops: mmcv-lite gets its ops on torchvision

from backbones import families  # noqa: E402

from .channels import ChannelMismatchError, check_model_channels  # noqa: E402
from .checkpoints import read_runner_checkpoint, use_safe_checkpoint_loader  # noqa: E402
from .sync_bn import CPUSyncBatchNorm, register_cpu_sync_bn  # noqa: E402

# names whose modules subclass mmengine classes at import: loaded on first use (see the module docstring)
_LAZY = {'LayerDecayOptimWrapperConstructor': 'optim', 'RNGStateHook': 'resume',
         'find_resume_checkpoint': 'resume', 'prepare_resume': 'resume',
         'ChannelsLastHook': 'memory_format', 'ChannelsLastDDP': 'memory_format'}

__all__ = ['register', 'LayerDecayOptimWrapperConstructor', 'read_runner_checkpoint', 'use_safe_checkpoint_loader',
           'check_model_channels', 'ChannelMismatchError', 'RNGStateHook', 'find_resume_checkpoint', 'prepare_resume',
           'CPUSyncBatchNorm', 'ChannelsLastHook', 'ChannelsLastDDP']


class _MMLoggerBridge(logging.Handler):
    """Forward the ``backbones`` logger (load reports) to mmengine's current logger."""

    def emit(self, record):
        from mmengine.logging import print_log
        print_log(self.format(record), logger='current', level=record.levelno)


def _bridge_logging():
    log = logging.getLogger('backbones')
    if not any(isinstance(h, _MMLoggerBridge) for h in log.handlers):
        log.addHandler(_MMLoggerBridge())
        log.setLevel(logging.INFO)
        log.propagate = False


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f'.{_LAZY[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def register(models, optim_constructors) -> None:
    """Register every backbone family (by class name) and the optimizer constructor; idempotent."""
    from .memory_format import ChannelsLastDDP, ChannelsLastHook
    from .optim import LayerDecayOptimWrapperConstructor
    from .resume import RNGStateHook
    for name, cls in families().items():
        existing = models.module_dict.get(name)
        if existing is cls:
            continue
        if existing is not None:
            raise KeyError(f'{models.scope} MODELS already has a different {name!r} ({existing.__module__}); '
                           f'refusing to shadow it')
        models.register_module(name=name, module=cls)
    # The constructor also goes into mmengine's root registry, which every scope falls back to: mmengine's
    # build_optim_wrapper() called outside an mmdet/mmseg default scope looks only there.
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as ROOT_CONSTRUCTORS
    name = LayerDecayOptimWrapperConstructor.__name__
    for registry in (optim_constructors, ROOT_CONSTRUCTORS):
        if registry.module_dict.get(name) is not LayerDecayOptimWrapperConstructor:
            registry.register_module(name=name, module=LayerDecayOptimWrapperConstructor)
    _bridge_logging()
    use_safe_checkpoint_loader()
    register_cpu_sync_bn()  # norm_cfg type 'CPUSyncBN' (distributed CPU runs, see glue.runtime)
    from mmengine.registry import HOOKS
    for hook in (RNGStateHook, ChannelsLastHook):
        if HOOKS.module_dict.get(hook.__name__) is not hook:
            HOOKS.register_module(name=hook.__name__, module=hook, force=True)
    from mmengine.registry import MODEL_WRAPPERS
    if MODEL_WRAPPERS.module_dict.get(ChannelsLastDDP.__name__) is not ChannelsLastDDP:
        MODEL_WRAPPERS.register_module(name=ChannelsLastDDP.__name__, module=ChannelsLastDDP, force=True)
