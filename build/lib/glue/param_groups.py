"""The optimizer parameter groups a config builds (lr, lr scale, weight decay per group): the library part of
tools/analysis/print_param_groups.py, also used by the layer-decay tests."""
import contextlib
import copy
import logging
import re

@contextlib.contextmanager
def quiet_mmengine_logger(level=logging.WARNING):
    """The constructors log their groups through mmengine's current logger; the table replaces that."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def build_model(cfg, init: bool = False):
    """Build ``cfg.model`` in its scope's MODELS registry on the CPU.

    ``init=False`` skips the random initialisation (meta device, then ``to_empty`` on the CPU: the values
    are uninitialised memory, the parameters, their shapes and ``requires_grad`` are the model's); a model
    that cannot be built on the meta device is built normally.
    """
    import importlib

    import torch
    from mmengine.registry import DefaultScope

    scope = cfg.get('default_scope')
    models = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        if not init:
            try:
                with torch.device('meta'):
                    model = models.build(copy.deepcopy(cfg.model))
                return model.to_empty(device='cpu')
            except Exception:  # noqa: BLE001 - something needs real tensors at build time: build normally
                pass
        return models.build(copy.deepcopy(cfg.model))


def build_optimizer(cfg, model):
    """mmengine's ``build_optim_wrapper`` with the config's ``optim_wrapper``, in the config's scope."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')), quiet_mmengine_logger():
        return build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))


def load(config: str, cfg_options=None):
    """The config as tools/train.py prepares it for a CPU machine."""
    import warnings

    from .runtime import adapt_to_cpu, load_config

    cfg = load_config(config, cfg_options)
    with warnings.catch_warnings(record=True) as notes:  # its one-time notes become header lines
        warnings.simplefilter('always')
        adapt_to_cpu(cfg, 'none')
    return cfg, [str(n.message) for n in notes]


def _layer_id(group: dict):
    if 'layer_id' in group:
        return group['layer_id']
    m = re.match(r'layer_(\d+)_', str(group.get('group_name', '')))
    return int(m.group(1)) if m else None


def format_groups(cfg, model, wrapper, notes=(), verbose: bool = False):
    """The printed lines (a list of str)."""
    optimizer = wrapper.optimizer
    ocfg = cfg.optim_wrapper
    base_lr = ocfg.optimizer.get('lr')
    base_wd = ocfg.optimizer.get('weight_decay', 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    backbone = cfg.model.get('backbone', {})
    arch = backbone.get('arch')
    lines = [f'config: {cfg.filename} ({cfg.default_scope})',
             f'model: {cfg.model.type}, backbone {backbone.get("type")}'
             + (f' (arch {arch})' if arch is not None else ''),
             f'optimizer: {type(wrapper).__name__}({type(optimizer).__name__}), base lr {base_lr:g}, '
             f'weight decay {base_wd:g}',
             f'constructor: {ocfg.get("constructor", "DefaultOptimWrapperConstructor")} '
             f'paramwise_cfg={dict(ocfg.get("paramwise_cfg") or {})}']
    lines += [f'note: {n}' for n in notes]
    head = f'{"group":<22} {"layer":>5} {"lr":>10} {"lr_scale":>8} {"wd":>6} {"tensors":>7} {"params":>12}'
    lines += [head, '-' * len(head)]
    n_tensors = n_values = 0
    for i, g in enumerate(optimizer.param_groups):
        params = g['params']
        values = sum(p.numel() for p in params)
        n_tensors += len(params)
        n_values += values
        layer = _layer_id(g)
        scale = g.get('lr_scale', g['lr'] / base_lr if base_lr else float('nan'))
        lines.append(f'{g.get("group_name", f"group_{i}"):<22} {"-" if layer is None else layer:>5} '
                     f'{g["lr"]:>10.4e} {scale:>8.4f} {g["weight_decay"]:>6g} {len(params):>7} {values:>12,}')
        if verbose:
            for name in g.get('param_names') or [names.get(id(p), '?') for p in params]:
                lines.append(f'    {name}')
    total = sum(p.numel() for p in model.parameters())
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    lines.append('-' * len(head))
    model_part = f'model: {total:,} parameters'
    model_part += f', {frozen:,} frozen (not optimised)' if frozen else ', all trainable'
    check = 'matches' if n_values + frozen == total else 'MISMATCH'
    lines.append(f'total: {len(optimizer.param_groups)} groups, {n_tensors} tensors, {n_values:,} parameters '
                 f'({model_part}; {check})')
    return lines
