"""The recipe table: the per-family, per-size numbers of every detection / segmentation config, in one place.

Every config under ``configs/det`` and ``configs/seg`` is ``<family>_<size>[_<init>]_<method>.py`` and inherits a
shared recipe base (``configs/_base_``: schedule, augmentation, heads, optimizer type). What differs per family
and size is listed here, once:

* **row**: the ConvNeXt recipe row (T / S / B / L / XL) whose lr and layer-decay rate the config takes
  (:data:`ROWS`, the ConvNeXt paper's COCO / ADE20K recipes and facebookresearch/ConvNeXt's configs);
  families without published values map their sizes onto a row, as each config's header states;
* **drop path** per method (a family with one value per size uses it for every method);
* **checkpoint**: the named release file ``init_cfg`` starts from (``backbones/hub.py``), per initialisation
  (``''``: the ImageNet release; ``'dinov3'``: DINOv3's ConvNeXt);
* **precision**: ``fp32`` (``OptimWrapper``) for the methods listed in ``fp32``, else ``fp16``
  (``AmpOptimWrapper``); the STM 1x protocol is always fp32;
* **crop**: the UperNet crop (512, or 640 for the IN-22K L/XL rows), which picks the segmentation base.

The configs keep their numbers (they stay plain mmengine files, readable alone); ``tools/analysis/recipes.py
--check`` and ``tests/test_configs.py`` verify every config against this table, and
``docs/recipes.md`` is generated from it. Pure data: nothing here imports torch or OpenMMLab.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

# ----------------------------------------------------------------------------------------- methods
#: config-name suffix -> (recipe base under configs/_base_, title)
METHODS = {
    'maskrcnn': ('det/mask-rcnn_fpn_3x_coco.py', 'Mask R-CNN 3x (COCO), ConvNeXt recipe'),
    'maskrcnn1x': ('det/mask-rcnn_fpn_1x_coco_stm.py', 'Mask R-CNN 1x (COCO), STM-Evaluation protocol'),
    'cascade': ('det/cascade-mask-rcnn_fpn_3x_coco.py', 'Cascade Mask R-CNN 3x (COCO), ConvNeXt recipe'),
    'upernet': ('seg/upernet_160k_ade20k-{crop}x{crop}.py', 'UperNet 160k (ADE20K)'),
}
THREE = ('maskrcnn', 'cascade', 'upernet')

#: (lr, layer-decay rate) per method and ConvNeXt row. Published (the ConvNeXt paper's COCO / ADE20K recipes and
#: facebookresearch/ConvNeXt's configs): Cascade
#: T/S/B/L/XL, UperNet T/S/B/L/XL, Mask R-CNN T; Mask R-CNN S/B/L/XL: the base rule (the T row's values).
ROWS = {
    'maskrcnn': {r: (1e-4, 0.95) for r in ('T', 'S', 'B', 'L', 'XL')},
    'cascade': dict(T=(2e-4, 0.7), S=(2e-4, 0.7), B=(2e-4, 0.8), L=(1e-4, 0.7), XL=(1e-4, 0.7)),
    'upernet': dict(T=(1e-4, 0.9), S=(1e-4, 0.9), B=(1e-4, 0.9), L=(1e-4, 0.9), XL=(8e-5, 0.9)),
    'maskrcnn1x': {r: (1e-4, 1.0) for r in ('T', 'S', 'B')},  # STM protocol: one lr, no layer decay
}


@dataclass(frozen=True)
class Size:
    """One size of a family: see the module doc. ``drop_path``: one value, or (maskrcnn, cascade, upernet)."""
    row: str
    drop_path: object
    checkpoint: str
    fp32: Tuple[str, ...] = ()
    crop: int = 512
    inits: Dict[str, str] = field(default_factory=dict)  # other initialisations: tag -> checkpoint


@dataclass(frozen=True)
class Family:
    type: str  # the registered backbone type
    methods: Tuple[str, ...]
    sizes: Dict[str, Size]
    note: str = ''  # where the numbers come from (docs/recipes.md)


_L22K = ('maskrcnn', 'cascade', 'upernet')  # ConvNeXt L / XL rows: fp32 in every method


def _dinov3(full):
    return {'dinov3': f'convnext_{full}.dinov3_lvd1689m'}


def _metaformer(family, drop_paths):
    rows = dict(s12='T', s18='T', s24='T', s36='S', m36='S', m48='B', b36='B')
    return Family(family, THREE, {s: Size(rows[s], dp, f'{family.lower()}_{s}.in1k') for s, dp in drop_paths.items()},
                  'ConvNeXt row by size (s12/s18/s24 -> T, s36/m36 -> S, m48/b36 -> B); drop path: the ImageNet '
                  'training value (the ImageNet training setting of sail-sg/metaformer; nothing downstream is published)')


def _unified(type_, family):
    sizes = dict(micro=('T', 0.1), tiny=('T', 0.2), small=('S', 0.2), base=('B', 0.3))
    return Family(type_, ('maskrcnn1x',) + THREE,
                  {s: Size(row, dp, f'{family}_{s}.in1k') for s, (row, dp) in sizes.items()},
                  'STM 1x protocol (of the STM-Evaluation paper) and the ConvNeXt rows by size (micro/tiny -> T, '
                  'small -> S, base -> B); drop path: the STM detection value of the size')


#: family prefix (the config names' and ``cls.family``) -> its recipe per size
FAMILIES: Dict[str, Family] = {
    'conv2former': Family('Conv2Former', THREE, {
        'n': Size('T', (0.4, 0.4, 0.4), 'conv2former_n.in1k'),
        't': Size('T', (0.4, 0.2, 0.4), 'conv2former_t.in1k'),
        's': Size('S', (0.6, 0.6, 0.3), 'conv2former_s.in1k'),
        'b': Size('B', (0.9, 0.9, 0.4), 'conv2former_b.in1k'),
        'l': Size('L', (0.7, 0.7, 0.4), 'conv2former_l.in22k_ft_in1k', fp32=('maskrcnn', 'cascade'), crop=640),
    }, 'lr / layer decay: the ConvNeXt row of the size (N -> T); Cascade drop path: the Conv2Former paper (T 0.2, '
       'S 0.6, B 0.9), else the ConvNeXt row; Mask R-CNN S/B/L: the base rule (T row lr / decay, the Cascade '
       'drop path); L: IN-22K then 1K-fine-tuned files, fp32 detection, 640 crops'),
    'convnext': Family('ConvNeXt', THREE, {
        't': Size('T', (0.4, 0.4, 0.4), 'convnext_tiny.in1k', inits=_dinov3('tiny')),
        's': Size('S', (0.6, 0.6, 0.3), 'convnext_small.in1k', inits=_dinov3('small')),
        'b': Size('B', (0.7, 0.7, 0.4), 'convnext_base.in1k', inits=_dinov3('base')),
        'l': Size('L', (0.7, 0.7, 0.4), 'convnext_large.in22k', fp32=_L22K, crop=640, inits=_dinov3('large')),
        'xl': Size('XL', (0.8, 0.8, 0.4), 'convnext_xlarge.in22k', fp32=_L22K, crop=640),
    }, 'published (ConvNeXt paper, COCO and ADE20K recipes); Mask R-CNN beyond T: the base rule (T row lr / decay, the '
       'Cascade drop path)'),
    'convnextv2': Family('ConvNeXtV2', THREE, {
        **{s: Size('T', (0.4, 0.4, 0.4), f'convnextv2_{s}.fcmae_ft_in1k')
           for s in ('atto', 'femto', 'pico', 'nano', 'tiny')},
        'base': Size('B', (0.7, 0.7, 0.4), 'convnextv2_base.fcmae_ft_in1k'),
        'large': Size('L', (0.7, 0.7, 0.4), 'convnextv2_large.fcmae_ft_in22k_in1k', fp32=_L22K, crop=640),
        'huge': Size('XL', (0.8, 0.8, 0.4), 'convnextv2_huge.fcmae_ft_in22k_in1k_384', fp32=_L22K, crop=640),
    }, 'none published (swept, choice not given): the ConvNeXt recipe of the matching size '
       '(atto..tiny -> T, base -> B, large -> L, huge -> XL)'),
    'identityformer': _metaformer('IdentityFormer', dict(s12=0.1, s24=0.1, s36=0.2, m36=0.3, m48=0.4)),
    'randformer': _metaformer('RandFormer', dict(s12=0.1, s24=0.1, s36=0.2, m36=0.3, m48=0.3)),
    'poolformerv2': _metaformer('PoolFormerV2', dict(s12=0.1, s24=0.1, s36=0.2, m36=0.3, m48=0.4)),
    'convformer': _metaformer('ConvFormer', dict(s18=0.2, s36=0.3, m36=0.4, b36=0.6)),
    'caformer': _metaformer('CAFormer', dict(s18=0.15, s36=0.3, m36=0.4, b36=0.6)),
    'unified_halo': _unified('UnifiedHalo', 'unified_halo'),
    'unified_pvt': _unified('UnifiedPVT', 'unified_pvt'),
    'unified_swin': _unified('UnifiedSwin', 'unified_swin'),
    'unified_convnext': _unified('UnifiedConvNeXt', 'unified_convnext'),
    'unified_dcn_v3': _unified('UnifiedDCNv3', 'unified_dcn_v3'),
}


# ----------------------------------------------------------------------------------------- accessors
@dataclass(frozen=True)
class Recipe:
    """The numbers of one config (``name``: ``det/convnext_t_cascade``)."""
    name: str
    family: str
    type: str
    size: str
    method: str
    init: str
    row: str
    drop_path: float
    lr: float
    decay_rate: float
    precision: str
    checkpoint: str
    base: str

    @property
    def path(self) -> str:
        """Relative to the repository root."""
        return f'configs/{self.name}.py'


def _recipe(family: str, size: str, method: str, init: str = '') -> Recipe:
    fam, s = FAMILIES[family], FAMILIES[family].sizes[size]
    dp = s.drop_path if isinstance(s.drop_path, float) else s.drop_path[THREE.index(method)]
    lr, decay = ROWS[method][s.row]
    task = 'seg' if method == 'upernet' else 'det'
    stem = '_'.join(x for x in (family, size, init, method) if x)
    return Recipe(name=f'{task}/{stem}', family=family, type=fam.type, size=size, method=method, init=init,
                  row=s.row, drop_path=dp, lr=lr, decay_rate=decay,
                  precision='fp32' if method in s.fp32 or method == 'maskrcnn1x' else 'fp16',
                  checkpoint=s.inits[init] if init else s.checkpoint,
                  base=METHODS[method][0].format(crop=s.crop))


def all_recipes() -> List[Recipe]:
    """One :class:`Recipe` per config, in table order (family, size, initialisation, method)."""
    return [_recipe(f, s, m, init) for f, fam in FAMILIES.items() for s, size in fam.sizes.items()
            for init in ('', *size.inits) for m in fam.methods]


def get(name: str) -> Recipe:
    """The recipe of a config, by ``det/<stem>`` / ``seg/<stem>`` name or path (``configs/det/x.py``)."""
    key = name[:-3] if name.endswith('.py') else name
    key = '/'.join(key.split('/')[-2:])
    table = {r.name: r for r in all_recipes()}
    if key not in table:
        import difflib
        close = difflib.get_close_matches(key, table, n=5)
        raise KeyError(f'no recipe for config {name!r}; closest: {", ".join(close) or "(none)"} '
                       f'({len(table)} configs in backbones/recipes.py)')
    return table[key]


def family_rows(family: str) -> Dict[str, str]:
    """size -> ConvNeXt recipe row of one family."""
    return {s: size.row for s, size in FAMILIES[family].sizes.items()}


def expected(recipe: Recipe) -> Dict[str, object]:
    """What the loaded config must hold, by dotted key."""
    return {
        'model.backbone.type': recipe.type,
        'model.backbone.arch': recipe.size,
        'model.backbone.drop_path_rate': recipe.drop_path,
        'model.backbone.init_cfg': dict(type='Pretrained', checkpoint=recipe.checkpoint),
        'checkpoint_file': recipe.checkpoint,
        'optim_wrapper.type': 'OptimWrapper' if recipe.precision == 'fp32' else 'AmpOptimWrapper',
        'optim_wrapper.optimizer.lr': recipe.lr,
        'optim_wrapper.paramwise_cfg.decay_rate': recipe.decay_rate,
    }


def base_of(path: str) -> Optional[str]:
    """The recipe base of a config file (``det/mask-rcnn_fpn_3x_coco.py``), through a parent model config
    (``_base_ = './convnext_t_cascade.py'``, another initialisation) if there is one."""
    import os.path as osp
    import re
    with open(path) as f:
        m = re.search(r"^_base_ = '([^']+)'", f.read(), re.M)
    if m and m.group(1).startswith('./'):
        return base_of(osp.join(osp.dirname(path), m.group(1)))
    return '/'.join(m.group(1).split('/')[-2:]) if m else None


def mismatches(cfg, path: str) -> List[str]:
    """Where a loaded config (``mmengine.Config`` or nested dicts) differs from its row of the table: one line
    per key, naming the config, the key, the config's value and the table's."""
    recipe = get(path)
    out = []
    for key, want in expected(recipe).items():
        node = cfg
        for part in key.split('.'):
            node = node.get(part) if hasattr(node, 'get') else None
        got = node.to_dict() if hasattr(node, 'to_dict') else node
        if got != want:
            out.append(f'{recipe.name}: {key} = {got!r}, the recipe table says {want!r}')
    base = base_of(path)
    if base != recipe.base:
        out.append(f'{recipe.name}: _base_ = {base!r}, the recipe table says {recipe.base!r}')
    return out


# ----------------------------------------------------------------------------------------- doc
def _num(x: float) -> str:
    return f'{x:g}'


def render_markdown() -> str:
    """docs/recipes.md: one table per family (size, row, and per method drop path / lr / decay / precision)."""
    lines = ['# Recipes', '',
             '<!-- Generated from backbones/recipes.py by tools/analysis/recipes.py; do not edit by hand. '
             '`python tools/analysis/recipes.py --check` fails when this file or a config disagrees with the '
             'table. -->', '',
             'The per-family, per-size numbers of every config under `configs/det` and `configs/seg`; '
             'everything else (schedule, augmentation, heads, weight decay 0.05) is the shared recipe base '
             'of the method (`configs/_base_`). Per method: drop path / lr / layer-decay rate, and `fp32` where '
             'the config trains in fp32 (`OptimWrapper`; fp16 `AmpOptimWrapper` otherwise).', '',
             '| method | base |', '|---|---|']
    lines += [f'| `{m}` | {title} (`configs/_base_/{base}`) |' for m, (base, title) in METHODS.items()]
    lines += ['', 'ConvNeXt rows (lr / layer-decay rate):', '',
              '| method | ' + ' | '.join(ROWS['cascade']) + ' |', '|---|' + '---|' * len(ROWS['cascade'])]
    for m, rows in ROWS.items():
        lines.append(f'| {m} | ' + ' | '.join(f'{_num(rows[r][0])} / {_num(rows[r][1])}' if r in rows else ''
                                              for r in ROWS['cascade']) + ' |')
    for family, fam in FAMILIES.items():
        lines += ['', f'## {fam.type} (`{family}_*`)', '', fam.note + '.', '',
                  '| size | row | ' + ' | '.join(fam.methods) + ' | checkpoint |',
                  '|---|---|' + '---|' * len(fam.methods) + '---|']
        for size, s in fam.sizes.items():
            cells = []
            for m in fam.methods:
                r = _recipe(family, size, m)
                cells.append(f'{_num(r.drop_path)} / {_num(r.lr)} / {_num(r.decay_rate)}'
                             + (' fp32' if r.precision == 'fp32' else '')
                             + (f' ({s.crop})' if m == 'upernet' and s.crop != 512 else ''))
            ckpts = ', '.join(f'`{c}`' for c in (s.checkpoint, *s.inits.values()))
            lines.append(f'| {size} | {s.row} | ' + ' | '.join(cells) + f' | {ckpts} |')
    return '\n'.join(lines) + '\n'
