"""Tests for glue.toy_data / tools/make_toy_data.py (the embedded toy COCO / ADE20K data)."""
import contextlib
import io
import json
import os
import os.path as osp
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glue import toy_data as toy

ROOT = Path(__file__).resolve().parents[1]


NUM_TRAIN, NUM_VAL = 6, 3


@pytest.fixture(scope='module')
def toy_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp('toy')
    a = toy.make_toy_data(base / 'a', seed=0, num_train=NUM_TRAIN,
                          num_val=NUM_VAL)
    b = toy.make_toy_data(base / 'b', seed=0, num_train=NUM_TRAIN,
                          num_val=NUM_VAL)
    c = toy.make_toy_data(base / 'c', seed=1, num_train=NUM_TRAIN,
                          num_val=NUM_VAL)
    assert a['generated'] and b['generated'] and c['generated']
    return a, b, c


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _coco(paths, split):
    with open(paths[f'coco_{split}_ann']) as f:
        return json.load(f)


def test_constants():
    assert toy.DET_CLASSES == ('circle', 'square', 'triangle')
    assert toy.SEG_CLASSES == ('background', 'circle', 'square', 'triangle')
    assert len(toy.SEG_PALETTE) == len(toy.SEG_CLASSES)


def test_layout(toy_dirs):
    a, _, _ = toy_dirs
    for split, n in (('train', NUM_TRAIN), ('val', NUM_VAL)):
        assert sorted(os.listdir(a[f'coco_{split}_img'])) == [
            f'{i:06d}.png' for i in range(n)]
        for kind in ('img', 'ann'):
            assert sorted(os.listdir(a[f'ade_{split}_{kind}'])) == [
                f'{i:06d}.png' for i in range(n)]
    assert a['coco_train_ann'].endswith(
        osp.join('coco', 'annotations', 'instances_train.json'))
    assert a['ade_root'].endswith(osp.join('ade', 'ADEChallengeData2016'))
    assert a['ade_val_ann'].endswith(
        osp.join('ADEChallengeData2016', 'annotations', 'validation'))


def test_determinism(toy_dirs):
    a, b, c = toy_dirs
    name = '000001.png'
    for key in ('coco_train_ann', 'coco_val_ann', 'manifest'):
        assert _read(a[key]) == _read(b[key])
    for key in ('ade_train_ann', 'ade_val_img', 'coco_train_img'):
        assert _read(osp.join(a[key], name)) == _read(osp.join(b[key], name))
    assert _read(a['coco_train_ann']) != _read(c['coco_train_ann'])
    assert _read(osp.join(a['ade_train_ann'], name)) != _read(
        osp.join(c['ade_train_ann'], name))
    # detection and segmentation sets use different random streams
    assert _read(osp.join(a['coco_train_img'], name)) != _read(
        osp.join(a['ade_train_img'], name))


def test_idempotent_and_regenerate(tmp_path):
    out = tmp_path / 'toy'
    r1 = toy.make_toy_data(out, seed=0, num_train=3, num_val=2)
    assert r1['generated']
    ann = r1['coco_train_ann']
    png = osp.join(r1['ade_train_ann'], '000002.png')
    past = 1_000_000_000
    os.utime(ann, (past, past))
    os.utime(png, (past, past))
    r2 = toy.make_toy_data(out, seed=0, num_train=3, num_val=2)
    assert not r2['generated']
    assert os.stat(ann).st_mtime == past and os.stat(png).st_mtime == past
    # a missing file or --force triggers a rewrite
    os.remove(png)
    assert toy.make_toy_data(out, seed=0, num_train=3, num_val=2)[
        'generated']
    assert osp.isfile(png) and os.stat(ann).st_mtime != past
    assert toy.make_toy_data(out, seed=0, num_train=3, num_val=2,
                             force=True)['generated']
    # fewer images: stale files of the previous generation are removed
    r3 = toy.make_toy_data(out, seed=0, num_train=2, num_val=1)
    assert r3['generated']
    assert sorted(os.listdir(r3['ade_train_img'])) == ['000000.png',
                                                       '000001.png']
    assert sorted(os.listdir(r3['coco_val_img'])) == ['000000.png']


def test_separate_seg_train_count(tmp_path):
    """num_train_seg sizes the segmentation training set alone; its images are a prefix-stable stream."""
    small = toy.make_toy_data(tmp_path / 's', seed=0, num_train=2, num_val=1)
    r = toy.make_toy_data(tmp_path / 'r', seed=0, num_train=2, num_val=1, num_train_seg=4)
    assert r['generated'] and r['stats']['ade_training_images'] == 4
    assert len(os.listdir(r['coco_train_img'])) == 2
    assert sorted(os.listdir(r['ade_train_ann'])) == [f'{i:06d}.png' for i in range(4)]
    for k in ('ade_train_img', 'ade_train_ann'):
        assert _read(osp.join(r[k], '000001.png')) == _read(osp.join(small[k], '000001.png'))
    assert not toy.make_toy_data(tmp_path / 'r', seed=0, num_train=2, num_val=1, num_train_seg=4)['generated']
    # a different segmentation count regenerates
    assert toy.make_toy_data(tmp_path / 'r', seed=0, num_train=2, num_val=1, num_train_seg=3)['generated']
    assert len(os.listdir(r['ade_train_img'])) == 3


def test_cli(tmp_path, capsys):
    from conftest import load_tool
    cli = load_tool('tools/make_toy_data.py')
    out = str(tmp_path / 'cli')
    assert cli.main(['--out', out, '--num-train', '2', '--num-val', '1']) == 0
    assert 'wrote toy data' in capsys.readouterr().out
    assert cli.main(['--out', out, '--num-train', '2', '--num-val', '1']) == 0
    assert 'up to date' in capsys.readouterr().out


def test_coco_json(toy_dirs):
    a, _, _ = toy_dirs
    seen = set()
    for split in ('train', 'val'):
        coco = _coco(a, split)
        assert [c['name'] for c in coco['categories']] == list(
            toy.DET_CLASSES)
        assert [c['id'] for c in coco['categories']] == [1, 2, 3]
        imgs = {im['id']: im for im in coco['images']}
        assert min(imgs) >= 1 and min(
            an['id'] for an in coco['annotations']) >= 1
        for im in coco['images']:
            with Image.open(osp.join(a[f'coco_{split}_img'],
                                     im['file_name'])) as pil:
                assert pil.size == (im['width'], im['height'])
                assert pil.mode == 'RGB'
            assert 224 <= im['width'] <= 288 and 224 <= im['height'] <= 288
        for an in coco['annotations']:
            im = imgs[an['image_id']]
            x, y, w, h = an['bbox']
            assert an['iscrowd'] == 0
            assert an['area'] >= toy.MIN_VISIBLE_AREA
            assert 0 <= x and 0 <= y and x + w <= im['width'] and \
                y + h <= im['height']
            assert isinstance(an['segmentation'], list)
            assert all(len(p) >= 8 and len(p) % 2 == 0
                       for p in an['segmentation'])
            seen.add(an['category_id'])
        assert all(any(an['image_id'] == i for an in coco['annotations'])
                   for i in imgs)
    assert seen == {1, 2, 3}


def test_coco_polygons_exact_and_self_eval(toy_dirs):
    mask_utils = pytest.importorskip('pycocotools.mask')
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    a, _, _ = toy_dirs
    for split in ('train', 'val'):
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(a[f'coco_{split}_ann'])
        for an in gt.dataset['annotations']:
            im = gt.imgs[an['image_id']]
            rle = mask_utils.merge(mask_utils.frPyObjects(
                an['segmentation'], im['height'], im['width']))
            assert int(mask_utils.area(rle)) == an['area']
            assert mask_utils.toBbox(rle).tolist() == an['bbox']
        dets = [dict(image_id=an['image_id'], category_id=an['category_id'],
                     bbox=an['bbox'], segmentation=an['segmentation'],
                     score=1.0) for an in gt.dataset['annotations']]
        for iou_type in ('bbox', 'segm'):
            with contextlib.redirect_stdout(io.StringIO()):
                dt = gt.loadRes(json.loads(json.dumps(dets)))
                ev = COCOeval(gt, dt, iou_type)
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            assert ev.stats[0] > 0.999, (split, iou_type, ev.stats)


def test_mask_to_polygons_random_masks():
    """Polygons decode (pycocotools) to the mask with its holes filled;
    holes are reported. Random masks exercise saddle corners."""
    mask_utils = pytest.importorskip('pycocotools.mask')
    ndimage = pytest.importorskip('scipy.ndimage')
    rng = np.random.default_rng(0)
    for k in range(60):
        h, w = (int(v) for v in rng.integers(1, 14, size=2))
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        if k % 3 == 0:  # some blocky masks too
            mask = np.kron(mask, np.ones((2, 3), bool))
            h, w = mask.shape
        big = np.zeros((h + 4, w + 5), bool)
        big[2:h + 2, 3:w + 3] = mask
        polys, holes = toy.mask_to_polygons(big)
        # background is 8-connected, foreground 4-connected
        filled = ndimage.binary_fill_holes(big, structure=np.ones((3, 3)))
        assert (holes > 0) == bool((filled != big).any())
        if not big.any():
            assert polys == []
            continue
        rle = mask_utils.merge(
            mask_utils.frPyObjects(polys, *big.shape))
        np.testing.assert_array_equal(
            mask_utils.decode(rle).astype(bool), filled)


def test_seg_label_maps(toy_dirs):
    a, _, _ = toy_dirs
    values = set()
    for split in ('train', 'val'):
        for name in sorted(os.listdir(a[f'ade_{split}_img'])):
            with Image.open(osp.join(a[f'ade_{split}_img'], name)) as im, \
                    Image.open(osp.join(a[f'ade_{split}_ann'], name)) as lab:
                assert im.mode == 'RGB' and lab.mode == 'L'
                assert im.size == lab.size
                arr = np.asarray(lab)
            assert set(np.unique(arr).tolist()) <= {0, 1, 2, 3, 4}
            assert (arr == 0).mean() < 0.1  # the ignore band stays thin
            values |= set(np.unique(arr).tolist())
    assert values == {0, 1, 2, 3, 4}


def test_mmdet_coco_dataset(toy_dirs):
    pytest.importorskip('mmdet')
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules()
    a, _, _ = toy_dirs
    coco = _coco(a, 'train')
    for poly2mask in (True, False):
        ds = CocoDataset(
            data_root=a['coco_root'],
            ann_file='annotations/instances_train.json',
            data_prefix=dict(img='train/'),
            metainfo=dict(classes=toy.DET_CLASSES),
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=True,
                     poly2mask=poly2mask),
                dict(type='PackDetInputs'),
            ])
        assert len(ds) == NUM_TRAIN
        sample = ds[0]
        img_id = sample['data_samples'].img_id
        areas = [an['area'] for an in coco['annotations']
                 if an['image_id'] == img_id]
        inst = sample['data_samples'].gt_instances
        assert len(inst) == len(areas) > 0
        assert sample['inputs'].shape[1:] == inst.masks.to_ndarray().shape[1:]
        np.testing.assert_array_equal(
            inst.masks.to_ndarray().sum((1, 2)), areas)
        assert set(inst.labels.tolist()) <= {0, 1, 2}


def test_mmseg_dataset(toy_dirs):
    pytest.importorskip('mmseg')
    from mmseg.datasets import ADE20KDataset, BaseSegDataset
    from mmseg.utils import register_all_modules
    register_all_modules()
    a, _, _ = toy_dirs
    kwargs = dict(
        data_root=a['ade_root'],
        data_prefix=dict(img_path='images/training',
                         seg_map_path='annotations/training'),
        img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=True,
        pipeline=[
            dict(type='LoadImageFromFile'),
            # takes reduce_zero_label from the dataset (passing it here
            # too works, with a deprecation warning)
            dict(type='LoadAnnotations'),
            dict(type='PackSegInputs'),
        ])
    metainfo = dict(classes=toy.SEG_CLASSES, palette=toy.SEG_PALETTE)
    # ADE20KDataset only accepts subsets of its 150 classes ...
    with pytest.raises(ValueError, match='not a subset'):
        ADE20KDataset(metainfo=metainfo, **kwargs)
    # ... but reads the layout; BaseSegDataset takes the toy classes.
    assert len(ADE20KDataset(**kwargs)) == NUM_TRAIN
    ds = BaseSegDataset(metainfo=metainfo, **kwargs)
    assert len(ds) == NUM_TRAIN
    assert tuple(ds.metainfo['classes']) == toy.SEG_CLASSES
    for i in range(2):
        sample = ds[i]
        seg = sample['data_samples'].gt_sem_seg.data
        assert seg.shape[1:] == sample['inputs'].shape[1:]
        vals = set(seg.unique().tolist())
        assert vals <= {0, 1, 2, 3, 255} and 255 in vals and 0 in vals
