"""tools/toy_pretrain.py: the toy "ImageNet" crops, and its checkpoint going into the toy detector and
segmentor through the strict loader, as the demo does (``model.backbone.pretrained=``)."""
import json
import os.path as osp

import numpy as np
import pytest
import torch

from backbones import Conv2Former
from conftest import ROOT
from glue import toy_pretrain as tp

DET_TOY = osp.join(ROOT, 'configs/toy/conv2former_toy_maskrcnn.py')
SEG_TOY = osp.join(ROOT, 'configs/toy/conv2former_toy_upernet.py')


def test_crops_are_deterministic_and_balanced():
    a, la = tp.draw_crops(64, size=48, seed=0)
    b, lb = tp.draw_crops(64, size=48, seed=0)
    c, _ = tp.draw_crops(64, size=48, seed=0, split=1)
    assert a.shape == (64, 48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)  # the held-out split is other crops
    assert set(la.tolist()) == set(range(len(tp.CLASSES)))
    assert tp.CLASSES == ('none', 'circle', 'square', 'triangle')


def test_shape_crops_hold_a_centred_shape():
    """A shape's fill differs from the smooth background around it (make_toy_data's colour rule), so the
    centre of a shape crop stands out from its corners far more than in a 'none' crop."""
    imgs, labels = tp.draw_crops(200, size=64, seed=1)
    x = imgs.astype(np.float32)
    contrast = np.linalg.norm(x[:, 28:36, 28:36].mean((1, 2)) - x[:, :6, :6].mean((1, 2)), axis=1)
    assert np.median(contrast[labels > 0]) > 2 * np.median(contrast[labels == 0])


def test_shape_range_sizes_the_shapes(monkeypatch):
    """``shape_range`` is the shapes' equivalent diameter as fractions of the crop (the default: 16-68 px at 80 px)."""
    seen = []
    real = tp.shape_mask

    def spy(*args, **kw):
        seen.append(kw['size_range'])
        return real(*args, **kw)

    monkeypatch.setattr(tp, 'shape_mask', spy)
    tp.draw_crops(16, seed=0)
    tp.draw_crops(16, size=40, seed=0, shape_range=(0.5, 0.6))
    n = len(seen) // 2
    assert n and set(seen[:n]) == {(tp.SHAPE_RANGE[0] * tp.CROP_SIZE, tp.SHAPE_RANGE[1] * tp.CROP_SIZE)}
    assert set(seen[n:]) == {(20.0, 24.0)}


def test_both_toy_configs_share_the_backbone():
    assert tp.backbone_from_config(DET_TOY) == tp.backbone_from_config(SEG_TOY)


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('pretrain') / 'toy_cls.pth')
    meta = tp.pretrain(DET_TOY, out, steps=4, batch_size=4, size=64, pool=16, num_val=8, log_every=2)
    return out, meta


def test_pretrain_writes_an_official_layout_classifier(tiny_ckpt):
    out, meta = tiny_ckpt
    ckpt = torch.load(out, weights_only=True)
    sd = ckpt['state_dict']
    assert {'head.0.weight', 'head.0.bias', 'head.1.weight', 'head.1.bias'} <= set(sd)
    assert sd['head.1.weight'].shape == (4, 256)
    assert not any(k.startswith('out_norms') for k in sd)
    with open(osp.splitext(out)[0] + '.json') as f:
        report = json.load(f)
    assert report == meta and report['steps'] == 4 and [s for s, _ in report['loss_curve']] == [2, 4]
    assert 0.0 <= report['val_accuracy'] <= 100.0


def test_checkpoint_loads_strictly_into_the_toy_backbone(tiny_ckpt, caplog):
    out, _ = tiny_ckpt
    name, kw = tp.backbone_from_config(DET_TOY)
    model = Conv2Former(pretrained=out, **kw)
    with caplog.at_level('INFO', logger='backbones'):
        model.init_weights()
    assert 'dropped classifier: 4 (head.*)' in caplog.text and 'newly initialised: 8 (out_norms.*)' in caplog.text
    sd = torch.load(out, weights_only=True)['state_dict']
    for k, v in model.state_dict().items():
        if not k.startswith('out_norms'):
            assert torch.equal(v, sd[k]), k


def test_detector_and_segmentor_start_from_it(tiny_ckpt):
    """The demo's path: the toy configs with ``model.backbone.pretrained=`` built by mmdet / mmseg."""
    from mmengine.config import Config
    out, _ = tiny_ckpt
    sd = torch.load(out, weights_only=True)['state_dict']
    for config, scope in ((DET_TOY, 'mmdet'), (SEG_TOY, 'mmseg')):
        cfg = Config.fromfile(config)
        cfg.merge_from_dict({'model.backbone.pretrained': out})
        if scope == 'mmdet':
            import detection  # noqa: F401
            from mmdet.registry import MODELS
            from mmdet.utils import register_all_modules
        else:
            import segmentation  # noqa: F401
            from mmseg.registry import MODELS
            from mmseg.utils import register_all_modules
        register_all_modules()
        model = MODELS.build(cfg.model)
        model.init_weights()  # the model-level init (toy UperNet: LeCun convs) runs first, then the load
        w = model.backbone.stages[2][1].attn.v.weight
        assert torch.equal(w, sd['stages.2.1.attn.v.weight']), config
