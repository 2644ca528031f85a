"""Test-time augmentation for ``tools/test.py --tta``: the config rewrite.

Segmentors: multi-scale + flip, the protocol of the published multi-scale ADE20K mIoU (ConvNeXt and
ConvFormer / CAFormer report single- and multi-scale, ConvNeXt V2 multi-scale only; docs/model_zoo.md).
ConvNeXt's released UperNet code is mmseg 0.x, tested with ``--aug-test``: its ``MultiScaleFlipAug`` takes the
test scale (2048x512; 2560x640 for the 640 crops) times the ratios 0.5, 0.75, 1.0, 1.25, 1.5, 1.75 (each side
truncated to an int), each view with and without a horizontal flip, and averages the softmax scores of the 12
views. :func:`seg_tta_pipeline` builds that from the config's own ``test_pipeline`` (its ``Resize`` scale
times ``img_ratios``, the ratio list every config here inherits from mmseg's ADE20K base), and
:func:`enable_tta` swaps it in with mmseg's ``SegTTAModel`` (the ``tta_model`` of mmseg's default runtime),
as mmseg 1.x's own ``tools/test.py --tta`` does. The test mode of the config is kept (sliding 512 / 341
windows for the real configs), so each view is evaluated as in single-scale testing.

The ``tta_pipeline`` the configs inherit from mmseg 1.x is *not* used: it resizes the original image by each
ratio (``Resize(scale_factor=r)``) instead of the recipe's test scale, which differs from the published
protocol on every image that the test ``Resize`` does not leave at its size (ADE20K images vary in size).

Detectors: refused (:class:`TTAUnsupportedError`). mmdet 3.3's ``DetTTAModel`` merges boxes only (it asserts
that the predictions carry no masks), every detector config here is a Mask R-CNN or Cascade Mask R-CNN, and
their recipes evaluate detection at the single test scale (1333x800) only.
"""
import copy
from typing import List, Optional, Sequence

SEG_TTA_MODEL = dict(type='SegTTAModel')


class TTAUnsupportedError(ValueError):
    """The config's task or model has no test-time augmentation here."""


DET_REFUSAL = ('test-time augmentation is not available for detectors: mmdet 3.3\'s DetTTAModel merges boxes '
               'only and refuses instance masks, every detector config here (Mask R-CNN, Cascade Mask R-CNN) '
               'predicts masks, and their recipes evaluate detection at the single test scale only; '
               'test without --tta')


def _find_resize(pipeline: Sequence[dict]) -> int:
    hits = [i for i, t in enumerate(pipeline) if t.get('type') in ('Resize', 'mmseg.Resize', 'mmcv.Resize')]
    if len(hits) != 1 or 'scale' not in pipeline[hits[0]]:
        types = [t.get('type') for t in pipeline]
        raise TTAUnsupportedError(f'the multi-scale test scales are derived from one Resize(scale=...) step of '
                                  f'test_pipeline; found {len(hits)} Resize step(s) in {types}')
    return hits[0]


def _scaled(scale, ratio: float):
    if isinstance(scale, (int, float)):
        return int(scale * ratio)
    return tuple(int(s * ratio) for s in scale)


def seg_tta_pipeline(test_pipeline: Sequence[dict], ratios: Sequence[float], flip: bool = True) -> List[dict]:
    """The multi-scale (+ flip) test pipeline made from a single-scale one.

    The ``Resize`` step of ``test_pipeline`` becomes one ``Resize`` per ratio with its scale times the
    ratio (``int`` of each side, keep_ratio as in the step); with ``flip`` each scale is also flipped
    horizontally (the segmentor flips its scores back). The steps before the resize (image loading) run
    once, the steps after it (annotation loading, packing) run per view, unchanged.
    """
    if not ratios:
        raise TTAUnsupportedError('no test-time ratios given')
    steps = [copy.deepcopy(dict(t)) for t in test_pipeline]
    i = _find_resize(steps)
    resize = steps[i]
    resizes = [dict(resize, scale=_scaled(resize['scale'], r)) for r in ratios]
    flips = [dict(type='RandomFlip', prob=0.0, direction='horizontal')]
    if flip:
        flips.append(dict(type='RandomFlip', prob=1.0, direction='horizontal'))
    transforms = [[t] for t in steps[1:i]] + [resizes, flips] + [[t] for t in steps[i + 1:]]
    return steps[:1] + [dict(type='TestTimeAug', transforms=transforms)]


def _test_datasets(cfg):
    """The innermost dataset dicts of the test dataloader."""
    ds = cfg.test_dataloader.dataset
    leaves, todo = [], [ds]
    while todo:
        d = todo.pop()
        if 'datasets' in d:
            todo.extend(d['datasets'])
        elif 'dataset' in d:
            todo.append(d['dataset'])
        else:
            leaves.append(d)
    return leaves


def enable_tta(cfg, ratios: Optional[Sequence[float]] = None, flip: bool = True) -> List[tuple]:
    """Rewrite a loaded config for multi-scale + flip testing, in place; returns the test scales.

    ``ratios`` default to the config's ``img_ratios``. Raises :class:`TTAUnsupportedError` for detectors
    (see the module docstring) and for configs whose test pipeline has no single ``Resize(scale=...)``.
    """
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        raise TTAUnsupportedError(DET_REFUSAL)
    if scope != 'mmseg':
        raise TTAUnsupportedError(f"--tta needs a segmentation config (default_scope 'mmseg'), got {scope!r}")
    if ratios is None:
        ratios = cfg.get('img_ratios')
        if not ratios:
            raise TTAUnsupportedError('the config defines no img_ratios (the multi-scale test ratios; '
                                      "mmseg's ADE20K base sets [0.5, 0.75, 1.0, 1.25, 1.5, 1.75])")
    scales = []
    for ds in _test_datasets(cfg):
        pipeline = ds['pipeline']
        scales = [_scaled(pipeline[_find_resize(pipeline)]['scale'], r) for r in ratios]
        ds['pipeline'] = seg_tta_pipeline(pipeline, ratios, flip)
    tta_model = copy.deepcopy(cfg.get('tta_model') or SEG_TTA_MODEL)
    tta_model['module'] = cfg.model
    cfg.model = tta_model
    return scales
