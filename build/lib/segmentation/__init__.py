"""Importing this registers every backbone of the table (and the layer-decay optimizer constructor)
into mmsegmentation 1.x's registries. Configs load it with
``custom_imports = dict(imports=['segmentation'], allow_failed_imports=False)``."""
from glue import register  # first: gives mmcv-lite its ops before mmseg imports mmcv.ops

from mmseg.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS  # noqa: E402

register(MODELS, OPTIM_WRAPPER_CONSTRUCTORS)
