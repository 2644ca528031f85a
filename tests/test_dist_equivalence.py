"""Distributed equivalence on CPU: 2 gloo processes with 1 image each compute the same gradients, and after a
few optimizer steps the same weights, as 1 process with the 2 images in one batch.

Models: the real configs ``seg/conv2former_n_upernet.py`` (UperNet + FCN auxiliary head, SyncBN in both
heads) and ``det/conv2former_n_maskrcnn.py`` (Mask R-CNN + FPN), with a tiny Conv2Former (1 block per stage,
widths 16..128), thin heads and tiny images so each run takes seconds. The optimizer is the configs' own
(AdamW + layer-wise lr decay, fp32 on CPU). The distributed side is what tools/train.py builds on CPU:
``adapt_to_cpu(cfg, 'pytorch')`` (SyncBN -> :class:`glue.sync_bn.CPUSyncBatchNorm`) and mmengine's
``MMDistributedDataParallel`` over gloo on 127.0.0.1; the reference is the same config with
``adapt_to_cpu(cfg, 'none')`` (SyncBN -> BN) and no process group.

What makes the two sides equal, and what was set for it (see also docs/distributed.md):

* Batch-coupled layers: the heads' SyncBN statistics span both ranks (CPUSyncBatchNorm, gradients included);
  the backbone's BatchNorm (Conv2Former stem) is in eval mode (``norm_eval=True`` in the shipped configs).
* Loss normalisers: DDP averages the ranks' gradients, i.e. it optimises the mean of per-rank losses; the
  one-process loss is equal to it only where each term is normalised by a count that is the same for every
  image. UperNet: cross-entropy averaged over all pixels (``avg_non_ignore=False``, mmseg's default) of
  equal-size images -- equal. Mask R-CNN: RPN cls/bbox are averaged over the sampled anchors (256 per image,
  always filled by negatives), RoI cls/bbox over the sampled RoIs (``num`` per image, filled by negatives) --
  equal; the mask loss is averaged over the positive RoIs of the batch, whose number varies per image, so it
  is equal only when every image has the same number of positives. The test keeps the RoI sampler's
  ``pos_fraction`` (0.25) with ``num=8``: 2 positives per image, always available because the ground-truth
  boxes are added as proposals (3 per image). With mmdet's 512 RoIs per image the mask term weighs each
  image by its positive count in one process and equally across ranks (a real, documented difference).
* Random draws: dropout (the UperNet heads' ``dropout_ratio=0.1``) and drop path draw different masks for a
  batch of 2 than for 2 batches of 1, so they are off here. mmdet's RandomSampler draws from the global RNG
  in the order the images are visited; the test's sampler (:func:`_register_sampler`) seeds each draw from the
  image's ground truth, so image i samples the same anchors and RoIs in both set-ups.

* Parameters whose exact gradient is 0: the biases of the backbone's output norms that feed a 1x1 conv + BN
  (a constant per channel, which the BN removes; ``FROZEN`` below). Their computed gradients are rounding
  noise, different in the two runs, and AdamW, which divides each entry by its own gradient's magnitude,
  would move them by ~lr per step in directions the noise decides: a 1e-4 perturbation of the model that
  differs between the runs, after which the runs part (measured, with the backbone's GEMMs through oneDNN,
  which only rounds differently: with them free, Mask R-CNN's weights differed by 2.9e-4 (L2) after one step,
  its loss_cls by 2.7e-4 at the third step and the update check failed at 19x its tolerance; held, 4.5e-6,
  4e-8 and 0.03x). Both runs hold them (their gradient is zeroed before each step); the test checks that
  their gradient is noise.
* What no setting removes: a ReLU whose input is within rounding of 0 in one run and not in the other passes
  or blocks that one element's gradient, about 1 % of a head tensor's gradient (and of what flows back into
  the backbone). The shipped code does not hit one with these images, but any change that only rounds
  differently rolls the dice again (measured: with ``set_fused_cpu_training(False)`` one of the mask head's
  25,088 ``convs.1`` activations changes sign between the runs, and the first-step check fails at 70x its
  tolerance, 1 % in ``mask_head.convs.1`` and the backbone). Before reading such a failure as a distribution
  bug, compare the ReLU inputs' signs of the two runs.

Tolerances: float32 rounding only (different summation orders in batched vs single-image convolutions, in
the all-reduce, and in BN statistics); see GRAD_RTOL / GRAD_ATOL, UPDATE_RTOL and BUFFER_RTOL below.
"""
import datetime
import os.path as osp
import socket
import time

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
STEPS = 3  # optimizer steps (the first one's gradients are compared, then the weights after all of them)
TIMEOUT = 240  # seconds for a whole spawn (3 processes on 2 cores, torch + mmdet imports included)

TINY = dict(_delete_=True, depths=[1, 1, 1, 1], dims=[16, 32, 64, 128], kernel_size=7, layer_scale_init=1.0)
BACKBONE = {'model.backbone.arch': TINY, 'model.backbone.drop_path_rate': 0.0, 'model.backbone.init_cfg': None}
CASES = {
    'upernet': dict(
        config='configs/seg/conv2former_n_upernet.py',
        options={**BACKBONE,
                 'model.data_preprocessor.size': (64, 64),
                 'model.decode_head.in_channels': [16, 32, 64, 128],
                 'model.decode_head.channels': 32,
                 'model.decode_head.num_classes': 4,
                 'model.decode_head.dropout_ratio': 0.0,
                 'model.auxiliary_head.in_channels': 64,
                 'model.auxiliary_head.channels': 16,
                 'model.auxiliary_head.num_classes': 4,
                 'model.auxiliary_head.dropout_ratio': 0.0}),
    'maskrcnn': dict(
        config='configs/det/conv2former_n_maskrcnn.py',
        options={**BACKBONE,
                 'model.neck.in_channels': [16, 32, 64, 128],
                 'model.neck.out_channels': 32,
                 'model.rpn_head.in_channels': 32,
                 'model.rpn_head.feat_channels': 32,
                 'model.roi_head.bbox_roi_extractor.out_channels': 32,
                 'model.roi_head.bbox_head.in_channels': 32,
                 'model.roi_head.bbox_head.fc_out_channels': 64,
                 'model.roi_head.bbox_head.num_classes': 3,
                 'model.roi_head.mask_roi_extractor.out_channels': 32,
                 'model.roi_head.mask_head.in_channels': 32,
                 'model.roi_head.mask_head.conv_out_channels': 32,
                 'model.roi_head.mask_head.num_classes': 3,
                 # SyncBN in the FPN and the mask head too (as mmdet's SyncBN Mask R-CNN variants): batch
                 # statistics over RoIs, whose number differs between the ranks
                 'model.neck.norm_cfg': dict(type='SyncBN', requires_grad=True),
                 'model.roi_head.mask_head.norm_cfg': dict(type='SyncBN', requires_grad=True),
                 'model.train_cfg.rpn.sampler.type': 'PerImageSampler',
                 'model.train_cfg.rcnn.sampler.type': 'PerImageSampler',
                 'model.train_cfg.rcnn.sampler.num': 8}),
}
# Parameters whose exact gradient is 0 (see the module docstring), held in both runs
FROZEN = {'upernet': [f'backbone.out_norms.{i}.bias' for i in (0, 1)],
          'maskrcnn': [f'backbone.out_norms.{i}.bias' for i in range(4)]}


# ------------------------------------------------------------------------------------------- set-up
def _register_sampler():
    """``PerImageSampler``: mmdet's RandomSampler whose draws depend only on the image (seeded from its
    ground-truth boxes), not on how many images the process visited before it."""
    from mmdet.models.task_modules.samplers import RandomSampler
    from mmdet.registry import TASK_UTILS

    class PerImageSampler(RandomSampler):
        def sample(self, assign_result, pred_instances, gt_instances, **kwargs):
            boxes = gt_instances.bboxes.double().flatten()
            seed = int((boxes * torch.arange(1, boxes.numel() + 1, dtype=torch.float64)).sum().item() * 997)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed % 2 ** 31)
                return super().sample(assign_result, pred_instances, gt_instances, **kwargs)

    TASK_UTILS.register_module(name='PerImageSampler', module=PerImageSampler, force=True)


def _batch(case):
    """Two different seeded images of equal size with their annotations (mmseg / mmdet data samples)."""
    g = torch.Generator().manual_seed(0)
    if case == 'upernet':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        h = w = 64
        inputs, samples = [], []
        for _ in range(2):
            seg = torch.randint(0, 4, (1, h // 8, w // 8), generator=g)
            seg = seg.repeat_interleave(8, 1).repeat_interleave(8, 2)
            seg[:, :4] = 255  # some ignored pixels
            s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
            s.gt_sem_seg = PixelData(data=seg)
            inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
            samples.append(s)
        return dict(inputs=inputs, data_samples=samples)
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    h = w = 128
    all_boxes = [[[8, 10, 60, 70], [70, 20, 120, 90], [30, 80, 90, 124]],
                 [[5, 5, 50, 40], [56, 40, 124, 110], [10, 60, 48, 120]]]
    inputs, samples = [], []
    for i, boxes in enumerate(all_boxes):
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                        scale_factor=(1., 1.)))
        inst = InstanceData()
        inst.bboxes = torch.tensor(boxes, dtype=torch.float32)
        inst.labels = torch.tensor([i % 3, (i + 1) % 3, (i + 2) % 3])
        masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
        img = torch.randint(0, 64, (3, h, w), generator=g, dtype=torch.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
            cy, cx, ry, rx = (y1 + y2) / 2, (x1 + x2) / 2, (y2 - y1) / 2, (x2 - x1) / 2
            masks[k] = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).to(torch.uint8)  # ellipses
            img[k, masks[k].bool()] += 150
        inst.masks = BitmapMasks(masks.numpy(), h, w)
        s.gt_instances = inst
        inputs.append(img)
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def _build(case, launcher):
    """The real config, shrunk, with tools/train.py's CPU adaptation for ``launcher``; seeded init."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope

    from glue.runtime import adapt_to_cpu, load_config

    cfg = load_config(osp.join(ROOT, CASES[case]['config']), cfg_options=CASES[case]['options'])
    adapt_to_cpu(cfg, launcher)
    if case == 'maskrcnn':
        _register_sampler()
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    DefaultScope.get_instance(f'equivalence-{case}-{launcher}', scope_name=cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    return cfg, model, build_optim_wrapper(model, cfg.optim_wrapper)


def _syncbn_inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64) * 3 + 1
    w = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64)
    return x, w


def _syncbn_rank(rank, out_dir):
    """CPUSyncBatchNorm on this rank's sample of a float64 batch of 2 (compared with BatchNorm2d on the whole
    batch by the test): outputs, input and weight gradients, running statistics."""
    from glue.sync_bn import CPUSyncBatchNorm
    torch.manual_seed(1)
    bn = CPUSyncBatchNorm(4).double()
    bn.weight.data.uniform_()
    bn.bias.data.uniform_()
    x, w = _syncbn_inputs()
    x = x[rank:rank + 1].clone().requires_grad_()
    for _ in range(2):  # two steps: running statistics with momentum
        x.grad = None
        bn.zero_grad()
        y = bn(x)
        (y * w[rank:rank + 1]).pow(2).sum().backward()
    weight_grad = torch.cat([bn.weight.grad, bn.bias.grad])
    torch.distributed.all_reduce(weight_grad)  # what DDP does (up to its 1/world factor)
    torch.save(dict(y=y.detach(), x_grad=x.grad, weight_grad=weight_grad, state=bn.state_dict()),
               osp.join(out_dir, f'syncbn_{rank}.pth'))


def _run_case(rank, case, world, out_dir):
    from mmengine.model import MMDistributedDataParallel

    cfg, model, optim_wrapper = _build(case, 'pytorch' if world > 1 else 'none')
    init = {k: v.clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    frozen = [params[n] for n in FROZEN[case]]

    def hold(optimizer, args, kwargs):  # before every step: AdamW leaves an entry with a zero gradient alone
        for p in frozen:
            p.grad.zero_()

    optim_wrapper.optimizer.register_step_pre_hook(hold)
    wrapped = model
    if world > 1:
        wrapped = MMDistributedDataParallel(module=model, device_ids=None, broadcast_buffers=False,
                                            find_unused_parameters=False)

    def data():  # fresh each step (the preprocessors write into the data samples)
        batch = _batch(case)
        if world > 1:
            batch = {k: v[rank:rank + 1] for k, v in batch.items()}
        return batch

    # step 1 by hand, to keep the gradients; then mmengine's train_step (what the Runner calls)
    with optim_wrapper.optim_context(wrapped):
        losses = wrapped(**model.data_preprocessor(data(), True), mode='loss')
    loss, log_vars = model.parse_losses(losses)
    optim_wrapper.backward(loss)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    optim_wrapper.step()
    optim_wrapper.zero_grad()
    for _ in range(STEPS - 1):
        wrapped.train_step(data(), optim_wrapper)
    norms = sorted({type(m).__name__ for m in model.modules() if 'BatchNorm' in type(m).__name__})
    torch.save(dict(init=init, grads=grads, losses={k: float(v) for k, v in log_vars.items()},
                    state={k: v.detach().clone() for k, v in model.state_dict().items()}, norms=norms),
               osp.join(out_dir, f'{case}_{world}_{rank}.pth'))


def _worker(rank, world, port, out_dir):
    """One process: rank ``rank`` of ``world`` (1: the one-process reference with both images)."""
    import warnings

    warnings.simplefilter('ignore')
    torch.set_num_threads(1)
    if world > 1:
        torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                                             world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        if world > 1:
            _syncbn_rank(rank, out_dir)
        for case in CASES:  # one spawn for everything: importing torch + mmdet + mmseg is most of the time
            _run_case(rank, case, world, out_dir)
    finally:
        if world > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def _spawn(jobs):
    """Start every (nprocs, args) job at once; wait for all, at most TIMEOUT seconds, then end them."""
    import torch.multiprocessing as mp

    contexts = [mp.start_processes(_worker, args=args, nprocs=n, join=False, start_method='spawn')
                for n, args in jobs]
    deadline = time.monotonic() + TIMEOUT
    try:
        for ctx in contexts:
            while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):
                if time.monotonic() > deadline:
                    raise TimeoutError(f'distributed equivalence run still going after {TIMEOUT} s')
    finally:
        for ctx in contexts:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                    p.join(5)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _load(out_dir, name):
    return torch.load(osp.join(out_dir, name), weights_only=True)


# ----------------------------------------------------------------------------------------- the test
# Gradients: per tensor, |g_2ranks - g_1process| <= GRAD_RTOL * max|g_1process of the tensor|
#                                                  + GRAD_ATOL * max|g_1process of the whole model|.
# Measured (float32): worst per-tensor error ~5e-6 (UperNet) and ~3.5e-6 (Mask R-CNN) of the tensor's largest
# entry. The absolute term is for tensors whose exact gradient is 0 and whose computed one is rounding noise
# (~1e-10): the biases of the backbone's output norms that feed UperNet's 1x1 conv + BN laterals (a constant
# per channel, removed by the BN), and the conv before the BN of the 1x1 pyramid-pooling branch (2 values
# per channel: its output is +-1 whatever the weights).
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-6
# Weights after STEPS AdamW steps: ||update_2ranks - update_1process|| / ||update_1process|| over the
# parameters (measured 8.6e-5 UperNet, 3.1e-5 Mask R-CNN; a wrong gradient gives O(1), e.g. 0.1 with mmdet's
# 512 RoIs per image, whose mask-loss normaliser differs). Not per entry: AdamW divides each entry by its own
# gradient's magnitude, so an entry whose gradient is near 0 by chance moves by a noise-decided fraction of
# lr. The FROZEN tensors (exact gradient 0, held in both runs) are the only ones whose two gradients may
# differ by more than 1 %.
UPDATE_RTOL = 1e-3
# BN running statistics after STEPS steps: max |difference| <= BUFFER_RTOL x the buffer's largest entry
# (measured <= 2.5e-6; 7e-5 while the FROZEN biases still moved: a BN right after a backbone output norm
# recorded their noise-driven moves in its running mean). Per-rank BN statistics would differ by tens %.
BUFFER_RTOL = 1e-4


def _grad_errors(ref, other):
    """(worst error / tolerance, worst error / the tensor's largest entry, its tensor) over the gradients."""
    gmax = max(g.abs().max().item() for g in ref.values())
    worst_tol, worst_rel, where = 0.0, 0.0, None
    for name, g in ref.items():
        err = (other[name] - g).abs().max().item()
        scale = g.abs().max().item()
        worst_tol = max(worst_tol, err / (GRAD_RTOL * scale + GRAD_ATOL * gmax))
        if scale > 1e-3 * gmax and err / scale > worst_rel:
            worst_rel, where = err / scale, name
    return worst_tol, worst_rel, where


def _update_error(ref, other):
    """||update_other - update_ref|| / ||update_ref|| over the parameters whose gradient is more than rounding
    noise (the two runs' gradients agree to 1 % of the tensor's largest entry); and the names left out."""
    num = den = 0.0
    noise = []
    for name, g in ref['grads'].items():
        if (other['grads'][name] - g).abs().max().item() > 1e-2 * g.abs().max().item():
            noise.append(name)
            continue
        step_ref = ref['state'][name] - ref['init'][name]
        step_other = other['state'][name] - other['init'][name]
        num += (step_other - step_ref).pow(2).sum().item()
        den += step_ref.pow(2).sum().item()
    return (num / den) ** 0.5, noise


@pytest.mark.slow  # ~25 s on 2 idle cores (3 processes importing torch + mmdet + mmseg)
def test_two_gloo_ranks_equal_one_process(tmp_path):
    """One spawn: the 1-process reference and the 2 gloo ranks, each running CPUSyncBatchNorm's check (ranks)
    and then UperNet and Mask R-CNN (3 AdamW steps each)."""
    out = str(tmp_path)
    start = time.monotonic()
    _spawn([(1, (1, None, out)), (2, (2, _free_port(), out))])
    elapsed = time.monotonic() - start

    # CPUSyncBatchNorm, 1 sample per rank, float64 == torch's BatchNorm2d on the batch of 2
    ranks = [_load(out, f'syncbn_{r}.pth') for r in range(2)]
    torch.manual_seed(1)
    bn = torch.nn.BatchNorm2d(4).double()
    bn.weight.data.uniform_()
    bn.bias.data.uniform_()
    x, w = _syncbn_inputs()
    x.requires_grad_()
    for _ in range(2):
        x.grad = None
        bn.zero_grad()
        y = bn(x)
        (y * w).pow(2).sum().backward()
    close = dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.cat([r['y'] for r in ranks]), y.detach(), **close)
    torch.testing.assert_close(torch.cat([r['x_grad'] for r in ranks]), x.grad, **close)
    torch.testing.assert_close(ranks[0]['weight_grad'], torch.cat([bn.weight.grad, bn.bias.grad]), **close)
    for r in ranks:
        for k, v in bn.state_dict().items():
            torch.testing.assert_close(r['state'][k], v, **close)

    report = []
    for case in CASES:
        ref, r0, r1 = (_load(out, f'{case}_{w}_{r}.pth') for w, r in ((1, 0), (2, 0), (2, 1)))
        # the same model: same initial weights; SyncBN across ranks, BN in the one-process run
        for k, v in ref['init'].items():
            assert torch.equal(v, r0['init'][k]), (case, k)
        assert 'CPUSyncBatchNorm' in r0['norms'] and 'CPUSyncBatchNorm' not in ref['norms'], r0['norms']

        # every loss term: the mean over the ranks' losses is the one-process loss of the batch
        for k, v in ref['losses'].items():
            if 'loss' in k:
                mean = (r0['losses'][k] + r1['losses'][k]) / 2
                assert mean == pytest.approx(v, rel=1e-5, abs=1e-7), (case, k, v, r0['losses'][k], r1['losses'][k])

        # gradients: DDP's average, bit-identical on both ranks, vs the one-process gradients
        assert ref['grads'].keys() == r0['grads'].keys() == r1['grads'].keys()
        for k, g in r0['grads'].items():
            assert torch.equal(g, r1['grads'][k]), (case, k)
        worst_tol, worst_rel, where = _grad_errors(ref['grads'], r0['grads'])
        assert worst_tol <= 1.0, (case, worst_tol, where)

        # weights after STEPS steps (identical on both ranks), and the BN running statistics
        for k, v in r0['state'].items():
            assert torch.equal(v, r1['state'][k]), (case, k)
        update_err, noise = _update_error(ref, r0)
        assert update_err < UPDATE_RTOL, (case, update_err)
        assert set(noise) <= set(FROZEN[case]), (case, noise)  # gradient noise only where it is exactly 0
        gmax = max(g.abs().max().item() for g in ref['grads'].values())
        for name in FROZEN[case]:  # ... which is why they are held: their gradient is rounding noise
            assert ref['grads'][name].abs().max().item() <= GRAD_ATOL * gmax, (case, name)
            assert torch.equal(ref['state'][name], ref['init'][name]), (case, name)
        worst_buffer = 0.0
        for k, v in ref['state'].items():
            if k not in ref['grads'] and v.is_floating_point():
                err = (r0['state'][k] - v).abs().max().item()
                assert err <= BUFFER_RTOL * v.abs().max().item(), (case, k, err)
                worst_buffer = max(worst_buffer, err / max(v.abs().max().item(), 1e-30))
        report.append(f'{case}: {len(ref["grads"])} gradient tensors, worst error {worst_rel:.1e} of the '
                      f'tensor max ({where}), {worst_tol:.2f} x tolerance; update after {STEPS} steps '
                      f'{update_err:.1e} relative (left out, gradient 0 up to rounding: {noise}, held); BN '
                      f'running statistics {worst_buffer:.1e} of their max')
    print('\n' + '\n'.join(report) + f'\n{elapsed:.0f} s')


def test_cpu_adaptation_maps_syncbn_by_launcher():
    """Without CUDA: one process gets BN, a distributed run CPUSyncBatchNorm, under BatchNorm's names
    (``bn.weight``, ``bn.running_mean`` ...: checkpoints load either way)."""
    if torch.cuda.is_available():
        pytest.skip('the CPU adaptation applies without CUDA only')
    from mmcv.cnn import build_norm_layer

    from glue.runtime import adapt_to_cpu, load_config
    from glue.sync_bn import CPUSyncBatchNorm

    path = osp.join(ROOT, CASES['upernet']['config'])
    for launcher, expected in (('none', 'BN'), ('pytorch', 'CPUSyncBN'), ('slurm', 'CPUSyncBN')):
        cfg = load_config(path)
        assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
        with pytest.warns(UserWarning, match=rf'SyncBN norm_cfg\(s\) in the model replaced by {expected} '):
            adapt_to_cpu(cfg, launcher)
        assert cfg.model.decode_head.norm_cfg.type == expected == cfg.model.auxiliary_head.norm_cfg.type
    name, layer = build_norm_layer(dict(type='CPUSyncBN', requires_grad=True), 8)
    assert name == 'bn' and type(layer) is CPUSyncBatchNorm
    assert layer.state_dict().keys() == torch.nn.BatchNorm2d(8).state_dict().keys()
    layer.eval()  # eval mode (and training without a process group): plain BatchNorm
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(layer(x), torch.nn.BatchNorm2d(8).eval()(x))
