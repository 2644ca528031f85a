"""Multi-scale vision backbones in pure PyTorch (torch + timm layers; no OpenMMLab import).

>>> from backbones import build_backbone, list_backbones
>>> m = build_backbone('conv2former_t', init_cfg=dict(type='Pretrained', checkpoint='conv2former_t.in1k'))
>>> m.init_weights()            # strict load, prints a load report
>>> feats = m(torch.randn(1, 3, 800, 1216))   # 4 NCHW maps, strides 4/8/16/32, m.out_channels wide
"""
from .base import MultiScaleBackbone
from .checkpoint import (CheckpointError, CheckpointMismatchError, LoadReport, load_pretrained,
                         read_checkpoint)
from .conv2former import Conv2Former
from .registry import build_backbone, families, get_family, list_backbones, register_family

__all__ = ['MultiScaleBackbone', 'Conv2Former', 'build_backbone', 'list_backbones', 'families', 'get_family',
           'register_family', 'load_pretrained', 'read_checkpoint', 'LoadReport', 'CheckpointError',
           'CheckpointMismatchError']

# Families register themselves on import; one line per family file (keep this block sorted).
# -- family imports --
from .convnext import ConvNeXt, ConvNeXtV2  # noqa: E402,F401
from .metaformer import CAFormer, ConvFormer, IdentityFormer, PoolFormerV2, RandFormer  # noqa: E402,F401
from .unified import UnifiedConvNeXt, UnifiedDCNv3, UnifiedHalo, UnifiedPVT, UnifiedSwin  # noqa: E402,F401
