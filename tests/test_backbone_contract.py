"""The shared contract and its errors.

Over the registry (every family's smallest size, conftest.smallest_archs, one block per stage): frozen_stages,
norm_eval, with_cp values and gradients, out_indices (selection, later stages not computed), output norms,
contiguous NCHW maps, save -> strict load round trip. Elsewhere over the registry: odd input sizes and the
minimum size (test_bad_input.py), layer depth and its lr scales (test_layer_decay.py), ONNX export
(test_export_onnx.py). Here on Conv2Former: the name table, argument errors, strides, mmdet's layer-id rule."""
import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from backbones import Conv2Former, build_backbone, families, list_backbones, load_pretrained
from conftest import arch_id, contract_model, frozen_by_rule, smallest_archs

CASES = smallest_archs()
# The training-step contract tests cost seconds per family on 2 CPU cores: two cheap families (a BatchNorm stem
# and a LayerNorm-only trunk) run without the slow marker, all of them with it (make test runs everything).
FAST = ('Conv2Former', 'ConvNeXtV2')
STEP_CASES = [pytest.param(*c, marks=() if c[0] in FAST else pytest.mark.slow) for c in CASES]

TINY = dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32], kernel_size=7)


def tiny(**kw):
    return Conv2Former(arch=TINY, **kw)


def test_table_lists_every_size_and_builds_by_name():
    names = list_backbones()
    for a in ('n', 't', 's', 'b', 'b_22k', 'l'):
        assert f'conv2former_{a}' in names
    assert 'Conv2Former' in families()
    with torch.device('meta'):
        for name in ('conv2former_t', 'Conv2Former'):
            assert build_backbone(name).dims == [72, 144, 288, 576]
        for arch in ('t', 'tiny', 'conv2former_t', 'T'):
            assert Conv2Former(arch=arch).arch_name == 't'


@pytest.mark.parametrize('bad', ['conv2former_xl', 'resnet50'])
def test_unknown_name_lists_valid_ones(bad):
    with pytest.raises(ValueError) as e:
        build_backbone(bad)
    assert 'conv2former_t' in str(e.value) or 'Conv2Former' in str(e.value)


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(ValueError, match=r"valid: n, t, s, b, b_22k, l"):
        Conv2Former(arch='huge')
    with pytest.raises(ValueError, match='depths'):
        Conv2Former(arch=dict(dims=[8, 16, 24, 32]))


def test_class_names_unique_across_backbones():
    """One name, one class: a family's layers are named after it (UnifiedMlp, MetaFormerStem ...)."""
    import ast
    import pathlib
    seen = {}
    for path in sorted(pathlib.Path(__file__).parents[1].joinpath('backbones').glob('*.py')):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                assert node.name not in seen, f'{node.name} in {seen.get(node.name)} and {path.name}'
                seen[node.name] = path.name
    assert len(seen) > 40


@pytest.mark.parametrize('family', sorted(families()))
def test_family_keywords_declared_and_checked(family):
    """Every family keyword has its default in arch_defaults (a valid choice); unknown keywords are a
    TypeError listing the family's keywords and the shared ones."""
    cls = families()[family]
    arch = cls.resolve_arch(cls.default_arch or next(iter(cls.arch_settings)))[1]
    for name, opt in cls.family_options.items():
        assert (opt.key or name) in cls.arch_defaults, name
        assert not opt.choices or arch[opt.key or name] in opt.choices, name
    with pytest.raises(TypeError) as e:
        cls(arch=arch, no_such_option=1)
    assert 'no_such_option' in str(e.value) and 'out_indices' in str(e.value)
    assert all(name in str(e.value) for name in cls.family_options)


@pytest.mark.parametrize('kw', [dict(out_indices=(4,)), dict(out_indices=(-5,)), dict(out_indices=()),
                                dict(out_indices=(1, 1)), dict(frozen_stages=5), dict(frozen_stages=-2),
                                dict(drop_path_rate=1.5)])
def test_out_of_range_arguments(kw):
    with pytest.raises(ValueError):
        tiny(**kw)


def test_wrong_channel_count():
    with pytest.raises(ValueError, match=r'3 channels, got shape \(1, 1, 64, 64\)'):
        tiny()(torch.zeros(1, 1, 64, 64))
    m = tiny(in_channels=4)
    assert len(m(torch.zeros(1, 4, 64, 64))) == 4


@pytest.mark.parametrize('size', [(224, 224), (333, 517), (800, 1216)])
def test_strides_and_channels(size):
    m = tiny().eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, *size))
    assert [o.shape[1] for o in outs] == m.out_channels == TINY['dims']
    assert m.out_strides == [4, 8, 16, 32]
    for o, s in zip(outs, m.out_strides):
        # stem: ceil at the stride-2 3x3 conv, floor at every 2x2 conv
        h = (size[0] + 1) // 2 // 2
        assert o.shape[2] == h // (s // 4)


def test_layer_wise_depth_matches_mmdet_convnext_rule():
    """ConvNeXt's published rule (mmdet's own implementation) on a ConvNeXt-T-shaped trunk."""
    mmdet_ld = pytest.importorskip('mmdet.engine.optimizers.layer_decay_optimizer_constructor')
    with torch.device('meta'):
        m = Conv2Former(arch=dict(depths=[3, 3, 9, 3], dims=[96, 192, 384, 768]))
    assert m.num_layers('layer_wise') == 6 and m.num_layers('stage_wise') == 6
    names = [f'backbone.{n}' for n, _ in m.named_parameters()] + ['neck.conv.weight', 'rpn_head.bias']
    for n in names:
        ours, max_id = m.get_layer_depth(n, prefix='backbone.', scheme='layer_wise')
        assert max_id == 8
        ref = mmdet_ld.get_layer_id_for_convnext(n, 6)
        if n.startswith('backbone.out_norms'):
            ref = 7  # output norms belong with the heads (as the official norm0..3 do)
        assert ours == ref, n
        ours_s, _ = m.get_layer_depth(n, prefix='backbone.', scheme='stage_wise')
        assert ours_s == mmdet_ld.get_stage_id_for_convnext(n, 8), n


@pytest.mark.parametrize('family,arch,kwargs', CASES, ids=arch_id)
def test_outputs_are_contiguous_nchw(family, arch, kwargs):
    """Every family returns plain contiguous NCHW maps, with and without output norms. The channels-last
    views that LayerNorms and NHWC stages leave behind are fine for convolutions but not for compiled ops
    indexing raw NCHW memory: mmcv's RoIAlign read them as stripes (tests/test_openmmlab.py)."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 96)
    for out_norm in (True, False):
        model = families()[family](arch=arch, out_norm=out_norm, **kwargs).eval()
        with torch.no_grad():
            outs = model(x)
        for i, y in enumerate(outs):
            assert y.is_contiguous(), (family, arch, out_norm, i, y.stride())
            assert y.shape[1] == model.dims[i] and y.shape[2:] == (64 // 4 // 2 ** i, 96 // 4 // 2 ** i)


# ---------------------------------------------------------------------------------- every family


def _small_input(model):
    """The smallest square input the family takes above 32 px: training steps on 2 CPU cores stay cheap."""
    side = max(32, model.min_input_size())
    return torch.randn(2, 3, side, side)


def _train_step(model, x, seed=1):
    torch.manual_seed(seed)  # the same drop-path draws for two models
    outs = model(x)
    sum(o.float().square().mean() for o in outs).backward()
    return outs


def _modules_within(model, roots):
    return {id(m) for r in roots for m in r.modules()}


@pytest.mark.parametrize('family,arch,kwargs', STEP_CASES, ids=arch_id)
def test_frozen_stages_one_meaning(family, arch, kwargs):
    """-1 nothing; 0 the stem; k the stem and stages 0..k-1 with their downsamplers (and what belongs to a
    stage, such as stage norms): no gradient, eval mode after train(), buffers (BN statistics) unchanged by a
    training forward; the first unfrozen stage trains. Parameters frozen by design (RandFormer's random
    matrices) stay frozen whatever k."""
    with torch.device('meta'):  # which parameters freeze and which modules train: no storage needed
        fixed = {n for n, p in contract_model(family, arch, kwargs).named_parameters() if not p.requires_grad}
        for k in (-1, 0, 2, 4):
            m = contract_model(family, arch, kwargs, frozen_stages=k).train()
            assert {n for n, p in m.named_parameters() if not p.requires_grad} == fixed | frozen_by_rule(m, k), k
            inside = _modules_within(m, m._frozen_modules())
            assert all(mod.training == (id(mod) not in inside) for mod in m.modules()), k
    for k in (0, 2):  # a training step: frozen = no gradient and unchanged buffers
        m = contract_model(family, arch, kwargs, frozen_stages=k, drop_path_rate=0.1).train()
        frozen = fixed | frozen_by_rule(m, k)
        buffers = {n: b.clone() for n, b in m.named_buffers()}
        _train_step(m, _small_input(m))
        for n, p in m.named_parameters():
            assert (p.grad is None) == (n in frozen), (k, n)
        for n in frozen_by_rule(m, k, buffers):
            assert torch.equal(dict(m.named_buffers())[n], buffers[n]), (k, n)


@pytest.mark.parametrize('family,arch,kwargs', STEP_CASES, ids=arch_id)
def test_norm_eval_keeps_batchnorm_statistics(family, arch, kwargs):
    """norm_eval: every BatchNorm stays in eval mode in train() and keeps its running statistics; its affine
    parameters still train; nothing else changes mode."""
    m = contract_model(family, arch, kwargs, norm_eval=True).train()
    bns = [mod for mod in m.modules() if isinstance(mod, _BatchNorm)]
    assert all(mod.training != isinstance(mod, _BatchNorm) for mod in m.modules())
    stats = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]
    _train_step(m, _small_input(m))
    for bn, (mean, var) in zip(bns, stats):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
        assert bn.weight.requires_grad and bn.weight.grad is not None
    if family == 'Conv2Former':
        assert bns  # its stem has BatchNorm: the case norm_eval exists for


@pytest.mark.parametrize('family,arch,kwargs', STEP_CASES, ids=arch_id)
def test_with_cp_same_values_and_gradients(family, arch, kwargs):
    """Activation checkpointing changes neither the outputs nor any gradient, drop path included (the
    recomputation replays the same random draws)."""
    a = contract_model(family, arch, kwargs, drop_path_rate=0.2).train()
    b = contract_model(family, arch, kwargs, drop_path_rate=0.2, with_cp=True).train()
    b.load_state_dict(a.state_dict())
    x = _small_input(a)
    for ya, yb in zip(_train_step(a, x), _train_step(b, x)):
        torch.testing.assert_close(ya, yb)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, msg=n)


@pytest.mark.parametrize('family,arch,kwargs', STEP_CASES, ids=arch_id)
def test_out_indices_and_output_norms(family, arch, kwargs):
    """out_indices selects maps (negative indices count from the end) and later stages are not computed; the
    output norms are a LayerNorm over channels of the raw map, and out_norm=False builds none."""
    a = contract_model(family, arch, kwargs, out_indices=(-1, 1)).eval()
    b = contract_model(family, arch, kwargs, out_norm=False).eval()
    assert a.out_indices == (1, 3) and a.out_channels == [a.dims[1], a.dims[3]] and not hasattr(b, 'out_norms')
    b.load_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith('out_norms')})
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y1, y3 = a(x)
        raw = b(x)
    for y, r, norm in ((y1, raw[1], a.out_norms[1]), (y3, raw[3], a.out_norms[3])):
        ref = nn.functional.layer_norm(r.permute(0, 2, 3, 1), (r.shape[1],), norm.weight, norm.bias, eps=1e-6)
        torch.testing.assert_close(y, ref.permute(0, 3, 1, 2))
    c = contract_model(family, arch, kwargs, out_indices=(0,))
    calls = []
    for i in (1, 2, 3):
        c.stages[i].register_forward_hook(lambda *args: calls.append(1))
    assert len(c(torch.randn(1, 3, 64, 64))) == 1 and calls == []


@pytest.mark.parametrize('family,arch,kwargs', STEP_CASES, ids=arch_id)
def test_save_and_strict_load_round_trip(family, arch, kwargs, tmp_path):
    """A saved backbone loads strictly into a fresh one of the same arch: every tensor, hence every output."""
    a = contract_model(family, arch, kwargs, seed=0).eval()
    with torch.no_grad():
        for p in a.out_norms.parameters():
            p.uniform_(0.5, 1.5)  # not the fresh values: they must come from the file
    torch.save(a.state_dict(), tmp_path / 'backbone.pth')
    b = contract_model(family, arch, kwargs, seed=1).eval()
    report = load_pretrained(b, str(tmp_path / 'backbone.pth'))
    assert report.fresh == [] and report.dropped_classifier == []
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ya, yb in zip(a(x), b(x)):
            assert torch.equal(ya, yb)
