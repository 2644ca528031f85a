#!/usr/bin/env python
"""Export a backbone (by table name) or a config's backbone + neck to ONNX and check it with onnxruntime.

    python tools/deploy/export_onnx.py convnext_tiny                       # backbone, random weights
    python tools/deploy/export_onnx.py ConvNeXt --arch tiny --checkpoint convnext_tiny_1k_224.pth
    python tools/deploy/export_onnx.py configs/det/conv2former_t_maskrcnn.py --checkpoint epoch_36.pth
    python tools/deploy/export_onnx.py unified_swin_tiny --shape 800 1344  # fixed-size family: its size

The export (``backbones.export``: torch.export + the dynamo ONNX exporter, one path for every family) has
dynamic batch / height / width axes, except for the fixed-size families (RandFormer, UnifiedSwin,
UnifiedHalo: see docs/export.md), which are exported for ``--shape``. onnxruntime then runs the file on a
random input at the traced size (and, for a dynamic export, at a second size) and the largest absolute
difference from PyTorch is printed; above 1e-4 the tool exits with status 1. A config's model is built
without its ``init_cfg`` (no pretrained file needed); ``--checkpoint`` loads a trained detector /
segmentor (its ``backbone.*`` and ``neck.*`` weights) strictly.
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a backbone (+ neck) to ONNX, check it with onnxruntime.')
    parser.add_argument('model', help='a backbone table name (convnext_tiny, unified_swin_micro, ...), a '
                        'family with --arch (ConvNeXt --arch tiny), or a det/seg config file')
    parser.add_argument('--arch', help='the arch, when MODEL names a family')
    parser.add_argument('--checkpoint', help='weights: a backbone checkpoint (any layout the strict loader '
                        'reads) for a name, a detector/segmentor checkpoint for a config')
    parser.add_argument('--out', help='ONNX file to write (default work_dirs/onnx/<model>.onnx)')
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 320], metavar=('H', 'W'),
                        help='the traced input size (the only size of a fixed-size export); default 224 320')
    parser.add_argument('--check-shape', type=int, nargs=2, action='append', metavar=('H', 'W'),
                        help='also check a dynamic export at this size (repeatable; default: H+31 W+33)')
    parser.add_argument('--fixed', action='store_true', help='export for --shape only, even where the family '
                        'allows dynamic sizes')
    parser.add_argument('--no-neck', action='store_true', help='config: export the backbone alone')
    parser.add_argument('--opset', type=int, default=None, help='ONNX opset (default 18)')
    parser.add_argument('--atol', type=float, default=None, help='largest accepted |ONNX - PyTorch| (default 1e-4)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from backbones.export import (DEFAULT_OPSET, FIXED_SIZE_FAMILIES, MAX_ABS_DIFF, export_and_check,
                                  family_of)

    if args.model.endswith('.py') or osp.isfile(args.model):
        from glue.export import build_backbone_and_neck
        model = build_backbone_and_neck(args.model, args.checkpoint, with_neck=not args.no_neck)
        what = 'backbone + neck' if model.neck is not None else 'backbone (the model has no neck)'
        stem = osp.splitext(osp.basename(args.model))[0]
    else:
        from backbones import build_backbone
        from backbones.checkpoint import load_pretrained
        kwargs = {'arch': args.arch} if args.arch else {}
        try:
            model = build_backbone(args.model, **kwargs)
        except ValueError as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
        if args.checkpoint:
            load_pretrained(model, args.checkpoint)
        what = 'backbone'
        stem = args.model.lower() + (f'_{args.arch}' if args.arch else '')
    out = args.out or osp.join('work_dirs', 'onnx', stem + '.onnx')
    fam = family_of(model)
    result = export_and_check(model, out, tuple(args.shape), check_sizes=args.check_shape,
                              dynamic=False if args.fixed else None, opset=args.opset or DEFAULT_OPSET)
    if result.dynamic:
        mode = 'dynamic batch/height/width'
    elif fam in FIXED_SIZE_FAMILIES:
        mode = f'fixed size {result.input_shape} ({fam}: {FIXED_SIZE_FAMILIES[fam]})'
    else:
        mode = f'fixed size {result.input_shape} (--fixed)'
    print(f'exported {what} of {fam} to {out} ({os.path.getsize(out) / 2 ** 20:.1f} MiB, opset {result.opset}, '
          f'outputs {", ".join(result.output_names)}); {mode}')
    atol = MAX_ABS_DIFF if args.atol is None else args.atol
    for shape, diff in result.checks:
        print(f'onnxruntime vs PyTorch, input {"x".join(map(str, shape))}: max abs diff {diff:.3g}')
    if not result.max_abs_diff <= atol:
        print(f'FAILED: max abs diff {result.max_abs_diff:.3g} > {atol:g}', file=sys.stderr)
        return 1
    print(f'OK: max abs diff {result.max_abs_diff:.3g} <= {atol:g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
