"""Importing this registers every backbone of the table (and the layer-decay optimizer constructor)
into mmdet 3.x's registries. Configs load it with
``custom_imports = dict(imports=['detection'], allow_failed_imports=False)``."""
from glue import register  # first: gives mmcv-lite its ops before mmdet imports mmcv.ops

from mmdet.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS  # noqa: E402

register(MODELS, OPTIM_WRAPPER_CONSTRUCTORS)
