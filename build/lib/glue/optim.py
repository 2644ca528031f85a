"""Layer-wise learning-rate decay for every backbone of the table (driven by ``get_layer_depth``)."""
from typing import List, Optional

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from backbones.base import LAYER_DECAY_SCHEMES


class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``paramwise_cfg=dict(decay_rate=0.9, decay_type='layer_wise', num_layers=None)``.

    Each parameter of ``model.backbone`` gets ``lr * decay_rate ** (max_layer_id - layer_id - 1)`` with the
    ids of ``backbone.get_layer_depth(name, scheme=decay_type, num_layers=num_layers)``; everything outside
    the backbone (neck, heads) gets the base lr. ``decay_type``: ``layer_wise`` (ConvNeXt's detection rule),
    ``stage_wise`` (ConvNeXt's segmentation rule) or ``block_wise``. ``num_layers`` defaults to the
    backbone's own (``backbone.num_layers(decay_type)``). 1-D parameters (norms, biases, layer scales),
    backbone vectors stored in a broadcast shape (one dimension larger than 1: layer scales such as
    ``gamma_1`` [1, C, 1, 1] of the unified ConvNeXt / Halo blocks, GRN's [1, 1, 1, C]), and the backbone's
    ``no_weight_decay()`` names (position tables), get no weight decay. ``paramwise_cfg`` may be omitted
    (rate 1.0: no layer decay, the weight-decay rules still apply).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        # mmengine's __call__ skips add_params() when paramwise_cfg is empty, which would silently give
        # weight decay to every norm, bias and layer scale: always take the param-wise path.
        super().__init__(optim_wrapper_cfg, paramwise_cfg or dict(decay_rate=1.0, decay_type='layer_wise'))

    def add_params(self, params: List[dict], module: nn.Module, **kwargs) -> None:
        cfg = dict(self.paramwise_cfg or {})
        decay_rate = float(cfg.get('decay_rate', 1.0))
        decay_type = cfg.get('decay_type', 'layer_wise')
        if decay_type not in LAYER_DECAY_SCHEMES:
            raise ValueError(f'decay_type must be one of {LAYER_DECAY_SCHEMES}, got {decay_type!r}')
        backbone = getattr(module, 'backbone', None)
        if backbone is None or not hasattr(backbone, 'get_layer_depth'):
            raise TypeError(f'{type(self).__name__} needs a model whose .backbone has get_layer_depth() '
                            f'(a backbone of this project); got {type(backbone).__name__}')
        num_layers = cfg.get('num_layers')
        no_wd = {f'backbone.{n}' for n in backbone.no_weight_decay()}
        groups = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            vector = name.startswith('backbone.') and sum(d > 1 for d in param.shape) <= 1
            if param.ndim == 1 or name.endswith('.bias') or name in no_wd or vector:
                group, wd = 'no_decay', 0.0
            else:
                group, wd = 'decay', self.base_wd
            layer_id, max_id = backbone.get_layer_depth(name, prefix='backbone.', scheme=decay_type,
                                                        num_layers=num_layers)
            key = f'layer_{layer_id}_{group}'
            if key not in groups:
                scale = decay_rate ** (max_id - layer_id - 1)
                groups[key] = dict(params=[], param_names=[], lr_scale=scale, lr=self.base_lr * scale,
                                   weight_decay=wd, group_name=key, layer_id=layer_id)
            groups[key]['params'].append(param)
            groups[key]['param_names'].append(name)
        print_log(f'layer decay: {decay_type}, rate {decay_rate}, {len(groups)} groups, max layer id '
                  f'{max_id}', logger='current')
        for key in sorted(groups, key=lambda k: (groups[k]['layer_id'], k)):
            g = groups[key]
            print_log(f'  {key}: lr {g["lr"]:.3e} (x{g["lr_scale"]:.4f}), wd {g["weight_decay"]}, '
                      f'{len(g["params"])} tensors', logger='current')
            del g['layer_id']
            params.append(g)
