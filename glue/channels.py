"""A model config whose neck / heads expect other widths than the backbone returns is reported when the
model is built, naming both lists -- not later, deep inside a convolution of the first forward.

``check_model_channels(model_cfg)`` builds the backbone of the config on the meta device (no memory, no
weights read) when it is one of ours, and compares its ``out_channels`` with

* ``neck.in_channels`` (mmdet FPN and friends; the first neck of a list), and
* ``decode_head`` / ``auxiliary_head`` ``in_channels`` picked by their ``in_index`` (mmseg heads),
  when there is no neck in between.
"""
from typing import List, Optional

__all__ = ['backbone_out_channels', 'check_model_channels', 'ChannelMismatchError']


class ChannelMismatchError(ValueError):
    pass


def backbone_out_channels(backbone_cfg) -> Optional[List[int]]:
    """``out_channels`` of a backbone config of ours (built on the meta device), else None."""
    import torch

    from backbones import families

    if not isinstance(backbone_cfg, dict):
        return None
    name = str(backbone_cfg.get('type', '')).split('.')[-1]  # 'mmdet.Conv2Former' -> 'Conv2Former'
    cls = families().get(name)
    if cls is None:
        return None
    kwargs = {k: v for k, v in dict(backbone_cfg).items() if k not in ('type', 'init_cfg', 'pretrained')}
    with torch.device('meta'):
        return list(cls(**kwargs).out_channels)


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def check_model_channels(model_cfg) -> None:
    """Raise :class:`ChannelMismatchError` naming both lists when the neck's (or, without a neck, the
    decode / auxiliary heads') ``in_channels`` do not match the backbone's ``out_channels``."""
    if not isinstance(model_cfg, dict):
        return
    out = backbone_out_channels(model_cfg.get('backbone'))
    if out is None:
        return
    bb = model_cfg['backbone']
    where = f"backbone {bb.get('type')}(arch={bb.get('arch')!r}, out_indices={tuple(bb.get('out_indices', (0, 1, 2, 3)))})"
    neck = model_cfg.get('neck')
    if isinstance(neck, (list, tuple)):
        neck = neck[0] if neck else None
    if isinstance(neck, dict):
        got = _as_list(neck.get('in_channels'))
        if got is not None and got != out:
            raise ChannelMismatchError(
                f'model.neck ({neck.get("type")}) in_channels {got} do not match the out_channels {out} of the '
                f'{where}: set neck.in_channels={out}, or change the backbone arch / out_indices')
        return
    for key in ('decode_head', 'auxiliary_head'):
        heads = model_cfg.get(key)
        for n, head in enumerate(heads if isinstance(heads, (list, tuple)) else [heads]):
            if not isinstance(head, dict) or head.get('in_channels') is None:
                continue
            got, index = _as_list(head['in_channels']), _as_list(head.get('in_index', -1))
            try:
                want = [out[i] for i in index] if isinstance(index, list) else out[index]
            except IndexError:
                raise ChannelMismatchError(
                    f'model.{key} in_index {index} points outside the {len(out)} maps of the {where} '
                    f'(out_channels {out})') from None
            if isinstance(got, list) and not isinstance(want, list):
                want = [want]
            if got != want:
                name = key + (f'[{n}]' if isinstance(heads, (list, tuple)) else '')
                raise ChannelMismatchError(
                    f'model.{name} ({head.get("type")}) in_channels {got} (in_index {index}) do not match the '
                    f'out_channels {out} of the {where}, which give {want} there: set {key}.in_channels={want}')
