"""Per-shape errors of a toy segmentor: for every shape of the toy validation set (a connected component of one
class in the ground truth), the share of its pixels predicted as each class. Tells whole-shape confusions (a small
square called "triangle") from boundary errors, which the per-class IoU mixes (docs/demo.md, section 8)."""
import glob
import os.path as osp

import numpy as np


def shape_votes(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> list:
    """One row per connected component of each non-background class (index 1 .. ``num_classes`` - 1) of ``gt``
    (other values, such as the ignore index 255, belong to no shape): its class, its size in pixels and the
    fractions of its pixels predicted as each of the ``num_classes`` classes (4-connectivity)."""
    from scipy import ndimage

    if gt.shape != pred.shape:
        raise ValueError(f'ground truth {gt.shape} and prediction {pred.shape} differ in shape')
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f'predicted classes must lie in 0..{num_classes - 1}, got {pred.min()}..{pred.max()}')
    pred = pred.astype(np.int64).ravel()
    rows = []
    for cls in range(1, num_classes):
        comp, n = ndimage.label(gt == cls)
        # one pass: the (component, predicted class) pixel counts of all components of this class
        counts = np.bincount(comp.ravel() * num_classes + pred, minlength=(n + 1) * num_classes)
        for c in counts.reshape(n + 1, num_classes)[1:]:
            rows.append(dict(cls=cls, pixels=int(c.sum()), votes=[round(float(v), 4) for v in c / c.sum()]))
    return rows


def summarize(rows: list, classes, worst: int = 5) -> dict:
    """Per class: shapes, how many have the majority of their pixels right, and the ``worst`` ones."""
    out = {}
    for cls in sorted({r['cls'] for r in rows}):
        mine = [r for r in rows if r['cls'] == cls]
        out[classes[cls]] = dict(
            shapes=len(mine), majority_right=sum(r['votes'][cls] > 0.5 for r in mine),
            worst=sorted(mine, key=lambda r: r['votes'][cls])[:worst])
    return out


def evaluate(config: str, checkpoint: str, data_root: str, split: str = 'validation', device: str = 'cpu',
             min_pixels: int = 20) -> tuple:
    """Run the segmentor of ``config`` / ``checkpoint`` over ``data_root``'s ``split`` images (ADE layout, labels
    stored +1 as in the toy set) and collect :func:`shape_votes` (shapes under ``min_pixels`` left out: slivers of
    occluded shapes); ``checkpoint`` None: random weights. Returns (rows with their image names, class names)."""
    from mmseg.apis import inference_model
    from PIL import Image

    from .inference import init_inference_model, load_inference_config

    cfg = load_inference_config(config, device)
    model = init_inference_model(cfg, checkpoint, device)
    classes = list(model.dataset_meta['classes'])
    rows = []
    images = sorted(glob.glob(osp.join(data_root, 'images', split, '*.png')))
    if not images:
        raise FileNotFoundError(f'no images in {osp.join(data_root, "images", split)}')
    for img in images:
        label = np.array(Image.open(img.replace(osp.join('images', split), osp.join('annotations', split))))
        gt = np.where(label == 0, 255, label.astype(np.int64) - 1)  # reduce_zero_label
        pred = inference_model(model, img).pred_sem_seg.data[0].cpu().numpy()
        for r in shape_votes(gt, pred, len(classes)):
            if r['pixels'] >= min_pixels:
                rows.append(dict(r, image=osp.basename(img)))
    return rows, classes
