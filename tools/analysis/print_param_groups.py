#!/usr/bin/env python
"""Dry run of a config's optimizer: one line per parameter group, to check layer-wise lr decay.

    python tools/analysis/print_param_groups.py configs/det/convnext_t_maskrcnn.py
    python tools/analysis/print_param_groups.py configs/seg/convnext_s_upernet.py --verbose \\
        --cfg-options optim_wrapper.paramwise_cfg.decay_rate=0.8

The config is read as tools/train.py reads it (its helpers are imported, not copied): ``custom_imports``
register the backbones and the layer-decay constructor, mmdet's or mmseg's modules are registered by the
config's ``default_scope``, ``--cfg-options`` are merged, and its CPU fallbacks apply (SyncBN -> BN,
AmpOptimWrapper -> fp32 OptimWrapper, when there is no CUDA). The model is built on the CPU without its
random initialisation (built on the meta device, then given uninitialised CPU storage: the optimizer needs
the parameters, not their values; ``--init`` builds it normally); no checkpoint is read and nothing runs
forward. The optimizer wrapper is then built from the config's ``optim_wrapper`` with mmengine's
``build_optim_wrapper``, exactly as the Runner does.

Printed: a header (model, optimizer, base lr / weight decay, constructor and ``paramwise_cfg``), one line
per parameter group in the optimizer's order (name, layer id, lr, lr scale = lr / base lr, weight decay,
number of tensors and of values; with ``--verbose`` the parameter names under each group), and a total
line compared with the model's own parameter count (frozen parameters are not in the optimizer and are
counted separately). The initial lr is shown: warm-up and schedules act later, in the Runner.

Exit status: 0; 2 with a one-line message when the config file does not exist.
"""
import argparse
import os.path as osp
import sys

from glue.param_groups import build_model, build_optimizer, format_groups, load

def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description='Print the optimizer parameter groups of a config '
                                     '(lr, lr scale, weight decay per group); a CPU dry run.')
    parser.add_argument('config', help='config file, e.g. configs/det/convnext_t_maskrcnn.py')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (as in tools/train.py)')
    parser.add_argument('--verbose', action='store_true', help='list the parameter names of every group')
    parser.add_argument('--init', action='store_true',
                        help='build the model with its random initialisation (slower; same groups)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.config):
        print(f'print_param_groups.py: config not found: {args.config}', file=sys.stderr)
        return 2
    cfg, notes = load(args.config, args.cfg_options)
    if not cfg.get('optim_wrapper'):
        print(f'print_param_groups.py: {args.config} has no optim_wrapper', file=sys.stderr)
        return 2
    model = build_model(cfg, init=args.init)
    wrapper = build_optimizer(cfg, model)
    print('\n'.join(format_groups(cfg, model, wrapper, notes, args.verbose)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
