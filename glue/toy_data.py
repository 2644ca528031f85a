"""Deterministic generator of the two small synthetic ("toy") datasets.

The toy data is the embedded default for the CPU training demo and the tests:
images of 1-4 shapes (circle, square, triangle) with random colour, size,
position and rotation drawn over random smooth textures. Shapes are told
apart by geometry only: every class gets random colours, and the three
classes have the same area for the same size draw.

Usage::

    python tools/make_toy_data.py [--out data/toy] [--seed 0]
                                  [--num-train 160] [--num-val 40] [--force]

``--out`` is relative to the current directory (run from the repository
root). Same arguments -> byte-identical files. A manifest
(``<out>/manifest.json``) records the arguments and ``VERSION``; when it
matches and every expected file exists, nothing is rewritten (use
``--force`` to regenerate). Needs only numpy and Pillow.

Layout::

    <out>/manifest.json
    <out>/coco/annotations/instances_train.json
    <out>/coco/annotations/instances_val.json
    <out>/coco/train/000000.png ...
    <out>/coco/val/000000.png ...
    <out>/ade/ADEChallengeData2016/images/training/000000.png ...
    <out>/ade/ADEChallengeData2016/images/validation/000000.png ...
    <out>/ade/ADEChallengeData2016/annotations/training/000000.png ...
    <out>/ade/ADEChallengeData2016/annotations/validation/000000.png ...

Image sizes vary between 224 and 288 px in each dimension (non-square).

Detection set (COCO instances format)
    categories: ids 1, 2, 3 = ``DET_CLASSES`` = ('circle', 'square',
    'triangle'). Image ids and annotation ids start at 1 (COCOeval treats
    annotation id 0 as "unmatched"); ``file_name`` is relative to the split
    folder ('000000.png'), so use ``data_prefix=dict(img='train/')``.
    Masks cover only the *visible* part of each shape (later shapes occlude
    earlier ones); an instance whose visible area drops below
    ``MIN_VISIBLE_AREA`` pixels is left out. ``bbox`` ([x, y, w, h]) and
    ``area`` (pixel count) are those of the visible mask. ``segmentation``
    is a list of polygons, one per 4-connected part of the visible mask,
    traced along pixel edges (vertices on integer pixel corners, floats in
    the json). With pycocotools' rasterisation these polygons decode back
    to exactly the visible mask, and polygons work with mmdet's
    LoadAnnotations both with ``poly2mask=True`` and ``poly2mask=False``
    (RLE masks would be dropped as ignored with ``poly2mask=False``).
    Because COCO polygons cannot express holes, layouts where occlusion
    would punch a hole into a visible mask are redrawn.

Segmentation set (ADE20K layout and label convention)
    RGB images and uint8 'L' label maps, both PNG. mmseg's ADE20KDataset
    defaults to ``img_suffix='.jpg'``: pass ``img_suffix='.png'`` (and
    ``seg_map_suffix='.png'``) in configs. Label values follow ADE20K with
    ``reduce_zero_label=True``: 0 = unlabeled/ignored (a 1 px band along
    the inside edge of every visible shape region), 1 = background,
    2 = circle, 3 = square, 4 = triangle; after reduction the classes are
    ``SEG_CLASSES`` = ('background', 'circle', 'square', 'triangle') and
    the ignored band becomes 255. Note that ADE20KDataset refuses
    ``metainfo=dict(classes=SEG_CLASSES)`` (they are not a subset of the
    150 ADE classes); use ``BaseSegDataset`` with
    ``metainfo=dict(classes=SEG_CLASSES, palette=SEG_PALETTE)`` and
    ``reduce_zero_label=True`` (or a subclass with that METAINFO).

Both sets use the same drawing code but different random streams: every
image has its own ``np.random.Generator(PCG64(SeedSequence([seed, set,
split, index])))``, so the first N images do not depend on ``--num-train``.
"""
import json
import os
import os.path as osp
import re
import time

import numpy as np
from PIL import Image

VERSION = 1

DET_CLASSES = ('circle', 'square', 'triangle')
SEG_CLASSES = ('background', 'circle', 'square', 'triangle')
SEG_PALETTE = [[120, 120, 120], [255, 0, 0], [0, 255, 0], [0, 0, 255]]

MIN_VISIBLE_AREA = 30       # instances with fewer visible pixels are dropped
IMG_SIZE_RANGE = (224, 288)  # inclusive, per dimension
SHAPE_SIZE_RANGE = (28.0, 100.0)  # circle diameter; others have equal area
MAX_SHAPES = 4
MIN_COLOR_DIST = 70.0       # fill colour vs mean background under the shape

_DET, _SEG = 0, 1
_SPLITS = (('train', 'training'), ('val', 'validation'))
_NAME_RE = re.compile(r'^\d{6}\.png$')

# direction index -> (dx, dy); 0=E, 1=S, 2=W, 3=N (image coordinates, y down)
_DX = (1, 0, -1, 0)
_DY = (0, 1, 0, -1)


# --------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------
def seeded_rng(seed, dataset, split, index):
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, dataset, split, index])))


def _upsample(grid, h, w):
    """Bilinear upsampling of a (gh, gw, c) grid to (h, w, c), pure numpy."""
    gh, gw = grid.shape[:2]

    def weights(n, g):
        pos = np.linspace(0.0, g - 1.0, n)
        i0 = np.clip(np.floor(pos).astype(np.int64), 0, g - 2)
        return i0, (pos - i0)[:, None]

    yi, yf = weights(h, gh)
    xi, xf = weights(w, gw)
    rows = grid[yi] * (1 - yf[..., None]) + grid[yi + 1] * yf[..., None]
    return rows[:, xi] * (1 - xf[None]) + rows[:, xi + 1] * xf[None]


def pixel_coords(h, w):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs + 0.5, ys + 0.5   # pixel centres


def draw_background(rng, h, w, xs, ys):
    """Random smooth texture (float32, (h, w, 3), roughly 0..255)."""
    kind = int(rng.integers(3))
    if kind == 0:    # low-frequency colour noise
        gh, gw = (int(v) for v in rng.integers(2, 7, size=2))
        img = _upsample(rng.uniform(0, 255, size=(gh, gw, 3)), h, w)
    else:
        c0, c1 = rng.uniform(0, 255, size=(2, 3))
        theta = rng.uniform(0, 2 * np.pi)
        proj = xs * np.cos(theta) + ys * np.sin(theta)
        if kind == 1:  # linear gradient
            t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
        else:          # soft stripes
            period = rng.uniform(12, 48)
            t = 0.5 + 0.5 * np.sin(2 * np.pi * proj / period +
                                   rng.uniform(0, 2 * np.pi))
        img = c0 + (c1 - c0) * t[..., None]
    # a faint second layer of smooth noise so no background is flat
    gh, gw = (int(v) for v in rng.integers(3, 9, size=2))
    img = img + _upsample(rng.normal(0, 12, size=(gh, gw, 3)), h, w)
    return img.astype(np.float32)


def _convex_mask(xs, ys, verts):
    """Pixels whose centre lies inside the convex polygon ``verts`` (n, 2)."""
    inside = np.ones(xs.shape, dtype=bool)
    # orientation-independent: all edge cross products share a sign
    area2 = 0.0
    n = len(verts)
    for i in range(n):
        x0, y0 = verts[i]
        x1, y1 = verts[(i + 1) % n]
        area2 += x0 * y1 - x1 * y0
    sign = 1.0 if area2 > 0 else -1.0
    for i in range(n):
        x0, y0 = verts[i]
        x1, y1 = verts[(i + 1) % n]
        cross = (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0)
        inside &= cross * sign >= 0
    return inside


def shape_mask(rng, cls, h, w, xs, ys, size_range=SHAPE_SIZE_RANGE, centre_range=(0.1, 0.9)):
    """Full (unoccluded) mask of one random shape of class index ``cls``: equivalent circle
    diameter drawn from ``size_range`` (px), centre from ``centre_range`` (fractions of w and h)."""
    d = rng.uniform(*size_range)     # equivalent circle diameter
    area = np.pi * d * d / 4
    cx = rng.uniform(centre_range[0] * w, centre_range[1] * w)
    cy = rng.uniform(centre_range[0] * h, centre_range[1] * h)
    theta = rng.uniform(0, 2 * np.pi)
    if cls == 0:      # circle
        r = d / 2
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    if cls == 1:      # square (side^2 = area)
        R = np.sqrt(area) / np.sqrt(2)      # centre-to-corner
        ang = theta + np.arange(4) * (np.pi / 2)
        rad = np.full(4, R)
    else:             # triangle: near-equilateral with mild jitter
        R = np.sqrt(area / (3 * np.sqrt(3) / 4))
        ang = theta + np.arange(3) * (2 * np.pi / 3) + \
            rng.uniform(-0.2, 0.2, size=3)
        rad = R * rng.uniform(0.9, 1.1, size=3)
    verts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
    return _convex_mask(xs, ys, verts)


def fill_shape(rng, mask, bg, xs, ys):
    """Texture for a shape: random colour (contrasting with the background
    under it), a soft linear shading and the same kind of noise."""
    ref = bg[mask].mean(0) if mask.any() else bg.reshape(-1, 3).mean(0)
    for _ in range(32):
        color = rng.uniform(0, 255, size=3)
        if np.linalg.norm(color - ref) >= MIN_COLOR_DIST:
            break
    g = rng.uniform(-0.25, 0.25, size=2)   # shading, per pixel
    shade = (xs - xs[mask].mean()) * g[0] + (ys - ys[mask].mean()) * g[1] \
        if mask.any() else 0.0
    return color + np.asarray(shade, np.float32)[..., None]


def _draw_layout(rng, need_simple_polygons):
    """Draw one image. Returns (image uint8 (h,w,3), shapes, label map)
    where shapes is a list of (class index, visible mask) in drawing order
    (all shapes, including those with a tiny visible area) and the label
    map holds 0 for background and class index + 1 for shapes."""
    h, w = (int(v) for v in rng.integers(IMG_SIZE_RANGE[0],
                                         IMG_SIZE_RANGE[1] + 1, size=2))
    xs, ys = pixel_coords(h, w)
    img = draw_background(rng, h, w, xs, ys)
    for _attempt in range(100):
        n = int(rng.integers(1, MAX_SHAPES + 1))
        classes = [int(c) for c in rng.integers(len(DET_CLASSES), size=n)]
        masks = [shape_mask(rng, c, h, w, xs, ys) for c in classes]
        visible, cover = [], np.zeros((h, w), dtype=bool)
        for m in reversed(masks):
            visible.append(m & ~cover)
            cover |= m
        visible.reverse()
        if not need_simple_polygons:
            break
        ok = True
        for v in visible:
            if v.sum() >= MIN_VISIBLE_AREA and mask_to_polygons(v)[1]:
                ok = False   # occlusion punched a hole: redraw the layout
                break
        if ok:
            break
    else:  # practically unreachable; keeps the polygons exact regardless
        raise RuntimeError('could not draw a layout without holes')
    label = np.zeros((h, w), dtype=np.uint8)
    for c, m in zip(classes, masks):
        img = np.where(m[..., None], fill_shape(rng, m, img, xs, ys), img)
        label[m] = c + 1
    noise = rng.normal(0, rng.uniform(2, 5), size=(h, w, 3))
    img = np.clip(np.rint(img + noise), 0, 255).astype(np.uint8)
    return img, list(zip(classes, visible)), label


# --------------------------------------------------------------------------
# mask -> polygons
# --------------------------------------------------------------------------
def mask_to_polygons(mask):
    """Trace the pixel-edge boundary of a binary mask.

    Returns ``(polygons, num_holes)``: one flat ``[x0, y0, x1, y1, ...]``
    list per 4-connected component (outer boundary, vertices on pixel
    corners, pixel (r, c) spans x in [c, c+1], y in [r, r+1]) and the
    number of hole boundaries, which the polygons do not represent.
    pycocotools' ``frPyObjects`` + ``merge`` decodes the polygons back to
    exactly ``mask`` when ``num_holes == 0``.
    """
    mask = np.asarray(mask, dtype=bool)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return [], 0
    y0, x0 = int(ys.min()), int(xs.min())
    crop = mask[y0:int(ys.max()) + 1, x0:int(xs.max()) + 1]
    m = np.pad(crop, 1)
    # boundary edges, oriented so that the foreground is on the right
    up = np.zeros_like(m); up[1:] = m[:-1]
    down = np.zeros_like(m); down[:-1] = m[1:]
    left = np.zeros_like(m); left[:, 1:] = m[:, :-1]
    right = np.zeros_like(m); right[:, :-1] = m[:, 1:]
    out = {}
    starts = []
    for sel, d, ox, oy in ((m & ~up, 0, 0, 0), (m & ~right, 1, 1, 0),
                           (m & ~down, 2, 1, 1), (m & ~left, 3, 0, 1)):
        r, c = np.nonzero(sel)
        for x, y in zip((c + ox).tolist(), (r + oy).tolist()):
            out.setdefault((x, y), []).append(d)
            starts.append((y, x, d))
    starts.sort()
    visited = set()
    polygons, holes = [], 0
    for y, x, d in starts:
        edge = (x, y, d)
        if edge in visited:
            continue
        verts = []
        while edge not in visited:
            visited.add(edge)
            x, y, d = edge
            x, y = x + _DX[d], y + _DY[d]
            nxt = out[(x, y)]
            # saddle corner: turn right, i.e. keep hugging the same pixel
            nd = nxt[0] if len(nxt) == 1 else (d + 1) % 4
            if nd != d:
                verts.append((x, y))
            edge = (x, y, nd)
        v = np.asarray(verts, dtype=np.float64)
        area2 = float(np.sum(v[:, 0] * np.roll(v[:, 1], -1) -
                             np.roll(v[:, 0], -1) * v[:, 1]))
        if area2 > 0:        # clockwise on screen: outer boundary
            v[:, 0] += x0 - 1
            v[:, 1] += y0 - 1
            polygons.append([float(t) for t in v.reshape(-1)])
        else:
            holes += 1
    return polygons, holes


# --------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------
def _save_png(array, path, mode):
    img = Image.fromarray(np.ascontiguousarray(array))
    assert img.mode == mode, (img.mode, mode)
    img.save(path, format='PNG', optimize=False, compress_level=6)


def _write_det_split(out, seed, split_idx, split, num):
    img_dir = osp.join(out, 'coco', split)
    os.makedirs(img_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        rng = seeded_rng(seed, _DET, split_idx, i)
        img, shapes, _ = _draw_layout(rng, need_simple_polygons=True)
        h, w = img.shape[:2]
        name = f'{i:06d}.png'
        _save_png(img, osp.join(img_dir, name), 'RGB')
        images.append(dict(id=i + 1, file_name=name, height=h, width=w))
        for cls, vis in shapes:
            area = int(vis.sum())
            if area < MIN_VISIBLE_AREA:
                continue
            polygons, _ = mask_to_polygons(vis)
            rows = np.nonzero(vis.any(1))[0]
            cols = np.nonzero(vis.any(0))[0]
            bbox = [float(cols[0]), float(rows[0]),
                    float(cols[-1] + 1 - cols[0]),
                    float(rows[-1] + 1 - rows[0])]
            annotations.append(dict(
                id=len(annotations) + 1, image_id=i + 1, category_id=cls + 1,
                bbox=bbox, area=area, iscrowd=0, segmentation=polygons))
    coco = dict(
        info=dict(description='toy shapes detection set', version=VERSION,
                  seed=seed, split=split),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=k + 1, name=n, supercategory='shape')
                    for k, n in enumerate(DET_CLASSES)])
    ann_dir = osp.join(out, 'coco', 'annotations')
    os.makedirs(ann_dir, exist_ok=True)
    ann_file = osp.join(ann_dir, f'instances_{split}.json')
    with open(ann_file, 'w') as f:
        json.dump(coco, f, separators=(',', ':'))
    return ann_file, img_dir, len(annotations)


def _ignore_band(label):
    """Set to 0 the shape pixels that touch (4-neighbourhood) a pixel of a
    different label: a 1 px unlabeled band along the inside of each edge."""
    diff = np.zeros(label.shape, dtype=bool)
    diff[1:] |= label[1:] != label[:-1]
    diff[:-1] |= label[:-1] != label[1:]
    diff[:, 1:] |= label[:, 1:] != label[:, :-1]
    diff[:, :-1] |= label[:, :-1] != label[:, 1:]
    out = label.copy()
    out[diff & (label > 1)] = 0
    return out


def _write_seg_split(out, seed, split_idx, split, num):
    root = osp.join(out, 'ade', 'ADEChallengeData2016')
    img_dir = osp.join(root, 'images', split)
    ann_dir = osp.join(root, 'annotations', split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for i in range(num):
        rng = seeded_rng(seed, _SEG, split_idx, i)
        img, _, label = _draw_layout(rng, need_simple_polygons=False)
        label = _ignore_band(label + 1)   # 1 = background, 2.. = shapes
        name = f'{i:06d}.png'
        _save_png(img, osp.join(img_dir, name), 'RGB')
        _save_png(label, osp.join(ann_dir, name), 'L')
    return img_dir, ann_dir


def _paths(out):
    ade = osp.join(out, 'ade', 'ADEChallengeData2016')
    coco = osp.join(out, 'coco')
    return dict(
        root=out,
        manifest=osp.join(out, 'manifest.json'),
        coco_root=coco,
        coco_train_ann=osp.join(coco, 'annotations', 'instances_train.json'),
        coco_val_ann=osp.join(coco, 'annotations', 'instances_val.json'),
        coco_train_img=osp.join(coco, 'train'),
        coco_val_img=osp.join(coco, 'val'),
        ade_root=ade,
        ade_train_img=osp.join(ade, 'images', 'training'),
        ade_val_img=osp.join(ade, 'images', 'validation'),
        ade_train_ann=osp.join(ade, 'annotations', 'training'),
        ade_val_ann=osp.join(ade, 'annotations', 'validation'),
    )


def _expected_files(paths, num_train, num_val, num_train_seg=None):
    files = [paths['coco_train_ann'], paths['coco_val_ann']]
    if num_train_seg is None:
        num_train_seg = num_train
    for n, keys in ((num_train, ('coco_train_img', )),
                    (num_train_seg, ('ade_train_img', 'ade_train_ann')),
                    (num_val, ('coco_val_img', 'ade_val_img',
                               'ade_val_ann'))):
        for k in keys:
            files += [osp.join(paths[k], f'{i:06d}.png') for i in range(n)]
    return files


def _clean(paths):
    """Remove files of a previous generation (only names this tool writes),
    so that directory-scanning loaders (mmseg) see no stale images."""
    for f in (paths['manifest'], paths['coco_train_ann'],
              paths['coco_val_ann']):
        if osp.isfile(f):
            os.remove(f)
    for k in ('coco_train_img', 'coco_val_img', 'ade_train_img',
              'ade_val_img', 'ade_train_ann', 'ade_val_ann'):
        if osp.isdir(paths[k]):
            for name in os.listdir(paths[k]):
                if _NAME_RE.match(name):
                    os.remove(osp.join(paths[k], name))


def make_toy_data(out='data/toy', seed=0, num_train=160, num_val=40,
                  force=False, verbose=False, num_train_seg=None, jobs=2):
    """Generate (or reuse) both toy datasets under ``out``.

    ``num_train_seg`` (default ``num_train``) sets the size of the
    segmentation training set alone: per-pixel shape classes need more
    images than the detector (docs/demo.md). Image ``i`` does not depend
    on the counts, so a smaller set is a prefix of a larger one. ``jobs``
    > 1 writes the segmentation set in a second process.

    Returns a dict of paths (``root``, ``manifest``, ``coco_root``,
    ``coco_{train,val}_ann``, ``coco_{train,val}_img``, ``ade_root``,
    ``ade_{train,val}_{img,ann}``) plus ``generated`` (False when an
    up-to-date copy was found and nothing was written) and ``stats``.
    """
    out = str(out)
    seed, num_train, num_val = int(seed), int(num_train), int(num_val)
    num_train_seg = num_train if num_train_seg is None else int(num_train_seg)
    if num_train < 1 or num_val < 1 or num_train_seg < 1 or seed < 0:
        raise ValueError('num_train, num_train_seg and num_val must be >= 1, seed >= 0')
    paths = _paths(out)
    want = dict(version=VERSION, seed=seed, num_train=num_train,
                num_val=num_val, num_train_seg=num_train_seg)
    if not force and osp.isfile(paths['manifest']):
        try:
            with open(paths['manifest']) as f:
                have = json.load(f)
        except (OSError, ValueError):
            have = None
        if have is not None and all(have.get(k) == v
                                    for k, v in want.items()) and all(
                osp.isfile(f) for f in _expected_files(
                    paths, num_train, num_val, num_train_seg)):
            res = dict(paths, generated=False, stats=have.get('stats', {}))
            if verbose:
                print(f'[toy] {out} is up to date (seed={seed}, '
                      f'train={num_train}, seg train={num_train_seg}, '
                      f'val={num_val}); '
                      'use --force to regenerate')
            return res

    t0 = time.time()
    os.makedirs(out, exist_ok=True)
    _clean(paths)
    stats = {}
    # the detection and the segmentation sets in two processes (every image has its own random stream,
    # so the files are the same either way)
    pool = None
    if jobs > 1:
        import concurrent.futures
        import multiprocessing
        pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('fork'))
    seg_jobs = []
    for split_idx, (det_split, seg_split) in enumerate(_SPLITS):
        num_seg = num_train_seg if split_idx == 0 else num_val
        args = (out, seed, split_idx, seg_split, num_seg)
        seg_jobs.append(pool.submit(_write_seg_split, *args) if pool else _write_seg_split(*args))
        stats[f'ade_{seg_split}_images'] = num_seg
    for split_idx, (det_split, seg_split) in enumerate(_SPLITS):
        num = num_train if split_idx == 0 else num_val
        _, _, n_ann = _write_det_split(out, seed, split_idx, det_split, num)
        stats[f'coco_{det_split}_images'] = num
        stats[f'coco_{det_split}_instances'] = n_ann
    if pool:
        for job in seg_jobs:
            job.result()
        pool.shutdown()
    manifest = dict(want, stats=stats)
    with open(paths['manifest'], 'w') as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write('\n')
    res = dict(paths, generated=True, stats=stats)
    if verbose:
        nbytes = sum(osp.getsize(f) for f in _expected_files(
            paths, num_train, num_val, num_train_seg))
        print(f'[toy] wrote toy data to {out} in {time.time() - t0:.1f}s '
              f'({nbytes / 2**20:.1f} MiB, seed={seed})')
        print(f'[toy]   COCO  {paths["coco_root"]}: '
              f'train {num_train} images / {stats["coco_train_instances"]} '
              f'instances, val {num_val} images / '
              f'{stats["coco_val_instances"]} instances, '
              f'classes {DET_CLASSES}')
        print(f'[toy]   ADE   {paths["ade_root"]}: training {num_train_seg}, '
              f'validation {num_val} images; labels 0=ignore, '
              f'1..4={SEG_CLASSES} (reduce_zero_label=True, '
              "img_suffix='.png')")
    return res
