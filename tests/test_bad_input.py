"""What every backbone family does with the inputs a real data loader (or a mistake) produces.

Property test over every family's smallest arch (conftest.smallest_archs): random batch 1-2, sides from
1 px to odd sizes such as 33x97, fp32 and CPU bf16 autocast. Each input either gives finite NCHW maps of
strides 4/8/16/32 (side between floor and ceil of input/stride, exactly ``stage_sizes``; the batch
elements independent of each other) or, below ``min_input_size()``, a ValueError stating the minimum. The
minimum is exact: one pixel less fails inside torch without the check (verified here by calling the
layers directly). Bad tensors (NaN/Inf with check_finite, integer or mismatched dtype, wrong channel
count, empty batch, wrong ndim) raise clear errors.
"""
import functools
import random

import pytest
import torch

from backbones import build_backbone, get_family
from conftest import smallest_archs

CASES = smallest_archs()
IDS = [f'{fam}-{arch}' + ('-keep' if kw else '') for fam, arch, kw in CASES]


@functools.lru_cache(maxsize=None)
def _cached(fam, arch, kw_items, extra_items):
    torch.manual_seed(0)
    return get_family(fam)(arch=arch, **dict(kw_items), **dict(extra_items)).eval()


def _build(fam, arch, kw, **extra):
    return _cached(fam, arch, tuple(sorted(kw.items())), tuple(sorted(extra.items())))


def _sizes(m, rng):
    """Below the minimum (each side; no forward), the minimum with an odd side, 33x97 and one random
    size: few forwards, the suite runs on 2 CPU cores."""
    mn = m.min_input_size()
    sizes = {(1, 1), (2, 3), (mn, mn + 1), (33, 97), (rng.randint(mn, 48), rng.randint(mn, 48))}
    if mn > 1:
        sizes |= {(mn - 1, mn), (mn, mn - 1)}
    return sorted(sizes)


def _check_outputs(m, x, outs):
    h, w = x.shape[-2:]
    assert len(outs) == len(m.out_indices)
    for i, o, c in zip(m.out_indices, outs, m.out_channels):
        s = 4 * 2 ** i
        assert o.shape[:2] == (x.shape[0], c)
        for side, got in zip((h, w), o.shape[-2:]):
            assert max(1, side // s) <= got <= -(-side // s), (i, tuple(x.shape), tuple(o.shape))
        assert list(o.shape[-2:]) == [m.stage_sizes(h)[i], m.stage_sizes(w)[i]]
        assert torch.isfinite(o).all(), (i, tuple(x.shape))
        assert o.is_contiguous()


@pytest.mark.parametrize('fam,arch,kw', CASES, ids=IDS)
def test_every_size_gives_maps_or_a_clear_error(fam, arch, kw):
    m = _build(fam, arch, kw)
    mn = m.min_input_size()
    rng = random.Random(f'{fam}{arch}{kw}')
    # the unified models with stage norms kept share the trunk: one size for them
    sizes = [(33, 97)] if kw else _sizes(m, rng)
    for h, w in sizes:
        x = torch.randn(2 if (h, w) == (33, 97) else rng.randint(1, 2), 3, h, w)
        if h < mn or w < mn:
            with pytest.raises(ValueError, match=f'at least {mn}x{mn} pixels'):
                m(x)
            continue
        with torch.no_grad():
            ref = m(x)
        _check_outputs(m, x, ref)
        if (h, w) != (33, 97):
            continue
        # CPU bf16 autocast: the same maps to bf16 precision
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            outs = m(x)
        _check_outputs(m, x, outs)
        for o, r in zip(outs, ref):
            cos = torch.nn.functional.cosine_similarity(o.float().flatten(), r.flatten(), dim=0)
            assert cos > 0.98, (h, w, float(cos))
        # the batch elements do not influence each other (padding / windows / attention at odd sizes)
        with torch.no_grad():
            alone = m(x[1:])
        for o, r in zip(alone, ref):
            torch.testing.assert_close(o[0], r[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('fam,arch,kw', [c for c in CASES if not c[2]], ids=[i for i, c in zip(IDS, CASES) if not c[2]])
def test_minimum_size_is_exact(fam, arch, kw):
    """One pixel below the minimum, the layers themselves fail (the check only names the limit early);
    at the minimum they run (the property test above)."""
    m = _build(fam, arch, kw)
    mn = m.min_input_size()
    if mn == 1:
        return
    x = torch.randn(1, 3, mn - 1, mn - 1)
    with torch.no_grad(), pytest.raises(RuntimeError):
        for i in range(4):
            x = m.forward_stage(i, m.downsample_layers[i](x))


@pytest.mark.parametrize('name,amp', [('identityformer_s12', False), ('poolformerv2_s12', True)])
def test_full_size_odd_image(name, amp):
    """A real detection size (801x1333, both odd) on two of the cheapest backbones."""
    m = build_backbone(name).eval()
    x = torch.randn(1, 3, 801, 1333)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
        outs = m(x)
    _check_outputs(m, x, outs)
    # by hand: stem conv 7 / stride 4 / pad 2 -> (n - 3) // 4 + 1; downsamplers 3 / 2 / 1 -> (n - 1) // 2 + 1
    assert [tuple(o.shape[-2:]) for o in outs] == [(200, 333), (100, 167), (50, 84), (25, 42)]


TINY = dict(depths=[1, 1, 1, 1], dims=[8, 16, 24, 32])


@pytest.fixture(scope='module')
def tiny():
    return build_backbone('Conv2Former', arch=TINY).eval()


def test_minimum_depends_on_the_last_stage_computed():
    """Stages after the last of out_indices are not computed, so they set no minimum."""
    mins = [build_backbone('Conv2Former', arch=TINY, out_indices=(i,)).min_input_size() for i in range(4)]
    assert mins == [3, 7, 15, 31]
    m = build_backbone('Conv2Former', arch=TINY, out_indices=(0,)).eval()
    assert m(torch.randn(1, 3, 3, 5))[0].shape[-2:] == (1, 1)


@pytest.mark.parametrize('x,error,match', [
    (torch.zeros(3, 64, 64), ValueError, r'NCHW batch with 3 channels, got shape \(3, 64, 64\)'),
    (torch.zeros(1, 1, 3, 64, 64), ValueError, 'NCHW batch'),
    (torch.zeros(1, 4, 64, 64), ValueError, r'3 channels, got shape \(1, 4, 64, 64\)'),
    (torch.zeros(1, 1, 64, 64), ValueError, '3 channels'),
    (torch.zeros(0, 3, 64, 64), ValueError, 'empty batch'),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError, 'floating-point input, got torch.uint8'),
    (torch.zeros(1, 3, 64, 64, dtype=torch.float64), TypeError, 'torch.float32 parameters but got a torch.float64'),
    (torch.zeros(1, 3, 30, 640), ValueError, r'at least 31x31 pixels .* got 30x640'),
    ([[0.0]], TypeError, 'expects a torch.Tensor'),
])
def test_bad_tensors_raise_clear_errors(tiny, x, error, match):
    with pytest.raises(error, match=match):
        tiny(x)


def test_non_finite_input(tiny):
    x = torch.randn(2, 3, 64, 64)
    x[1, 0, 5, 7] = float('nan')
    x[0, 2, 1, 1] = float('inf')
    checked = build_backbone('Conv2Former', arch=TINY, check_finite=True).eval()
    with pytest.raises(ValueError, match='2 NaN/Inf values'):
        checked(x)
    checked(torch.randn(1, 3, 64, 64))  # finite input: no effect
    with torch.no_grad():  # off by default: NaN propagates to the maps (no silent repair)
        outs = tiny(x)
    assert not torch.isfinite(outs[0][1]).all()


def test_mismatched_dtype_is_fine_under_autocast(tiny):
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = tiny(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16))
    assert all(torch.isfinite(o.float()).all() for o in outs)
