"""ONNX export of the backbones (and of any module with the same input, e.g. backbone + neck).

Pure PyTorch plus ``onnx``/``onnxscript`` (the exporter) and ``onnxruntime`` (the check); no OpenMMLab import.
tools/deploy/export_onnx.py is the command line; docs/export.md the user guide.

Exporter: one path for every family, ``torch.export`` followed by ``torch.onnx.export(dynamo=True)``. The
legacy TorchScript exporter does not cover them all (it stops at ``aten::addmv`` for ConvNeXt V2, at
``Unfold`` for Halo, and at the MetaFormer norms' shape lists with dynamic axes).

Input sizes: the batch, height and width axes are dynamic (``batch``, ``height``, ``width``; one ONNX file
runs at any size from ``min_size`` up) for every family except those in :data:`FIXED_SIZE_FAMILIES`, whose
graphs depend on the input size and are exported for the one size given (pad or resize inputs to it).
"""
import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

# family class name -> why its graph depends on the input size (found by exporting with dynamic axes)
FIXED_SIZE_FAMILIES: Dict[str, str] = {
    'RandFormer': 'the frozen token-mixing matrices of stages 3-4 are resampled to the feature grid of the '
                  'input (antialiased when the grid shrinks, not when it grows), so the graph differs by size '
                  'and torch.export bounds the dynamic size to the side of the traced one',
    'UnifiedSwin': 'the shifted-window attention pads every map to a multiple of the 7x7 window and builds '
                   'its shift masks for the padded size; torch.export cannot prove the window views and '
                   'padding for a symbolic size and ties the graph to the traced window count',
    'UnifiedHalo': 'the halo attention pads every map to a multiple of the 7x7 block and unfolds 13x13 '
                   'windows; torch.export cannot prove the block views for a symbolic size and ties the graph '
                   'to the traced block count',
}
MAX_ABS_DIFF = 1e-4  # onnxruntime vs PyTorch in float32
DEFAULT_OPSET = 18
MIN_SIZE = 64  # smallest height/width of a dynamic export: stride-32 maps of 2 px (a 1-px map specialises)
MAX_SIZE = 8192


def family_of(model: nn.Module) -> str:
    """The class name of the backbone in ``model`` (the model itself, or its ``backbone`` attribute)."""
    backbone = getattr(model, 'backbone', model)
    return type(backbone).__name__


def supports_dynamic_shapes(model: nn.Module) -> bool:
    """False for the families of :data:`FIXED_SIZE_FAMILIES` (their export is for one input size)."""
    return family_of(model) not in FIXED_SIZE_FAMILIES


def second_size(height: int, width: int) -> Tuple[int, int]:
    """Another input size for checking a dynamic export: taller and wider, neither a multiple of 32."""
    return height + 31, width + 33


@dataclass
class ExportResult:
    path: str
    dynamic: bool
    input_shape: Tuple[int, ...]  # the traced input (N, C, H, W)
    output_names: List[str]
    opset: int
    checks: List[Tuple[Tuple[int, ...], float]] = field(default_factory=list)  # (input shape, max |diff|)

    @property
    def max_abs_diff(self) -> float:
        return max((d for _, d in self.checks), default=float('nan'))


def _example_input(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def export_onnx(model: nn.Module, path: str, input_size: Tuple[int, int] = (224, 320), in_channels: int = 3,
                batch_size: Optional[int] = None, dynamic: Optional[bool] = None, opset: int = DEFAULT_OPSET,
                min_size: Optional[int] = None, max_size: int = MAX_SIZE) -> ExportResult:
    """Export ``model`` (eval mode, float32, CPU; one NCHW input ``input``, outputs ``out0``, ``out1``, ...)
    to ``path``.

    ``dynamic``: ``None`` picks by family (:func:`supports_dynamic_shapes`); ``True`` for a fixed-size family
    raises, naming the reason. A dynamic export is traced at batch 2 (a traced batch of 1 would be fixed to
    1) unless ``batch_size`` is given; a fixed-size export at batch 1. Its height and width run from
    ``min_size`` (default: the model's ``export_min_size`` attribute, else :data:`MIN_SIZE`) to ``max_size``.
    """
    if dynamic is None:
        dynamic = supports_dynamic_shapes(model)
    elif dynamic and not supports_dynamic_shapes(model):
        fam = family_of(model)
        raise ValueError(f'{fam} cannot be exported with dynamic input sizes: {FIXED_SIZE_FAMILIES[fam]}; '
                         f'export it for one size (dynamic=False)')
    if min_size is None:
        min_size = getattr(model, 'export_min_size', MIN_SIZE)
    h, w = (int(s) for s in input_size)
    if dynamic and not (min_size <= h <= max_size and min_size <= w <= max_size):
        raise ValueError(f'a dynamic export is traced at a size in [{min_size}, {max_size}], got {h}x{w}')
    n = int(batch_size) if batch_size else (2 if dynamic else 1)
    model = model.eval().float().cpu()
    x = _example_input((n, in_channels, h, w))
    with torch.no_grad():
        outs = model(x)
    if isinstance(outs, torch.Tensor):
        outs = (outs,)
    output_names = [f'out{i}' for i in range(len(outs))]

    dynamic_shapes = None
    if dynamic:
        dims = {2: torch.export.Dim('height', min=min_size, max=max_size),
                3: torch.export.Dim('width', min=min_size, max=max_size)}
        if n > 1:
            dims[0] = torch.export.Dim('batch', min=1, max=1024)
        dynamic_shapes = ({**dims},)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # deprecation notes inside torch.export's pytree code
        try:
            program = torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes, strict=False)
        except Exception as e:  # torch._dynamo.exc.UserError: guards on the symbolic sizes
            if dynamic and 'Constraints violated' in str(e):
                raise RuntimeError(
                    f'{family_of(model)}: the traced graph depends on the input size within [{min_size}, '
                    f'{max_size}] px, so it cannot be exported with dynamic axes; export it for one size '
                    f'(dynamic=False, export_onnx.py --fixed) or trace at another size. torch.export: '
                    f'{str(e).splitlines()[0]}') from e
            raise
        onnx_program = torch.onnx.export(program, (x,), dynamo=True, opset_version=opset, input_names=['input'],
                                         output_names=output_names, optimize=True, verbose=False)
    if dynamic:  # name the input's symbolic axes (torch.export calls them s0, s1, ...) in the whole graph
        shape = onnx_program.model.graph.inputs[0].shape
        names = {0: 'batch', 2: 'height', 3: 'width'}
        onnx_program.rename_axes({shape[i]: name for i, name in names.items()
                                  if not isinstance(shape[i], int) and shape[i].value is not None})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    onnx_program.save(path)
    return ExportResult(path=path, dynamic=bool(dynamic), input_shape=tuple(x.shape), output_names=output_names,
                        opset=opset)


def compare_onnx(path: str, model: nn.Module, inputs: Sequence[torch.Tensor]) -> List[float]:
    """Run the ONNX file with onnxruntime (CPU) and ``model`` on each input; the max |difference| over all
    outputs, per input."""
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError('checking an export needs onnxruntime: pip install onnxruntime '
                          '(requirements/tests.txt)') from e
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    model = model.eval()
    diffs = []
    for x in inputs:
        with torch.no_grad():
            ref = model(x)
        ref = (ref,) if isinstance(ref, torch.Tensor) else tuple(ref)
        got = session.run(None, {name: x.numpy()})
        if len(got) != len(ref):
            raise RuntimeError(f'{path}: {len(got)} outputs, PyTorch gives {len(ref)}')
        diff = 0.0
        for i, (o, r) in enumerate(zip(got, ref)):
            if tuple(o.shape) != tuple(r.shape):
                raise RuntimeError(f'{path}: output {i} has shape {tuple(o.shape)} for input {tuple(x.shape)}, '
                                   f'PyTorch gives {tuple(r.shape)}')
            diff = max(diff, float((torch.from_numpy(o) - r).abs().max()))
        diffs.append(diff)
    return diffs


def export_and_check(model: nn.Module, path: str, input_size: Tuple[int, int] = (224, 320),
                     check_sizes: Optional[Sequence[Tuple[int, int]]] = None, **kwargs) -> ExportResult:
    """:func:`export_onnx`, then :func:`compare_onnx` at the traced size and, for a dynamic export, at
    ``check_sizes`` (default: :func:`second_size`, batch 1). ``result.checks`` holds the differences."""
    result = export_onnx(model, path, input_size, **kwargs)
    inputs = [_example_input(result.input_shape, seed=1)]
    if result.dynamic:
        c = result.input_shape[1]
        for hw in (check_sizes if check_sizes is not None else [second_size(*input_size)]):
            inputs.append(_example_input((1, c, *hw), seed=2))
    result.checks = list(zip([tuple(x.shape) for x in inputs], compare_onnx(path, model, inputs)))
    return result
