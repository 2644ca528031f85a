"""Opt-in channels_last memory for a whole detector or segmentor: ``ChannelsLastHook``.

Our backbones choose their own layouts inside (Conv2Former and ConvNeXt compute their blocks on NHWC
tensors) and return contiguous NCHW maps, which every neck and head accepts. The heads' convolutions then run
in PyTorch's default NCHW layout. On CPU, oneDNN's convolution backward is much slower on NCHW tensors than on
channels_last ones: UperNet's ``fpn_bottleneck`` (3x3, 256 -> 64 channels at stride 4, batch 4, 48x48, one
thread) takes 100 ms backward on NCHW and 41 ms on channels_last, and the toy UperNet's training iteration
falls from 0.47 to 0.39 s (docs/speed.md). Convolutions return channels_last whenever their input or weight
is channels_last, so converting the model's 4-D weights once carries the layout through the heads.

Use it from any config (mmdet's and mmseg's own tools too, since ``custom_imports`` registers it)::

    custom_hooks = [dict(type='ChannelsLastHook')]

It converts the model before training, validation and testing, after the weights are initialised, loaded
or resumed (idempotent, the parameters stay the same objects, so the optimizer is unaffected). Checkpoints
keep the tensors' strides; loading them into an NCHW model copies values as usual.

Under a launcher, :func:`use_channels_last_ddp` (called by our tools) makes the DDP wrapper
``ChannelsLastDDP``, which converts the model before DDP lays out its gradient buckets; a model converted
after wrapping trains the same but DDP copies every gradient into its bucket and warns "Grad strides do not
match bucket view strides" (what mmdet's and mmseg's own tools get).

Refused for models with mmcv's compiled RoIAlign: its CPU kernel indexes raw NCHW memory and reads
channels_last maps wrongly (measured against mmcv 2.1.0, see tests/test_mmcv_ops.py). The ops that
``glue.mmcv_ops`` provides under mmcv-lite (torchvision's) read any layout correctly.
"""
from .resume import _hook_base, has_custom_hook

__all__ = ['ChannelsLastHook', 'ChannelsLastDDP', 'to_channels_last', 'use_channels_last_ddp']


def _ddp_base():
    from mmengine.model import MMDistributedDataParallel
    return MMDistributedDataParallel


def _unwrap(model):
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


def _compiled_roi_ops(model) -> list:
    """Names of modules that call mmcv's compiled RoI ops (which read only NCHW memory correctly)."""
    from .mmcv_ops import compiled_mmcv_ops
    if compiled_mmcv_ops() is None:
        return []
    return [name for name, mod in model.named_modules()
            if type(mod).__module__.startswith('mmcv.ops') and 'roi' in type(mod).__name__.lower()]


def to_channels_last(model) -> int:
    """Put every 4-D parameter and buffer of ``model`` in channels_last memory; the number converted."""
    import torch
    model = _unwrap(model)
    bad = _compiled_roi_ops(model)
    if bad:
        raise RuntimeError(
            'ChannelsLastHook: this model uses the compiled mmcv RoI ops ' + ', '.join(bad[:3]) +
            (' ...' if len(bad) > 3 else '') + ', whose kernels read channels_last maps wrongly; remove the hook '
            'or use mmcv-lite (tools/install.sh), whose ops (torchvision) read any layout')
    count = 0
    for tensors in (model.parameters(), model.buffers()):
        for t in tensors:
            # [N, 1, H, W] (depthwise) and [N, C, 1, 1] (1x1) weights have the same memory order in both
            # formats: restriding them would only change their strides (and so their gradients' strides)
            if (t.dim() == 4 and t.shape[1] > 1 and t.shape[2] * t.shape[3] > 1
                    and not t.is_contiguous(memory_format=torch.channels_last)):
                t.data = t.data.contiguous(memory_format=torch.channels_last)
                count += 1
    return count


class ChannelsLastHook(_hook_base()):
    """Convert the model to channels_last before training, validation and testing (see module doc)."""

    priority = 'VERY_HIGH'

    def __init__(self):
        self._logged = False

    def _convert(self, runner) -> None:
        n = to_channels_last(runner.model)
        if n and not self._logged:
            runner.logger.info(f'ChannelsLastHook: {n} 4-D weights and buffers in channels_last memory')
            self._logged = True

    def before_train(self, runner) -> None:
        self._convert(runner)

    def before_val(self, runner) -> None:
        self._convert(runner)

    def before_test(self, runner) -> None:
        self._convert(runner)


class ChannelsLastDDP(_ddp_base()):
    """mmengine's DDP wrapper on a model converted to channels_last first (its gradient buckets then match)."""

    def __init__(self, module, **kwargs):
        to_channels_last(module)
        super().__init__(module=module, **kwargs)


def use_channels_last_ddp(cfg, launcher: str) -> bool:
    """With ``ChannelsLastHook`` in a distributed run, wrap the model in :class:`ChannelsLastDDP`; True if so."""
    from .runtime import ddp_wrapper_cfg
    if launcher == 'none' or not has_custom_hook(cfg, ChannelsLastHook.__name__):
        return False
    wrapper = ddp_wrapper_cfg(cfg)
    if str(wrapper.get('type', '')).split('.')[-1] not in ('MMDistributedDataParallel', ChannelsLastDDP.__name__):
        return False  # another wrapper (FSDP, a user's own): the hook converts after wrapping
    wrapper['type'] = ChannelsLastDDP.__name__
    cfg.model_wrapper_cfg = wrapper
    return True
