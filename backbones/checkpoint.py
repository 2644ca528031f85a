"""Reading checkpoints of any release layout into a backbone, strictly.

``load_pretrained(model, path)``:

1. reads the file with ``torch.load(weights_only=True)`` (:func:`read_checkpoint`); objects that training
   savers pickle beside the weights (``argparse.Namespace``, numpy scalars/arrays, mmengine's
   ``HistoryBuffer``) are allowed by name, anything else -- including ``getattr`` walks -- is refused and
   never unpickled (see the block comment above :func:`read_checkpoint`);
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
import contextlib
import functools
import logging
import os
import pickle
import pickletools
import re
import threading
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import torch

logger = logging.getLogger('backbones')


class CheckpointError(RuntimeError):
    """The file cannot be read as a checkpoint (missing, not a state dict, unsafe pickle)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys or shapes do not match the model."""


# ------------------------------------------------------------------------------------------ safe reading
# What the reader unpickles, by name. torch's weights-only unpickler already allows tensors, storages,
# plain containers (dict, list, tuple, set, OrderedDict, Counter), torch.Size/device/dtypes and the tensor
# rebuild functions; it refuses every other GLOBAL, STACK_GLOBAL (protocol 4+) outright, calls (REDUCE)
# only allow-listed callables, and BUILDs / SETITEMs only allow-listed types / plain dicts. We add:
#   * argparse.Namespace (training scripts save their ``args``);
#   * numpy scalars, arrays and the dtype instances inside them (metrics such as ``best_acc1`` and
#     mmengine's histories): ``numpy.dtype``, ``numpy.ndarray``, ``_reconstruct``, ``scalar`` and the
#     numeric ``numpy.dtypes.*DType`` classes (BUILD of a dtype instance needs its class);
#   * mmengine's ``HistoryBuffer`` (message hub of runner checkpoints), either as an inert placeholder
#     or -- for resuming -- as the real class behind a checked ``__setstate__``;
#   * ``builtins.getattr`` is NOT allowed: the name is mapped to :func:`_named_getattr`, which answers
#     only the pairs HistoryBuffer pickles (``getattr(HistoryBuffer, 'mean')`` ...) and refuses the rest.
#     A general getattr lets a file walk from any allowed class to ``__globals__`` / ``__builtins__``
#     and SETITEM into the live interpreter.
HISTORY_BUFFER = 'mmengine.logging.history_buffer.HistoryBuffer'
_STATISTICS = ('min', 'max', 'current', 'mean')  # what HistoryBuffer._set_default_statistics registers
_NUMPY_DTYPE_CODES = '?bBhHiIlLqQefdgFDG'  # bool, ints, floats, complex: the dtypes of numeric metrics


class _RunnerLogState:
    """Stands in for mmengine's ``HistoryBuffer`` (the loss / lr history a runner checkpoint keeps in its
    ``message_hub``) while unpickling without mmengine: its state is discarded, no mmengine code runs.
    Lets the backbone loader read whole mmdet / mmseg training checkpoints (their ``backbone.`` part)."""

    def __setstate__(self, state):
        pass


def _unsafe(msg: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(msg)


@functools.lru_cache(maxsize=1)
def _checked_history_buffer():
    """A subclass of mmengine's HistoryBuffer whose unpickling checks the state and then turns the object
    into a plain ``HistoryBuffer``. The stock ``__setstate__`` would copy the pickled
    ``statistics_methods`` into the class-wide registry ``HistoryBuffer._statistics_methods`` -- a file
    could re-point ``mean`` for the whole process. Here only the four default methods, identical to the
    class's own, are accepted; histories must be numpy arrays."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    keys = {'max_length', '_log_history', '_count_history', 'statistics_methods'}

    class CheckedHistoryBuffer(HistoryBuffer):
        def __setstate__(self, state):
            if not isinstance(state, dict) or not set(state) <= keys:
                raise _unsafe(f'{HISTORY_BUFFER} state must be a dict with keys {sorted(keys)}, got '
                              f'{sorted(state) if isinstance(state, dict) else type(state).__name__}')
            methods = state.get('statistics_methods', {})
            if not isinstance(methods, dict) or any(
                    name not in _STATISTICS or HistoryBuffer.__dict__.get(name) is not fn
                    for name, fn in methods.items()):
                raise _unsafe(f'{HISTORY_BUFFER}.statistics_methods may only hold the default methods '
                              f'{list(_STATISTICS)}, got {methods!r}')
            for name in ('_log_history', '_count_history'):
                if name in state and type(state[name]) is not np.ndarray:
                    raise _unsafe(f'{HISTORY_BUFFER}.{name} must be a numpy array, got {type(state[name])}')
            if not isinstance(state.get('max_length', 1), int):
                raise _unsafe(f'{HISTORY_BUFFER}.max_length must be an int')
            self.__class__ = HistoryBuffer
            self._set_default_statistics()  # as mmengine's own __setstate__: setdefault of the four methods
            self.__dict__.update({k: v for k, v in state.items() if k != 'statistics_methods'})

    return CheckedHistoryBuffer


def _named_getattr(pairs: List[Tuple[object, str, object]]):
    """What ``builtins.getattr`` means inside a checkpoint: the value of a named (owner, attribute) pair
    (owner compared by identity), an :class:`pickle.UnpicklingError` for anything else."""
    def getattr_(owner, name):
        for o, n, value in pairs:
            if owner is o and name == n:
                return value
        what = getattr(owner, '__qualname__', None) if isinstance(owner, type) else None
        what = what or f'<{type(owner).__name__} object>'
        raise _unsafe(f'getattr({what}, {name!r}) (the only attributes this reader looks up are '
                      f'HistoryBuffer.{{{",".join(_STATISTICS)}}})')
    getattr_.__qualname__ = getattr_.__name__ = 'named_getattr'
    return getattr_


def _numpy_globals() -> list:
    try:
        import numpy as np
    except ImportError:
        return []
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = []
    for code in _NUMPY_DTYPE_CODES:
        cls = type(np.dtype(code))
        if cls is not np.dtype and cls not in dtype_classes:  # numpy < 1.20: no per-dtype classes
            dtype_classes.append(cls)
    return [np.dtype, np.ndarray, scalar, _reconstruct] + dtype_classes


def _safe_globals(runner_state: bool = False) -> list:
    """The allow-list (see the block comment above). ``runner_state=True`` (mmengine needed) unpickles
    HistoryBuffer as the real class, so that a runner can resume its message hub."""
    history = _checked_history_buffer() if runner_state else _RunnerLogState
    # with the placeholder the methods are never used (the state is dropped): None stands for them
    pairs = [(history, name, getattr(history, name) if runner_state else None) for name in _STATISTICS]
    return [argparse.Namespace, collections.OrderedDict, (_named_getattr(pairs), 'builtins.getattr'),
            (history, HISTORY_BUFFER)] + _numpy_globals()


def allowed_globals(runner_state: bool = False) -> List[Tuple[str, object]]:
    """``(pickled name, object)`` for every global the reader allows beyond torch's own defaults."""
    out = []
    for g in _safe_globals(runner_state):
        if isinstance(g, tuple):
            out.append((g[1], g[0]))
        else:
            out.append((f'{g.__module__}.{g.__qualname__}', g))
    return out


_READ_LOCK = threading.Lock()


@contextlib.contextmanager
def _exactly_these_globals(allowed: list):
    """Allow exactly ``allowed`` (plus torch's defaults) while reading: whatever else the process put on
    torch's allow-list (``add_safe_globals`` in some library) does not widen this reader."""
    ser = torch.serialization
    with _READ_LOCK:
        saved = ser.get_safe_globals()
        ser.clear_safe_globals()
        ser.add_safe_globals(allowed)
        try:
            yield
        finally:
            ser.clear_safe_globals()
            ser.add_safe_globals(saved)


_OPCODE_NAMES = {op.code.encode('latin1')[0]: op.name for op in pickletools.opcodes}


def _refusal_reason(message: str) -> str:
    """The offending global / call, out of torch's long wrapper message (whose advice to allow-list the
    global is exactly what this reader must not do)."""
    text = message.split('WeightsUnpickler error:', 1)[-1] if 'WeightsUnpickler error:' in message \
        else message.split('\n\n', 1)[-1]
    text = ' '.join(text.split('Check the documentation of torch.load', 1)[0].split())
    m = re.search(r'GLOBAL (\S+) was not an allowed global', text)
    if m:
        return m.group(1)
    m = re.search(r'GLOBAL (\S+) whose module (\S+) is blocked', text)
    if m:
        return f'{m.group(1)} (module {m.group(2)} is never unpickled)'
    m = re.search(r'Unsupported operand (\d+)', text)
    if m:
        op = _OPCODE_NAMES.get(int(m.group(1)), m.group(1))
        return (f'pickle opcode {op}' + (' (a name looked up from the stack, protocol 4+: not read)'
                                         if op == 'STACK_GLOBAL' else ' (not read)'))
    return text[:600]


def _unsafe_globals(path: str) -> List[str]:
    """Globals in a zip checkpoint outside torch's defaults and our list (a scan, nothing unpickled)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 -- legacy (non-zip) files, unreadable records
        return []


ALLOWED_SUMMARY = ('tensors, plain containers and an allow-list of named classes: argparse.Namespace, '
                   'collections.OrderedDict, numpy scalars / arrays / numeric dtypes, mmengine\'s HistoryBuffer '
                   '(with getattr of its four statistics methods and nothing else)')


def _refusal(path: str, error: Exception, runner_state: bool) -> CheckpointError:
    reason = _refusal_reason(str(error))
    with _exactly_these_globals(_safe_globals(runner_state)):
        others = [g for g in _unsafe_globals(path) if g not in reason]
    what = reason + (f'; other globals outside the allow-list: {", ".join(others)}' if others else '')
    return CheckpointError(
        f'{path} is refused (nothing in it was run): it pickles {what}. This reader unpickles only '
        f'{ALLOWED_SUMMARY}, because unpickling anything else can run code or change the running program. '
        f'If you trust the file, re-save its weights on a trusted machine, e.g. '
        f'python -c "import torch; c = torch.load(\'{path}\', weights_only=False); '
        f'torch.save(c.get(\'state_dict\', c), \'weights.pth\')", and load weights.pth '
        f'(for a runner checkpoint, drop or convert the offending objects before saving).')


def read_checkpoint(path: str, map_location='cpu', runner_state: bool = False) -> dict:
    """Load a checkpoint file, http(s) URL or named checkpoint safely: ``torch.load(weights_only=True)`` with exactly the
    allow-list above (``.safetensors`` files through safetensors). ``runner_state=True`` (mmengine needed)
    returns mmengine's HistoryBuffer objects as real ones (for resuming a runner) instead of
    placeholders. A file that pickles anything else raises :class:`CheckpointError` naming it. Names and
    URLs are resolved (downloaded once into the torch hub cache) by :func:`backbones.hub.resolve`."""
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
        with _exactly_these_globals(_safe_globals(runner_state)):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refusal(path, e, runner_state) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f'cannot read {path} as a PyTorch checkpoint (truncated or not a checkpoint?): '
                              f'{type(e).__name__}: {first}') from None
    if not isinstance(obj, dict):
        raise CheckpointError(f'{path} holds a {type(obj).__name__}, not a state dict')
    return obj


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
            groups = sorted({key_group(k) for k in keys})
            return f'{len(keys)} ({", ".join(groups[:8])}{", ..." if len(groups) > 8 else ""})'
        return (f'loaded {self.loaded} tensors ({self.loaded_params:,} values) from {self.source} '
                f'[{self.wrapper}, {self.layout} layout]; dropped classifier: {short(self.dropped_classifier)}; '
                f'dropped buffers: {short(self.dropped_ignored)}; newly initialised: {short(self.fresh)}'
                + (f'; SKIPPED (strict=False): {short(self.skipped)}' if self.skipped else ''))


def key_group(key: str) -> str:
    """'out_norms.2.weight' -> 'out_norms.*', 'head.fc.weight' -> 'head.*'."""
    return key.split('.')[0] + '.*'


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


def split_checkpoint_keys(model, sd: Dict[str, torch.Tensor]
                          ) -> Tuple[Dict[str, torch.Tensor], List[str], List[str]]:
    """``(kept, classifier keys, ignored keys)``: what :func:`load_pretrained` loads into ``model`` from a
    (converted) state dict, and the keys it drops: the ImageNet classifier (``classifier_prefixes`` that the
    model does not have) and buffers it does not keep (``ignored_checkpoint_keys``)."""
    own = model.state_dict()
    kept, classifier, ignored = {}, [], []
    for k, v in sd.items():
        if _matches(k, model.classifier_prefixes) and k not in own:
            classifier.append(k)
        elif _matches(k, model.ignored_checkpoint_keys):
            ignored.append(k)
        else:
            kept[k] = v
    return kept, classifier, ignored


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


def format_keys(keys: List[str], n: int = 12) -> str:
    """The first ``n`` keys, comma-separated, and how many more there are."""
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
    kept, report.dropped_classifier, report.dropped_ignored = split_checkpoint_keys(model, sd)
    missing, unexpected, shapes = compare(model, kept)
    if strict and (missing or unexpected or shapes):
        name = f"{type(model).__name__}(arch={model.arch_name!r})"
        lines = [f'checkpoint {source} does not match {name} ({layout} layout, {wrapper}):']
        if missing:
            lines.append(f'  {len(missing)} missing keys: {format_keys(missing)}')
        if unexpected:
            lines.append(f'  {len(unexpected)} unexpected keys: {format_keys(unexpected)}')
        if shapes:
            lines.append(f'  {len(shapes)} shape mismatches: {format_keys(shapes, 6)}')
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
