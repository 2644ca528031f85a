"""Parameters and FLOPs of the whole detector or segmentor a config builds.

The library part of tools/analysis/get_flops.py. Examples::

    python tools/analysis/get_flops.py configs/det/convnext_t_maskrcnn.py       # 1280x800
    python tools/analysis/get_flops.py configs/seg/convnext_t_upernet.py --shape 512 2048
    python tools/analysis/get_flops.py configs/det/caformer_s18_cascade.py --device cpu --json f.json

Convention (the papers', fvcore's and mmcv's ``get_flops``): **one multiply-add is one FLOP**, so the
numbers are multiply-accumulates (MACs). Counted, with ``torch.utils.flop_counter.FlopCounterMode``
(its formulas give 2 per multiply-add; they are halved here):

* convolutions (incl. transposed), ``linear`` / ``mm`` / ``addmm`` (k multiply-adds per output value);
* ``bmm`` / ``baddbmm`` / ``matmul`` / ``einsum`` (explicit attention, Halo's relative logits,
  RandFormer's token mixing, the V2 GRN-folded linear);
* ``F.scaled_dot_product_attention`` (CAFormer, the unified Swin / PVT / Halo): ``QK^T`` plus
  ``AV``, i.e. ``batch x heads x Lq x Lk x (d_qk + d_v)``, whatever kernel runs (flash / math);
  the mask or bias addition and the softmax are not counted;
* ``grid_sample`` (the unified DCNv3's pure-PyTorch deformable sampling): **4 multiply-adds per
  output value** for bilinear (one output value = one channel of one sampled point: four weighted
  taps), 16 for bicubic, 0 for nearest (a gather). The interpolation weights' own arithmetic and
  DCNv3's weighted sum over the sampled points (1 multiply-add per channel and point, an
  element-wise multiply + sum in the PyTorch code) are not counted.

Not counted (element-wise, as in fvcore / mmcv up to these small terms): normalisation layers,
activations, softmax, pooling, up-/down-sampling by interpolation, additions, and the operations
without an aten kernel: mmcv's RoIAlign (its output is produced as zeros of the right shape, see
below; with ~2x2 bilinear samples per bin it would add about 0.3 G for 1000 + 100 RoIs, 0.9 G for
Cascade's three stages: about 0.1 %) and NMS (not run).

What runs (one image, batch 1, random input of ``--shape H W``, no data preprocessor):

detector (mmdet two-stage: Mask R-CNN, Cascade Mask R-CNN)
    mmdet 2.x's ``forward_dummy``, how the published detection FLOPs were measured: backbone, neck,
    the RPN head's raw forward on every level (no proposal decoding / NMS), then the RoI heads on
    1000 fixed proposals: every box head (each of Cascade's three stages) on all 1000, every mask
    head (each stage) on the first 100. mmdet 3.x's ``_forward`` (mode='tensor') differs: it runs
    the RPN's NMS (a data-dependent number of proposals) and Cascade's mask heads on all proposals,
    so it is not used. Default shape 800x1280 (the papers' "1280x800").
    Other detectors fall back to ``model._forward`` (single-stage: backbone, neck, head).
segmentor (mmseg EncoderDecoder, e.g. UperNet)
    ``model._forward`` (mode='tensor'): backbone and decode head; the auxiliary head is a training
    head and is not run (its parameters are counted). Default shape: the config's crop size
    (512x512, 640x640 for the 640 configs). The papers quote UperNet at 2048x512: ``--shape 512 2048``.

Parameters: every ``nn.Parameter`` of the built model (frozen ones included), per top-level module.

Devices: ``--device meta`` (default) builds and runs the model on torch's meta device: shapes only,
no arithmetic, a second or so even for the largest models. ``--device cpu`` runs the real forward
with random weights (slow for big models at detection size); both give the same counts (tested).
On either device the RoI extractors are replaced by a stub returning zeros of their output shape
(mmcv's compiled RoIAlign has no meta kernel; the FLOPs of the heads do not depend on values).

Calibration (tests/test_model_zoo_flops.py): ``configs/det/convnext_t_maskrcnn.py`` gives 48.1M
parameters and 261.9 GFLOPs at 1280x800, the ConvNeXt paper (Table 3) reports 48M and 262G;
``configs/det/convnext_t_cascade.py`` 85.9M / 740.2G (paper 86M / 741G); ``configs/seg/
convnext_t_upernet.py`` at ``--shape 512 2048`` 60.2M / 938.5G (paper, Table 4: 60M / 939G). The
backbones' share equals the trunk MACs measured on the official code (reference architectures, 5.3).

A missing config exits with status 2.
"""
import contextlib
import copy
import hashlib
import json
import math
import os.path as osp
import warnings


import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

# Bump when the counting conventions change: cached FLOPs (docs/model_zoo_flops.json) keyed with
# model_hash() then no longer match and are recomputed by tools/analysis/model_zoo.py.
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))  # the repository (editable install)
COUNTER_VERSION = 1
DET_SHAPE = (800, 1280)
SEG_SHAPE = (512, 512)
NUM_PROPOSALS = 1000  # RoIs through the box head(s), as mmdet 2.x forward_dummy
NUM_MASK_ROIS = 100  # RoIs through the mask head(s)

_aten = torch.ops.aten
OP_GROUPS = {  # aten overload packet -> the group reported in the breakdown
    'convolution': 'conv', '_convolution': 'conv', 'convolution_overrideable': 'conv',
    'cudnn_convolution': 'conv', '_slow_conv2d_forward': 'conv',
    'mm': 'linear', 'addmm': 'linear',
    'bmm': 'matmul', 'baddbmm': 'matmul',
    'grid_sampler_2d': 'grid_sample', 'attention': 'attention',
}
OP_ORDER = ('conv', 'linear', 'matmul', 'attention', 'grid_sample')
_GRID_SAMPLE_MACS = {0: 4, 1: 0, 2: 16}  # interpolation_mode: bilinear, nearest, bicubic


def _grid_sampler_2d_flop(input_shape, grid_shape, interpolation_mode, *args, out_shape=None, **kwargs):
    """FlopCounterMode formula (2 per multiply-add): 4 multiply-adds per bilinear output value."""
    return 2 * _GRID_SAMPLE_MACS.get(int(interpolation_mode), 4) * math.prod(out_shape)


class _Counter(FlopCounterMode):
    """FlopCounterMode + grid_sampler_2d + F.scaled_dot_product_attention counted as one op
    ('attention'), whichever kernel (flash on CPU, math on meta: bmm's) implements it."""

    def __init__(self):
        super().__init__(display=False, custom_mapping={_aten.grid_sampler_2d: _grid_sampler_2d_flop})
        self._paused = 0

    def _count_flops(self, func_packet, out, args, kwargs):
        if self._paused:
            return out
        return super()._count_flops(func_packet, out, args, kwargs)

    def add(self, key, flops):
        for par in set(self.mod_tracker.parents):
            self.flop_counts[par][key] += flops

    @contextlib.contextmanager
    def paused(self):
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    @contextlib.contextmanager
    def sdpa_counted(self):
        orig = F.scaled_dot_product_attention

        def sdpa(query, key, value, *args, **kwargs):
            lq, lk = query.shape[-2], key.shape[-2]
            batch = math.prod(torch.broadcast_shapes(query.shape[:-2], key.shape[:-2]))
            self.add('attention', 2 * batch * lq * lk * (query.shape[-1] + value.shape[-1]))
            with self.paused():
                return orig(query, key, value, *args, **kwargs)

        F.scaled_dot_product_attention = sdpa
        try:
            yield
        finally:
            F.scaled_dot_product_attention = orig


# ------------------------------------------------------------------------------------- config
def load_config(path, cfg_options=None):
    from .runtime import load_config as _load
    return _load(path, cfg_options)


def task_of(cfg):
    return 'det' if cfg.get('default_scope') == 'mmdet' else 'seg'


def default_shape(cfg):
    """(H, W): 800x1280 for detection, the crop size (else 512x512) for segmentation."""
    if task_of(cfg) == 'det':
        return DET_SHAPE
    size = cfg.get('crop_size') or (cfg.model.get('data_preprocessor') or {}).get('size')
    return tuple(int(s) for s in size) if size else SEG_SHAPE


def _strip_init_cfg(node):
    if isinstance(node, dict):
        return {k: _strip_init_cfg(v) for k, v in node.items() if k not in ('init_cfg', 'pretrained')}
    if isinstance(node, (list, tuple)):
        return [_strip_init_cfg(v) for v in node]
    return node


def model_hash(cfg) -> str:
    """A short hash of the model config (without init_cfg / checkpoints) and the counting
    conventions: what the FLOPs depend on."""
    model = cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else dict(cfg.model)
    text = json.dumps([COUNTER_VERSION, NUM_PROPOSALS, NUM_MASK_ROIS, _strip_init_cfg(model)],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_model(cfg, device='meta'):
    """The config's model with random weights (no checkpoint), SyncBN as BN, in eval mode."""
    from mmengine.registry import DefaultScope

    from .runtime import register_modules, replace_sync_bn

    model_cfg = copy.deepcopy(cfg.model)
    replace_sync_bn(model_cfg)
    model_cfg.get('backbone', {}).pop('init_cfg', None)
    register_modules(cfg)
    if task_of(cfg) == 'det':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    with warnings.catch_warnings(), DefaultScope.overwrite_default_scope(cfg.default_scope), \
            torch.device(device):
        warnings.simplefilter('ignore')
        model = MODELS.build(model_cfg)
    return model.eval()


def count_params(model):
    """Total parameters and per top-level module (named children)."""
    per = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    per = {k: v for k, v in per.items() if v}
    return sum(p.numel() for p in model.parameters()), per


# -------------------------------------------------------------------------------------- forward
def _proposals(n, h, w, device):
    """n fixed boxes (x1, y1, x2, y2) inside an h x w image, of assorted sizes."""
    i = torch.arange(n, dtype=torch.float32)
    cx, cy = (i * 0.618034) % 1 * w, (i * 0.381966) % 1 * h
    bw, bh = 16 + (i * 0.7548777) % 1 * w / 2, 16 + (i * 0.5698403) % 1 * h / 2
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    boxes = torch.minimum(boxes.clamp(min=0), torch.tensor([w, h, w, h], dtype=torch.float32))
    return boxes.to(device)


def _call_as(module, fn, *args):
    """``module(*args)`` with ``fn`` as its forward: the call goes through ``nn.Module.__call__``,
    so the FLOP counter attributes what ``fn`` runs to ``module``."""
    module.forward = fn
    try:
        return module(*args)
    finally:
        del module.forward


def _roi_forward_dummy(rh, feats, rois):
    outs = []
    stages = list(range(rh.num_stages)) if hasattr(rh, 'num_stages') else [None]
    if rh.with_bbox:
        for s in stages:
            res = rh._bbox_forward(feats, rois) if s is None else rh._bbox_forward(s, feats, rois)
            outs.append(res['cls_score'])
    if rh.with_mask:
        mask_rois = rois[:NUM_MASK_ROIS]
        for s in stages:
            res = rh._mask_forward(feats, mask_rois) if s is None else rh._mask_forward(s, feats, mask_rois)
            outs.append(res['mask_preds'])
    return outs


def _det_forward_dummy(model, x):
    """mmdet 2.x ``TwoStageDetector.forward_dummy`` on mmdet 3.x modules (see the module doc)."""
    from mmdet.structures.bbox import bbox2roi

    feats = model.extract_feat(x)
    outs = [model.rpn_head(feats)]
    rois = bbox2roi([_proposals(NUM_PROPOSALS, x.shape[-2], x.shape[-1], x.device)])
    outs.append(_call_as(model.roi_head, lambda f, r: _roi_forward_dummy(model.roi_head, f, r), feats, rois))
    return outs


@contextlib.contextmanager
def _counting_patches(model, device):
    """RoI extractors -> zeros of their output shape; ConvNeXt's oneDNN-fused CPU inference
    (a private op FlopCounterMode cannot see) -> the aten path."""
    patched = []
    try:
        from mmdet.models.roi_heads.roi_extractors.base_roi_extractor import BaseRoIExtractor
    except ImportError:  # a segmentation-only install
        BaseRoIExtractor = ()
    for mod in model.modules():
        if BaseRoIExtractor and isinstance(mod, BaseRoIExtractor):
            def stub(feats, rois, roi_scale_factor=None, _m=mod):
                size = _m.roi_layers[0].output_size
                size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
                return feats[0].new_zeros(rois.shape[0], _m.out_channels, *size)
            mod.forward = stub
            patched.append(mod)
    from backbones.layers import set_fused_cpu_inference
    fused = set_fused_cpu_inference(False)  # the counter sees aten ops, not oneDNN's fused ones
    try:
        yield
    finally:
        set_fused_cpu_inference(fused)
        for mod in patched:
            del mod.forward


def count_flops(model, task, shape, device='meta'):
    """Multiply-adds of one forward (see the module doc). Returns (total, per top-level module,
    per op group), in multiply-adds."""
    h, w = shape
    x = torch.randn(1, 3, h, w) if device != 'meta' else torch.empty(1, 3, h, w, device='meta')
    x = x.to(device)
    det = task == 'det'
    two_stage = det and getattr(model, 'with_rpn', False) and hasattr(model, 'roi_head')
    counter = _Counter()
    with _counting_patches(model, device), torch.no_grad(), counter, counter.sdpa_counted():
        if two_stage:
            _call_as(model, lambda inputs: _det_forward_dummy(model, inputs), x)
        elif hasattr(model, 'decode_head') and hasattr(model, 'extract_feat'):
            # = mmseg EncoderDecoder._forward, with the decode head called as a module
            _call_as(model, lambda inputs: model.decode_head(model.extract_feat(inputs)), x)
        else:
            model(x, None, mode='tensor')
    counts = counter.get_flop_counts()
    root = type(model).__name__
    total = sum(counts.get('Global', {}).values()) // 2
    modules = {}
    for key, ops in counts.items():
        if key.count('.') == 1 and key.startswith(root + '.'):
            modules[key[len(root) + 1:]] = sum(ops.values()) // 2
    if total - sum(modules.values()):
        modules['(other)'] = total - sum(modules.values())
    groups = dict.fromkeys(OP_ORDER, 0)
    for op, n in counts.get('Global', {}).items():
        name = str(op).split('.')[-1]
        group = OP_GROUPS.get(name, name)
        groups[group] = groups.get(group, 0) + n // 2
    return total, modules, groups


def get_flops(config, shape=None, device='meta', cfg_options=None, cfg=None):
    """Everything the CLI prints, as a dict (FLOPs in multiply-adds)."""
    if cfg is None:
        cfg = load_config(config, cfg_options)
    task = task_of(cfg)
    shape = tuple(shape) if shape else default_shape(cfg)
    model = build_model(cfg, device)
    params, params_modules = count_params(model)
    flops, modules, ops = count_flops(model, task, shape, device)
    return dict(config=osp.relpath(osp.abspath(config), ROOT) if config else None, task=task,
                model=type(model).__name__, shape=list(shape), device=device, params=params,
                flops=flops, params_modules=params_modules, flops_modules=modules, flops_ops=ops,
                model_hash=model_hash(cfg), convention='1 multiply-add = 1 FLOP')


def _m(n, unit=1e6):
    return f'{n / unit:.2f}'


def format_result(r):
    lines = [f"{r['config']}  ({r['model']}, input 1x3x{r['shape'][0]}x{r['shape'][1]}, "
             f"{r['device']} device; 1 multiply-add = 1 FLOP)",
             f"{'module':<18}{'params (M)':>12}{'GFLOPs':>12}"]
    names = list(dict.fromkeys(list(r['params_modules']) + list(r['flops_modules'])))
    for name in names:
        lines.append(f"{name:<18}{_m(r['params_modules'].get(name, 0)):>12}"
                     f"{_m(r['flops_modules'].get(name, 0), 1e9):>12}")
    lines.append(f"{'total':<18}{_m(r['params']):>12}{_m(r['flops'], 1e9):>12}")
    ops = ', '.join(f'{k} {_m(v, 1e9)}' for k, v in r['flops_ops'].items())
    lines.append(f'GFLOPs by op: {ops}')
    return '\n'.join(lines)
