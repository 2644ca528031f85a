"""Reading checkpoints of any release layout into a backbone, strictly.

``load_pretrained(model, path)``:

1. reads the file with ``torch.load(weights_only=True)``; objects that training savers pickle beside the
   weights (``argparse.Namespace`` and a few numpy scalar types) are allowed by an explicit list, anything
   else is refused (never unpickled);
2. finds the weights: ``state_dict`` / ``model`` / ``module`` wrappers, ``state_dict_ema`` / ``model_ema``
   (when ``use_ema=True``, or when they are all there is), or a plain state dict; strips DDP's
   ``module.``; takes the ``backbone.`` part of whole mmdet/mmseg checkpoints (or any ``prefix``);
3. lets the family convert foreign layouts (``convert_checkpoint``);
4. drops the ImageNet classifier (``classifier_prefixes``) and cached buffers (``ignored_checkpoint_keys``);
5. compares with the model: a missing key (other than the new output norms and BatchNorm's
   ``num_batches_tracked``), an unexpected key, or a shape mismatch raises
   :class:`CheckpointMismatchError` naming the keys and, where another arch of the family would fit, which;
6. loads and logs a one-paragraph report (also returned as a :class:`LoadReport`).
"""
import argparse
import collections
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import torch

logger = logging.getLogger('backbones')


class CheckpointError(RuntimeError):
    """The file cannot be read as a checkpoint (missing, not a state dict, unsafe pickle)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys or shapes do not match the model."""


class _AnyAttribute(type):
    # HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, 'mean'), ...: answer with
    # an inert placeholder (never called; the state holding it is dropped)
    def __getattr__(cls, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _inert


def _inert(*args, **kwargs):
    return None


class _RunnerLogState(metaclass=_AnyAttribute):
    """Stands in for mmengine's ``HistoryBuffer`` (the loss / lr history a runner checkpoint keeps in its
    ``message_hub``) while unpickling: its state is discarded and no mmengine code runs. This lets the
    loader read whole mmdet / mmseg training checkpoints (e.g. a trained model's ``backbone.`` part)
    without importing OpenMMLab and without leaving the ``weights_only`` unpickler."""

    def __setstate__(self, state):
        pass


def _safe_globals() -> list:
    # getattr: numpy 2 fetches its dtype classes by name (``getattr(numpy.dtypes, 'Float64DType')``); the
    # unpickler still refuses to CALL anything that is not allow-listed, so this only reads attributes.
    allowed = [argparse.Namespace, collections.OrderedDict, getattr,
               (_RunnerLogState, 'mmengine.logging.history_buffer.HistoryBuffer')]
    try:  # numpy scalars/dtypes that savers store for metrics ("best_acc1": np.float64(...))
        import numpy as np
        allowed += [np.dtype, np.ndarray, type(np.dtype(np.float64)), type(np.dtype(np.float32)),
                    type(np.dtype(np.int64))]
        try:
            from numpy._core.multiarray import _reconstruct, scalar
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct, scalar
        allowed += [scalar, _reconstruct]
    except ImportError:
        pass
    return allowed


WRAPPER_KEYS = ('state_dict', 'model', 'module', 'net', 'params')
EMA_KEYS = ('state_dict_ema', 'model_ema', 'ema_state_dict', 'ema')


@dataclass
class LoadReport:
    source: str
    wrapper: str
    layout: str
    loaded: int = 0
    loaded_params: int = 0
    dropped_classifier: List[str] = field(default_factory=list)
    dropped_ignored: List[str] = field(default_factory=list)
    fresh: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)  # strict=False only: unexpected or mis-shaped

    def __str__(self) -> str:
        def short(keys: List[str]) -> str:
            if not keys:
                return 'none'
            groups = sorted({_group(k) for k in keys})
            return f'{len(keys)} ({", ".join(groups[:8])}{", ..." if len(groups) > 8 else ""})'
        return (f'loaded {self.loaded} tensors ({self.loaded_params:,} values) from {self.source} '
                f'[{self.wrapper}, {self.layout} layout]; dropped classifier: {short(self.dropped_classifier)}; '
                f'dropped buffers: {short(self.dropped_ignored)}; newly initialised: {short(self.fresh)}'
                + (f'; SKIPPED (strict=False): {short(self.skipped)}' if self.skipped else ''))


def _group(key: str) -> str:
    """'out_norms.2.weight' -> 'out_norms.*', 'head.fc.weight' -> 'head.*'."""
    return key.split('.')[0] + '.*'


def read_checkpoint(path: str, map_location='cpu') -> dict:
    """Load a checkpoint file, http(s) URL or named checkpoint safely (``weights_only=True`` plus an explicit
    allow-list; ``.safetensors`` files through safetensors). Names and URLs are resolved (downloaded once
    into the torch hub cache) by :func:`backbones.hub.resolve`."""
    from .hub import missing_file_hint, resolve
    path = resolve(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path!r} (give a local path, an http(s) URL or a '
                                f'checkpoint name; set init_cfg=None to train from scratch){missing_file_hint(path)}')
    if path.endswith('.safetensors'):  # timm's hub weights: tensors only, nothing to unpickle
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(f'{path}: reading .safetensors files needs `pip install safetensors`') from None
        try:
            return dict(load_file(path, device=str(map_location) if map_location else 'cpu'))
        except Exception as e:  # noqa: BLE001 -- safetensors raises its own error types
            raise CheckpointError(f'cannot read {path} as a safetensors file: {e}') from None
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f'{path} pickles objects outside the allow-list, so it is not unpickled (that could run code). '
            f'Re-save only its weights on a trusted machine: '
            f'torch.save(torch.load(p, weights_only=False)["model"], out). Details: {e}') from None
    except RuntimeError as e:
        raise CheckpointError(f'cannot read {path} as a PyTorch checkpoint: {e}') from None
    if not isinstance(obj, dict):
        raise CheckpointError(f'{path} holds a {type(obj).__name__}, not a state dict')
    return obj


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def extract_state_dict(obj: dict, use_ema: bool = False) -> Tuple[Dict[str, torch.Tensor], str]:
    """Find the weights inside a checkpoint dict; return ``(state_dict, wrapper_description)``.

    Regular weights are preferred; EMA weights are taken with ``use_ema=True`` (an error if there are
    none) or when they are the only weights in the file.
    """
    def lookup(keys):
        for key in keys:
            inner = obj.get(key)
            if _is_state_dict(inner):
                return dict(inner), f"'{key}'"
            if isinstance(inner, dict):  # e.g. {'model': {'state_dict': ...}}
                for k2 in WRAPPER_KEYS:
                    if _is_state_dict(inner.get(k2)):
                        return dict(inner[k2]), f"'{key}'/'{k2}'"
        return None

    found = lookup(EMA_KEYS) if use_ema else lookup(WRAPPER_KEYS)
    if found is None and use_ema:
        raise CheckpointError(f'use_ema=True but the checkpoint has no EMA weights; top-level keys: {sorted(obj)}')
    if found is None:
        tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
        found = (tensors, 'plain') if tensors else lookup(EMA_KEYS)
    if found is None:
        raise CheckpointError(f'no state dict found; top-level keys: {sorted(obj)[:20]}')
    sd, where = found
    if sd and all(k.startswith('module.') for k in sd):
        sd = {k[len('module.'):]: v for k, v in sd.items()}
        where += ' (DDP module. stripped)'
    return sd, where


def select_prefix(sd: Dict[str, torch.Tensor], prefix: Optional[str]) -> Tuple[Dict[str, torch.Tensor], str]:
    """Keep the keys under ``prefix`` (stripped). Without a prefix, whole mmdet/mmseg models keep
    ``backbone.``."""
    if prefix is None:
        if any(k.startswith('backbone.') for k in sd):
            prefix = 'backbone.'
        else:
            return sd, ''
    if not prefix.endswith('.'):
        prefix += '.'
    picked = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not picked:
        raise CheckpointError(f'no key starts with prefix {prefix!r}; first keys: {list(sd)[:5]}')
    return picked, prefix


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(key.startswith(p) if not p.startswith('re:') else re.search(p[3:], key) for p in patterns)


def _allowed_missing(key: str) -> bool:
    return key.startswith('out_norms.') or key.endswith('num_batches_tracked')


def compare(model, sd: Dict[str, torch.Tensor]) -> Tuple[List[str], List[str], List[str]]:
    """``(missing, unexpected, shape_mismatches)`` of ``sd`` against ``model``, allow-list applied."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not _allowed_missing(k)]
    unexpected = [k for k in sd if k not in own]
    shapes = [f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}'
              for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    return missing, unexpected, shapes


def guess_arch(cls, sd: Dict[str, torch.Tensor]) -> Optional[str]:
    """The arch of ``cls`` whose parameters match ``sd`` exactly (built on the meta device), if any.
    Output norms (``out_norms.*``, whole detection checkpoints) are left out of the comparison."""
    sd = {k: v for k, v in sd.items() if not k.startswith('out_norms.')}
    for name in cls.arch_settings:
        try:
            with torch.device('meta'):
                m = cls(arch=name, out_norm=False)
        except Exception:  # pragma: no cover - a family that cannot build on meta
            return None
        if not any(compare(m, sd)):
            return name
    return None


def _fmt(keys: List[str], n: int = 12) -> str:
    return ', '.join(keys[:n]) + (f' ... (+{len(keys) - n} more)' if len(keys) > n else '')


def load_pretrained(model, checkpoint, prefix: Optional[str] = None, use_ema: bool = False,
                    map_location='cpu', strict: bool = True) -> LoadReport:
    """Load ``checkpoint`` (a path, URL or an already loaded dict) into a backbone, strictly."""
    if isinstance(checkpoint, dict):
        obj, source = checkpoint, '<dict>'
    else:
        from .hub import check_arch
        check_arch(model, checkpoint)  # a named release of another size: refused before downloading it
        obj, source = read_checkpoint(checkpoint, map_location), str(checkpoint)
    sd, wrapper = extract_state_dict(obj, use_ema=use_ema)
    sd, used_prefix = select_prefix(sd, prefix)
    if used_prefix:
        wrapper += f", prefix '{used_prefix}'"
    sd, layout = type(model).convert_checkpoint(sd)
    report = LoadReport(source=source, wrapper=wrapper, layout=layout)
    kept = {}
    for k, v in sd.items():
        if _matches(k, model.classifier_prefixes) and k not in model.state_dict():
            report.dropped_classifier.append(k)
        elif _matches(k, model.ignored_checkpoint_keys):
            report.dropped_ignored.append(k)
        else:
            kept[k] = v
    missing, unexpected, shapes = compare(model, kept)
    if strict and (missing or unexpected or shapes):
        name = f"{type(model).__name__}(arch={model.arch_name!r})"
        lines = [f'checkpoint {source} does not match {name} ({layout} layout, {wrapper}):']
        if missing:
            lines.append(f'  {len(missing)} missing keys: {_fmt(missing)}')
        if unexpected:
            lines.append(f'  {len(unexpected)} unexpected keys: {_fmt(unexpected)}')
        if shapes:
            lines.append(f'  {len(shapes)} shape mismatches: {_fmt(shapes, 6)}')
        guess = guess_arch(type(model), kept)
        if guess is not None and guess != model.arch_name:
            lines.append(f"  the checkpoint matches arch={guess!r}: build {type(model).__name__}(arch={guess!r})")
        elif guess is None:
            lines.append(f'  no {type(model).__name__} arch matches: is it a checkpoint of another family, '
                         f'or a layout this family does not convert?')
        raise CheckpointMismatchError('\n'.join(lines))
    own = model.state_dict()
    if not strict:
        report.skipped = [k for k in kept if k not in own or tuple(kept[k].shape) != tuple(own[k].shape)]
        kept = {k: v for k, v in kept.items() if k not in report.skipped}
    report.fresh = [k for k in own if k not in kept and not k.endswith('num_batches_tracked')]
    model.load_state_dict(kept, strict=False)
    report.loaded = len(kept)
    report.loaded_params = sum(v.numel() for v in kept.values())
    logger.info('%s: %s', type(model).__name__, report)
    return report
