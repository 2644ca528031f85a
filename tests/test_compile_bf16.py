"""torch.compile and bfloat16 autocast on CPU, for every family at its smallest size (issue 13, items 4-5).

Graph capture is checked with ``fullgraph=True`` (a graph break is an error) on the ``eager`` backend:
dynamo traces the whole trunk but no C++ is compiled, so the check costs seconds. Models keep every layer
type of their family but one block per stage (as in the ONNX export test). The inductor backend (C++
code generation: 30-80 s for even a tiny model on 2 cores with a cold cache) is measured for every family
by ``tools/analysis/benchmark_backbones.py --compile`` (docs/speed.md); its test here runs only with
``RUN_INDUCTOR_TESTS=1``.
"""
import copy
import io
import os
import shutil

import pytest
import torch

from backbones import build_backbone, get_family
from conftest import smallest_archs
from glue.measure import relative_errors

# every family at its smallest size (the unified models' stage_norms='keep' variants only add LayerNorms)
CASES = [(f, a) for f, a, kw in smallest_archs() if not kw]
SIZE = (64, 96)
CAPTURE_SIZE = (33, 35)  # odd sides: the padding paths of the windowed mixers (Swin, Halo) are traced too
# training capture (autograd Functions, checkpointing) on one model per mechanism; docs/speed.md has all
TRAIN_CASES = [('CAFormer', 's18'), ('ConvNeXtV2', 'atto')]
# bfloat16 autocast vs float32, per output ||bf16 - fp32|| / ||fp32||, one block per stage: measured 0.5-1.4%
# (the full smallest models: 0.4-6.8%, ConvFormer s18's last stage the worst; docs/speed.md)
BF16_TOLERANCE = 0.03


def one_block_per_stage(family, arch, seed=0, **kwargs):
    """The family's smallest arch with one block per stage and non-trivial seeded weights (the default
    init's 1e-6 layer scales would make every block the identity and any two forwards agree)."""
    cls = get_family(family)
    settings = dict(cls.resolve_arch(arch)[1])
    settings['depths'] = [1] * len(settings['depths'])
    torch.manual_seed(seed)
    model = cls(arch=settings, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif name.endswith('bias'):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:  # norm weights, layer scales, GRN, StarReLU scales
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.5)
    return model


def image(batch=1, size=SIZE, seed=1):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    # every family traces the same MultiScaleBackbone.forward code object: without a reset the 9th model
    # would hit dynamo's recompile limit and silently run eagerly
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize('family,arch', CASES)
def test_trunk_compiles_without_graph_breaks(family, arch):
    """Inference (no grad: ConvNeXt's oneDNN path and MetaFormer's in-place StarReLU step aside under
    compilation) traces into one graph, and the compiled forward equals the eager one."""
    model = one_block_per_stage(family, arch).eval()
    x = image(size=CAPTURE_SIZE)
    with torch.no_grad():
        ref = model(x)
        out = torch.compile(model, backend='eager', fullgraph=True)(x)
    assert max(relative_errors(out, ref)) < 1e-5


@pytest.mark.parametrize('family,arch', TRAIN_CASES)
def test_training_step_compiles_without_graph_breaks(family, arch):
    """Training with activation checkpointing (torch.utils.checkpoint, MetaFormer's StarReLU autograd
    Function) traces into one graph; compiled gradients equal the eager ones."""
    model = one_block_per_stage(family, arch, with_cp=True).train()
    x = image(size=CAPTURE_SIZE)
    twin = copy.deepcopy(model)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    sum(o.square().mean() for o in model(xs[0])).backward()
    sum(o.square().mean() for o in torch.compile(twin, backend='eager', fullgraph=True)(xs[1])).backward()
    grads = [xs[0].grad] + [p.grad for p in model.parameters() if p.grad is not None]
    twin_grads = [xs[1].grad] + [p.grad for p in twin.parameters() if p.grad is not None]
    assert len(grads) == len(twin_grads) == 1 + sum(p.requires_grad for p in model.parameters())
    assert max(relative_errors(twin_grads, grads)) < 1e-5


def test_compile_option_compiles_the_trunk_only():
    """``compile=`` (off by default) compiles ``forward_trunk``; input checks stay eager and keep their
    ValueError; deep copies (EMA) and pickles get their own compiled function, never the original's."""
    ref = one_block_per_stage('ConvNeXtV2', 'atto').eval()
    assert ref.compile_options is None
    model = one_block_per_stage('ConvNeXtV2', 'atto', compile=dict(backend='eager', fullgraph=True)).eval()
    assert model.compile_options == dict(backend='eager', fullgraph=True)
    x = image()
    with torch.no_grad():
        assert max(relative_errors(model(x), ref(x))) < 1e-5
        assert model.__dict__['_compiled'][0] == id(model)
        with pytest.raises(ValueError, match='at least 32x32'):
            model(torch.randn(1, 3, 16, 16))
        clone = copy.deepcopy(model)
        assert '_compiled' not in clone.__dict__
        with torch.no_grad():
            clone.stages[3][0].pwconv2.bias.add_(torch.randn(clone.dims[3]))  # the copy must run its own weights
        assert max(relative_errors(clone(x)[3:], model(x)[3:])) > 1e-3
        assert clone.__dict__['_compiled'][0] == id(clone)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)  # our own freshly written module, not an untrusted file
    with torch.no_grad():
        assert max(relative_errors(loaded(x), ref(x))) < 1e-5
    assert build_backbone('convnextv2_atto', compile=True).compile_options == {}
    with pytest.raises(TypeError, match='compile must be'):
        build_backbone('convnextv2_atto', compile='inductor')


def test_check_finite_inside_a_compiled_graph():
    """check_finite=True: torch.compile(model) still captures one graph (no .item()), and a NaN input
    still fails (RuntimeError from the graph's assertion instead of the eager ValueError)."""
    model = one_block_per_stage('PoolFormerV2', 's12', check_finite=True).eval()
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    x = image()
    with torch.no_grad():
        assert max(relative_errors(compiled(x), model(x))) < 1e-5
        x[0, 1, 5, 7] = float('nan')
        with pytest.raises(ValueError, match='NaN/Inf'):
            model(x)
        with pytest.raises(RuntimeError, match='NaN/Inf'):
            compiled(x)


@pytest.mark.parametrize('family,arch', CASES)
def test_bf16_autocast_matches_float32(family, arch):
    model = one_block_per_stage(family, arch).eval()
    x = image(size=(64, 64))
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(x)
    assert len(out) == len(ref) and all(o.shape == r.shape for o, r in zip(out, ref))
    assert all(o.dtype in (torch.float32, torch.bfloat16) for o in out)
    errs = relative_errors(out, ref)
    assert max(errs) < BF16_TOLERANCE, errs
    assert min(errs) > 1e-4, errs  # bfloat16 really ran (7-bit mantissa: ~0.5% per map)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get('RUN_INDUCTOR_TESTS') != '1',
                    reason='inductor compiles C++ (30-80 s on 2 cores); set RUN_INDUCTOR_TESTS=1')
@pytest.mark.skipif(shutil.which('g++') is None and shutil.which('c++') is None, reason='inductor needs a C++ compiler')
def test_inductor_output_parity():
    """The default backend (inductor: generated C++ kernels, fused) on the smallest model: same outputs."""
    model = one_block_per_stage('IdentityFormer', 's12').eval()
    x = image(size=(32, 32))
    with torch.no_grad():
        ref = model(x)
        out = torch.compile(model, fullgraph=True)(x)
    assert max(relative_errors(out, ref)) < 1e-5


def test_benchmark_reports_compiled_vs_eager(capsys):
    from conftest import load_tool
    tool = load_tool('tools/analysis/benchmark_backbones.py')
    argv = ['randformer_s12', '--shape', '32', '32', '--repeats', '1', '--warmup', '0', '--modes', 'fwd',
            '--no-memory', '--threads', '1', '--compile', 'eager']
    assert tool.main(argv) == 0
    out = capsys.readouterr().out
    assert 'randformer_s12 [compiled]' in out and 'eager / compiled' in out
    errs = [float(v) for v in out.split('per stage: ')[1].splitlines()[0].split(', ')]
    assert len(errs) == 4 and max(errs) < 1e-5
    with pytest.raises(SystemExit):
        tool.parse_args(['--compile', 'randformer_s12'])  # a name taken for a backend: an error naming both
    assert 'unknown backend' in capsys.readouterr().err
