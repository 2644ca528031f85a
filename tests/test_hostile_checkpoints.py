"""Hostile checkpoint files, written opcode by opcode, against the safe reader (backbones.read_checkpoint)
and against mmengine's loader as our glue sets it up (--resume, load_from, tools/test.py).

Each hostile file must be refused with a CheckpointError naming what it pickles, and leave the running
interpreter exactly as it was (builtins, argparse's module globals, the reader's own module, mmengine's
HistoryBuffer registry, numpy's canonical dtypes, and no file created by a shell command). Files come in
torch's zip format (data.pkl replaced) and in the legacy (pre-1.6) format. Honest layouts still load.
"""
import argparse
import builtins
import collections
import os
import pickle
import struct

import numpy as np
import pytest
import torch

import backbones.checkpoint as ckpt_mod
from backbones import CheckpointError, Conv2Former, load_pretrained, read_checkpoint
from backbones.checkpoint import HISTORY_BUFFER, allowed_globals

TINY = dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32], kernel_size=7)


# ------------------------------------------------------------------------------- writing pickles by hand
def GLOBAL(module, name):
    return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def STACK_GLOBAL(module, name):
    return STR(module) + STR(name) + b'\x93'


def STR(s):
    b = s.encode()
    return b'X' + struct.pack('<I', len(b)) + b


PROTO, STOP, REDUCE, BUILD, SETITEM, NEWOBJ = b'\x80\x02', b'.', b'R', b'b', b's', b'\x81'
TUPLE1, TUPLE2, TUPLE3, EMPTY_DICT, EMPTY_TUPLE = b'\x85', b'\x86', b'\x87', b'}', b')'
NEWTRUE, NEWFALSE, NONE = b'\x88', b'\x89', b'N'


def INT(i):
    return b'J' + struct.pack('<i', i)


def GETATTR(obj: bytes, name: str) -> bytes:
    """``getattr(obj, name)`` the way pickle writes it (protocol 2 names builtins ``__builtin__``)."""
    return GLOBAL('__builtin__', 'getattr') + obj + STR(name) + TUPLE2 + REDUCE


def CHAIN(obj: bytes, *names: str) -> bytes:
    for n in names:
        obj = GETATTR(obj, n)
    return obj


def CHECKPOINT(payload: bytes) -> bytes:
    """``{'state_dict': {}, 'meta': <payload>}``: the payload inside an ordinary-looking checkpoint."""
    return PROTO + EMPTY_DICT + STR('state_dict') + EMPTY_DICT + SETITEM + STR('meta') + payload + SETITEM + STOP


def write_zip(path, pickle_bytes: bytes) -> str:
    """torch's zip format (what torch.save writes since 1.6) around a hand-written data.pkl."""
    w = torch._C.PyTorchFileWriter(str(path))
    w.write_record('data.pkl', pickle_bytes, len(pickle_bytes))
    w.write_record('byteorder', b'little', len(b'little'))
    w.write_end_of_file()
    del w
    return str(path)


def write_legacy(path, pickle_bytes: bytes) -> str:
    """The legacy format: magic number, protocol version, sys info, the object, the storage keys."""
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION
    head = b''.join(pickle.dumps(x, protocol=2) for x in (
        MAGIC_NUMBER, PROTOCOL_VERSION, dict(protocol_version=PROTOCOL_VERSION, little_endian=True,
                                             type_sizes=dict(short=2, int=4, long=4))))
    with open(path, 'wb') as f:
        f.write(head + pickle_bytes + pickle.dumps([], protocol=2))
    return str(path)


WRITERS = {'zip': write_zip, 'legacy': write_legacy}


# --------------------------------------------------------------------------- the interpreter, unchanged
def _history_registry():
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:
        return None
    HistoryBuffer()  # the first buffer of a process registers the four default methods; compare after that
    return dict(HistoryBuffer._statistics_methods)


def _snapshot(marker):
    f8 = np.dtype('f8')
    return dict(
        abs=builtins.abs, builtins=dict(vars(builtins)), ArgumentParser=argparse.ArgumentParser,
        argparse=dict(vars(argparse)), reader=dict(vars(ckpt_mod)), torch_ser=dict(vars(torch.serialization)),
        history=_history_registry(), f8=(f8.str, f8.itemsize, f8.alignment, f8.names, f8.isnative),
        safe_globals=set(torch.serialization.get_safe_globals()), marker=os.path.exists(marker))


def _restore(before):
    """Undo what a file did (only happens on a vulnerable reader), so one failure cannot spread."""
    for module, key in ((builtins, 'builtins'), (argparse, 'argparse'), (ckpt_mod, 'reader'),
                        (torch.serialization, 'torch_ser')):
        d = vars(module)
        for k in [k for k in d if k not in before[key]]:
            del d[k]
        for k, v in before[key].items():
            if d.get(k, object()) is not v:
                setattr(module, k, v)
    if before['history'] is not None:
        from mmengine.logging.history_buffer import HistoryBuffer
        HistoryBuffer._statistics_methods.clear()
        HistoryBuffer._statistics_methods.update(before['history'])


@pytest.fixture
def unchanged(tmp_path):
    """Yields a marker path a shell payload would create; afterwards the interpreter must be unchanged."""
    marker = str(tmp_path / 'PWNED')
    before = _snapshot(marker)
    yield marker
    after = _snapshot(marker)
    diffs = [k for k in before if k not in ('builtins', 'argparse', 'reader', 'torch_ser') and before[k] != after[k]]
    for key in ('builtins', 'argparse', 'reader', 'torch_ser'):
        b, a = before[key], after[key]
        if set(a) != set(b) or any(a[k] is not b[k] for k in b):
            diffs.append(key)
    if before['abs'] is not after['abs']:
        diffs.append('abs')
    _restore(before)
    assert not diffs, f'the load changed the running interpreter: {diffs}'


def _refused(path, match=None, **kw):
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path, **kw)
    msg = str(info.value)
    assert 'refused' in msg and 're-save' in msg, msg
    if match:
        assert match in msg, msg
    return msg


# ------------------------------------------------------------------------------------ code execution
def _shell(marker):
    return {
        'os.system': GLOBAL('os', 'system') + STR(f'touch {marker}') + TUPLE1 + REDUCE,
        'posix.system': GLOBAL('posix', 'system') + STR(f'touch {marker}') + TUPLE1 + REDUCE,
        'subprocess.call': GLOBAL('subprocess', 'call') + STR(f'touch {marker}') + NEWTRUE + TUPLE2 + REDUCE,
        'builtins.eval': GLOBAL('__builtin__', 'eval') + STR(f'open({marker!r}, "w")') + TUPLE1 + REDUCE,
        'builtins.exec': GLOBAL('__builtin__', 'exec') + STR(f'open({marker!r}, "w")') + TUPLE1 + REDUCE,
        'STACK_GLOBAL': STACK_GLOBAL('os', 'system') + STR(f'touch {marker}') + TUPLE1 + REDUCE,
    }


@pytest.mark.parametrize('fmt', sorted(WRITERS))
@pytest.mark.parametrize('kind', ['os.system', 'posix.system', 'subprocess.call', 'builtins.eval',
                                  'builtins.exec', 'STACK_GLOBAL'])
def test_calls_refused(tmp_path, unchanged, fmt, kind):
    path = WRITERS[fmt](tmp_path / 'evil.pth', CHECKPOINT(_shell(unchanged)[kind]))
    msg = _refused(path, match=kind.split('.')[-1] if kind != 'STACK_GLOBAL' else 'STACK_GLOBAL')
    assert not os.path.exists(unchanged)
    if fmt == 'zip' and kind != 'STACK_GLOBAL':
        assert kind.replace('builtins.', '') in msg  # the offending global is named


class _Evil:  # what pickle itself writes for an object that runs a command when unpickled
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.mark.parametrize('zipfile', [True, False])
def test_torch_saved_reduce_refused(tmp_path, unchanged, zipfile):
    sd = Conv2Former(arch=TINY, out_norm=False).state_dict()
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': sd, 'epoch': 3, 'x': _Evil(unchanged)}, path, _use_new_zipfile_serialization=zipfile)
    msg = _refused(path, match='system')
    assert 'posix.system' in msg or 'os.system' in msg, msg
    assert not os.path.exists(unchanged)


# -------------------------------------------------------------------- attribute chains and SETITEM/BUILD
def _split(name):
    module, attr = name.rsplit('.', 1)
    return ('__builtin__' if module == 'builtins' else module), attr


def _allowed_names():
    names = {n for n, _ in allowed_globals(False)}
    try:
        names |= {n for n, _ in allowed_globals(True)}
    except ImportError:
        pass
    # a few of torch's own defaults as starting points too
    names |= {'collections.OrderedDict', '_codecs.encode', 'torch._utils._rebuild_tensor_v2', 'builtins.set'}
    return sorted(names)


CHAINS = {
    'globals': ('__init__', '__globals__'),  # the module's namespace dict
    'builtins': ('__init__', '__builtins__'),  # the interpreter's builtins dict
    'func_globals': ('__globals__',),  # functions: their module dict directly
    'dict': ('__dict__',),
    'class_subclasses': ('__class__', '__subclasses__'),
}


@pytest.mark.parametrize('fmt', sorted(WRITERS))
@pytest.mark.parametrize('chain', sorted(CHAINS))
@pytest.mark.parametrize('start', _allowed_names())
def test_attribute_chain_refused(tmp_path, unchanged, fmt, chain, start):
    """From every allow-listed class / function, an attribute walk followed by SETITEM into whatever it
    reached: refused at the first getattr, nothing written."""
    payload = CHAIN(GLOBAL(*_split(start)), *CHAINS[chain]) + STR('__pwned__') + INT(1) + SETITEM
    path = WRITERS[fmt](tmp_path / 'evil.pth', CHECKPOINT(payload))
    targets = []
    for runner_state in ([False, True] if HISTORY_BUFFER in start else [False]):
        obj = dict(allowed_globals(runner_state)).get(start) or _resolve(start)
        try:  # what the walk would reach, resolved here in Python
            for name in CHAINS[chain]:
                obj = getattr(obj, name)
            targets.append(obj)
        except AttributeError:
            pass
        try:
            _refused(path, match='getattr', runner_state=runner_state)
        finally:
            written = [t for t in targets if isinstance(t, dict) and '__pwned__' in t]
            for t in written:
                del t['__pwned__']
            assert not written, f'the file wrote into {[t.get("__name__", "a dict") for t in written]}'


def _resolve(name):
    import importlib
    module, attr = name.rsplit('.', 1)
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize('fmt', sorted(WRITERS))
def test_issue_exploit_replaces_builtins_and_classes(tmp_path, unchanged, fmt):
    """The exploit of the issue: argparse.Namespace.__init__ -> __builtins__ / __globals__, then SETITEM
    replaces builtins.abs and argparse.ArgumentParser in the running interpreter."""
    init = GETATTR(GLOBAL('argparse', 'Namespace'), '__init__')
    payload = (PROTO + EMPTY_DICT
               + STR('a') + GETATTR(init, '__builtins__') + STR('abs') + STR('pwned') + SETITEM + SETITEM
               + STR('b') + GETATTR(init, '__globals__') + STR('ArgumentParser') + STR('pwned') + SETITEM
               + SETITEM + STOP)
    path = WRITERS[fmt](tmp_path / 'evil.pth', payload)
    msg = _refused(path, match="getattr(Namespace, '__init__')")
    assert builtins.abs is abs and argparse.ArgumentParser.__name__ == 'ArgumentParser'
    with pytest.raises(pickle.UnpicklingError):  # torch's own default refuses the same file
        torch.load(path, weights_only=True)
    assert 'argparse.Namespace' in msg or 'HistoryBuffer' in msg  # says what it does read


def test_getattr_of_the_statistics_methods_only(tmp_path, unchanged):
    """The pairs the reader answers are exactly HistoryBuffer's four statistics methods; from one of them
    no further step is possible."""
    hb = GLOBAL(*_split(HISTORY_BUFFER))
    path = write_zip(tmp_path / 'evil.pth', CHECKPOINT(CHAIN(hb, 'mean', '__globals__')
                                                      + STR('np') + INT(1) + SETITEM))
    _refused(path, match="getattr(<NoneType object>, '__globals__')")  # placeholder: None stands for mean
    pytest.importorskip('mmengine')
    _refused(path, match="getattr(<function object>, '__globals__')", runner_state=True)
    path = write_zip(tmp_path / 'evil2.pth', CHECKPOINT(CHAIN(hb, 'register_statistics')))
    _refused(path, match="'register_statistics'")
    path = write_zip(tmp_path / 'evil3.pth', CHECKPOINT(CHAIN(GLOBAL('__builtin__', 'getattr'), '__globals__')))
    _refused(path, match="'__globals__'")  # the lookup function itself is no way in


def test_process_wide_allow_list_does_not_widen_the_reader(tmp_path, unchanged):
    """A library that allow-listed builtins.getattr process-wide does not make our reader walk attributes."""
    path = write_zip(tmp_path / 'evil.pth', CHECKPOINT(CHAIN(GLOBAL('argparse', 'Namespace'), '__init__',
                                                              '__globals__') + STR('X') + INT(1) + SETITEM))
    saved = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals([getattr])
    try:
        _refused(path, match='getattr')
        assert getattr in torch.serialization.get_safe_globals()  # the process's own list is put back
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)


def test_build_on_the_canonical_dtype(tmp_path, unchanged):
    """BUILD on numpy's shared float64 dtype (np.dtype('f8', align=False, copy=False) is the singleton):
    numpy ignores state on built-in dtypes; the fixture checks float64 is still little-endian f8."""
    dt = GLOBAL('numpy', 'dtype') + STR('f8') + NEWFALSE + NEWFALSE + TUPLE3 + REDUCE
    state = b'(' + INT(3) + STR('>') + NONE + NONE + NONE + INT(4) + INT(4) + INT(0) + b't'
    path = write_zip(tmp_path / 'd.pth', CHECKPOINT(dt + state + BUILD))
    read_checkpoint(path)
    assert np.zeros(1).dtype.str == '<f8'


def _history_buffer_payload(methods: bytes) -> bytes:
    hb = GLOBAL(*_split(HISTORY_BUFFER))
    return hb + EMPTY_TUPLE + NEWOBJ + EMPTY_DICT + STR('max_length') + INT(10) + SETITEM \
        + STR('statistics_methods') + methods + SETITEM + BUILD


def test_history_buffer_cannot_repoint_the_class_registry(tmp_path, unchanged):
    """mmengine's own HistoryBuffer.__setstate__ copies the pickled statistics_methods into the class-wide
    registry: a file could make every buffer's 'mean' call something else. The reader refuses any entry
    that is not the class's own method (and never touches the registry)."""
    pytest.importorskip('mmengine')
    evil = EMPTY_DICT + STR('mean') + GLOBAL('argparse', 'Namespace') + SETITEM
    path = write_zip(tmp_path / 'h.pth', CHECKPOINT(_history_buffer_payload(evil)))
    _refused(path, match='statistics_methods', runner_state=True)
    read_checkpoint(path)  # without runner state: a placeholder that drops the state
    from mmengine.runner.checkpoint import _load_checkpoint

    import detection  # noqa: F401 -- installs the safe loader into mmengine
    with pytest.raises(CheckpointError, match='statistics_methods'):
        _load_checkpoint(path, map_location='cpu')


def test_mmengine_loader_refuses_what_the_reader_refuses(tmp_path, unchanged):
    """--resume, load_from, tools/test.py and mmdet's tools read through mmengine's CheckpointLoader,
    which our glue points at the safe reader (no process-wide weights-only switch)."""
    pytest.importorskip('mmdet')
    import detection  # noqa: F401
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint
    assert CheckpointLoader._get_checkpoint_loader('/x/iter_4.pth').__name__ == 'load_from_local_safe'
    assert CheckpointLoader._get_checkpoint_loader('https://x/iter_4.pth').__name__ == 'load_from_http_safe'
    for payload in (_shell(unchanged)['os.system'],
                    CHAIN(GLOBAL('argparse', 'Namespace'), '__init__', '__builtins__') + STR('abs')
                    + INT(1) + SETITEM):
        path = write_zip(tmp_path / 'evil.pth', CHECKPOINT(payload))
        with pytest.raises(CheckpointError, match='refused'):
            _load_checkpoint(path, map_location='cpu')
    assert not os.path.exists(unchanged)
    assert os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD') is None


def test_no_process_wide_weights_only_switch():
    """No library module or tool turns weights-only loading off for the process."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    offenders = []
    for sub in ('backbones', 'glue', 'detection', 'segmentation', 'tools'):
        for dirpath, _, files in os.walk(os.path.join(root, sub)):
            for f in files:
                if f.endswith(('.py', '.sh')):
                    text = open(os.path.join(dirpath, f)).read()
                    if 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' in text:
                        offenders.append(os.path.join(sub, f))
    assert not offenders, offenders


# --------------------------------------------------------------------------------------- honest layouts
def _sd(seed=0):
    torch.manual_seed(seed)
    return Conv2Former(arch=TINY, out_norm=False).state_dict()


@pytest.mark.parametrize('zipfile', [True, False])
def test_honest_layouts_load(tmp_path, unchanged, zipfile):
    """Official (plain / 'model'), timm-style training (args Namespace, numpy metrics, EMA) checkpoints."""
    sd, ema = _sd(0), _sd(1)
    layouts = {
        'official': {'model': sd},
        'plain': sd,
        'timm': {'epoch': 299, 'arch': 'conv2former_t', 'state_dict': sd, 'state_dict_ema': ema,
                 'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-3}]},
                 'args': argparse.Namespace(lr=4e-3, model='conv2former_t', drop_path=0.1),
                 'metric': np.float64(83.2), 'best': np.float32(83.5), 'steps': np.int64(1234),
                 'flag': np.bool_(True), 'hist': np.arange(5, dtype=np.int32), 'od': collections.OrderedDict(a=1),
                 'c16': np.complex64(1 + 2j), 'h': np.float16(0.5), 'u8': np.uint8(3)},
    }
    for name, obj in layouts.items():
        path = str(tmp_path / f'{name}.pth')
        torch.save(obj, path, _use_new_zipfile_serialization=zipfile)
        for use_ema in ([False, True] if name == 'timm' else [False]):
            m = Conv2Former(arch=TINY)
            report = load_pretrained(m, path, use_ema=use_ema)
            assert report.loaded == len(sd)
            ref = ema if use_ema else sd
            assert all(torch.equal(m.state_dict()[k], v) for k, v in ref.items())
    got = read_checkpoint(str(tmp_path / 'timm.pth'))
    assert got['args'] == argparse.Namespace(lr=4e-3, model='conv2former_t', drop_path=0.1)
    for k in ('metric', 'best', 'steps', 'flag', 'c16', 'h', 'u8'):
        assert got[k] == layouts['timm'][k] and type(got[k]) is type(layouts['timm'][k]), k
    assert np.array_equal(got['hist'], np.arange(5, dtype=np.int32))


@pytest.fixture(scope='module')
def runner_checkpoint(tmp_path_factory):
    """A real mmengine runner checkpoint written by our tools/train.py (toy UperNet, 2 iterations)."""
    pytest.importorskip('mmseg')
    import subprocess
    import sys

    from glue.toy_data import make_toy_data
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tmp = tmp_path_factory.mktemp('runner')
    data = make_toy_data(str(tmp / 'toy'), seed=0, num_train=4, num_val=2)
    work = tmp / 'work'
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/toy/conv2former_toy_upernet.py', '--work-dir', str(work),
         '--data-root', data['ade_root'], '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_begin=100',
         'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
         'test_dataloader.num_workers=0', 'default_hooks.logger.interval=1',
         'default_hooks.checkpoint.interval=2'],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return str(work / 'iter_2.pth')


def test_runner_checkpoint_from_our_train_tool(runner_checkpoint, unchanged):
    """What --resume needs comes back (real HistoryBuffer, numpy metrics, optimizer and scheduler state);
    the backbone loader reads the same file without mmengine objects."""
    from mmengine.logging import HistoryBuffer, MessageHub

    from glue import read_runner_checkpoint
    assert HISTORY_BUFFER in torch.serialization.get_unsafe_globals_in_checkpoint(runner_checkpoint)
    with pytest.raises(pickle.UnpicklingError):  # torch's default refuses it: the allow-list is needed
        torch.load(runner_checkpoint, weights_only=True)
    ck = read_runner_checkpoint(runner_checkpoint, map_location='cpu')
    assert ck['meta']['iter'] == 2 and ck['optimizer']['state'] and ck['param_schedulers']
    loss = ck['message_hub']['log_scalars']['train/loss']
    assert type(loss) is HistoryBuffer and len(loss.data[0]) == 2
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.mean
    assert float(loss.mean()) == pytest.approx(float(np.mean(loss.data[0])))
    hub = MessageHub.get_instance('test_hostile_resume')
    hub.load_state_dict(ck['message_hub'])
    assert hub.get_scalar('train/loss').current() == loss.current()
    m = Conv2Former(arch=dict(TINY, dims=[32, 64, 128, 256]))
    report = load_pretrained(m, runner_checkpoint)  # placeholders: the state of the hub is dropped
    assert "prefix 'backbone.'" in report.wrapper and report.loaded == len(m.state_dict()) - len(report.fresh)
