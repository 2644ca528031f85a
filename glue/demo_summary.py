"""The demo's one picture (``work_dirs/demo/summary.png``) and its loss-curve plot.

``tools/test.py --show-dir`` writes, per drawn validation image, mmdet's / mmseg's visualizer output: the
ground truth drawn over the image on the left and the prediction on the right, side by side, with the
image's file name. :func:`make_summary` puts a few of them in one figure -- per row the input, the ground
truth and the prediction, for detection and for segmentation -- above the training-loss curves and the
measured metrics. Needs matplotlib and Pillow only.
"""
import json
import os
import os.path as osp

import numpy as np


def read_scalars(path: str):
    """(iterations, losses) from an mmengine ``vis_data/scalars.json`` (one json object a line)."""
    its, losses = [], []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if 'loss' in rec and 'iter' in rec:
                its.append(rec['iter'])
                losses.append(rec['loss'])
    return its, losses


def split_side_by_side(path: str):
    """The (ground truth, prediction) halves of a visualizer picture (they are concatenated along x)."""
    from PIL import Image
    img = np.asarray(Image.open(path).convert('RGB'))
    w = img.shape[1]
    if w % 2:
        raise ValueError(f'{path}: width {w} is odd, not a ground truth | prediction pair')
    return img[:, :w // 2], img[:, w // 2:]


def input_name(picture: str) -> str:
    """The input image's file name in a visualizer picture's name: mmdet keeps it ('000005.png'), mmseg's
    visualizer backend decorates it ('test_000005.png_0.png')."""
    name = osp.basename(picture)
    if name.startswith('test_') and '.png_' in name:
        name = name[len('test_'):name.index('.png_') + len('.png')]
    return name


def _pick(pictures, images_dir: str, n: int):
    """Up to ``n`` (input, ground truth, prediction, name) of the pictures whose input is in ``images_dir``."""
    from PIL import Image
    rows = []
    for p in sorted(pictures, key=input_name)[:n]:
        src = osp.join(images_dir, input_name(p))
        if not osp.isfile(src):
            raise FileNotFoundError(f'{p}: no input image {src}')
        gt, pred = split_side_by_side(p)
        rows.append((np.asarray(Image.open(src).convert('RGB')), gt, pred, input_name(p)))
    return rows


def plot_losses(curves: dict, out: str) -> None:
    """One panel per training run: total training loss against iteration."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), squeeze=False)
    for ax, (title, (its, losses)) in zip(axes[0], curves.items()):
        _loss_panel(ax, title, its, losses)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _loss_panel(ax, title, its, losses):
    ax.plot(its, losses, lw=1.2)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel('iteration', fontsize=8)
    ax.set_ylabel('total training loss', fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def make_summary(out: str, panels: dict, curves: dict, captions: dict = None, rows: int = 3,
                 title: str = '', max_colors: int = 0) -> str:
    """Write the summary figure to ``out``.

    ``panels``: task title -> (list of visualizer pictures, folder of the input images); ``curves``: title ->
    (iterations, losses); ``captions``: task title -> one line (its metrics). ``max_colors`` > 0 quantizes the
    PNG to that many colours (a small copy for the README).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    picked = {task: _pick(pics, images_dir, rows) for task, (pics, images_dir) in panels.items()}
    picked = {task: r for task, r in picked.items() if r}
    n_rows = max([len(r) for r in picked.values()] + [0])
    n_cols = 3 * len(picked)
    fig = plt.figure(figsize=(max(2.0 * n_cols, 6), 2.0 * n_rows + 2.6))
    grid = fig.add_gridspec(n_rows + 1, max(n_cols, 2), height_ratios=[1] * n_rows + [1.25])
    for t, (task, task_rows) in enumerate(picked.items()):
        for r, (img, gt, pred, name) in enumerate(task_rows):
            for c, (pic, label) in enumerate(((img, 'input'), (gt, 'ground truth'), (pred, 'prediction'))):
                ax = fig.add_subplot(grid[r, 3 * t + c])
                ax.imshow(pic)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f'{task}\n{label}' if c == 1 else label, fontsize=8)
                if c == 0:
                    ax.set_ylabel(name, fontsize=7)
        if captions and task in captions:
            fig.text((3 * t + 1.5) / max(n_cols, 2), 1.0 - 0.2 / fig.get_figheight(), captions[task],
                     ha='center', va='top', fontsize=8, weight='bold')
    halves = np.array_split(np.arange(max(n_cols, 2)), max(len(curves), 1))
    for cols, (name, (its, losses)) in zip(halves, curves.items()):
        _loss_panel(fig.add_subplot(grid[n_rows, cols[0]:cols[-1] + 1]), name, its, losses)
    if title:
        fig.suptitle(title, fontsize=9, y=0.005, va='bottom')
    fig.tight_layout(rect=(0, 0.03 if title else 0, 1, 1 - 0.45 / fig.get_figheight()))
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    if max_colors:
        from PIL import Image
        img = Image.open(out).convert('RGB')
        img.quantize(colors=max_colors, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out
