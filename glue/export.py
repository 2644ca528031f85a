"""The export side of a detection / segmentation config: its backbone (+ neck) as one plain module.

:func:`build_backbone_and_neck` reads a config of this repository, builds ``model.backbone`` and, when the
model has one, ``model.neck`` (mmdet's FPN for every detector here; the UperNet segmentors have none, their
pyramid is part of the decode head) with the config's scope, optionally loads a trained detector /
segmentor checkpoint into them, and returns a :class:`BackboneWithNeck` for :mod:`backbones.export`.
"""
import contextlib
import copy
import warnings
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones.export import MIN_SIZE
from backbones.layers import is_tracing

NECK_MIN_SIZE = 128

SCOPES = ('mmdet', 'mmseg')


@contextlib.contextmanager
def _subsampling_max_pool():
    """While tracing, ``F.max_pool2d(x, 1, stride=s)`` (FPN's extra P6 level) becomes ``x[..., ::s, ::s]``,
    the same values. torch's shape function of the pooling branches on the parity of the map size, which
    would fix a dynamic-shape export to even (or odd) P5 sizes; the slice has no such branch."""
    if not is_tracing():
        yield
        return
    orig = F.max_pool2d

    def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                   return_indices=False):
        k = kernel_size if isinstance(kernel_size, int) else tuple(kernel_size)
        if k in (1, (1, 1)) and padding in (0, (0, 0)) and not return_indices and stride is not None:
            sh, sw = (stride, stride) if isinstance(stride, int) else tuple(stride)
            return input[..., ::sh, ::sw]
        return orig(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)

    F.max_pool2d = max_pool2d
    try:
        yield
    finally:
        F.max_pool2d = orig


class BackboneWithNeck(nn.Module):
    """``neck(backbone(x))``, or ``backbone(x)`` without a neck; returns the tuple of maps."""

    def __init__(self, backbone: nn.Module, neck: Optional[nn.Module] = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        # smallest height/width of a dynamic export (backbones.export reads it): FPN's extra stride-64 level
        # must be 2 px or more there, as a 1-px map fixes the graph to 1 px
        self.export_min_size = NECK_MIN_SIZE if neck is not None else MIN_SIZE

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.backbone(x)
        if self.neck is None:
            return tuple(feats)
        with _subsampling_max_pool():
            return tuple(self.neck(feats))


def _registries(scope: str):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    elif scope == 'mmseg':
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    else:
        raise ValueError(f'default_scope must be one of {SCOPES}, got {scope!r} (inherit a det or seg base config)')
    register_all_modules(init_default_scope=False)
    return MODELS


def _load_part(module: nn.Module, sd: dict, prefix: str, source: str) -> None:
    part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not part:
        raise KeyError(f'{source} has no {prefix}* weights; first keys: {list(sd)[:5]}')
    result = module.load_state_dict(part, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith('num_batches_tracked')]
    if missing or result.unexpected_keys:
        raise KeyError(f'{source} does not match the config\'s {prefix[:-1]}: missing {missing[:12]}, '
                       f'unexpected {result.unexpected_keys[:12]}')


def build_backbone_and_neck(config: str, checkpoint: Optional[str] = None, cfg_options: Optional[dict] = None,
                            with_neck: bool = True) -> BackboneWithNeck:
    """The config's backbone (+ neck), eval mode, float32 on the CPU.

    Without ``checkpoint`` the weights are random (``init_cfg`` is not applied: no download, no pretrained
    file needed). ``checkpoint``: a detector / segmentor checkpoint of this config (``backbone.*`` and
    ``neck.*`` keys, read with the backbones' safe reader), loaded strictly into both parts.
    """
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    cfg = Config.fromfile(config)  # runs custom_imports: registers the backbones
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    models = _registries(scope)
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    backbone_cfg.pop('init_cfg', None)
    backbone_cfg.pop('pretrained', None)
    neck_cfg = copy.deepcopy(cfg.model.get('neck')) if with_neck else None
    if isinstance(neck_cfg, (list, tuple)):
        raise ValueError(f'{config}: a list of necks is not supported by the export')
    with warnings.catch_warnings(), DefaultScope.overwrite_default_scope(scope):
        warnings.simplefilter('ignore')
        backbone = models.build(backbone_cfg)
        neck = models.build(neck_cfg) if neck_cfg else None
    model = BackboneWithNeck(backbone, neck)
    if checkpoint:
        from backbones.checkpoint import extract_state_dict, read_checkpoint
        sd, _ = extract_state_dict(read_checkpoint(checkpoint))
        _load_part(backbone, sd, 'backbone.', checkpoint)
        if neck is not None:
            _load_part(neck, sd, 'neck.', checkpoint)
    return model.eval()
