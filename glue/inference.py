"""Inference: a config and a whole-model checkpoint to a model on a device (``init_inference_model``), one
image through it and its predictions drawn and summarised (``run_demo``; the CLI is tools/image_demo.py).

Whole-model checkpoints must fit the config: missing or mis-shaped weights are refused (:class:`Refused`).
The CPU fall-backs of :mod:`glue.runtime` are applied (SyncBN -> BN, ...).
"""
import copy
import os
import os.path as osp
import warnings

from .runtime import adapt_to_cpu, load_config, replace_sync_bn

LOAD_ANNOTATIONS = ('LoadAnnotations', 'mmdet.LoadAnnotations', 'mmseg.LoadAnnotations', 'LoadPanopticAnnotations')


class Refused(Exception):
    """A bad input: one message on stderr, exit status 2."""


# --------------------------------------------------------------------------------------- shared helpers
def is_url(path: str) -> bool:
    return str(path).startswith(('http://', 'https://', 'open-mmlab://', 'torchvision://', 'modelzoo://'))


def check_file(path, what: str) -> None:
    if path is not None and not is_url(path) and not osp.isfile(path):
        raise Refused(f'{what} not found: {path}')


def resolve_device(device) -> str:
    import torch

    if device is None:
        return 'cuda:0' if torch.cuda.is_available() else 'cpu'
    if device != 'cpu' and not device.startswith('cuda'):
        raise Refused(f"--device must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise Refused(f'--device {device} requested but CUDA is not available')
    return 'cuda:0' if device == 'cuda' else device


def load_inference_config(config: str, device: str, cfg_options=None):
    """The config with our modules registered and tools/train.py's CPU fall-backs applied."""
    check_file(config, 'config')
    try:
        cfg = load_config(config, cfg_options)
    except ValueError as e:  # wrong default_scope
        raise Refused(str(e).splitlines()[0]) from None
    adapt_to_cpu(cfg, 'none')  # no CUDA: SyncBN -> BN, AMP wrapper -> fp32 (training only)
    if device == 'cpu':  # CUDA machine, CPU run: SyncBN does not run on CPU tensors either
        replace_sync_bn(cfg.model)
    return cfg


def test_pipeline_cfg(cfg) -> list:
    """The test pipeline of the config (test dataloader, else ``test_pipeline``) without annotation loading."""
    from mmdet.utils import get_test_pipeline_cfg

    try:
        pipeline = copy.deepcopy(get_test_pipeline_cfg(cfg))
    except (RuntimeError, AttributeError, KeyError):
        pipeline = copy.deepcopy(cfg.test_pipeline)
    return [t for t in pipeline if t.get('type') not in LOAD_ANNOTATIONS]


def config_dataset_meta(cfg) -> dict:
    """Classes and palette of the config's test dataset (built lazily: no annotation file is read)."""
    scope = cfg.default_scope
    if scope == 'mmdet':
        from mmdet.registry import DATASETS
    else:
        from mmseg.registry import DATASETS
    ds = copy.deepcopy(cfg.test_dataloader.dataset)
    while 'dataset' in ds and 'type' in ds and 'pipeline' not in ds:  # dataset wrappers
        ds = ds['dataset']
    ds['lazy_init'] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return dict(DATASETS.build(ds).metainfo)
    except Exception:  # fall back to the class's own METAINFO
        cls = DATASETS.get(ds.get('type'))
        return dict(getattr(cls, 'METAINFO', {}) or {})


def _strip(sd: dict) -> dict:
    if sd and all(k.startswith('module.') for k in sd):
        return {k[len('module.'):]: v for k, v in sd.items()}
    return sd


def load_weights(model, checkpoint: str, config: str) -> dict:
    """Load a whole-model checkpoint; refuse one that does not fit. Returns the checkpoint's ``meta``."""
    from .checkpoints import read_runner_checkpoint  # the safe reader (weights only + named allow-list)

    try:
        ckpt = read_runner_checkpoint(checkpoint, map_location='cpu')
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise Refused(f'cannot read checkpoint {checkpoint}: {reason}') from None
    if not isinstance(ckpt, dict):
        raise Refused(f'checkpoint {checkpoint} holds a {type(ckpt).__name__}, not a state dict')
    sd = _strip(dict(ckpt.get('state_dict', ckpt)))
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith('num_batches_tracked')]
    shapes = [k for k in own if k in sd and hasattr(sd[k], 'shape') and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or shapes:
        parts = []
        if missing:
            parts.append(f'{len(missing)} of {len(own)} model tensors missing (e.g. {", ".join(missing[:3])})')
        if shapes:
            parts.append(f'{len(shapes)} shape mismatches (e.g. {", ".join(shapes[:3])})')
        backbone_only = sd and not any(k.startswith('backbone.') for k in sd)
        raise Refused(f'checkpoint {checkpoint} does not fit {config}: ' + '; '.join(parts)
                      + ('; it looks like backbone weights only: give those as the backbone\'s init_cfg and '
                         'pass a trained detector/segmentor checkpoint here' if backbone_only else ''))
    unexpected = [k for k in sd if k not in own]
    if unexpected:
        print(f'note: {len(unexpected)} checkpoint tensors not used by the model (e.g. {", ".join(unexpected[:3])})')
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    return meta


def quiet_init_weights(model) -> None:
    """``model.init_weights()`` without mmengine's per-parameter initialisation report."""
    import logging

    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)


def init_inference_model(cfg, checkpoint, device: str):
    """Build the detector/segmentor with the inference API (eval mode, on ``device``), load ``checkpoint``
    (None: random weights, ``init_weights()`` applied) and set ``dataset_meta``."""
    cfg = copy.deepcopy(cfg)
    with warnings.catch_warnings(record=True) as caught:  # init_detector resets the filters itself
        if cfg.default_scope == 'mmdet':
            from mmdet.apis import init_detector
            model = init_detector(cfg, None, device='cpu')
        else:
            from mmseg.apis import init_model
            model = init_model(cfg, None, device='cpu')
    for w in caught:  # the weights and class names are set below: drop the API's "no checkpoint" note
        if 'checkpoint is None' not in str(w.message):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    meta = {}
    if checkpoint is None:
        quiet_init_weights(model)
    else:
        meta = load_weights(model, checkpoint, cfg.filename)
    dataset_meta = {k.lower(): v for k, v in (meta.get('dataset_meta') or {}).items()}
    if not dataset_meta.get('classes'):
        dataset_meta = config_dataset_meta(cfg)
    palette = dataset_meta.get('palette') or (getattr(model, 'dataset_meta', None) or {}).get('palette')
    model.dataset_meta = dict(dataset_meta, palette=palette or 'random')
    model.to(device)
    model.eval()
    return model


# ----------------------------------------------------------------------------------------------- demo
def read_image(path: str):
    import mmcv

    try:
        img = mmcv.imread(path, channel_order='rgb')
    except Exception:
        img = None
    if img is None:
        raise Refused(f'cannot read image {path}')
    return img


def _visualizer(scope: str, cfg, dataset_meta: dict):
    vis_cfg = copy.deepcopy(cfg.get('visualizer') or {})
    vis_cfg.update(name=f'image_demo_{os.getpid()}_{id(cfg)}', vis_backends=None, save_dir=None)
    if scope == 'mmdet':
        from mmdet.registry import VISUALIZERS
        vis_cfg.setdefault('type', 'DetLocalVisualizer')
    else:
        from mmseg.registry import VISUALIZERS
        vis_cfg.setdefault('type', 'SegLocalVisualizer')
    visualizer = VISUALIZERS.build(vis_cfg)
    visualizer.dataset_meta = dataset_meta
    return visualizer


def summarize_detections(result, classes, thr: float) -> list:
    inst = result.pred_instances
    scores, labels = inst.scores.cpu(), inst.labels.cpu()
    keep = scores >= thr
    lines = [f'{int(keep.sum())} boxes with score >= {thr:g} (of {len(scores)} the model kept)']
    for c in sorted(set(labels[keep].tolist())):
        sel = keep & (labels == c)
        name = classes[c] if c < len(classes) else str(c)
        lines.append(f'  {name}: {int(sel.sum())} (best {float(scores[sel].max()):.2f})')
    if not keep.any() and len(scores):
        best = int(scores.argmax())
        c = int(labels[best])
        lines.append(f'  (best score {float(scores[best]):.3f}, {classes[c] if c < len(classes) else c})')
    return lines


def summarize_segmentation(result, classes) -> list:
    import torch

    seg = result.pred_sem_seg.data.reshape(-1).cpu().long()
    counts = torch.bincount(seg[seg >= 0], minlength=len(classes))
    total = max(int(seg.numel()), 1)
    lines = [f'{len(seg)} pixels, {int((counts > 0).sum())} classes present']
    for c in counts.argsort(descending=True).tolist():
        if counts[c] == 0:
            break
        name = classes[c] if c < len(classes) else str(c)
        lines.append(f'  {name}: {100.0 * float(counts[c]) / total:.1f}%')
    return lines


def run_demo(image: str, config: str, checkpoint: str, out=None, device=None, score_thr: float = 0.3,
             cfg_options=None) -> dict:
    check_file(image, 'image')
    check_file(config, 'config')
    check_file(checkpoint, 'checkpoint')
    device = resolve_device(device)
    img = read_image(image)
    cfg = load_inference_config(config, device, cfg_options)
    scope = cfg.default_scope
    model = init_inference_model(cfg, checkpoint, device)
    classes = list(model.dataset_meta.get('classes') or [])
    if out is None:
        out = osp.join('work_dirs', 'image_demo', osp.splitext(osp.basename(image))[0] + '_pred.png')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)

    if scope == 'mmdet':
        from mmcv.transforms import Compose
        from mmdet.apis import inference_detector
        result = inference_detector(model, image, test_pipeline=Compose(test_pipeline_cfg(model.cfg)))
        lines = summarize_detections(result, classes, score_thr)
        task = 'detections'
    else:
        from mmseg.apis import inference_model
        model.cfg.test_pipeline = test_pipeline_cfg(model.cfg)
        result = inference_model(model, image)
        lines = summarize_segmentation(result, classes)
        task = 'segmentation'
    visualizer = _visualizer(scope, model.cfg, model.dataset_meta)
    kwargs = dict(pred_score_thr=score_thr) if scope == 'mmdet' else dict(with_labels=True)
    visualizer.add_datasample('image_demo', img, data_sample=result, draw_gt=False, show=False,
                              out_file=out, **kwargs)

    print(f'{type(model).__name__} ({scope}) on {image} ({img.shape[1]}x{img.shape[0]}), '
          f'weights {checkpoint}, device {device}')
    print(f'{task}: ' + lines[0])
    for line in lines[1:]:
        print(line)
    print(f'picture: {out}')
    return dict(result=result, out=out, summary=lines, scope=scope)
