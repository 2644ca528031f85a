"""glue.demo_summary: the demo's one picture from visualizer outputs (ground truth | prediction side by side),
their input images and the loss logs."""
import glob
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from glue.demo_summary import input_name, make_summary, read_scalars, split_side_by_side


def _vis(tmp_path, task, names, h=40, w=30):
    """Fake inputs and visualizer pictures: left half red (ground truth), right half blue (prediction)."""
    inputs, vis = tmp_path / task / 'val', tmp_path / task / 'vis'
    inputs.mkdir(parents=True)
    vis.mkdir()
    for i, n in enumerate(names):
        Image.fromarray(np.full((h, w, 3), 20 * i, np.uint8)).save(inputs / n)
        pic = np.zeros((h, 2 * w, 3), np.uint8)
        pic[:, :w, 0] = 255
        pic[:, w:, 2] = 255
        Image.fromarray(pic).save(vis / n)
    return sorted(str(p) for p in vis.iterdir()), str(inputs)


def test_split_side_by_side(tmp_path):
    pics, _ = _vis(tmp_path, 'det', ['000000.png'])
    gt, pred = split_side_by_side(pics[0])
    assert gt.shape == pred.shape == (40, 30, 3)
    assert (gt[..., 0] == 255).all() and (gt[..., 2] == 0).all()
    assert (pred[..., 2] == 255).all() and (pred[..., 0] == 0).all()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / 'odd.png')
    with pytest.raises(ValueError, match='odd'):
        split_side_by_side(str(tmp_path / 'odd.png'))


def test_make_summary_rows_curves_and_small_copy(tmp_path):
    det = _vis(tmp_path, 'det', [f'{i:06d}.png' for i in range(5)])
    seg = _vis(tmp_path, 'seg', ['000000.png', '000005.png'])
    for pic in seg[0]:  # mmseg's visualizer backend names them test_<image>_<step>.png
        os.rename(pic, osp.join(osp.dirname(pic), 'test_' + osp.basename(pic) + '_0.png'))
    seg = (sorted(glob.glob(osp.join(osp.dirname(seg[0][0]), '*.png'))), seg[1])
    assert input_name(seg[0][1]) == '000005.png'
    log = tmp_path / 'scalars.json'
    log.write_text('\n'.join(json.dumps(r) for r in [
        dict(lr=1e-3, loss=2.0, iter=10), dict(mIoU=20.0, step=10), dict(lr=1e-3, loss=1.0, iter=20)]))
    its, losses = read_scalars(str(log))
    assert (its, losses) == ([10, 20], [2.0, 1.0])  # lines without a training loss are skipped
    out = tmp_path / 'out' / 'summary.png'
    make_summary(str(out), dict(detection=det, segmentation=seg), {'det': (its, losses), 'seg': (its, losses)},
                 dict(detection='bbox mAP 0.5'), rows=3, title='toy', max_colors=64)
    img = Image.open(out)
    assert img.mode == 'P' and len(img.getcolors(256)) <= 64  # quantized copy
    w, h = img.size
    assert w >= 6 * 2 * 80 * 0.9 and h > w / 3  # 6 picture columns, 3 picture rows + the curves
    missing = _vis(tmp_path, 'x', ['000001.png'])[0], str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match='no input image'):
        make_summary(str(out), dict(detection=missing), {})


def test_toy_feature_probe_tool(tmp_path, capsys):
    """The probe behind docs/demo.md runs on a tiny toy set and reports both readouts for every stage set."""
    from conftest import load_tool
    from glue.toy_data import make_toy_data
    from glue.toy_feature_probe import STAGE_SETS
    ade = make_toy_data(str(tmp_path / 'toy'), seed=0, num_train=3, num_val=2)['ade_root']
    res = load_tool('tools/analysis/toy_feature_probe.py').main(['--data', ade, '--size', '64'])
    assert list(res) == [name for name, _ in STAGE_SETS]
    for r in res.values():
        for acc in r['pixel'] + r['pooled']:
            assert 0.0 <= acc <= 100.0
    assert 'per pixel' in capsys.readouterr().out


def test_shape_votes_tells_whole_shape_errors_from_edges():
    """Two shapes of class 1 and one of class 2 (4-connected components): each row holds its own pixels' votes."""
    from glue.toy_seg_errors import shape_votes, summarize
    gt = np.zeros((8, 8), np.int64)
    gt[0:2, 0:2] = 1          # shape A (class 1), predicted right
    gt[5:8, 5:8] = 1          # shape B (class 1), predicted class 2 on 6 of 9 pixels
    gt[0:3, 5:7] = 2          # shape C (class 2)
    gt[4, 0] = 255            # ignored
    pred = gt.copy()
    pred[4, 0] = 0
    pred[5:7, 5:8] = 2
    rows = shape_votes(gt, pred, num_classes=3)
    assert [(r['cls'], r['pixels']) for r in rows] == [(1, 4), (1, 9), (2, 6)]
    assert rows[0]['votes'] == [0.0, 1.0, 0.0]
    assert rows[1]['votes'] == pytest.approx([0.0, 3 / 9, 6 / 9], abs=1e-4)
    s = summarize(rows, ['bg', 'a', 'b'], worst=1)
    assert s['a']['shapes'] == 2 and s['a']['majority_right'] == 1 and s['a']['worst'][0]['pixels'] == 9
    assert s['b'] == dict(shapes=1, majority_right=1, worst=[rows[2]])
    with pytest.raises(ValueError, match='differ in shape'):
        shape_votes(gt, pred[:4], 3)
    with pytest.raises(ValueError, match='must lie in 0..2'):
        shape_votes(gt, np.full_like(gt, 3), 3)


def test_toy_seg_errors_tool(tmp_path, capsys):
    """The per-shape analysis behind docs/demo.md runs the toy UperNet over a tiny toy set: one row per GT shape."""
    from conftest import load_tool
    from glue.toy_data import make_toy_data
    ade = make_toy_data(str(tmp_path / 'toy'), seed=0, num_train=3, num_val=2)['ade_root']
    out = tmp_path / 'errors.json'
    summary = load_tool('tools/analysis/toy_seg_errors.py').main(['--data', ade, '--json', str(out)])
    rows = json.loads(out.read_text())['shapes']
    assert rows and {r['image'] for r in rows} <= {'000000.png', '000001.png'}
    for r in rows:
        assert sum(r['votes']) == pytest.approx(1.0, abs=1e-3) and r['pixels'] >= 20
    assert sum(s['shapes'] for s in summary.values()) == len(rows)
    assert 'of their pixels right' in capsys.readouterr().out
