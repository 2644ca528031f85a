"""The one contract every multi-scale backbone follows.

A family subclasses :class:`MultiScaleBackbone` and supplies only what is particular to it:

* ``family`` (table prefix, e.g. ``'conv2former'``), ``arch_settings`` (name -> depths, dims, ...),
  ``arch_aliases``, ``arch_defaults`` (keys a custom ``arch`` dict may omit) and ``default_arch`` (when it is
  not the first size);
* ``_build(arch, in_channels, dpr)``, which must create ``self.downsample_layers`` (4 modules: the stem,
  then the three downsamplers; NCHW in, NCHW out) and ``self.stages`` (4 ``nn.Sequential`` of blocks,
  :meth:`MultiScaleBackbone.make_stages` builds them). All families use these two official names, so
  official checkpoints keep their keys. ``_build`` reads every setting from ``arch``;
* optionally ``family_options`` (its own constructor keywords, see below), ``stage_layout = 'nhwc'`` (blocks
  that take and return ``(N, H, W, C)`` maps), ``forward_stage`` (blocks needing extra arguments, or
  something after a stage), ``classifier_prefixes`` (checkpoint keys dropped on load) and
  ``convert_checkpoint`` (other layouts).

**Family keywords.** ``family_options`` maps a keyword to a :class:`FamilyOption`. Every such keyword sets an
entry of the resolved ``arch`` dict (its own name, or ``FamilyOption.key``): given, it overrides the value of
the size / custom dict / ``arch_defaults`` (where its default lives); ``None`` keeps it. The merged values are
validated once (``choices``, the option's ``check``) before ``_build``, which then finds everything in
``arch``. An unknown keyword is a ``TypeError`` listing the valid ones. Options naming ``layers`` can also be
switched on a built model with :meth:`MultiScaleBackbone.set_option`.

**NHWC stages.** The downsamplers hand NCHW maps (any memory format) to the stages. A family whose blocks work
on ``(N, H, W, C)`` tensors sets ``stage_layout = 'nhwc'``: :meth:`MultiScaleBackbone.forward_stage` permutes
(a view, no copy) before the first block and back after the last, so stage outputs are NCHW for every family.
Blocks that keep NCHW maps in channels_last memory and compute NHWC inside (ConvNeXt, Conv2Former) need no
stage layout: their permutes are free views too.

Everything else is shared and behaves the same for every family:

``out_indices``
    which stages are returned (negative indices count from the end). Stages after the last requested one
    are not computed.
``drop_path_rate``
    stochastic depth, linearly increasing over all blocks (0 at the first).
``frozen_stages``
    -1 freezes nothing; 0 freezes the stem (``downsample_layers.0``); k >= 1 freezes the stem and stages
    0..k-1 together with their downsamplers (``downsample_layers.1..k-1``). Frozen modules stay in eval
    mode (BatchNorm statistics and drop path are off) and get ``requires_grad=False``. Output norms are
    new, task-specific layers and always train.
``norm_eval``
    keep every BatchNorm of the backbone in eval mode during training (frozen running statistics).
``with_cp``
    activation checkpointing per block (saves memory, costs a second forward) while training.
``out_norm``
    a fresh LayerNorm over channels (eps 1e-6) on every returned map, as the official detection backbones
    of ConvNeXt and STM add (``out_norms.<i>``). ``False`` returns the raw stage outputs.
``check_finite``
    also refuse inputs holding NaN or Inf. Off by default: ``torch.isfinite(x).all()`` is cheap on CPU
    (measured at 1x3x800x1216, 2 threads: 21-42 ms, 0.6-1.2% of the forward of conv2former_n /
    unified_convnext_micro), but on CUDA reading the boolean is a host-device synchronisation every
    forward. Without it a non-finite input gives non-finite outputs (and losses), nothing else. Inside
    ``torch.compile`` the check is ``torch._assert_async`` (no graph break; a ``RuntimeError`` naming it).
``compile``
    ``False`` (default) runs eagerly. ``True`` or a dict of ``torch.compile`` options (e.g.
    ``dict(backend='inductor', mode='max-autotune', dynamic=False)``) compiles the trunk (stem, stages,
    output norms) on the first forward; the input checks stay eager. Every family compiles without graph
    breaks (training, ``with_cp``, autocast included); see docs/speed.md for measured speed-ups.
``init_cfg``
    ``dict(type='Pretrained', checkpoint=NAME_PATH_OR_URL, prefix=None, use_ema=False)`` loads a checkpoint in
    ``init_weights()`` through the strict loader of :mod:`backbones.checkpoint`; ``None`` keeps the
    random initialisation.

Inputs are checked once, here, for every family (cheap integer checks): a 4-D floating tensor, the
configured channel count, a non-empty batch, the parameters' dtype (unless autocast is on) and at least
``min_input_size()`` pixels each side -- the smallest size every computed stage handles, derived from the
convolutions of the stem, the downsamplers and the blocks (e.g. 32 for ConvNeXt, 31 for Conv2Former, 3 for
the MetaFormers, 29 for U-PVT's spatial reduction, 1 for the other unified models). Anything else raises
a ``ValueError`` / ``TypeError`` saying what was expected.

Outputs are a tuple of contiguous NCHW maps at strides 4/8/16/32 (``out_channels`` lists their widths;
contiguous because compiled ops such as mmcv's RoIAlign index raw NCHW memory), and
``get_layer_depth(name)`` gives every parameter's layer id for layer-wise learning-rate decay.
"""
import copy
import inspect
import logging
import math
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint as _checkpoint

from .layers import LayerNorm2d, check_choice

logger = logging.getLogger('backbones')

NUM_STAGES = 4
LAYER_DECAY_SCHEMES = ('layer_wise', 'stage_wise', 'block_wise')
STAGE_LAYOUTS = ('nchw', 'nhwc')


class FamilyOption(NamedTuple):
    """A constructor keyword particular to a family (an entry of its ``family_options``).

    ``key``: the ``arch`` entry it sets (default: the keyword itself); its default value lives in the family's
    ``arch_defaults``. ``choices``: the valid values, checked on the merged value wherever it came from.
    ``convert``: applied to a given value (e.g. ``float``). ``check(cls, arch, value)``: raises a ValueError
    for a given value the merged ``arch`` cannot take (e.g. a switch for layers the model does not have).
    ``layers``: ``(module class, attribute)`` holding the value in a built model; such an option can be
    switched later with :meth:`MultiScaleBackbone.set_option`.
    """
    key: Optional[str] = None
    choices: Tuple = ()
    convert: Optional[Callable[[Any], Any]] = None
    check: Optional[Callable[[type, dict, Any], None]] = None
    layers: Optional[Tuple[type, str]] = None


def _geometry(m: nn.Module) -> Optional[Tuple[int, int, int]]:
    """``(effective kernel, stride, padding)`` along the first axis of a conv / pooling layer, else None."""
    if isinstance(m, nn.Conv2d):
        if isinstance(m.padding, str):  # 'same' keeps the size; 'valid' is padding 0
            return (1, 1, 0) if m.padding == 'same' else (m.dilation[0] * (m.kernel_size[0] - 1) + 1, m.stride[0], 0)
        return m.dilation[0] * (m.kernel_size[0] - 1) + 1, m.stride[0], m.padding[0]
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        pair = lambda v: v if isinstance(v, int) else v[0]  # noqa: E731
        stride = m.stride if m.stride is not None else m.kernel_size
        return pair(m.kernel_size), pair(stride), pair(m.padding)
    return None


class MultiScaleBackbone(nn.Module):
    family: str = ''
    arch_settings: Dict[str, dict] = {}
    arch_aliases: Dict[str, str] = {}
    arch_defaults: dict = {}
    default_arch: Optional[str] = None  # the size built when no arch is given (None: the first of arch_settings)
    # keywords beyond the shared contract (module docstring): name -> FamilyOption
    family_options: Dict[str, FamilyOption] = {}
    # 'nhwc': the blocks take and return (N, H, W, C) tensors; forward_stage permutes around the stage
    stage_layout: str = 'nchw'
    # checkpoint keys that belong to the ImageNet classifier and are dropped when loading
    classifier_prefixes: Tuple[str, ...] = ('head.', 'norm.')
    # checkpoint keys that are not parameters of ours and are dropped silently (e.g. cached buffers)
    ignored_checkpoint_keys: Tuple[str, ...] = ()

    def __init__(self,
                 arch: Union[str, dict, None] = None,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.0,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 out_norm: bool = True,
                 check_finite: bool = False,
                 compile: Union[bool, dict] = False,
                 init_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 **options):
        super().__init__()
        check_choice(f'{type(self).__name__}.stage_layout', self.stage_layout, STAGE_LAYOUTS)
        self.check_finite = bool(check_finite)
        if not isinstance(compile, (bool, dict)):
            raise TypeError(f'compile must be True/False or a dict of torch.compile options, got {compile!r}')
        self.compile_options: Optional[dict] = (dict(compile) if isinstance(compile, dict) else
                                                {} if compile else None)
        self._min_size_cache: Dict[int, int] = {}
        if arch is None:
            arch = self.default_arch or next(iter(self.arch_settings))
        self.arch_name, arch = self.resolve_arch(arch)
        self.arch = self.merge_options(arch, options)
        self.depths: List[int] = list(self.arch['depths'])
        self.dims: List[int] = list(self.arch['dims'])
        self.in_channels = int(in_channels)
        self.out_indices = self._check_out_indices(out_indices)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= NUM_STAGES:
            raise ValueError(f'frozen_stages must be an int in [-1, {NUM_STAGES}] (-1 nothing, 0 the stem, '
                             f'k the stem and the first k stages), got {frozen_stages!r}')
        if not 0.0 <= float(drop_path_rate) < 1.0:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.drop_path_rate = float(drop_path_rate)

        n = sum(self.depths)  # linspace in Python: this also runs under torch.device('meta')
        dpr = [self.drop_path_rate * j / (n - 1) if n > 1 else 0.0 for j in range(n)]
        self._build(self.arch, self.in_channels, dpr)
        if len(self.downsample_layers) != NUM_STAGES or len(self.stages) != NUM_STAGES:
            raise RuntimeError(f'{type(self).__name__}._build must create {NUM_STAGES} downsample_layers '
                               f'and {NUM_STAGES} stages')
        self.out_norm = out_norm
        if out_norm:
            self.out_norms = nn.ModuleList(
                LayerNorm2d(self.dims[i], eps=1e-6) if i in self.out_indices else nn.Identity()
                for i in range(NUM_STAGES))

        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('give either pretrained= or init_cfg=, not both')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        if init_cfg is not None and not isinstance(init_cfg, dict):
            raise TypeError(f'init_cfg must be a dict or None, got {type(init_cfg).__name__}')
        self.init_cfg = copy.deepcopy(init_cfg)
        self.is_init = False
        self._freeze_stages()

    # ------------------------------------------------------------------ arch handling
    @classmethod
    def arch_names(cls) -> List[str]:
        return list(cls.arch_settings)

    @classmethod
    def resolve_arch(cls, arch: Union[str, dict]) -> Tuple[str, dict]:
        """Return ``(name, settings)`` for an arch name (short, long or table name) or a custom dict."""
        if isinstance(arch, dict):
            settings = {**cls.arch_defaults, **arch}
            missing = [k for k in ('depths', 'dims') if k not in settings]
            if missing:
                raise ValueError(f'custom {cls.__name__} arch dict needs {missing}; got keys {sorted(arch)}')
            for key in ('depths', 'dims'):
                if len(settings[key]) != NUM_STAGES:
                    raise ValueError(f'custom arch {key} must have {NUM_STAGES} entries, got {settings[key]}')
            return 'custom', settings
        if not isinstance(arch, str):
            raise TypeError(f'arch must be a name or a dict, got {type(arch).__name__}')
        key = arch.lower()
        if key.startswith(cls.family + '_'):
            key = key[len(cls.family) + 1:]
        key = cls.arch_aliases.get(key, key)
        if key not in cls.arch_settings:
            aliases = ', '.join(f'{a}->{n}' for a, n in cls.arch_aliases.items())
            raise ValueError(f'unknown {cls.__name__} arch {arch!r}; valid: {", ".join(cls.arch_settings)}'
                             + (f' (aliases: {aliases})' if aliases else '')
                             + ', or a dict with depths/dims')
        return key, {**cls.arch_defaults, **cls.arch_settings[key]}

    @classmethod
    def merge_options(cls, arch: dict, options: Dict[str, Any]) -> dict:
        """``arch`` with the family keywords ``options`` merged in and every family option's value checked
        (module docstring); an unknown keyword is a TypeError listing the valid ones."""
        unknown = [k for k in options if k not in cls.family_options]
        if unknown:
            shared = [p for p in inspect.signature(MultiScaleBackbone.__init__).parameters
                      if p not in ('self', 'options')]
            raise TypeError(f'{cls.__name__} got unknown keyword argument(s) {", ".join(unknown)}; its family '
                            f'keywords: {", ".join(cls.family_options) or "none"}; shared: {", ".join(shared)}')
        arch = dict(arch)
        for name, opt in cls.family_options.items():
            key = opt.key or name
            if options.get(name) is not None:
                arch[key] = cls._checked_option(name, arch, options[name])
            if opt.choices:
                check_choice(name, arch.get(key), opt.choices)
        return arch

    @classmethod
    def _checked_option(cls, name: str, arch: dict, value):
        opt = cls.family_options[name]
        if opt.convert is not None:
            value = opt.convert(value)
        if opt.choices:
            check_choice(name, value, opt.choices)
        if opt.check is not None:
            opt.check(cls, arch, value)
        return value

    def set_option(self, name: str, value) -> None:
        """Switch a family option of this built model (one that names its ``layers``), e.g.
        ``set_option('attn_impl', 'explicit')``; checked as at construction."""
        opt = self.family_options.get(name)
        switchable = [n for n, o in self.family_options.items() if o.layers is not None]
        if opt is None or opt.layers is None:
            raise ValueError(f'{type(self).__name__} cannot switch {name!r} after construction; switchable: '
                             f'{", ".join(switchable) or "none"}')
        value = self._checked_option(name, self.arch, value)
        layer_cls, attr = opt.layers
        for m in self.modules():
            if isinstance(m, layer_cls):
                setattr(m, attr, value)
        self.arch[opt.key or name] = value

    def _check_out_indices(self, out_indices) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        result = []
        for i in out_indices:
            if not isinstance(i, int) or not -NUM_STAGES <= i < NUM_STAGES:
                raise ValueError(f'out_indices entries must be ints in [-{NUM_STAGES}, {NUM_STAGES - 1}], '
                                 f'got {tuple(out_indices)}')
            result.append(i % NUM_STAGES)
        if not result or len(set(result)) != len(result):
            raise ValueError(f'out_indices must be non-empty and without repeats, got {tuple(out_indices)}')
        return tuple(sorted(result))

    @property
    def out_channels(self) -> List[int]:
        return [self.dims[i] for i in self.out_indices]

    @property
    def out_strides(self) -> List[int]:
        return [4 * 2 ** i for i in self.out_indices]

    # ------------------------------------------------------------------ family hooks
    def _build(self, arch: dict, in_channels: int, dpr: List[float]) -> None:
        raise NotImplementedError

    def forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks of stage ``i`` on an NCHW map, return an NCHW map (permuted views around the blocks
        when ``stage_layout`` is 'nhwc'; activation checkpointing per block when ``with_cp``)."""
        nhwc = self.stage_layout == 'nhwc'
        if nhwc:
            x = x.permute(0, 2, 3, 1)
        if self.with_cp and self.training and torch.is_grad_enabled():
            for block in self.stages[i]:
                x = _checkpoint(block, x, use_reentrant=False)
        else:
            x = self.stages[i](x)
        return x.permute(0, 3, 1, 2) if nhwc else x

    @staticmethod
    def make_stages(depths: Sequence[int], dpr: Sequence[float],
                    block: Callable[[int, int, float], nn.Module]) -> nn.ModuleList:
        """The ``stages`` of ``_build``: stage ``i`` is ``nn.Sequential(block(i, j, drop_path) for j < depths[i])``,
        the drop-path rates taken from ``dpr`` in order (blocks are made in that order: the same random init)."""
        stages, cur = nn.ModuleList(), 0
        for i, depth in enumerate(depths):
            stages.append(nn.Sequential(*[block(i, j, dpr[cur + j]) for j in range(depth)]))
            cur += depth
        return stages

    @classmethod
    def convert_checkpoint(cls, state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], str]:
        """Map a foreign key layout onto ours; return ``(state_dict, layout_name)``."""
        return state_dict, 'official'

    # ------------------------------------------------------------------ forward
    def stage_sizes(self, size: int, last: Optional[int] = None) -> Optional[List[int]]:
        """Side length of every stage's map (0..``last``) for an input side of ``size`` pixels, or ``None``
        when a convolution on the way would get less than its kernel. Follows the ``nn.Conv2d`` /
        pooling layers of the stem and downsamplers in registration order (the order they run in, for
        every family here) and checks those inside the blocks (e.g. U-PVT's spatial reduction) against
        the stage's size; the blocks themselves keep the size. Only the first axis of each layer is
        used: the layers here are square."""
        last = self.out_indices[-1] if last is None else last
        sizes = []
        for i in range(last + 1):
            for m in self.downsample_layers[i].modules():
                geo = _geometry(m)
                if geo is None:
                    continue
                k, s, p = geo
                if size + 2 * p < k:
                    return None
                size = (size + 2 * p - k) // s + 1
            for m in self.stages[i].modules():
                geo = _geometry(m)
                if geo is not None and size + 2 * geo[2] < geo[0]:
                    return None
            sizes.append(size)
        return sizes

    def min_input_size(self) -> int:
        """The smallest input side (pixels) the computed stages handle (see :meth:`stage_sizes`)."""
        last = self.out_indices[-1]
        if last not in self._min_size_cache:
            self._min_size_cache[last] = next(n for n in range(1, 4097) if self.stage_sizes(n, last) is not None)
        return self._min_size_cache[last]

    def check_input(self, x) -> None:
        """The checks of the module docstring; a clear ``ValueError`` / ``TypeError`` for bad input."""
        name = type(self).__name__
        if not torch.is_tensor(x):
            raise TypeError(f'{name} expects a torch.Tensor (N, {self.in_channels}, H, W), got {type(x).__name__}')
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'{name} expects an NCHW batch with {self.in_channels} channels, '
                             f'got shape {tuple(x.shape)}')
        if not x.is_floating_point():
            raise TypeError(f'{name} expects a floating-point input, got {x.dtype} (convert images with '
                            f'.float() and normalise them first)')
        if x.shape[0] == 0:
            raise ValueError(f'{name} got an empty batch, shape {tuple(x.shape)}')
        weight = next(self.parameters(), None)
        if weight is not None and x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f'{name} has {weight.dtype} parameters but got a {x.dtype} input (cast one to the '
                            f'other, or run under torch.autocast)')
        h, w = x.shape[-2:]
        m = self.min_input_size()
        if h < m or w < m:
            raise ValueError(f'{name}(arch={self.arch_name!r}) needs inputs of at least {m}x{m} pixels '
                             f'(out_indices {self.out_indices}), got {h}x{w}; pad or resize the image')
        if self.check_finite and torch.compiler.is_compiling():  # no .item(): an assertion in the graph
            torch._assert_async(torch.isfinite(x).all(), f'{name} got an input with NaN/Inf values (check_finite=True)')
        elif self.check_finite and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f'{name} got an input with {bad} NaN/Inf values (check_finite=True)')

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        if self.compile_options is not None and not torch.compiler.is_compiling():
            return self._compiled_trunk()(x)
        return self.forward_trunk(x)

    def _compiled_trunk(self):
        """``torch.compile(self.forward_trunk, **compile_options)``, made once per module. Kept with the
        module's id: a deep copy (EMA models) gets its own, not the original's (bound to the original)."""
        cached = self.__dict__.get('_compiled')
        if cached is None or cached[0] != id(self):
            cached = self.__dict__['_compiled'] = (id(self), torch.compile(self.forward_trunk, **self.compile_options))
        return cached[1]

    def __getstate__(self):  # pickling / deepcopy: the compiled function is rebuilt, never copied
        state = super().__getstate__().copy()
        state.pop('_compiled', None)
        return state

    def forward_trunk(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Stem, stages and output norms on a checked input (what ``compile`` compiles)."""
        outs = []
        last = self.out_indices[-1]
        for i in range(last + 1):
            x = self.downsample_layers[i](x)
            x = self.forward_stage(i, x)
            if i in self.out_indices:
                y = self.out_norms[i](x) if self.out_norm else x
                # Contiguous NCHW, not a channels-last view: the LayerNorms (and the NHWC families) leave
                # permuted strides, which convolutions accept but compiled ops that index raw NCHW memory
                # do not. mmcv's RoIAlign read such maps as scrambled stripes, and a Mask R-CNN on any
                # backbone here trained its RPN but never its RoI heads (toy bbox mAP 0.002 -> see README).
                outs.append(y.contiguous())
        return tuple(outs)

    # ------------------------------------------------------------------ freezing / modes
    def _frozen_modules(self) -> List[nn.Module]:
        mods = []
        if self.frozen_stages >= 0:
            mods.append(self.downsample_layers[0])
        for i in range(self.frozen_stages):
            if i > 0:
                mods.append(self.downsample_layers[i])
            mods.append(self.stages[i])
        return mods

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """Honour ``init_cfg`` (called by OpenMMLab runners; call it yourself in plain PyTorch)."""
        cfg = self.init_cfg
        if cfg is not None:
            kind = cfg.get('type')
            if kind != 'Pretrained':
                raise ValueError(f"{type(self).__name__} supports init_cfg=dict(type='Pretrained', "
                                 f"checkpoint=...) or None, got type={kind!r}")
            if not cfg.get('checkpoint'):
                raise ValueError("init_cfg type 'Pretrained' needs checkpoint=NAME_PATH_OR_URL")
            from .checkpoint import load_pretrained
            load_pretrained(self, cfg['checkpoint'], prefix=cfg.get('prefix'),
                            use_ema=cfg.get('use_ema', False), map_location=cfg.get('map_location', 'cpu'))
        self.is_init = True

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        """Default initialisation of the official codebases: trunc-normal(0.02) weights, zero biases."""
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> List[str]:
        """Names (relative to the backbone) of parameters that must get no weight decay beyond 1-D ones."""
        return []

    # ------------------------------------------------------------------ layer-wise lr decay
    def param_position(self, name: str) -> Tuple[str, int, int]:
        """``(kind, stage, block)`` of a parameter; kind is stem/downsample/block/out_norm/other."""
        parts = name.split('.')
        if parts[0] == 'downsample_layers':
            s = int(parts[1])
            return ('stem', 0, -1) if s == 0 else ('downsample', s, -1)
        if parts[0] == 'stages':
            return 'block', int(parts[1]), int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
        if parts[0] == 'out_norms':
            return 'out_norm', int(parts[1]), -1
        return 'other', -1, -1

    def num_layers(self, scheme: str = 'layer_wise') -> int:
        """The ``num_layers`` of the published recipes, derived from the depths.

        layer_wise: 3 + ceil(depth of stage 2 / 3) (6 for 9 blocks, 12 for 27, as in ConvNeXt's configs);
        stage_wise: 6 for models with at most 9 stage-2 blocks, else 12 (ConvNeXt's UperNet configs);
        block_wise: every block is a layer (sum of depths).
        """
        if scheme == 'layer_wise':
            return 3 + math.ceil(self.depths[2] / 3)
        if scheme == 'stage_wise':
            return 6 if self.depths[2] <= 9 else 12
        if scheme == 'block_wise':
            return sum(self.depths)
        raise ValueError(f'unknown layer decay scheme {scheme!r}; valid: {", ".join(LAYER_DECAY_SCHEMES)}')

    def get_layer_depth(self, param_name: str, prefix: str = '', scheme: str = 'layer_wise',
                        num_layers: Optional[int] = None) -> Tuple[int, int]:
        """Layer id of a parameter and the total number of ids, ``(layer_id, max_layer_id)``.

        Learning-rate scale = ``decay_rate ** (max_layer_id - layer_id - 1)``; parameters outside the
        backbone (or not starting with ``prefix``) get ``max_layer_id - 1`` (scale 1), like the heads.
        ``layer_wise`` and ``stage_wise`` reproduce ConvNeXt's published rules (mmdet's
        ``get_layer_id_for_convnext`` / ``get_stage_id_for_convnext``) for every family; ``block_wise``
        gives every block its own id.
        """
        n = self.num_layers(scheme) if num_layers is None else int(num_layers)
        max_id = n + 2
        if not param_name.startswith(prefix):
            return max_id - 1, max_id
        kind, stage, block = self.param_position(param_name[len(prefix):])
        if kind in ('out_norm', 'other'):
            return max_id - 1, max_id
        if scheme == 'layer_wise':
            if kind == 'stem':
                return 0, max_id
            if stage == 3:
                return n, max_id
            if kind == 'downsample':
                return stage + 1, max_id
            if stage in (0, 1):
                return stage + 1, max_id
            return min(3 + block // 3, n - 1), max_id
        if scheme == 'stage_wise':
            if kind in ('stem', 'downsample'):
                return 0, max_id
            return stage + 1, max_id
        # block_wise: stem 0, blocks 1..sum(depths); a downsampler goes with the first block of its stage
        first = 1 + sum(self.depths[:stage])
        if kind == 'stem':
            return 0, max_id
        if kind == 'downsample':
            return first, max_id
        return first + block, max_id

    # ------------------------------------------------------------------ misc
    def extra_repr(self) -> str:
        options = ''.join(f', {name}={self.arch[o.key or name]!r}' for name, o in self.family_options.items())
        return (f'arch={self.arch_name!r}, depths={self.depths}, dims={self.dims}, out_indices={self.out_indices}, '
                f'frozen_stages={self.frozen_stages}, norm_eval={self.norm_eval}, with_cp={self.with_cp}{options}')
