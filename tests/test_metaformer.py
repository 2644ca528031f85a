"""MetaFormer baselines: sizes and parameter counts, checkpoint layouts, RandFormer at any size, zero padding and
the (H, W, C) norms, layer positions (the shared contract, every family: test_backbone_contract.py)."""
import pytest
import torch
import torch.nn.functional as F

from backbones import (CAFormer, CheckpointError, CheckpointMismatchError, ConvFormer, IdentityFormer,
                       PoolFormerV2, RandFormer, build_backbone, families, list_backbones, load_pretrained)
from backbones.metaformer import RandomMixing, resample_token_mixing

# counted on the official code (official classifier minus head; RandFormer's frozen
# random matrices included)
BACKBONE_PARAMS = {
    'identityformer': dict(s12=11_377_688, s24=20_827_440, s36=30_277_192, m36=55_306_632, m48=72_575_520),
    'poolformerv2': dict(s12=11_377_688, s24=20_827_440, s36=30_277_192, m36=55_306_632, m48=72_575_520),
    'randformer': dict(s12=11_612_986, s24=21_298_036, s36=30_983_086, m36=56_012_526, m48=73_516_712),
    'convformer': dict(s18=23_669_704, s36=36_907_408, m36=53_411_472, b36=94_439_568),
    'caformer': dict(s18=23_236_912, s36=36_192_358, m36=52_564_710, b36=93_310_566),
}
FROZEN = dict(s12=235_298, s24=470_596, s36=705_894, m36=705_894, m48=941_192)
CLASSES = {'identityformer': IdentityFormer, 'randformer': RandFormer, 'poolformerv2': PoolFormerV2,
           'convformer': ConvFormer, 'caformer': CAFormer}
TINY = dict(depths=[1, 1, 2, 1], dims=[16, 24, 64, 96])


def meta(name, **kw):
    with torch.device('meta'):
        return build_backbone(name, **kw)


@pytest.mark.parametrize('family', list(BACKBONE_PARAMS))
def test_param_counts_equal_reference_table(family):
    assert list(CLASSES[family].arch_settings) == list(BACKBONE_PARAMS[family])
    for arch, n in BACKBONE_PARAMS[family].items():
        m = meta(f'{family}_{arch}', out_norm=False)
        assert sum(p.numel() for p in m.parameters()) == n, arch
        frozen = sum(p.numel() for p in m.parameters() if not p.requires_grad)
        assert frozen == (FROZEN[arch] if family == 'randformer' else 0), arch
        m = meta(f'{family}_{arch}')
        assert sum(p.numel() for p in m.parameters()) - n == 2 * sum(m.dims)  # + one LayerNorm2d per map


def test_table_and_names():
    names = list_backbones()
    for family, sizes in BACKBONE_PARAMS.items():
        assert all(f'{family}_{s}' in names for s in sizes)
    fams = families()
    for cls in CLASSES.values():
        assert fams[cls.__name__] is cls
    assert 'MetaFormer' not in fams  # the shared trunk is not a family
    assert meta('CAFormer').arch_name == 's18' and meta('PoolFormerV2').arch_name == 's12'
    assert meta('caformer', arch='caformer_m36').dims == [96, 192, 384, 576]
    with pytest.raises(ValueError, match='valid: s18, s36, m36, b36'):
        ConvFormer(arch='s12')


def test_key_layout_is_official():
    keys = set(meta('caformer_s18', out_norm=False).state_dict())
    for k in ('downsample_layers.0.conv.weight', 'downsample_layers.0.conv.bias',
              'downsample_layers.0.post_norm.weight', 'downsample_layers.1.pre_norm.weight', 'downsample_layers.3.conv.weight',
              'stages.0.0.norm1.weight', 'stages.0.0.token_mixer.pwconv1.weight', 'stages.0.0.token_mixer.act1.scale',
              'stages.0.0.token_mixer.act1.bias', 'stages.0.0.token_mixer.dwconv.weight',
              'stages.0.0.token_mixer.pwconv2.weight', 'stages.0.0.mlp.fc1.weight', 'stages.0.0.mlp.act.scale',
              'stages.0.0.mlp.act.bias', 'stages.0.0.mlp.fc2.weight', 'stages.2.0.token_mixer.qkv.weight',
              'stages.2.0.token_mixer.proj.weight', 'stages.2.8.res_scale1.scale', 'stages.3.2.res_scale2.scale'):
        assert k in keys, k
    assert not any('res_scale' in k for k in keys if k.startswith(('stages.0.', 'stages.1.')))
    assert not any('layer_scale' in k for k in keys)
    biases = {k for k in keys if k.endswith('.bias')}  # only StarReLU offsets and the stem/downsample convs
    assert all(k.endswith(('.act.bias', '.act1.bias')) or k.startswith('downsample_layers.') for k in biases)
    rkeys = set(meta('randformer_s12', out_norm=False).state_dict())
    assert 'stages.2.5.token_mixer.random_matrix' in rkeys and 'stages.3.1.token_mixer.random_matrix' in rkeys
    m = meta('randformer_s12')
    assert m.stages[2][0].token_mixer.random_matrix.shape == (196, 196)
    assert m.stages[3][0].token_mixer.random_matrix.shape == (49, 49)


@pytest.mark.parametrize('family', list(CLASSES))
def test_strides_channels_and_ceil_at_odd_sizes(family):
    torch.manual_seed(0)
    m = CLASSES[family](arch=TINY).eval()
    for size in [(224, 224), (333, 517), (97, 131)]:
        with torch.no_grad():
            outs = m(torch.randn(1, 3, *size))
        h, w = (size[0] - 3) // 4 + 1, (size[1] - 3) // 4 + 1  # stem: conv 7x7 s4 p2
        for i, o in enumerate(outs):
            assert o.shape == (1, TINY['dims'][i], h, w)
            assert torch.isfinite(o).all()
            h, w = (h + 1) // 2, (w + 1) // 2  # conv 3x3 s2 p1 rounds up
    assert m.out_channels == TINY['dims'] and m.out_strides == [4, 8, 16, 32]


def test_kwargs_and_arch_dict_switches():
    m = CAFormer(arch=TINY, attn_impl='explicit')
    assert {a.token_mixer.impl for a in m.stages[2]} == {'explicit'} and m.arch['attn_impl'] == 'explicit'
    m = CAFormer(arch=dict(TINY, attn_impl='explicit'))
    assert m.stages[3][0].token_mixer.impl == 'explicit'
    m.set_option('attn_impl', 'sdpa')  # what set_attn_impl does
    assert m.stages[3][0].token_mixer.impl == 'sdpa' and m.arch['attn_impl'] == 'sdpa'
    with pytest.raises(ValueError, match='cannot switch .norm.* switchable: attn_impl, rand_resample'):
        m.set_option('norm', 'hwc')
    with pytest.raises(ValueError, match="attn_impl must be one of 'sdpa', 'explicit'"):
        CAFormer(arch=TINY, attn_impl='flash')
    with pytest.raises(ValueError, match='IdentityFormer.*has none'):
        IdentityFormer(arch=TINY, attn_impl='explicit')
    with pytest.raises(ValueError, match='rand_resample'):
        RandFormer(arch=TINY, rand_resample='bicubic')
    with pytest.raises(ValueError, match='has none'):
        ConvFormer(arch=TINY, rand_resample='nearest')
    assert RandFormer(arch=TINY, rand_resample='nearest').stages[2][0].token_mixer.resample == 'nearest'
    # every mixer in one custom arch
    m = ConvFormer(arch=dict(TINY, token_mixers=['pool', 'identity', 'attention', 'random'], norm='hwc'))
    with torch.no_grad():
        assert len(m.eval()(torch.randn(1, 3, 64, 96))) == 4
    with pytest.raises(ValueError, match='token_mixers entry'):
        ConvFormer(arch=dict(TINY, token_mixers=['conv'] * 4))


# ---------------------------------------------------------------------------------------------- checkpoints
def test_22k_mlp_head_dropped_and_mismatches_named(tmp_path):
    torch.manual_seed(0)
    m = CAFormer(arch=TINY, out_norm=False)
    sd = dict(m.state_dict())
    sd.update({'norm.weight': torch.ones(96), 'norm.bias': torch.zeros(96), 'head.fc1.weight': torch.zeros(384, 96),
               'head.fc1.bias': torch.zeros(384), 'head.norm.weight': torch.ones(384),
               'head.norm.bias': torch.zeros(384), 'head.fc2.weight': torch.zeros(21841, 384),
               'head.fc2.bias': torch.zeros(21841)})
    torch.save(sd, tmp_path / 'caformer_in21k.pth')  # released files are plain state dicts
    m2 = CAFormer(arch=TINY)
    report = load_pretrained(m2, str(tmp_path / 'caformer_in21k.pth'))
    assert report.layout == 'official' and len(report.dropped_classifier) == 8
    for k, v in m.state_dict().items():
        assert torch.equal(m2.state_dict()[k], v), k
    with pytest.raises(CheckpointMismatchError, match='token_mixer.qkv'):  # CAFormer weights into ConvFormer
        load_pretrained(ConvFormer(arch=TINY), str(tmp_path / 'caformer_in21k.pth'))
    with torch.device('meta'):
        s36 = meta('convformer_s36', out_norm=False).state_dict()
        with pytest.raises(CheckpointMismatchError, match="matches arch='s36'"):
            load_pretrained(ConvFormer(arch='s18'), {k: torch.empty_like(v, device='cpu') for k, v in s36.items()})


def test_timm_layout_converted():
    """timm keys (stem/downsample/blocks, 1x1 convs in NCHW stages, Linear in attention stages) -> official."""
    timm = pytest.importorskip('timm')
    with torch.device('meta'):
        tsd = timm.create_model('caformer_s18').state_dict()
        ours = meta('caformer_s18', out_norm=False).state_dict()
    conv, layout = CAFormer.convert_checkpoint(tsd)
    assert layout == 'timm'
    head = {k for k in conv if k.startswith(('head.', 'norm.'))}
    assert head == {'norm.weight', 'norm.bias', 'head.fc1.weight', 'head.fc1.bias', 'head.norm.weight',
                    'head.norm.bias', 'head.fc2.weight', 'head.fc2.bias'}
    assert set(conv) - head == set(ours)
    for k, v in ours.items():
        assert conv[k].shape == v.shape, k
    assert tsd['stages.0.blocks.0.mlp.fc1.weight'].shape == (256, 64, 1, 1)  # NCHW stage: 1x1 conv
    assert tsd['stages.2.blocks.0.mlp.fc1.weight'].shape == (1280, 320)  # attention stage: Linear
    assert CAFormer.convert_checkpoint(ours)[1] == 'official'


def test_poolformer_v1_refused_with_explanation():
    timm = pytest.importorskip('timm')
    with torch.device('meta'):
        v1 = timm.create_model('poolformer_s12').state_dict()
    with pytest.raises(CheckpointError, match='PoolFormer \\(v1\\)'):
        PoolFormerV2.convert_checkpoint(v1)
    with pytest.raises(CheckpointError, match='PoolFormer \\(v1\\)'):
        PoolFormerV2.convert_checkpoint({'network.0.0.norm1.weight': torch.ones(64)})


# ---------------------------------------------------------------------------------------------- RandFormer
def _matrix(n=196, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(n, n, generator=g), dim=-1)


def test_resample_identity_at_native_size():
    m = _matrix()
    assert resample_token_mixing(m, (14, 14), (14, 14)) is m
    mix = RandomMixing(196)
    assert mix.matrix_for(14, 14) is mix.random_matrix


@pytest.mark.parametrize('mode', ['bilinear', 'nearest'])
@pytest.mark.parametrize('dst', [(21, 33), (10, 12), (7, 7), (5, 40)])
def test_resampled_rows_are_convex_combinations(mode, dst):
    m = resample_token_mixing(_matrix(), (14, 14), dst, mode)
    n = dst[0] * dst[1]
    assert m.shape == (n, n) and torch.isfinite(m).all() and (m >= 0).all()
    torch.testing.assert_close(m.sum(-1), torch.ones(n), atol=1e-5, rtol=0)
    mix = RandomMixing(196, resample=mode)
    x = torch.full((2, *dst, 8), 3.25)  # a constant map stays constant
    torch.testing.assert_close(mix(x), x, atol=1e-5, rtol=0)


def test_nearest_integer_upscale_repeats_rows():
    m = _matrix(49)
    r = resample_token_mixing(m, (7, 7), (14, 14), 'nearest').reshape(14, 14, 14, 14)
    ref = m.reshape(7, 7, 7, 7).repeat_interleave(2, 0).repeat_interleave(2, 1)
    ref = ref.repeat_interleave(2, 2).repeat_interleave(2, 3) / 4  # each key split into 4, row renormalised
    torch.testing.assert_close(r, ref, atol=1e-7, rtol=1e-5)


def test_resampling_keeps_where_tokens_look():
    """A translation-invariant kernel (Gaussian of the query-key offset) stays one after resampling, with its
    width scaled to the new grid: tokens keep looking at the same image region, in image coordinates."""
    h0, sigma = 14, 1.5
    ys, xs = torch.meshgrid(torch.arange(h0), torch.arange(h0), indexing='ij')
    pos = torch.stack([ys.flatten(), xs.flatten()], -1).double()
    k = torch.exp(-((pos[:, None] - pos[None]) ** 2).sum(-1) / (2 * sigma ** 2))
    m = (k / k.sum(-1, keepdim=True)).float()
    H, W = 28, 42
    r = resample_token_mixing(m, (h0, h0), (H, W)).double()
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing='ij')
    npos = torch.stack([(ys.flatten() + 0.5) / H, (xs.flatten() + 0.5) / W], -1).double()  # image coords
    com = r @ npos  # centre of mass of each row, in image coordinates
    inner = ((npos > 0.25) & (npos < 0.75)).all(-1)
    assert (com[inner] - npos[inner]).abs().max() < 0.01
    # shift invariance in the interior: moving the query by one source token (2 new rows) moves its row by the
    # same amount; by one new row, nearly so (bilinear phases alternate)
    rr = r.reshape(H, W, H, W)
    a = rr[10, 20, 6:20, 10:30]
    assert (a - rr[12, 20, 8:22, 10:30]).abs().max() < 1e-3 * a.max()
    assert (a - rr[11, 20, 7:21, 10:30]).abs().max() < 0.05 * a.max()


def test_random_mixing_cache_follows_the_matrix():
    mix = RandomMixing(49, cache_size=2)
    a = mix.matrix_for(9, 11)
    assert mix.matrix_for(9, 11) is a  # cached
    mix.matrix_for(5, 5), mix.matrix_for(3, 4)
    assert len(mix._cache) == 2 and mix.matrix_for(9, 11) is not a  # least recently used dropped
    mix.load_state_dict({'random_matrix': _matrix(49, seed=3)})  # in-place copy: cache invalidated
    b = mix.matrix_for(9, 11)
    torch.testing.assert_close(b, resample_token_mixing(_matrix(49, seed=3), (7, 7), (9, 11)))
    assert not torch.allclose(a, b)


def test_randformer_any_size_and_detection_scale_matrix():
    torch.manual_seed(0)
    m = RandFormer(arch=TINY).eval()
    with torch.no_grad():
        for size in [(256, 320), (200, 136)]:
            outs = m(torch.randn(1, 3, *size))
            assert all(torch.isfinite(o).all() for o in outs)
    # 1333x800 input padded to 1344x800: stage 3 is 84x50 = 4,200 tokens -> 17.6M matrix entries per block
    big = m.stages[2][0].token_mixer.matrix_for(50, 84)
    assert big.shape == (4200, 4200) and big.numel() == 17_640_000
    torch.testing.assert_close(big.sum(-1), torch.ones(4200), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- padding
def test_zero_padding_enters_hwc_norm_statistics():
    """(H, W, C) norms (IdentityFormer/RandFormer/PoolFormerV2): zero padding changes the features everywhere,
    deterministically; ConvFormer's channel norms leave regions far from the padding untouched."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 160, 224)
    xp = F.pad(x, (0, 96, 0, 64))  # what mmdet's batch padding does to the smaller image of a batch
    arch = dict(depths=[1, 1, 1, 1], dims=[16, 24, 64, 96])
    for cls, changes in ((PoolFormerV2, True), (IdentityFormer, True), (ConvFormer, False)):
        m = cls(arch=arch, out_indices=(0,)).eval()
        with torch.no_grad():
            a, a2 = m(x)[0], m(x)[0]
            p, p2 = m(xp)[0], m(xp)[0]
        assert torch.equal(a, a2) and torch.equal(p, p2)  # deterministic
        corner = (slice(None), slice(None), slice(0, 12), slice(0, 12))  # far from the padding
        diff = (a[corner] - p[corner]).abs().max().item()
        if changes:
            assert diff > 1e-3, cls.__name__
        else:
            assert diff < 1e-5, cls.__name__


# ---------------------------------------------------------------------------------------------- layer depth
def test_layer_depth_positions():
    m = meta('caformer_s36')
    assert m.param_position('downsample_layers.0.post_norm.weight') == ('stem', 0, -1)
    assert m.param_position('downsample_layers.2.pre_norm.weight') == ('downsample', 2, -1)
    assert m.param_position('stages.2.17.token_mixer.qkv.weight') == ('block', 2, 17)
    assert m.param_position('stages.3.0.res_scale1.scale') == ('block', 3, 0)
    assert m.param_position('out_norms.1.weight') == ('out_norm', 1, -1)
    assert m.num_layers('layer_wise') == 9 and m.num_layers('stage_wise') == 12
    assert meta('poolformerv2_s12').num_layers('layer_wise') == 5
    assert all(m.param_position(n)[0] != 'other' for n, _ in m.named_parameters())
    # monotone ids, heads above the backbone: every backbone in tests/test_layer_decay.py


def test_no_weight_decay_scalars_are_one_dimensional():
    m = meta('randformer_s12')
    assert m.no_weight_decay() == []
    for n, p in m.named_parameters():
        if n.endswith(('.scale', 'act.bias', 'act1.bias')) or 'norm' in n:
            assert p.ndim == 1, n  # the optimizer constructors' 1-D rule already exempts them
        elif 'random_matrix' in n:
            assert not p.requires_grad  # never reaches an optimizer
        else:
            assert p.ndim >= 2 or n.endswith('conv.bias'), n


# ------------------------------------------------------------------------- fast paths of the layers
def test_star_relu_fused_function_matches_the_formula():
    """The fused autograd function (float32 training) and the in-place inference path give the official
    formula's values and gradients; other dtypes keep the formula (and its float32 promotion)."""
    from backbones.metaformer import StarReLU, _StarReLUFunction
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True)
    scale = torch.tensor([0.8], dtype=torch.double, requires_grad=True)
    bias = torch.tensor([-0.3], dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_StarReLUFunction.apply, (x, scale, bias))
    m = StarReLU()
    with torch.no_grad():
        m.scale.fill_(0.7)
        m.bias.fill_(0.2)
    x = torch.randn(2, 6, 7, 8, requires_grad=True)
    ref = m.scale * torch.relu(x) ** 2 + m.bias
    y = m(x)
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, (x, m.scale, m.bias), g),
                    torch.autograd.grad(ref, (x, m.scale, m.bias), g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, ref)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref)
        assert m(x.bfloat16()).dtype == torch.float32  # the formula's promotion, as the official module


def test_joint_norm_equals_float64_reference_and_keeps_nhwc():
    from backbones.metaformer import JointNormNoBias
    torch.manual_seed(0)
    n = JointNormNoBias(8)
    with torch.no_grad():
        n.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 5, 7, 8) * 3 + 1
    xd = x.double()
    var, mean = torch.var_mean(xd, dim=(1, 2, 3), correction=0, keepdim=True)
    ref = (xd - mean) / torch.sqrt(var + 1e-6) * n.weight.double()
    y = n(x)
    assert y.shape == x.shape and y.is_contiguous()  # NHWC in, NHWC (contiguous) out
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)


def test_pointwise_conv_path_equals_linear():
    from backbones.metaformer import pointwise
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 24)
    x = torch.randn(2, 5, 7, 16)
    y = pointwise(x, lin)
    assert y.shape == (2, 5, 7, 24) and y.is_contiguous()
    torch.testing.assert_close(y, lin(x), rtol=1e-5, atol=1e-5)
