"""The backbone table: every family registers its class here; names are ``<family>_<arch>``."""
from typing import Dict, List, Type

_FAMILIES: Dict[str, type] = {}


def register_family(cls: Type) -> Type:
    """Class decorator: add a :class:`MultiScaleBackbone` subclass to the table (keyed by class name)."""
    if cls.__name__ in _FAMILIES and _FAMILIES[cls.__name__] is not cls:
        raise KeyError(f'backbone family {cls.__name__!r} is registered twice')
    _FAMILIES[cls.__name__] = cls
    return cls


def families() -> Dict[str, type]:
    """Family class name -> class, e.g. ``{'Conv2Former': Conv2Former}``."""
    return dict(_FAMILIES)


def list_backbones() -> List[str]:
    """Every named backbone, e.g. ``['conv2former_n', 'conv2former_t', ...]``."""
    return [f'{cls.family}_{arch}' for cls in _FAMILIES.values() for arch in cls.arch_settings]


def _split(name: str):
    key = name.lower()
    for cls in _FAMILIES.values():
        if key == cls.__name__.lower() or key == cls.family:
            return cls, None
    # longest family prefix first: 'convnextv2_tiny' must not match 'convnext'
    for cls in sorted(_FAMILIES.values(), key=lambda c: -len(c.family)):
        if key.startswith(cls.family + '_'):
            return cls, key[len(cls.family) + 1:]
    return None, None


def get_family(name: str) -> type:
    cls, _ = _split(name)
    if cls is None:
        raise ValueError(f'unknown backbone family {name!r}; known families: {", ".join(sorted(_FAMILIES))}')
    return cls


def build_backbone(name: str, **kwargs):
    """Build a backbone by table name (``'conv2former_t'``) or by family with ``arch=`` (``'Conv2Former'``).

    Keyword arguments are those of :class:`backbones.base.MultiScaleBackbone` (``out_indices``,
    ``drop_path_rate``, ``frozen_stages``, ``norm_eval``, ``with_cp``, ``out_norm``, ``init_cfg``, ...) and the
    family's own (its ``family_options``, e.g. ``stage_norms`` of the unified models).
    """
    cls, arch = _split(name)
    if cls is None:
        raise ValueError(f'unknown backbone {name!r}; valid names: {", ".join(list_backbones())}')
    if arch is not None:
        if 'arch' in kwargs:
            raise ValueError(f'{name!r} already names an arch; do not pass arch={kwargs["arch"]!r} too')
        kwargs['arch'] = arch
    return cls(**kwargs)
