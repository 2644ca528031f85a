"""Named checkpoints: one table of every official release file, resolved to a local file on first use.

A checkpoint can be given (``init_cfg=dict(type='Pretrained', checkpoint=...)``, ``pretrained=...``,
``tools/convert_checkpoint.py SRC ...``) as

* a **name** from the table below, ``<backbone>.<tag>`` such as ``'convnext_tiny.in1k'``,
  ``'convnextv2_tiny.fcmae_ft_in22k_in1k_384'``, ``'caformer_s18.in22k'``, ``'conv2former_t.in1k'``,
  ``'unified_halo_tiny.in1k'``, ``'convnext_tiny.dinov3_lvd1689m'``; timm's names of the same files
  (``'convnext_tiny.fb_in1k'``, ``'caformer_s18.sail_in1k'``) are accepted too. The file is downloaded once
  into ``<torch hub dir>/checkpoints/`` (``$TORCH_HOME/hub/checkpoints``, by default
  ``~/.cache/torch/hub/checkpoints``) and read from there afterwards;
* an ``http(s)://`` URL (downloaded the same way, named by the URL's last part);
* ``hf-hub:<org>/<repo>[/<file>]``: a Hugging Face hub repository's file (default ``model.safetensors``,
  timm's weight file), fetched from ``https://huggingface.co/<org>/<repo>/resolve/main/<file>``;
* a local path (unchanged).

Downloads go to a temporary file next to the target and are renamed into place only after the byte count
matches the server's ``Content-Length`` and, where the release publishes one, the SHA-256 (full or prefix)
matches: an interrupted or corrupt download never stays in the cache. An unknown name lists the closest
valid names. Files with no public direct URL (Conv2Former's Baidu Netdisk shares) raise an error that says
where to get the file and where to put it (``<cache>/<name>.pth``), after which the name resolves to it.

The table (:data:`CHECKPOINTS`) was read from the official READMEs (the commit is in each row's
``source``), from torchvision's weight enums and from timm's pretrained configs (``hf_hub_id``); a hash is
recorded only where the release itself publishes one (torchvision's file names carry a SHA-256 prefix).
``docs/checkpoints.md`` is generated from it (``python tools/checkpoints.py doc``).
"""
import difflib
import hashlib
import http.client
import logging
import os
import re
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Dict, List, Optional

from .checkpoint import CheckpointError, CheckpointMismatchError

logger = logging.getLogger('backbones')


class UnknownCheckpointError(CheckpointError):
    """A checkpoint name that is not in the table (the message lists the closest valid names)."""


class DownloadError(CheckpointError):
    """A download failed, was incomplete or did not match its published hash; nothing was kept."""


@dataclass(frozen=True)
class Checkpoint:
    """One release file.

    ``arch``: the backbone table name it loads into (``build_backbone(arch)``); ``pretrain``: the
    pre-training data / method (``in1k``, ``in22k``, ``in22k-ft-in1k``, ``fcmae``, ``fcmae-ft-in1k``,
    ``fcmae-ft-in22k-in1k``, ``lvd1689m-dinov3``); ``task``: for whole detection / segmentation models,
    what they were fine-tuned on (their ``backbone.`` part is loaded); ``resolution``: the training input
    size; ``url``: the direct download (``None`` when the release has none: ``manual`` says where to get
    it); ``sha256``: the full digest or the prefix the release publishes, else ``None``; ``layout``: the
    key layout the loader reports for it; ``timm``: timm's name of the same weights; ``source``: where the
    URL was read."""
    name: str
    arch: str
    pretrain: str
    resolution: int
    url: Optional[str]
    layout: str
    license: str
    source: str
    task: Optional[str] = None
    sha256: Optional[str] = None
    timm: Optional[str] = None
    manual: Optional[str] = None
    filename: Optional[str] = None

    @property
    def local_name(self) -> str:
        """The file name in the cache: the release's own file name where it is distinctive (shared with
        torch.hub and timm's URL downloads), otherwise ``<name>.<ext>``."""
        if self.filename:
            return self.filename
        if self.url is None:
            return f'{self.name}.pth'
        return _url_basename(self.url)


# ------------------------------------------------------------------------------------------------ sources
_CONVNEXT = 'facebookresearch/ConvNeXt README.md (048efce)'
_CONVNEXT_DET = 'facebookresearch/ConvNeXt object_detection/README.md (048efce)'
_CONVNEXT_SEG = 'facebookresearch/ConvNeXt semantic_segmentation/README.md (048efce)'
_CONVNEXT_V2 = 'facebookresearch/ConvNeXt-V2 README.md (2553895)'
_METAFORMER = 'sail-sg/metaformer README.md (64c534a)'
_CONV2FORMER = 'HVision-NKU/Conv2Former README.md (94fd1c4)'
_STM = 'OpenGVLab/STM-Evaluation README.md (b62c471)'
_STM_DET = 'OpenGVLab/STM-Evaluation detection/readme.md (b62c471)'
_TORCHVISION = 'torchvision 0.27.1 weights enum ConvNeXt_{}_Weights.IMAGENET1K_V1'
_TIMM = 'timm 1.0.31 pretrained cfg {} (hf_hub_id)'

_FB = 'https://dl.fbaipublicfiles.com/convnext/'
_SAIL = 'https://huggingface.co/sail/dl/resolve/main/'
_STM_REL = 'https://github.com/OpenGVLab/STM-Evaluation/releases/download/'
_HF = 'https://huggingface.co/'


def _rows(source: str, license: str, layout: str, rows: list, **common) -> List[Checkpoint]:
    """``rows``: (name, arch, pretrain, resolution, url, extra-dict) tuples sharing source / license /
    layout."""
    out = []
    for name, arch, pretrain, res, url, *extra in rows:
        kw = dict(common, **(extra[0] if extra else {}))
        out.append(Checkpoint(name=name, arch=arch, pretrain=pretrain, resolution=res, url=url, layout=kw.pop(
            'layout', layout), license=license, source=kw.pop('source', source), **kw))
    return out


def _tv(size: str, file: str, sha: str) -> Checkpoint:
    return Checkpoint(name=f'convnext_{size}.tv_in1k', arch=f'convnext_{size}', pretrain='in1k', resolution=224,
                      url=f'https://download.pytorch.org/models/{file}', layout='torchvision',
                      license='BSD-3-Clause (torchvision)', sha256=sha,
                      source=_TORCHVISION.format(size.capitalize()))


def _dinov3(size: str) -> Checkpoint:
    timm_name = f'convnext_{size}.dinov3_lvd1689m'
    return Checkpoint(name=timm_name, arch=f'convnext_{size}', pretrain='lvd1689m-dinov3', resolution=224,
                      url=f'{_HF}timm/{timm_name}/resolve/main/model.safetensors', layout='timm',
                      license='DINOv3 License', source=_TIMM.format(timm_name), timm=timm_name,
                      filename=f'{timm_name}.safetensors')


def _baidu(name, arch, pretrain, res, share, code) -> Checkpoint:
    return Checkpoint(name=name, arch=arch, pretrain=pretrain, resolution=res, url=None, layout='official',
                      license='Apache-2.0', source=_CONV2FORMER,
                      manual=f'Baidu Netdisk https://pan.baidu.com/s/{share}?pwd={code} (extraction code {code})')


def _metaformer_rows() -> list:
    rows = []
    for fam in ('caformer', 'convformer'):
        for size in ('s18', 's36', 'm36', 'b36'):
            n, base = f'{fam}_{size}', f'{_SAIL}{fam}/{fam}_{size}'
            rows += [(f'{n}.in1k', n, 'in1k', 224, f'{base}.pth', {'timm': f'{n}.sail_in1k'}),
                     (f'{n}.in1k_384', n, 'in1k', 384, f'{base}_384.pth', {'timm': f'{n}.sail_in1k_384'}),
                     (f'{n}.in22k', n, 'in22k', 224, f'{base}_in21k.pth', {'timm': f'{n}.sail_in22k'}),
                     (f'{n}.in22k_ft_in1k', n, 'in22k-ft-in1k', 224, f'{base}_in21ft1k.pth',
                      {'timm': f'{n}.sail_in22k_ft_in1k'}),
                     (f'{n}.in22k_ft_in1k_384', n, 'in22k-ft-in1k', 384, f'{base}_384_in21ft1k.pth',
                      {'timm': f'{n}.sail_in22k_ft_in1k_384'})]
    for fam in ('identityformer', 'randformer', 'poolformerv2'):
        for size in ('s12', 's24', 's36', 'm36', 'm48'):
            n = f'{fam}_{size}'
            rows.append((f'{n}.in1k', n, 'in1k', 224, f'{_SAIL}{fam}/{n}.pth',
                         {'timm': f'{n}.sail_in1k'} if fam == 'poolformerv2' else {}))
    return rows


def _stm_rows() -> list:
    stem = {'halo': 'halonet', 'pvt': 'pvt', 'swin': 'swin', 'convnext': 'convnext', 'dcn_v3': 'internimage'}
    rows = []
    for mixer, file_stem in stem.items():
        for size in ('micro', 'tiny', 'small', 'base'):
            n = f'unified_{mixer}_{size}'
            rows.append((f'{n}.in1k', n, 'in1k', 224, f'{_STM_REL}cls-ckpt/unified_{file_stem}_{size}.pth'))
            rows.append((f'{n}.in1k_coco_maskrcnn_1x', n, 'in1k', 224,
                         f'{_STM_REL}det-ckpt/mask_rcnn_unified_{file_stem}_{size}_1x.pth',
                         dict(task='coco-maskrcnn-1x', layout='official detection', source=_STM_DET)))
    return rows


_DET = dict(layout='official-det', source=_CONVNEXT_DET)
_SEG = dict(layout='official-det', source=_CONVNEXT_SEG)

_TABLE: List[Checkpoint] = [
    # ---- Conv2Former: Baidu Netdisk shares only (no direct URL)
    _baidu('conv2former_n.in1k', 'conv2former_n', 'in1k', 224, '1sgO-UhF27UQrGtfKJzck3A', '6ku9'),
    _baidu('conv2former_t.in1k', 'conv2former_t', 'in1k', 224, '1Rfsi5p5usr3UE46jigtlcg', 'gwq4'),
    _baidu('conv2former_s.in1k', 'conv2former_s', 'in1k', 224, '16Lu1LcQkOoSQXnZVGxGPxg', '6z6m'),
    _baidu('conv2former_b.in1k', 'conv2former_b', 'in1k', 224, '1q5V1J3jzAoKQis-hx6rTVg', 'bdgj'),
    _baidu('conv2former_s.in22k_ft_in1k', 'conv2former_s', 'in22k-ft-in1k', 224, '1uMBF5xSvdWa5TCjQ_jlK4g', '1iij'),
    _baidu('conv2former_b_22k.in22k_ft_in1k', 'conv2former_b_22k', 'in22k-ft-in1k', 224, '1rkt3NhYQhPPOD5kj67uZCw',
           'gbj9'),
    _baidu('conv2former_l.in22k_ft_in1k', 'conv2former_l', 'in22k-ft-in1k', 224, '1_YYQ_rY9QRkq-m2lv23GPg', '44os'),
    _baidu('conv2former_l.in22k_ft_in1k_384', 'conv2former_l', 'in22k-ft-in1k', 384, '1vyBaA4UGUX_qlS-ugxpTSQ',
           'gu0m'),
    # ---- ConvNeXt (V1): official files ({'model': ...})
    *_rows(_CONVNEXT, 'MIT', 'official', [
        ('convnext_tiny.in1k', 'convnext_tiny', 'in1k', 224, _FB + 'convnext_tiny_1k_224_ema.pth',
         {'timm': 'convnext_tiny.fb_in1k'}),
        ('convnext_small.in1k', 'convnext_small', 'in1k', 224, _FB + 'convnext_small_1k_224_ema.pth',
         {'timm': 'convnext_small.fb_in1k'}),
        ('convnext_base.in1k', 'convnext_base', 'in1k', 224, _FB + 'convnext_base_1k_224_ema.pth',
         {'timm': 'convnext_base.fb_in1k'}),
        ('convnext_base.in1k_384', 'convnext_base', 'in1k', 384, _FB + 'convnext_base_1k_384.pth'),
        ('convnext_large.in1k', 'convnext_large', 'in1k', 224, _FB + 'convnext_large_1k_224_ema.pth',
         {'timm': 'convnext_large.fb_in1k'}),
        ('convnext_large.in1k_384', 'convnext_large', 'in1k', 384, _FB + 'convnext_large_1k_384.pth'),
        # the non-EMA weights the detection / segmentation READMEs start from
        ('convnext_tiny.in1k_noema', 'convnext_tiny', 'in1k', 224, _FB + 'convnext_tiny_1k_224.pth',
         {'source': _CONVNEXT_DET}),
        ('convnext_small.in1k_noema', 'convnext_small', 'in1k', 224, _FB + 'convnext_small_1k_224.pth',
         {'source': _CONVNEXT_DET}),
        ('convnext_base.in1k_noema', 'convnext_base', 'in1k', 224, _FB + 'convnext_base_1k_224.pth',
         {'source': _CONVNEXT_DET}),
        *[(f'convnext_{s}.in22k', f'convnext_{s}', 'in22k', 224, f'{_FB}convnext_{s}_22k_224.pth',
           {'timm': f'convnext_{s}.fb_in22k'}) for s in ('tiny', 'small', 'base', 'large', 'xlarge')],
        *[(f'convnext_{s}.in22k_ft_in1k{r}', f'convnext_{s}', 'in22k-ft-in1k', int(r[1:] or 224),
           f'{_FB}convnext_{s}_22k_1k{r or "_224"}{"_ema" if s == "xlarge" else ""}.pth',
           {'timm': f'convnext_{s}.fb_in22k_ft_in1k{r}'})
          for s in ('tiny', 'small', 'base', 'large', 'xlarge') for r in ('', '_384')],
        # whole detectors / segmentors (mmdet 2.x / mmseg 0.x): their backbone part
        ('convnext_tiny.in1k_coco_maskrcnn_3x', 'convnext_tiny', 'in1k', 224,
         _FB + 'coco/mask_rcnn_convnext_tiny_1k_3x.pth', dict(task='coco-maskrcnn-3x', **_DET)),
        *[(f'convnext_{s}.{p}_coco_cascade_3x', f'convnext_{s}', p, 224,
           f'{_FB}coco/cascade_mask_rcnn_convnext_{s}_{p[2:]}_3x.pth', dict(task='coco-cascade-3x', **_DET))
          for s, p in (('tiny', 'in1k'), ('small', 'in1k'), ('base', 'in1k'), ('base', 'in22k'),
                       ('large', 'in22k'), ('xlarge', 'in22k'))],
        *[(f'convnext_{s}.{p}_ade20k_upernet_{c}', f'convnext_{s}', p, 224,
           f'{_FB}ade20k/upernet_convnext_{s}_{p[2:]}_{c}x{c}.pth', dict(task=f'ade20k-upernet-160k-{c}', **_SEG))
          for s, p, c in (('tiny', 'in1k', 512), ('small', 'in1k', 512), ('base', 'in1k', 512),
                          ('base', 'in22k', 640), ('large', 'in22k', 640), ('xlarge', 'in22k', 640))],
    ]),
    # ---- ConvNeXt: torchvision's own ImageNet-1K training (file names carry a SHA-256 prefix)
    _tv('tiny', 'convnext_tiny-983f1562.pth', '983f1562'),
    _tv('small', 'convnext_small-0c510722.pth', '0c510722'),
    _tv('base', 'convnext_base-6075fbad.pth', '6075fbad'),
    _tv('large', 'convnext_large-ea097f82.pth', 'ea097f82'),
    # ---- ConvNeXt: DINOv3 (distilled from the DINOv3 ViT-7B on LVD-1689M); timm's hub files
    *[_dinov3(s) for s in ('tiny', 'small', 'base', 'large')],
    # ---- ConvNeXt V2: official files; the models are CC-BY-NC 4.0 (the code is MIT)
    *_rows(_CONVNEXT_V2, 'CC-BY-NC-4.0', 'official', [
        *[(f'convnextv2_{s}.fcmae', f'convnextv2_{s}', 'fcmae', 224,
           f'{_FB}convnextv2/pt_only/convnextv2_{s}_1k_224_fcmae.pt',
           {'layout': 'fcmae', 'timm': f'convnextv2_{s}.fcmae'})
          for s in ('atto', 'femto', 'pico', 'nano', 'tiny', 'base', 'large', 'huge')],
        *[(f'convnextv2_{s}.fcmae_ft_in1k', f'convnextv2_{s}', 'fcmae-ft-in1k', 224,
           f'{_FB}convnextv2/im1k/convnextv2_{s}_1k_224_ema.pt', {'timm': f'convnextv2_{s}.fcmae_ft_in1k'})
          for s in ('atto', 'femto', 'pico', 'nano', 'tiny', 'base', 'large', 'huge')],
        *[(f'convnextv2_{s}.fcmae_ft_in22k_in1k{"" if r == 224 else f"_{r}"}', f'convnextv2_{s}',
           'fcmae-ft-in22k-in1k', r, f'{_FB}convnextv2/im22k/convnextv2_{s}_22k_{r}_ema.pt',
           {'timm': f'convnextv2_{s}.fcmae_ft_in22k_in1k{"" if r == 224 else f"_{r}"}'})
          for s, r in (('nano', 224), ('nano', 384), ('tiny', 224), ('tiny', 384), ('base', 224), ('base', 384),
                       ('large', 224), ('large', 384), ('huge', 384), ('huge', 512))],
    ]),
    # ---- MetaFormer baselines: official sail-sg files (plain state dicts); "in21k" in their file names
    *_rows(_METAFORMER, 'Apache-2.0', 'official', _metaformer_rows()),
    # ---- STM unified token mixers: GitHub release assets ({'model': ...}; whole mmdet 2.x detectors)
    *_rows(_STM, 'MIT', 'official', _stm_rows()),
]

#: name -> :class:`Checkpoint`, in table order
CHECKPOINTS: Dict[str, Checkpoint] = {c.name: c for c in _TABLE}
if len(CHECKPOINTS) != len(_TABLE):  # pragma: no cover - a table edit that duplicates a name
    raise RuntimeError('duplicate checkpoint names in backbones/hub.py')


def _aliases() -> Dict[str, str]:
    return {c.timm: c.name for c in CHECKPOINTS.values() if c.timm and c.timm != c.name}


# --------------------------------------------------------------------------------------------- look-up
_NAME_RE = re.compile(r'^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?$')
_FILE_EXT = ('.pth', '.pt', '.bin', '.safetensors', '.ckpt', '.tar', '.pkl')


def list_checkpoints(arch: Optional[str] = None) -> List[str]:
    """Every checkpoint name (of one backbone, e.g. ``'convnext_tiny'``, when given)."""
    return [n for n, c in CHECKPOINTS.items() if arch is None or c.arch == arch]


def looks_like_name(spec: str) -> bool:
    """``'convnext_tiny.in1k'`` or ``'convnext_tiny'`` (not a path, URL or file name)."""
    return bool(_NAME_RE.match(spec)) and not spec.lower().endswith(_FILE_EXT)


def get(name: str) -> Checkpoint:
    """The table entry of ``name`` (or of timm's name of the same file); a helpful error otherwise."""
    key = name.strip().lower()
    if key in CHECKPOINTS:
        return CHECKPOINTS[key]
    aliases = _aliases()
    if key in aliases:
        return CHECKPOINTS[aliases[key]]
    names = list(CHECKPOINTS)
    same_backbone = [n for n in names if n.split('.')[0] == key.split('.')[0]]
    close = difflib.get_close_matches(key, names + list(aliases), n=6, cutoff=0.6)
    close = list(dict.fromkeys(close + same_backbone))[:12]
    hint = f'; close: {", ".join(close)}' if close else ''
    raise UnknownCheckpointError(
        f'unknown checkpoint name {name!r}{hint}. Every name is listed in docs/checkpoints.md '
        f'(backbones.hub.list_checkpoints()); a local path or an http(s) URL works too')


def hf_hub_url(repo_id: str, filename: str = 'model.safetensors', revision: str = 'main') -> str:
    """The direct download URL of a file in a Hugging Face hub repository (no huggingface_hub needed)."""
    return f'{_HF}{repo_id}/resolve/{revision}/{filename}'


def cache_dir() -> str:
    """``<torch hub dir>/checkpoints`` (honours ``$TORCH_HOME`` and ``torch.hub.set_dir``)."""
    from torch.hub import get_dir
    return os.path.join(get_dir(), 'checkpoints')


def _url_basename(url: str) -> str:
    path = url.split('?')[0].split('#')[0]
    base = os.path.basename(path)
    m = re.match(r'^https?://huggingface\.co/([^/]+)/([^/]+)/resolve/[^/]+/(.+)$', path)
    if m and re.match(r'^(model|pytorch_model|open_clip_pytorch_model|open_clip_model)\.', base):
        return f'{m[1]}--{m[2]}--{base}'  # generic hub file names (timm's model.safetensors): org and repo first
    return base


def local_path(entry: Checkpoint) -> str:
    """Where ``entry`` is (or will be) in the cache."""
    return os.path.join(cache_dir(), entry.local_name)


def _not_downloadable(entry: Checkpoint) -> CheckpointError:
    return CheckpointError(
        f'checkpoint {entry.name!r} has no public direct download: the release ({entry.source}) offers it only '
        f'through {entry.manual}. Download it there and put the file at {local_path(entry)} (then the name '
        f'{entry.name!r} resolves to it), or give its path instead of the name: '
        f"init_cfg=dict(type='Pretrained', checkpoint='/path/to/file.pth')")


def resolve(spec: str, progress: bool = True) -> str:
    """A local file for ``spec`` (name, URL, ``hf-hub:`` id or path), downloading it once if needed.

    A path that does not exist is returned unchanged (the reader reports it), unless it looks like a
    checkpoint name, which must then be in the table."""
    spec = str(spec)
    if spec.startswith('hf-hub:'):
        parts = spec[len('hf-hub:'):].split('/')
        if len(parts) < 2 or not all(parts):
            raise CheckpointError(f'{spec!r}: expected hf-hub:<org>/<repo>[/<file>]')
        repo, file = '/'.join(parts[:2]), '/'.join(parts[2:]) or 'model.safetensors'
        url = hf_hub_url(repo, file)
        dst = os.path.join(cache_dir(), '--'.join(parts[:2] + [file.replace('/', '--')]))
    elif spec.startswith(('http://', 'https://')):
        url, dst = spec, os.path.join(cache_dir(), _url_basename(spec))
    else:
        url = None
    if url is not None:
        if not os.path.isfile(dst):
            download(url, dst, progress=progress)
        return dst
    if os.path.exists(spec) or not looks_like_name(spec):
        return spec
    entry = get(spec)
    dst = local_path(entry)
    if os.path.isfile(dst):
        return dst
    if entry.url is None:
        raise _not_downloadable(entry)
    download(entry.url, dst, sha256=entry.sha256, progress=progress, label=entry.name)
    return dst


def release_of(path: str) -> Optional[Checkpoint]:
    """The table entry whose release file has the base name of ``path`` (for hints on missing files)."""
    base = os.path.basename(str(path))
    return next((c for c in CHECKPOINTS.values() if c.url and _url_basename(c.url) == base), None)


def missing_file_hint(path: str) -> str:
    """'' or a sentence naming the checkpoint whose release file ``path`` is (e.g. an old config's
    ``checkpoints/convnext_tiny_1k_224_ema.pth``)."""
    entry = release_of(path)
    return (f"; {os.path.basename(path)} is the release file of the named checkpoint {entry.name!r}: give that "
            f"name to download it" if entry else '')


def check_arch(model, spec) -> None:
    """Refuse, before any download, a named checkpoint of another backbone than ``model``'s."""
    if not isinstance(spec, str) or not looks_like_name(spec) or os.path.exists(spec):
        return
    entry = get(spec)
    arch_name = getattr(model, 'arch_name', 'custom')
    if arch_name == 'custom':
        return  # a custom size: the strict comparison decides
    here = f'{type(model).family}_{arch_name}'
    if here != entry.arch:
        raise CheckpointMismatchError(
            f'checkpoint {entry.name!r} is a release of {entry.arch}, but the model is {type(model).__name__}'
            f'(arch={arch_name!r}) ({here}); build {entry.arch} or pick one of: '
            f'{", ".join(list_checkpoints(here)) or "(none released)"}')


# -------------------------------------------------------------------------------------------- download
class _NoBar:
    def __init__(self, *a, **k):
        pass

    def update(self, n):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _bar(total, label, enabled):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with timm's dependencies
        return _NoBar()
    return tqdm(total=total, unit='B', unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr)


def download(url: str, dst: str, sha256: Optional[str] = None, progress: bool = True, timeout: float = 60,
             label: Optional[str] = None) -> str:
    """Download ``url`` to ``dst`` through a temporary file in the same folder, renamed into place only when
    the byte count equals ``Content-Length`` and the SHA-256 starts with ``sha256`` (when given).
    Anything else raises :class:`DownloadError` and leaves nothing behind."""
    if not url.startswith(('http://', 'https://')):
        raise DownloadError(f'only http(s) URLs are downloaded, got {url!r}')
    folder = os.path.dirname(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(dst) + '.', suffix='.part', dir=folder)
    logger.info('downloading %s to %s', url, dst)
    try:
        digest, n, total = hashlib.sha256(), 0, None
        with os.fdopen(fd, 'wb') as f:
            try:
                req = urllib.request.Request(url, headers={'User-Agent': 'backbones-hub'})
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    length = r.headers.get('Content-Length')
                    total = int(length) if length and length.isdigit() else None
                    with _bar(total, label or os.path.basename(dst), progress) as bar:
                        while True:
                            try:
                                chunk = r.read(1 << 20)
                            except http.client.IncompleteRead as e:  # connection closed early
                                chunk, last = e.partial, True
                            else:
                                last = not chunk
                            f.write(chunk)
                            digest.update(chunk)
                            n += len(chunk)
                            bar.update(len(chunk))
                            if last:
                                break
            except urllib.error.HTTPError as e:
                raise DownloadError(f'downloading {url} failed: HTTP {e.code} {e.reason}'
                                    + (' (the repository may ask you to accept its license and log in: download '
                                       'it in a browser and give its local path)' if e.code in (401, 403) else '')
                                    ) from None
            except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
                reason = getattr(e, 'reason', e)
                raise DownloadError(f'cannot download {url}: {reason}. Without network access, download it '
                                    f'elsewhere and put it at {dst} (or give its local path)') from None
        if total is not None and n != total:
            raise DownloadError(f'download of {url} is incomplete: received {n:,} of {total:,} bytes; nothing '
                                f'was kept in {folder} (run again)')
        if n == 0:
            raise DownloadError(f'download of {url} is empty; nothing was kept')
        got = digest.hexdigest()
        if sha256 and not got.startswith(sha256.lower()):
            raise DownloadError(f'download of {url} does not match its published SHA-256: expected '
                                f'{sha256}..., got {got}; the file was refused and nothing was kept')
        os.replace(tmp, dst)
        return dst
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# --------------------------------------------------------------------------------------------- the doc
_FAMILY_TITLES = (('conv2former', 'Conv2Former'), ('convnextv2', 'ConvNeXt V2'), ('convnext', 'ConvNeXt'),
                  ('identityformer', 'MetaFormer baselines'), ('randformer', 'MetaFormer baselines'),
                  ('poolformerv2', 'MetaFormer baselines'), ('convformer', 'MetaFormer baselines'),
                  ('caformer', 'MetaFormer baselines'), ('unified', 'STM unified token mixers'))


def _family_title(arch: str) -> str:
    return next(t for prefix, t in _FAMILY_TITLES if arch.startswith(prefix + '_'))


def render_markdown() -> str:
    """docs/checkpoints.md (written and checked by ``tools/checkpoints.py doc [--check]``)."""
    lines = [
        '# Named checkpoints',
        '',
        '<!-- Generated by `python tools/checkpoints.py doc` from backbones/hub.py; do not edit by hand. '
        '`python tools/checkpoints.py doc --check` fails when this file is stale. -->',
        '',
        'Every official release file of every backbone here, by name. Give the name wherever a checkpoint is '
        "expected: `init_cfg=dict(type='Pretrained', checkpoint='convnext_tiny.in1k')`, "
        "`pretrained='convnext_tiny.in1k'`, `tools/convert_checkpoint.py convnext_tiny.in1k out.pth`. The file is "
        'downloaded once into `$TORCH_HOME/hub/checkpoints/` (default `~/.cache/torch/hub/checkpoints/`; '
        '`python tools/checkpoints.py download NAME ...` fetches ahead of a multi-GPU run), its size (and its '
        'SHA-256 where the release publishes one) is checked before it is kept, and it loads strictly. timm\'s '
        'names of the same files (`convnext_tiny.fb_in1k`, `caformer_s18.sail_in1k`) work too, and so do local '
        'paths, http(s) URLs and `hf-hub:<org>/<repo>[/<file>]`.',
        '',
        '- **pretraining**: `in1k` ImageNet-1K; `in22k` ImageNet-22K (21,841 classes; sail-sg calls it '
        'in21k); `in22k-ft-in1k` 22K then fine-tuned on 1K; `fcmae` ConvNeXt V2 self-supervised masked '
        'pre-training on 1K (the encoder; no classifier); `fcmae-ft-...` fine-tuned from it; '
        '`lvd1689m-dinov3` DINOv3 distillation from its ViT-7B on LVD-1689M. **task**: a whole detector / '
        'segmentor fine-tuned from that pretraining; its backbone part is loaded (output norms included).',
        '- **layout**: the key layout the loader reports; every one is converted on load.',
        '- **sha256**: only where the release publishes one (torchvision\'s file names carry a prefix); '
        'elsewhere the download is checked against the server\'s byte count only.',
        '- **source**: where the URL was read (repository file and commit, or library version).',
        '- **Conv2Former** is released only as Baidu Netdisk shares: download by hand and put the file at '
        '`~/.cache/torch/hub/checkpoints/<name>.pth` (then the name resolves to it) or give its path.',
    ]
    groups: Dict[str, List[Checkpoint]] = {}
    for c in CHECKPOINTS.values():
        groups.setdefault(_family_title(c.arch), []).append(c)
    for title, rows in groups.items():
        lines += ['', f'## {title}', '',
                  '| name | backbone | pretraining | task | res | layout | license | download | sha256 | source |',
                  '|---|---|---|---|---:|---|---|---|---|---|']
        for c in rows:
            where = f'[{_url_basename(c.url)}]({c.url})' if c.url else f'manual: {c.manual}'
            alias = f' (timm `{c.timm}`)' if c.timm and c.timm != c.name else ''
            lines.append(f'| `{c.name}`{alias} | {c.arch} | {c.pretrain} | {c.task or ""} | {c.resolution} | '
                         f'{c.layout} | {c.license} | {where} | {c.sha256 or ""} | {c.source} |')
    lines += ['', f'{len(CHECKPOINTS)} files.']
    return '\n'.join(lines) + '\n'
