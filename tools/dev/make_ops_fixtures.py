#!/usr/bin/env python
"""Write tests/fixtures/mmcv_ops.pt: inputs and the outputs of mmcv's COMPILED ops, for the parity tests of
the torchvision-backed replacements (glue/mmcv_ops.py, tests/test_mmcv_ops.py).

Needs the full mmcv 2.1.0 with its compiled ``_ext`` (not mmcv-lite), e.g. a venv made with
``bash tools/install.sh --full-mmcv``::

    VENV=/tmp/full-mmcv bash tools/install.sh --full-mmcv
    /tmp/full-mmcv/bin/python tools/dev/make_ops_fixtures.py

Cases: RoIAlign values and input gradients (aligned and not, sampling ratio 0 and 2, spatial scale 1 and
1/2, square and non-square outputs, boxes partly or wholly outside the map, boxes under a pixel); NMS with
score ties and degenerate boxes (offset 0 and 1, three IoU thresholds, score threshold + max_num);
batched NMS with class offsets (class-aware, class-agnostic, and the per-class split path).
"""
import argparse
import os.path as osp

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def rois_case(g):
    """(K, 5) RoIs over a 2-image batch of 9x11 maps (image coordinates up to 22x18 at scale 1/2)."""
    xy1 = torch.rand(6, 2, generator=g) * torch.tensor([22., 18.]) - 2
    wh = torch.rand(6, 2, generator=g) * 10 + 0.2
    boxes = torch.cat([xy1, xy1 + wh], 1)
    extra = torch.tensor([[-6., -5., -1., -2.],      # wholly outside (above-left)
                          [20., 15., 30., 26.],      # partly outside (below-right)
                          [3.2, 4.1, 3.6, 4.3],      # under a pixel
                          [0., 0., 22., 18.]])       # the whole map
    boxes = torch.cat([boxes, extra])
    idx = (torch.arange(len(boxes)) % 2).float()[:, None]
    return torch.cat([idx, boxes], 1)


def grad_output_for(shape):
    """A fixed, reproducible upstream gradient (not stored in the fixture)."""
    n = 1
    for s in shape:
        n *= s
    return torch.sin(torch.arange(n, dtype=torch.float32) * 0.7).reshape(shape)


def nms_case(g, n=80):
    xy1 = torch.rand(n, 2, generator=g) * 40
    wh = torch.rand(n, 2, generator=g) * 20 + 1
    boxes = torch.cat([xy1, xy1 + wh], 1)
    boxes[::9] = boxes[1::9][:len(boxes[::9])]               # exact duplicates
    boxes[5::13, 2] = boxes[5::13, 0]                        # zero width (degenerate)
    boxes[7::17, 3] = boxes[7::17, 1] - 1                    # negative height (degenerate)
    scores = (torch.rand(n, generator=g) * 10).round() / 10  # many ties
    return boxes, scores


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=osp.join(ROOT, 'tests', 'fixtures', 'mmcv_ops.pt'))
    args = ap.parse_args()
    import mmcv
    from mmcv.ops import batched_nms, nms, roi_align
    from mmcv.utils import ext_loader
    ext = ext_loader.load_ext('_ext', ['nms'])
    assert osp.splitext(ext.__file__)[1] == '.so', f'needs compiled mmcv ops, got {ext.__file__}'

    g = torch.Generator().manual_seed(0)
    fx = {'meta': {'mmcv': str(mmcv.__version__), 'torch': str(torch.__version__)}}
    feats = torch.randn(2, 2, 9, 11, generator=g)
    rois = rois_case(g)
    fx['roi_align'] = {'input': feats, 'rois': rois, 'cases': []}
    for scale in (1.0, 0.5):
        for out in ((5, 5), (2, 3)):
            for sr in (0, 2):
                for aligned in (True, False):
                    x = feats.clone().requires_grad_()
                    y = roi_align(x, rois, out, scale, sr, 'avg', aligned)
                    gy = grad_output_for(y.shape)
                    y.backward(gy)
                    fx['roi_align']['cases'].append(dict(
                        spatial_scale=scale, output_size=list(out), sampling_ratio=sr, aligned=aligned,
                        output=y.detach(), grad_input=x.grad))
    # what mmcv's compiled CPU kernel does with a channels-last input (it reads raw NCHW memory)
    cl = feats.contiguous(memory_format=torch.channels_last)
    wrong = roi_align(cl, rois, (7, 7), 0.5, 0, 'avg', True)
    right = roi_align(feats, rois, (7, 7), 0.5, 0, 'avg', True)
    print(f'mmcv compiled roi_align, channels-last input: max |diff| to contiguous {float((wrong - right).abs().max()):.3f}')

    boxes, scores = nms_case(g)
    fx['nms'] = {'boxes': boxes, 'scores': scores, 'cases': []}
    for offset in (0, 1):
        for iou in (0.3, 0.5, 0.7):
            dets, keep = nms(boxes, scores, iou, offset=offset)
            fx['nms']['cases'].append(dict(iou_threshold=iou, offset=offset, keep=keep, dets=dets))
    dets, keep = nms(boxes, scores, 0.5, score_threshold=0.35, max_num=7)
    fx['nms']['cases'].append(dict(iou_threshold=0.5, offset=0, score_threshold=0.35, max_num=7,
                                   keep=keep, dets=dets))
    idxs = torch.randint(0, 4, (len(boxes),), generator=g)
    fx['batched_nms'] = {'idxs': idxs, 'cases': []}
    for cfg in (dict(iou_threshold=0.5), dict(iou_threshold=0.5, class_agnostic=True),
                dict(iou_threshold=0.6, split_thr=10), dict(iou_threshold=0.6, split_thr=10, max_num=9)):
        dets, keep = batched_nms(boxes, scores, idxs, dict(cfg))
        fx['batched_nms']['cases'].append(dict(nms_cfg=cfg, keep=keep, dets=dets))
    torch.save(fx, args.out)
    print(f'wrote {args.out} ({osp.getsize(args.out) / 1024:.0f} KiB) with mmcv {mmcv.__version__}')


if __name__ == '__main__':
    main()
