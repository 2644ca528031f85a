import importlib.util
import os

import pytest

# The repository is an installed package (make install / pip install -e .): nothing is put on sys.path here.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')


# Files whose tests build real detectors / segmentors, load many configs, export, spawn processes or train:
# marked `slow`, so that `pytest -m "not slow"` is a quick check of the core (backbone contract, loading,
# hostile files, layer decay, fast paths, ops) while `make test` (CI) runs everything.
SLOW_FILES = {
    'test_configs.py', 'test_convnext_configs.py', 'test_metaformer_configs.py', 'test_unified_configs.py',
    'test_bad_input.py', 'test_model_zoo_flops.py', 'test_export_onnx.py', 'test_tools.py', 'test_tools_extra.py',
    'test_toy_pretrain.py', 'test_tta.py', 'test_benchmark_backbones.py', 'test_packaging.py',
    'test_exact_resume.py', 'test_lite_ops_configs.py', 'test_dist_equivalence.py', 'test_dist_failure.py',
    'test_openmmlab.py', 'test_unified.py', 'test_metaformer.py', 'test_conv2former_parity.py',
    'test_convnext_parity.py', 'test_metaformer_parity.py', 'test_model_channels.py', 'test_toy_data.py',
    'test_compile_bf16.py',
}
# single tests of the quick files that train, spawn a tool or run every family at detection-like sizes
SLOW_TESTS = ('test_runner_checkpoint_from_our_train_tool', 'test_print_param_groups', 'test_outputs_are_contiguous_nchw',
              'test_toy_feature_probe_tool', 'test_toy_seg_errors_tool')


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES or item.name.startswith(SLOW_TESTS):
            item.add_marker(pytest.mark.slow)


def load_tool(relpath: str):
    """A command-line tool (a script, not a package module) loaded from its file, to call its ``main``."""
    name = 'tool_' + relpath.replace('/', '_').replace('.py', '')
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_CONFIGS = {}


def build_config_model(path: str, device='cpu'):
    """``(cfg, model)``: a shipped detector or segmentor config built in its own registry scope on ``device``
    (``'meta'``: no memory), the backbone's pretrained weights left out."""
    import torch
    from mmengine.config import Config
    cfg = Config.fromfile(path)  # runs custom_imports: registers the families
    cfg.model.backbone.init_cfg = None
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(cfg.default_scope), torch.device(device):
        return cfg, MODELS.build(cfg.model)


def load_config(path: str):
    """A shipped config read once per test process (its custom imports run, so the backbones are registered);
    callers must not modify it (``copy.deepcopy`` first)."""
    if path not in _CONFIGS:
        from mmengine.config import Config

        from glue.runtime import fast_config_loading
        with fast_config_loading():
            _CONFIGS[path] = Config.fromfile(path)
    return _CONFIGS[path]


def smallest_archs():
    """(family, smallest arch, extra kwargs) for every family, plus the unified models with their
    stage norms kept; size ~ sum of depth x width^2 over the stages."""
    from backbones import families
    out = []
    for cls in families().values():
        def size(name, cls=cls):
            settings = cls.resolve_arch(name)[1]
            return sum(d * c * c for d, c in zip(settings['depths'], settings['dims']))
        arch = min(cls.arch_settings, key=size)
        out.append((cls.__name__, arch, {}))
        if cls.__name__.startswith('Unified'):
            out.append((cls.__name__, arch, {'stage_norms': 'keep'}))
    return out


def arch_id(v):
    """pytest id of a smallest_archs() parameter."""
    return v if isinstance(v, str) else ','.join(f'{k}={x}' for k, x in v.items())


def contract_model(family: str, arch: str, kwargs: dict, seed: int = 0, **extra):
    """A family's smallest size with one block per stage (every layer kind, a fraction of the time), seeded."""
    import torch

    from backbones import families
    cls = families()[family]
    settings = dict(cls.resolve_arch(arch)[1], depths=[1, 1, 1, 1])
    torch.manual_seed(seed)
    return cls(arch=settings, **kwargs, **extra)


def frozen_by_rule(model, k: int, names=None):
    """The parameter names (or other ``names``, e.g. of buffers) ``frozen_stages=k`` must freeze: the stem for
    k >= 0, and the downsamplers and blocks (with what belongs to them, e.g. stage norms) of stages 0..k-1."""
    out = set()
    for n in (names if names is not None else dict(model.named_parameters())):
        kind, stage, _ = model.param_position(n)
        if (k >= 0 and kind == 'stem') or (kind in ('downsample', 'block') and stage < k):
            out.add(n)
    return out


def det_batch(n: int = 2, h: int = 160, w: int = 192) -> dict:
    """A seeded mmdet batch (uint8 images, two boxes + masks per image) for loss / predict steps."""
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(0)
    boxes = [[int(0.1 * w), int(0.2 * h), int(0.47 * w), int(0.75 * h)],
             [int(0.52 * w), int(0.25 * h), int(0.94 * w), int(0.94 * h)]]
    samples = []
    for _ in range(n):
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                        scale_factor=(1., 1.), batch_input_shape=(h, w)))
        inst = InstanceData()
        inst.bboxes = torch.tensor(boxes, dtype=torch.float32)
        inst.labels = torch.tensor([0, 1])
        masks = torch.zeros(2, h, w, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            masks[i, y1:y2, x1:x2] = 1
        inst.masks = BitmapMasks(masks.numpy(), h, w)
        s.gt_instances = inst
        samples.append(s)
    return dict(inputs=[torch.randint(0, 255, (3, h, w), generator=g, dtype=torch.uint8) for _ in range(n)],
                data_samples=samples)

def seg_batch(n: int = 2, h: int = 96, w: int = 128, num_classes: int = 150) -> dict:
    """A seeded mmseg batch (uint8 images, random labels 0..num_classes-1) for loss / predict steps."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, h, w), generator=g))
        samples.append(s)
    return dict(inputs=[torch.randint(0, 255, (3, h, w), generator=g, dtype=torch.uint8) for _ in range(n)],
                data_samples=samples)


class LoopbackServer:
    """An HTTP server on 127.0.0.1 (a free port) serving ``files`` (path -> bytes), started inside a test.

    ``truncate``: paths whose response announces the full ``Content-Length`` but sends half the bytes
    and closes, as a dropped connection does. ``hits``: GET requests per path."""

    def __init__(self):
        import http.server
        import threading

        self.files, self.truncate, self.hits = {}, set(), {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header('Content-Type', 'application/octet-stream')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data[:len(data) // 2] if self.path in server.truncate else data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f'http://127.0.0.1:{self.httpd.server_address[1]}{path}'

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()




@pytest.fixture
def loopback_server():
    server = LoopbackServer()
    yield server
    server.close()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache for the test ($TORCH_HOME): returns its checkpoints folder."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    return tmp_path / 'torch' / 'hub' / 'checkpoints'


def autograd_nodes(y):
    """The autograd nodes behind tensor ``y`` (none when it was computed without gradients): which custom
    Functions (``fn.name()``, e.g. ``'_ConvModFunctionBackward'``) a forward really ran."""
    seen, todo = set(), [y.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            todo.extend(f for f, _ in fn.next_functions)
    return seen
