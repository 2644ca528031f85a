"""The runtime under the tools: config loading, CPU adaptation, distributed set-up, runner building and the
command-line arguments that train / test / demo tools share. mmengine's ``Runner`` is the training loop;
this module only prepares its config.

On a machine without CUDA (tests, the CPU demo): distributed runs use the gloo backend and plain
DistributedDataParallel on CPU, SyncBN layers in the config become :class:`glue.sync_bn.CPUSyncBatchNorm`
(torch's SyncBatchNorm refuses CPU tensors once a process group exists; ours all-reduces the statistics and
their gradients over gloo), or plain BN in a single-process run (the same thing there), and AmpOptimWrapper
falls back to fp32 OptimWrapper (mmengine's AMP wrapper needs an accelerator). Each change is reported once.
"""
import argparse
import contextlib
import os
import os.path as osp
import subprocess
import warnings

SCOPES = ('mmdet', 'mmseg')
LAUNCHERS = ('none', 'pytorch', 'slurm')
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')


def _note(msg: str) -> None:
    """Report a config change once per process (before the runner's logger exists)."""
    warnings.warn(msg, UserWarning, stacklevel=3)


# --------------------------------------------------------------------------------- config
def load_config(path, cfg_options=None, data_root=None):
    """Read a config, apply ``--cfg-options`` and ``--data-root``, register the task's modules.

    Returns the :class:`mmengine.Config`; ``cfg.default_scope`` is 'mmdet' or 'mmseg'.
    """
    from mmengine.config import Config

    cfg = Config.fromfile(path)  # runs custom_imports: registers our backbones
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    register_modules(cfg)
    if data_root:
        set_data_root(cfg, data_root)
    return cfg


@contextlib.contextmanager
def fast_config_loading():
    """mmengine re-reads every metafile of mmdet/mmseg (~100 YAML files) for each ``mmdet::`` /
    ``mmseg::`` base of each config; within this context each external base path is resolved once
    (the same result, 0.1 s instead of 0.5 s a config)."""
    from mmengine.config import Config

    orig = Config.__dict__['_get_cfg_path']
    if getattr(orig.__func__, '_zoo_cached', False):  # already inside
        yield
        return
    cache = {}

    def cached(cfg_path, filename):
        if '::' not in cfg_path:
            return orig.__func__(cfg_path, filename)
        if cfg_path not in cache:
            cache[cfg_path] = orig.__func__(cfg_path, filename)
        return cache[cfg_path]

    cached._zoo_cached = True
    Config._get_cfg_path = staticmethod(cached)
    try:
        yield
    finally:
        Config._get_cfg_path = orig


def register_modules(cfg) -> str:
    """Call mmdet's or mmseg's ``register_all_modules`` according to ``cfg.default_scope``."""
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        from mmdet.utils import register_all_modules
    elif scope == 'mmseg':
        from mmseg.utils import register_all_modules
    else:
        raise ValueError(f"{cfg.filename}: default_scope must be one of {SCOPES}, got {scope!r} "
                         "(inherit a det or seg base config)")
    register_all_modules(init_default_scope=False)  # the Runner sets the scope from the config
    return scope


def _leaf_datasets(ds):
    """The innermost dataset dicts of a (possibly wrapped: RepeatDataset, ConcatDataset ...) dataset."""
    if ds is None:
        return []
    if isinstance(ds, (list, tuple)):
        return [leaf for d in ds for leaf in _leaf_datasets(d)]
    if 'datasets' in ds:
        return _leaf_datasets(ds['datasets'])
    if 'dataset' in ds:
        return _leaf_datasets(ds['dataset'])
    return [ds]


def _metrics(evaluator):
    if evaluator is None:
        return []
    if isinstance(evaluator, (list, tuple)):
        return [m for e in evaluator for m in _metrics(e)]
    if 'metrics' in evaluator:  # dict(type='Evaluator', metrics=[...])
        return _metrics(evaluator['metrics'])
    return [evaluator]


def set_data_root(cfg, data_root: str) -> None:
    """Point the train/val/test datasets at ``data_root``; evaluators with an ``ann_file``
    (CocoMetric) get ``data_root`` joined with their dataset's ``ann_file``."""
    data_root = str(data_root)
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        leaves = _leaf_datasets(loader.get('dataset'))
        for ds in leaves:
            ds['data_root'] = data_root
        ann_file = next((ds['ann_file'] for ds in leaves if ds.get('ann_file')), None)
        for metric in _metrics(cfg.get(f'{split}_evaluator')):
            if isinstance(metric, dict) and metric.get('ann_file') and ann_file:
                metric['ann_file'] = osp.join(data_root, ann_file)


def replace_sync_bn(node, new_type: str = 'BN') -> int:
    """Turn every ``norm_cfg`` of type SyncBN / MMSyncBN into ``new_type`` (BN, or CPUSyncBN for a
    distributed CPU run), in place; returns how many were changed."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') in SYNC_BN_TYPES:
            node['type'] = new_type
            count += 1
        for value in node.values():
            count += replace_sync_bn(value, new_type)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += replace_sync_bn(value, new_type)
    return count


def ddp_wrapper_cfg(cfg) -> dict:
    """The config's ``model_wrapper_cfg``, or the one mmengine's Runner builds without it (its DDP wrapper)."""
    return cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))


def adapt_to_cpu(cfg, launcher: str) -> None:
    """Settings that let a GPU recipe run on a machine without CUDA (see the module docstring)."""
    import torch

    if torch.cuda.is_available():
        return
    from .sync_bn import CPU_SYNC_BN, register_cpu_sync_bn

    # One process: SyncBN is BN. Several (gloo): our CPU SyncBN keeps the cross-rank statistics.
    new_type = 'BN' if launcher == 'none' else CPU_SYNC_BN
    register_cpu_sync_bn()
    n = replace_sync_bn(cfg.model, new_type)
    if cfg.get('tta_model'):
        n += replace_sync_bn(cfg.tta_model, new_type)
    if n:
        _note(f'no CUDA: {n} SyncBN norm_cfg(s) in the model replaced by {new_type} '
              '(torch SyncBatchNorm does not run on CPU)')
    optim = cfg.get('optim_wrapper')
    if optim and optim.get('type') == 'AmpOptimWrapper':
        optim['type'] = 'OptimWrapper'
        for key in ('loss_scale', 'dtype', 'use_fsdp'):
            optim.pop(key, None)
        _note('no CUDA: AmpOptimWrapper replaced by OptimWrapper (fp32)')
    if launcher != 'none':
        if cfg.get('env_cfg') is None:
            cfg.env_cfg = dict()
        if cfg.env_cfg.get('dist_cfg') is None:
            cfg.env_cfg.dist_cfg = dict()
        cfg.env_cfg.dist_cfg.backend = 'gloo'
        wrapper = ddp_wrapper_cfg(cfg)
        wrapper['device_ids'] = None  # CPU modules: DDP wants no device ids
        cfg.model_wrapper_cfg = wrapper


def sanitize_dataloaders(cfg) -> None:
    """``persistent_workers`` needs ``num_workers > 0`` (e.g. after --cfg-options ...num_workers=0)."""
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if loader and loader.get('num_workers', 0) == 0 and loader.get('persistent_workers'):
            loader['persistent_workers'] = False


def set_work_dir(cfg, config_path: str, work_dir=None) -> None:
    """CLI > the config's ``work_dir`` > ``work_dirs/<config name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(config_path))[0])


def prepare_config(cfg, config_path: str, launcher: str = 'none', work_dir=None) -> None:
    from .channels import check_model_channels
    from .memory_format import use_channels_last_ddp
    from .resume import prepare_resume

    check_model_channels(cfg.get('model'))  # neck/head in_channels vs backbone out_channels, named
    cfg.launcher = launcher
    set_work_dir(cfg, config_path, work_dir)
    adapt_to_cpu(cfg, launcher)
    use_channels_last_ddp(cfg, launcher)  # ChannelsLastHook: convert before DDP lays out its buckets
    sanitize_dataloaders(cfg)
    prepare_resume(cfg)  # generator states in checkpoints; --resume: newest complete checkpoint


# ---------------------------------------------------------------------------- distributed
def init_distributed(launcher: str, cfg) -> None:
    """Without CUDA, start the gloo process group here: mmengine's ``init_dist`` calls
    ``torch.cuda.set_device`` and fails. With CUDA the Runner initialises it (nccl)."""
    import torch
    import torch.distributed as dist

    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    if launcher == 'slurm':
        node_list = os.environ['SLURM_NODELIST']
        addr = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
        os.environ.setdefault('MASTER_ADDR', addr)
        os.environ.setdefault('MASTER_PORT', '29500')
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    kwargs = {}
    timeout = ((cfg.get('env_cfg') or {}).get('dist_cfg') or {}).get('timeout')
    if timeout is not None:
        import datetime
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    dist.init_process_group(backend='gloo', **kwargs)


def shutdown_distributed() -> None:
    """Meet at a barrier and destroy the process group before the interpreter exits. Left to interpreter
    teardown, gloo's worker threads are sometimes destroyed while still joinable and a rank aborts
    ("terminate called without an active exception", exit -6) after a run that finished correctly."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def build_runner(cfg):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


# ----------------------------------------------------------------------------- shared CLI
def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--work-dir``, ``--cfg-options``, ``--launcher``, ``--data-root`` and the launcher's ``--local-rank``."""
    from mmengine.config import DictAction

    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: the config\'s work_dir, else work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (e.g. '
                        'train_cfg.max_epochs=1 "model.backbone.out_indices=[1,2,3]")')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--data-root', help='dataset root replacing the data_root of the '
                        'train/val/test dataloaders (and the CocoMetric ann_file)')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    return parser


def parse_with_common_args(parser: argparse.ArgumentParser, argv=None):
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def write_json(path: str, obj, indent: int = 2) -> None:
    """A tool's ``--json`` output: ``obj`` written to ``path``, its folder created."""
    import json
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f, indent=indent)
