"""mmcv's compiled ops for the pure-Python ``mmcv-lite``, on torchvision and PyTorch.

mmdet 3.x and mmseg 1.x import ``mmcv.ops``, whose modules load the compiled extension ``mmcv._ext`` at
import time. ``mmcv-lite`` (the same package without the C++/CUDA build) has no ``_ext``, so nothing of
mmdet's models imports. :func:`install` puts a stand-in ``mmcv._ext`` into ``sys.modules`` that provides
the ops the shipped configs (Mask R-CNN, Cascade Mask R-CNN, UperNet; training, test and mask targets)
call, on torchvision's prebuilt kernels (CPU and CUDA, every torch build):

=====================  ==========================================================================
op                     implementation
=====================  ==========================================================================
roi_align_forward      ``torchvision::roi_align`` (``pool_mode='avg'``; aligned or not, any sampling)
roi_align_backward     ``torchvision::_roi_align_backward``
nms                    ``torchvision::nms`` in mmcv's order (unstable score sort; ``offset=1`` too)
get_compiler_version   a string saying that no mmcv ops were compiled (mmengine's env report)
=====================  ==========================================================================

Every other name of mmcv's extension resolves to a function that raises :class:`MissingMMCVOp` when called,
naming the op and how to install the full mmcv; importing stays possible. If a compiled ``mmcv._ext`` is
installed (full mmcv), :func:`install` does nothing and that one is used unchanged.

``CALLED`` counts the calls of each op (the tests use it to prove which ops the configs need).
"""
import collections
import importlib.machinery
import importlib.util
import os
import sys
import types
from typing import Optional

import torch

__all__ = ['install', 'compiled_mmcv_ops', 'MissingMMCVOp', 'PROVIDED', 'CALLED']

CALLED = collections.Counter()
_NOTE = 'none (mmcv-lite; mmcv ops provided on torchvision by glue.mmcv_ops)'


class MissingMMCVOp(NotImplementedError):
    """An mmcv op that neither mmcv-lite nor this project provides was called."""


def _missing(name: str):
    def op(*args, **kwargs):
        CALLED[name] += 1
        raise MissingMMCVOp(
            f"mmcv op '{name}' needs mmcv's compiled extension (mmcv._ext). The installed mmcv is the "
            f"pure-Python mmcv-lite, and this project provides only {', '.join(sorted(PROVIDED))} on "
            f"torchvision (enough for its Mask R-CNN, Cascade Mask R-CNN and UperNet configs). For '{name}', "
            f"install the full mmcv 2.1.0 with compiled ops instead: `bash tools/install.sh --full-mmcv` "
            f"(builds from source, 8-12 minutes on 2 cores; needs a C++ compiler, and nvcc for CUDA ops).")
    op.__name__ = name
    return op


def _check_pool_mode(pool_mode: int) -> None:
    if int(pool_mode) != 1:
        raise MissingMMCVOp("mmcv op 'roi_align' with pool_mode='max' is not provided on torchvision "
                            "(only 'avg', which mmdet's RoIAlign uses); install the full mmcv 2.1.0 for "
                            "it: `bash tools/install.sh --full-mmcv`")


def roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height=7, aligned_width=7,
                      spatial_scale=1.0, sampling_ratio=0, pool_mode=1, aligned=True):
    """mmcv's ``roi_align_forward`` (writes ``output``) on ``torchvision::roi_align``. Unlike mmcv's
    compiled kernel, which indexes raw NCHW memory, any memory layout of ``input`` is read correctly."""
    CALLED['roi_align_forward'] += 1
    _check_pool_mode(pool_mode)
    if rois.numel() == 0:
        return
    out = torch.ops.torchvision.roi_align(input, rois.to(input.dtype), float(spatial_scale),
                                          int(aligned_height), int(aligned_width), int(sampling_ratio),
                                          bool(aligned))
    output.copy_(out)


def roi_align_backward(grad_output, rois, argmax_y, argmax_x, grad_input, aligned_height=7,
                       aligned_width=7, spatial_scale=1.0, sampling_ratio=0, pool_mode=1, aligned=True):
    """mmcv's ``roi_align_backward`` (writes ``grad_input``) on ``torchvision::_roi_align_backward``."""
    CALLED['roi_align_backward'] += 1
    _check_pool_mode(pool_mode)
    if rois.numel() == 0:
        return
    b, c, h, w = grad_input.shape
    grad = torch.ops.torchvision._roi_align_backward(
        grad_output.contiguous(), rois.to(grad_output.dtype), float(spatial_scale), int(aligned_height),
        int(aligned_width), b, c, h, w, int(sampling_ratio), bool(aligned))
    grad_input.copy_(grad)


def nms(boxes, scores, iou_threshold=0.5, offset=0):
    """mmcv's ``nms``: indices of the kept boxes, highest score first.

    The boxes are visited in the order of mmcv's kernels (``scores.sort(descending=True)``, not a stable
    sort, so equal scores come in the same order as with mmcv); ``offset=1`` (legacy +1 widths) is the
    offset-0 IoU of boxes whose x2, y2 are moved by 1.
    """
    CALLED['nms'] += 1
    if boxes.numel() == 0:
        return boxes.new_zeros(0, dtype=torch.long)
    if int(offset) not in (0, 1):
        raise ValueError(f'nms offset must be 0 or 1, got {offset}')
    order = scores.sort(0, descending=True)[1]
    b = boxes[order]
    if int(offset) == 1:
        b = torch.cat([b[:, :2], b[:, 2:4] + 1], dim=1)
    # the boxes now come sorted: torchvision's stable sort keeps that order for ties
    keep = torch.ops.torchvision.nms(b.contiguous(), scores[order].contiguous(), float(iou_threshold))
    return order[keep]


def get_compiler_version():
    return _NOTE


def get_compiling_cuda_version():
    return _NOTE


PROVIDED = {f.__name__: f for f in (roi_align_forward, roi_align_backward, nms, get_compiler_version,
                                    get_compiling_cuda_version)}


class _LiteExt(types.ModuleType):
    """``mmcv._ext`` stand-in: the provided ops, and a raising stub for every other name."""

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        stub = _missing(name)
        setattr(self, name, stub)
        return stub


def compiled_mmcv_ops() -> Optional[str]:
    """Path of an installed compiled ``mmcv._ext`` (full mmcv), else None. Imports nothing."""
    spec = importlib.util.find_spec('mmcv')
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, '_ext' + suffix)
            if os.path.isfile(path):
                return path
    return None


def lite_extension() -> types.ModuleType:
    """A fresh stand-in for ``mmcv._ext`` (the provided ops plus raising stubs), not installed anywhere."""
    ext = _LiteExt('mmcv._ext', __doc__)
    ext.__file__ = __file__
    # a spec, so that importlib.util.find_spec / pkgutil.find_loader('mmcv._ext') (mmengine's
    # mmcv_full_available) see the module instead of raising
    ext.__spec__ = importlib.machinery.ModuleSpec('mmcv._ext', None, origin=__file__)
    for name, fn in PROVIDED.items():
        setattr(ext, name, fn)
    return ext


def install() -> bool:
    """Provide ``mmcv._ext`` on torchvision when mmcv is mmcv-lite; return True if the stand-in is in use.

    Idempotent. Does nothing when mmcv is not installed or is a full mmcv with its compiled ops.
    """
    current = sys.modules.get('mmcv._ext')
    if current is not None:
        return isinstance(current, _LiteExt)
    if importlib.util.find_spec('mmcv') is None or compiled_mmcv_ops() is not None:
        return False
    if 'mmcv.ops' in sys.modules:  # imported (and failed) before us: it must be imported again
        for name in [m for m in sys.modules if m == 'mmcv.ops' or m.startswith('mmcv.ops.')]:
            del sys.modules[name]
    sys.modules['mmcv._ext'] = lite_extension()
    return True
