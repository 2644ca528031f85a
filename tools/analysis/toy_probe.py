#!/usr/bin/env python
"""How fast does a backbone learn from scratch? A quick probe on the toy segmentation set.

The toy demo's Conv2Former learns slowly from scratch; this probe isolates the backbone: each variant
(backbone + the same light FPN-like head: 1x1 laterals summed at stride 4, 3x3 conv-BN-ReLU, 1x1
classifier) trains on the toy ADE20K-format set (tools/make_toy_data.py) resized to 128x128, batch 8,
AdamW (weight decay 0.05), linear warm-up 30 steps then linear decay, random flips; then the mIoU of the
4 classes on the 40 val images. Pure PyTorch, no OpenMMLab; 20-160 s a variant on 2 CPU cores.

    python tools/analysis/toy_probe.py r18:300:2e-3 c2f:300:2e-3 c2f_lecun:300:2e-3 timmcnx:300:2e-3

A variant is ``NAME[+MOD...]:STEPS:LR``. NAMEs:
  r18          torchvision ResNet-18 (BN, ReLU), random init
  timmcnx      timm ConvNeXt depths (1,1,2,1), dims (32,64,128,256), layer scale 1.0, timm's init
  c2f          our toy Conv2Former (depths [1,1,2,1], dims [32,64,128,256], kernel 7), official init
               (trunc-normal 0.02), layer scale 1e-6
  c2f_ls1      the same, layer scale 1.0
  c2f_kaiming  Kaiming-normal (fan_in, ReLU gain) convs, layer scale 1.0
  c2f_lecun    LeCun (trunc-normal std 1/sqrt(fan_in)) convs, layer scale 1.0
  c2f_lecun_ls01, c2f_kaiming_ls6   layer scales 0.1 / 1e-6
MODs (c2f variants): +wide dims x2, +deep depths [2,2,2,2], +cnx our ConvNeXt instead of Conv2Former,
+noon no output norms, +dp drop path 0.1 (default 0), +nowd no weight decay, +sgd SGD momentum 0.9.
"""
import glob
import os.path as osp
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
from backbones import build_backbone
from glue.toy_pretrain import lecun_init

R = 128
DATA = osp.join(ROOT, 'data/toy/ade/ADEChallengeData2016')


def load(split):
    X, Y = [], []
    files = sorted(glob.glob(f'{DATA}/images/{split}/*.png'))
    if not files:
        raise SystemExit(f'no toy data in {DATA}: run python tools/make_toy_data.py --out data/toy')
    for f in files:
        im = Image.open(f).convert('RGB').resize((R, R), Image.BILINEAR)
        lb = Image.open(f.replace('images', 'annotations')).resize((R, R), Image.NEAREST)
        X.append(np.array(im))
        Y.append(np.array(lb).astype(np.int64) - 1)  # reduce_zero_label
    X = torch.tensor(np.stack(X)).permute(0, 3, 1, 2).float()
    X = (X - torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)) / torch.tensor(
        [58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    Y = torch.tensor(np.stack(Y))
    Y[Y < 0] = 255
    return X, Y


class Head(nn.Module):
    def __init__(self, chs, n=4, c=64):
        super().__init__()
        self.lat = nn.ModuleList(nn.Conv2d(ch, c, 1) for ch in chs)
        self.fuse = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, n, 1))

    def forward(self, feats, size):
        y = sum(F.interpolate(l(f), size=feats[0].shape[2:], mode='bilinear', align_corners=False)
                for l, f in zip(self.lat, feats))
        return F.interpolate(self.fuse(y), size=size, mode='bilinear', align_corners=False)


class Stages(nn.Module):
    """Stage outputs of a torchvision ResNet / a timm model (forward_intermediates)."""

    def __init__(self, model, kind):
        super().__init__()
        self.m, self.kind = model, kind

    def forward(self, x):
        if self.kind == 'timm':
            return self.m.forward_intermediates(x, intermediates_only=True)
        r = self.m
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        out = []
        for layer in (r.layer1, r.layer2, r.layer3, r.layer4):
            x = layer(x)
            out.append(x)
        return out


def kaiming(m):
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode='fan_in', nonlinearity='relu')
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)


lecun = lecun_init  # the init tools/toy_pretrain.py uses


LS = {'c2f': 1e-6, 'c2f_ls1': 1.0, 'c2f_kaiming': 1.0, 'c2f_lecun': 1.0, 'c2f_lecun_ls01': 0.1,
      'c2f_kaiming_ls6': 1e-6}
INIT = {'c2f': None, 'c2f_ls1': None, 'c2f_kaiming': kaiming, 'c2f_lecun': lecun, 'c2f_lecun_ls01': lecun,
        'c2f_kaiming_ls6': kaiming}


def make(variant):
    torch.manual_seed(0)
    if variant.startswith('timmcnx'):
        import timm
        m = timm.models.convnext.ConvNeXt(depths=(1, 1, 2, 1), dims=(32, 64, 128, 256), ls_init_value=1.0,
                                          num_classes=0)
        return Stages(m, 'timm'), [32, 64, 128, 256]
    if variant.startswith('r18'):
        import torchvision
        return Stages(torchvision.models.resnet18(), 'resnet'), [64, 128, 256, 512]
    base = variant.split('+')[0]
    if base not in LS:
        raise SystemExit(f'unknown variant {base!r}; valid: r18, timmcnx, {", ".join(LS)}')
    dims = [64, 128, 256, 512] if '+wide' in variant else [32, 64, 128, 256]
    depths = [2, 2, 2, 2] if '+deep' in variant else [1, 1, 2, 1]
    kw = dict(arch=dict(depths=depths, dims=dims, kernel_size=7, layer_scale_init=LS[base]))
    if '+dp' not in variant:
        kw['drop_path_rate'] = 0.0
    if '+noon' in variant:
        kw['out_norm'] = False
    fam = 'ConvNeXt' if '+cnx' in variant else 'Conv2Former'
    if fam == 'ConvNeXt':
        kw['arch'].pop('kernel_size')
        kw['layer_scale_init_value'] = kw['arch'].pop('layer_scale_init')
    bb = build_backbone(fam, out_indices=(0, 1, 2, 3), **kw)
    bb.init_weights()
    if INIT[base] is not None:
        INIT[base](bb)
    return bb, dims


def run(variant, steps, lr, data):
    (Xtr, Ytr), (Xva, Yva) = data
    bb, chs = make(variant)
    head = Head(chs)
    params = list(bb.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0 if '+nowd' in variant else 0.05)
    if '+sgd' in variant:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    for it in range(steps):
        idx = torch.randint(0, len(Xtr), (8,), generator=g)
        x, y = Xtr[idx], Ytr[idx]
        if it % 2:
            x, y = x.flip(-1), y.flip(-1)
        for gp in opt.param_groups:
            gp['lr'] = lr * min(1, (it + 1) / 30) * (1 - it / steps)
        bb.train()
        head.train()
        loss = F.cross_entropy(head(bb(x), x.shape[2:]), y, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 100 == 99:
            print(f'  {variant} step {it + 1}/{steps} loss {loss.item():.3f}', flush=True)
    bb.eval()
    head.eval()
    with torch.no_grad():
        pred = torch.cat([head(bb(Xva[i:i + 20]), (R, R)).argmax(1) for i in range(0, len(Xva), 20)])
    valid = Yva != 255
    ious = []
    for c in range(4):
        p, t = pred == c, Yva == c
        ious.append((p & t & valid).sum().item() / max(((p | t) & valid).sum().item(), 1))
    print(f'{variant} lr {lr} steps {steps}: mIoU {100 * np.mean(ious):.1f} per class '
          f'{[round(100 * i, 1) for i in ious]} ({time.time() - t0:.0f}s)', flush=True)


def main(argv):
    if not argv or argv[0] in ('-h', '--help'):
        print(__doc__)
        return 0 if argv else 2
    torch.set_num_threads(2)
    data = load('training'), load('validation')
    for spec in argv:
        try:
            v, s, lr = spec.split(':')
            steps, lr = int(s), float(lr)
        except ValueError:
            raise SystemExit(f'bad variant {spec!r}: expected NAME[+MOD...]:STEPS:LR, e.g. c2f_lecun:300:2e-3')
        run(v, steps, lr, data)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
