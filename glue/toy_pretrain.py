"""Toy "ImageNet" pretraining: classify synthetic shape crops, save a classifier checkpoint.

Real users never train Mask R-CNN or UperNet from scratch: they start from an ImageNet classification
checkpoint. The CPU demo does the same in miniature. This tool trains the backbone of a (toy) config as
a classifier on procedurally drawn 80x80 crops -- one circle, square or triangle, or no shape at all,
on the same random smooth textures as the toy detection / segmentation sets (tools/make_toy_data.py) --
and saves it in the official classifier layout (backbone keys + ``head.*``), so it goes into a detector
or segmentor exactly like a real release::

    python tools/toy_pretrain.py configs/toy/conv2former_toy_maskrcnn.py --out work_dirs/toy_pretrain.pth
    python tools/train.py configs/toy/conv2former_toy_maskrcnn.py \\
        --cfg-options model.backbone.pretrained=work_dirs/toy_pretrain.pth

Pure PyTorch apart from reading the config (mmengine). The crops are drawn from a seeded generator
(a fixed pool, flipped and rotated at random per step); the held-out accuracy is measured on crops
drawn with another seed. Writes ``OUT`` and ``OUT`` with ``.json`` (settings, loss curve, accuracy).
"""
import json
import math
import os
import os.path as osp
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones import build_backbone

from .toy_data import DET_CLASSES, draw_background, fill_shape, pixel_coords, seeded_rng, shape_mask

CLASSES = ('none', ) + DET_CLASSES
MEAN = (123.675, 116.28, 103.53)  # the configs' data_preprocessor normalisation
STD = (58.395, 57.12, 57.375)
_DATASET_ID = 7  # keeps these draws apart from the detection (0) and segmentation (1) sets
# The crops: 80 px, a shape's equivalent diameter 0.2-0.85 of the crop (16-68 px). Measured (docs/demo.md, section 8):
# against 96 px crops with 0.25-0.7 (24-67 px), 0.72x the time per step (188 instead of 262 s for 1200 steps), and
# the toy UperNet fine-tuned from it tells small squares from triangles better (squares 65.1 against 60.8 IoU at
# 2000 iterations; 80 px with 0.25-0.7: 60.3)
CROP_SIZE = 80
SHAPE_RANGE = (0.2, 0.85)


def draw_crops(num: int, size: int = CROP_SIZE, seed: int = 0, split: int = 0, shape_range=SHAPE_RANGE):
    """``num`` uint8 crops (num, size, size, 3) and labels (index into ``CLASSES``); a shape's equivalent circle
    diameter is drawn from ``shape_range`` (fractions of ``size``)."""
    xs, ys = pixel_coords(size, size)
    imgs = np.empty((num, size, size, 3), np.uint8)
    labels = np.empty(num, np.int64)
    for i in range(num):
        rng = seeded_rng(seed, _DATASET_ID, split, i)
        img = draw_background(rng, size, size, xs, ys)
        label = int(rng.integers(len(CLASSES)))
        if label:
            m = shape_mask(rng, label - 1, size, size, xs, ys, centre_range=(0.35, 0.65),
                           size_range=(shape_range[0] * size, shape_range[1] * size))
            img = np.where(m[..., None], fill_shape(rng, m, img, xs, ys), img)
        img = img + rng.normal(0, rng.uniform(2, 5), size=img.shape)
        imgs[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        labels[i] = label
    return imgs, labels


def to_tensor(imgs: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float()
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def backbone_from_config(config: str, cfg_options=None):
    """The config's ``model.backbone`` as a plain backbone: last stage only, no output norms."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    kw = cfg.model.backbone.to_dict()
    name = kw.pop('type').split('.')[-1]
    for key in ('init_cfg', 'pretrained', 'out_indices', 'out_norm', 'frozen_stages', 'norm_eval', 'with_cp'):
        kw.pop(key, None)
    return name, kw


class Classifier(nn.Module):
    """Backbone -> global average pool -> LayerNorm -> Linear (keys ``head.0.*``, ``head.1.*``)."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.LayerNorm(backbone.dims[-1], eps=1e-6),
                                  nn.Linear(backbone.dims[-1], num_classes))

    def forward(self, x):
        return self.head(self.backbone(x)[-1].mean((2, 3)))


def lecun_init(model: nn.Module) -> None:
    """Truncated-normal conv weights with std 1/sqrt(fan_in), zero biases: the official
    trunc-normal(0.02) leaves Conv2Former's modulation product ~1e-4 of the residual, which learns far
    more slowly from scratch (tools/analysis/toy_probe.py)."""
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.trunc_normal_(mod.weight, std=mod.weight[0].numel() ** -0.5)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 128) -> float:
    model.eval()
    hits = 0
    for i in range(0, len(x), batch):
        hits += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    model.train()
    return 100.0 * hits / len(x)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and 90-degree rotation, per batch (the classes are invariant to both)."""
    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.flip(3)
    k = int(torch.randint(4, (1, ), generator=gen))
    return torch.rot90(x, k, (2, 3)) if k else x


def pretrain(config: str, out: str, steps: int = 1200, batch_size: int = 64, lr: float = 2e-3,
             weight_decay: float = 0.05, size: int = CROP_SIZE, shape_range=SHAPE_RANGE, pool: int = 4096,
             num_val: int = 512, seed: int = 0, init: str = 'lecun', cfg_options=None, log_every: int = 50) -> dict:
    torch.manual_seed(seed)
    name, kw = backbone_from_config(config, cfg_options)
    backbone = build_backbone(name, out_indices=(3, ), out_norm=False, **kw)
    model = Classifier(backbone, len(CLASSES))
    if init == 'lecun':
        lecun_init(model.backbone)
    elif init != 'official':
        raise ValueError(f"init must be 'lecun' or 'official', got {init!r}")

    t0 = time.time()
    x_train, y_train = draw_crops(pool, size, seed, split=0, shape_range=shape_range)
    x_val, y_val = draw_crops(num_val, size, seed, split=1, shape_range=shape_range)
    x_train, x_val = to_tensor(x_train), to_tensor(x_val)
    y_train, y_val = torch.from_numpy(y_train), torch.from_numpy(y_val)
    print(f'[toy_pretrain] {name} {kw.get("arch")}: {pool} train / {num_val} val crops of {size}x{size} '
          f'drawn in {time.time() - t0:.1f} s; classes {CLASSES}', flush=True)

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or n.endswith('.gamma') else decay).append(p)
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=weight_decay),
                             dict(params=no_decay, weight_decay=0.0)], lr=lr)
    warmup = max(1, min(50, steps // 10))

    def lr_at(step):  # linear warm-up, cosine decay
        if step < warmup:
            return lr * (step + 1) / warmup
        return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    gen = torch.Generator().manual_seed(seed)
    curve, t0, running = [], time.time(), []
    model.train()
    for step in range(steps):
        for g in opt.param_groups:
            g['lr'] = lr_at(step)
        idx = torch.randint(len(x_train), (batch_size, ), generator=gen)
        logits = model(augment(x_train[idx], gen))
        loss = F.cross_entropy(logits, y_train[idx], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            mean_loss = sum(running) / len(running)
            running = []
            curve.append([step + 1, round(mean_loss, 4)])
            el = time.time() - t0
            eta = el / (step + 1) * (steps - step - 1)
            print(f'[toy_pretrain] step {step + 1}/{steps}  loss {mean_loss:.4f}  lr {lr_at(step):.2e}  '
                  f'elapsed {el:.0f} s  eta {eta:.0f} s', flush=True)
    train_time = time.time() - t0
    acc = accuracy(model, x_val, y_val)
    print(f'[toy_pretrain] held-out accuracy {acc:.1f}% on {num_val} crops ({len(CLASSES)} classes, '
          f'chance {100 / len(CLASSES):.0f}%); trained in {train_time:.0f} s', flush=True)

    state = {**model.backbone.state_dict(), **{f'head.{k}': v for k, v in model.head.state_dict().items()}}
    meta = dict(config=config, backbone=name, backbone_kwargs=kw, classes=list(CLASSES), steps=steps,
                batch_size=batch_size, lr=lr, weight_decay=weight_decay, size=size, shape_range=list(shape_range),
                pool=pool, seed=seed, init=init, val_accuracy=round(acc, 2), train_seconds=round(train_time, 1),
                loss_curve=curve)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    torch.save({'state_dict': state, 'meta': json.loads(json.dumps(meta, default=str))}, out)
    with open(osp.splitext(out)[0] + '.json', 'w') as f:
        json.dump(meta, f, indent=1, default=str)
    print(f'[toy_pretrain] saved {out}', flush=True)
    return meta
