"""Importing this registers every backbone of the table (and the layer-decay optimizer constructor)
into mmdet 3.x's registries. Configs load it with
``custom_imports = dict(imports=['detection'], allow_failed_imports=False)``."""
from mmdet.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from glue import register

register(MODELS, OPTIM_WRAPPER_CONSTRUCTORS)
