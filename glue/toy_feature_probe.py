"""How much shape identity do a toy backbone's frozen features carry, per pixel and per shape?

The diagnosis behind docs/demo.md. The backbone of a toy config, loaded from a toy-pretraining checkpoint
(or left random), runs frozen on the toy segmentation set (ADE20K layout, ``glue.toy_data``). Its stage
outputs are upsampled to stride 4. For each stage and for all four together, two linear 3-way classifiers
(circle / square / triangle) are fitted on the training images and scored on the validation images:

- ``pixel``: one sample per shape pixel. This is what a per-pixel decode head starts from.
- ``pooled``: the features averaged over each shape class's mask in an image. This is close to what a
  detector's RoI head gets.

Chance is 1/3. Pure PyTorch apart from reading the config.
"""
import glob
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F

from backbones import build_backbone

from .toy_pretrain import MEAN, STD, backbone_from_config

STAGE_SETS = (('stage 1', (0, )), ('stage 2', (1, )), ('stage 3', (2, )), ('stage 4', (3, )),
              ('all four', (0, 1, 2, 3)))


def load_backbone(config: str, checkpoint=None):
    name, kw = backbone_from_config(config)
    torch.manual_seed(0)
    backbone = build_backbone(name, out_indices=(0, 1, 2, 3), out_norm=False, **kw)
    if checkpoint:
        state = torch.load(checkpoint, map_location='cpu', weights_only=True)
        state = state.get('state_dict', state)
        backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith('head.')})
    return backbone.eval()


@torch.no_grad()
def stage_features(backbone, ade_root: str, split: str, size: int = 192, limit=None):
    """Features (N * (size/4)^2, sum of dims) at stride 4 and labels (background 0 .. triangle 3, 255)."""
    from PIL import Image
    files = sorted(glob.glob(osp.join(ade_root, 'images', split, '*.png')))[:limit]
    if not files:
        raise FileNotFoundError(f'no images in {osp.join(ade_root, "images", split)}')
    feats, labels, q = [], [], size // 4
    for f in files:
        img = np.asarray(Image.open(f).convert('RGB').resize((size, size), Image.BILINEAR))
        lab = np.asarray(Image.open(f.replace(osp.join('images', split), osp.join('annotations', split)))
                         .resize((q, q), Image.NEAREST)).astype(np.int64) - 1  # reduce_zero_label
        x = (torch.from_numpy(img.copy()).permute(2, 0, 1).float()[None] - torch.tensor(MEAN).view(1, 3, 1, 1)) \
            / torch.tensor(STD).view(1, 3, 1, 1)
        outs = backbone(x)
        up = torch.cat([F.interpolate(o, size=(q, q), mode='bilinear', align_corners=False)[0] for o in outs])
        feats.append(up.flatten(1).T)
        lab[lab < 0] = 255
        labels.append(torch.from_numpy(lab).flatten())
    return torch.stack(feats), torch.stack(labels)  # (images, pixels, C), (images, pixels)


def _fit_score(xt, yt, xv, yv, steps: int = 200):
    mu, sd = xt.mean(0), xt.std(0) + 1e-5
    xt, xv = (xt - mu) / sd, (xv - mu) / sd
    torch.manual_seed(0)
    lin = torch.nn.Linear(xt.shape[1], 3)
    opt = torch.optim.Adam(lin.parameters(), 1e-2, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(lin(xt), yt).backward()
        opt.step()
    with torch.no_grad():
        return tuple(round(100 * (lin(x).argmax(1) == y).float().mean().item(), 1) for x, y in ((xt, yt), (xv, yv)))


def _pooled(feats, labels):
    xs, ys = [], []
    for f, lab in zip(feats, labels):
        for c in (1, 2, 3):
            m = lab == c
            if m.sum() >= 4:
                xs.append(f[m].mean(0))
                ys.append(c - 1)
    return torch.stack(xs), torch.tensor(ys)


def probe(config: str, ade_root: str, checkpoint=None, size: int = 192, limit=None) -> dict:
    """{stage set: {'pixel': (train %, val %), 'pooled': (train %, val %)}} (see the module docstring)."""
    backbone = load_backbone(config, checkpoint)
    ft, lt = stage_features(backbone, ade_root, 'training', size, limit)
    fv, lv = stage_features(backbone, ade_root, 'validation', size, limit)
    bounds = np.cumsum([0] + list(backbone.dims))
    pt, qt = _pooled(ft, lt)
    pv, qv = _pooled(fv, lv)
    shape_t, shape_v = (lt >= 1) & (lt <= 3), (lv >= 1) & (lv <= 3)
    out = {}
    for name, stages in STAGE_SETS:
        cols = torch.cat([torch.arange(bounds[i], bounds[i + 1]) for i in stages])
        out[name] = dict(
            pixel=_fit_score(ft[shape_t][:, cols], lt[shape_t] - 1, fv[shape_v][:, cols], lv[shape_v] - 1),
            pooled=_fit_score(pt[:, cols], qt, pv[:, cols], qv))
    return out
