"""Named checkpoints (backbones/hub.py): the table, and downloads from a server on 127.0.0.1 started here.

* the table: every entry names a real backbone and an allowed layout, distinct cache files, https URLs (or a
  manual source), hashes only where the release publishes one (torchvision's file-name prefix), timm aliases
  that timm 1.0.31 knows with the same URL;
* a good download loads strictly by name (``init_cfg``, ``pretrained=``, the converter) and is not fetched
  twice; a truncated download and a wrong hash are refused and leave nothing in the cache;
* a wrong name lists close names; a release of another size is refused before any download; Conv2Former's
  Baidu-only files say where to put them and then resolve; ``hf-hub:`` ids become hub URLs;
* docs/checkpoints.md is in sync with the table.
"""
import hashlib
import io
import json
import os
import re

import pytest
import torch

from backbones import CheckpointMismatchError, Conv2Former, build_backbone, families, hub, list_backbones
from backbones.hub import Checkpoint, DownloadError, UnknownCheckpointError
from conftest import load_tool

ckpt_tool = load_tool('tools/checkpoints.py')
convert_tool = load_tool('tools/convert_checkpoint.py')

TINY = dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32], kernel_size=7)
LAYOUTS = {'Conv2Former': {'official'}, 'ConvNeXt': {'official', 'official-det', 'torchvision', 'timm'},
           'ConvNeXtV2': {'official', 'fcmae'}, 'UnifiedHalo': {'official', 'official detection'}}


def _tiny_state_dict(seed=0):
    torch.manual_seed(seed)
    return Conv2Former(arch=TINY, out_norm=False).state_dict()


def _bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _entry(name, url, sha256=None, arch='conv2former_n'):
    return Checkpoint(name=name, arch=arch, pretrain='in1k', resolution=224, url=url, layout='official',
                      license='test', source='test fixture', sha256=sha256)


def _cache_files(folder):
    return sorted(os.listdir(folder)) if folder.exists() else []


# ------------------------------------------------------------------------------------------------ the table
def test_table_entries_are_consistent():
    names = list(hub.CHECKPOINTS)
    assert len(names) == len(set(names)) == 174
    local = [c.local_name for c in hub.CHECKPOINTS.values()]
    assert len(local) == len(set(local)), 'two entries would share a cache file'
    for c in hub.CHECKPOINTS.values():
        assert c.arch in list_backbones(), c.name
        assert c.name.startswith(c.arch + '.') and hub.looks_like_name(c.name), c.name
        cls = next(f for f in families().values() if c.arch.startswith(f.family + '_')
                   and c.arch[len(f.family) + 1:] in f.arch_settings)
        allowed = LAYOUTS.get(cls.__name__, LAYOUTS['UnifiedHalo'] if cls.__name__.startswith('Unified')
                              else {'official'})
        assert c.layout in allowed, (c.name, c.layout)
        assert (c.url is None) == (c.manual is not None), c.name
        if c.url:
            assert c.url.startswith('https://'), c.name
        if c.sha256:  # only torchvision publishes one: the hex part of its file names
            assert c.layout == 'torchvision' and re.search(r'-([0-9a-f]{8})\.pth$', c.url)[1] == c.sha256
        assert c.pretrain in ('in1k', 'in22k', 'in22k-ft-in1k', 'fcmae', 'fcmae-ft-in1k', 'fcmae-ft-in22k-in1k',
                              'lvd1689m-dinov3'), c.name
    assert sum(c.url is None for c in hub.CHECKPOINTS.values()) == 8  # Conv2Former's Baidu shares
    assert all(c.arch.startswith('conv2former') for c in hub.CHECKPOINTS.values() if c.url is None)


def test_timm_aliases_are_timm_names_of_the_same_files():
    timm = pytest.importorskip('timm')
    aliased = [c for c in hub.CHECKPOINTS.values() if c.timm]
    assert len(aliased) == 4 + 19 + 26 + 45  # DINOv3, ConvNeXt, ConvNeXt V2, MetaFormer in timm
    for c in aliased:
        cfg = timm.models.get_pretrained_cfg(c.timm)
        assert cfg is not None and cfg.hf_hub_id == f'timm/{c.timm}', c.timm
        assert cfg.architecture == c.arch, c.timm
        if cfg.url:  # timm records the official URL it converted from
            assert cfg.url == c.url, c.timm
        assert hub.get(c.timm) is c


def test_wrong_name_lists_close_names():
    with pytest.raises(UnknownCheckpointError) as e:
        hub.get('convnext_tiny.in1K_ema')
    assert 'convnext_tiny.in1k' in str(e.value) and 'docs/checkpoints.md' in str(e.value)
    with pytest.raises(UnknownCheckpointError, match=r'caformer_s18\.in22k'):  # a backbone without its tag
        hub.resolve('caformer_s18')
    assert hub.get('ConvNeXt_Tiny.FB_in1k').name == 'convnext_tiny.in1k'  # timm's name, any case
    # a path that does not exist stays a path: the reader reports it, naming the release it looks like
    m = build_backbone('convnext_tiny', pretrained='checkpoints/convnext_tiny_1k_224_ema.pth')
    with pytest.raises(FileNotFoundError, match=r"named checkpoint 'convnext_tiny\.in1k'"):
        m.init_weights()


# ---------------------------------------------------------------------------------------------- downloads
def test_good_download_loads_strictly_once(loopback_server, torch_home, monkeypatch):
    sd = _tiny_state_dict()
    data = _bytes({'state_dict': sd, 'epoch': 300})
    loopback_server.files['/c2f_tiny.pth'] = data
    sha = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(hub.CHECKPOINTS, 'conv2former_n.fixture',
                        _entry('conv2former_n.fixture', loopback_server.url('/c2f_tiny.pth'), sha[:8]))
    m = Conv2Former(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint='conv2former_n.fixture'))
    m.init_weights()
    for k, v in sd.items():
        assert torch.equal(m.state_dict()[k], v), k
    assert _cache_files(torch_home) == ['c2f_tiny.pth']
    assert hashlib.sha256((torch_home / 'c2f_tiny.pth').read_bytes()).hexdigest() == sha
    m2 = Conv2Former(arch=TINY, pretrained='conv2former_n.fixture')  # pretrained=: the same name, cached
    m2.init_weights()
    assert torch.equal(m2.stages[1][0].attn.v.weight, sd['stages.1.0.attn.v.weight'])
    assert loopback_server.hits == {'/c2f_tiny.pth': 1}


def test_truncated_download_is_refused_and_nothing_is_kept(loopback_server, torch_home, monkeypatch):
    loopback_server.files['/cut.pth'] = _bytes({'state_dict': _tiny_state_dict()})
    loopback_server.truncate.add('/cut.pth')
    monkeypatch.setitem(hub.CHECKPOINTS, 'conv2former_n.cut', _entry('conv2former_n.cut', loopback_server.url(
        '/cut.pth')))
    m = Conv2Former(arch=TINY, pretrained='conv2former_n.cut')
    with pytest.raises(DownloadError, match=r'incomplete: received [\d,]+ of [\d,]+ bytes'):
        m.init_weights()
    assert _cache_files(torch_home) == []  # no partial file, no temporary file
    loopback_server.truncate.clear()  # the connection is fine again: the next try downloads and loads
    m.init_weights()
    assert _cache_files(torch_home) == ['cut.pth'] and loopback_server.hits['/cut.pth'] == 2


def test_wrong_hash_is_refused_and_nothing_is_kept(loopback_server, torch_home, monkeypatch):
    data = _bytes({'state_dict': _tiny_state_dict()})
    loopback_server.files['/tampered.pth'] = data
    wrong = hashlib.sha256(data + b'x').hexdigest()
    monkeypatch.setitem(hub.CHECKPOINTS, 'conv2former_n.tampered',
                        _entry('conv2former_n.tampered', loopback_server.url('/tampered.pth'), wrong))
    m = Conv2Former(arch=TINY, pretrained='conv2former_n.tampered')
    with pytest.raises(DownloadError, match=f'does not match its published SHA-256: expected {wrong}'):
        m.init_weights()
    assert _cache_files(torch_home) == []
    assert not any(p.stat().st_size for p in torch_home.parent.rglob('*') if p.is_file())


def test_url_and_hf_hub_ids_download_once(loopback_server, torch_home, monkeypatch):
    from safetensors.torch import save as save_safetensors
    sd = _tiny_state_dict(seed=3)
    loopback_server.files['/w/model.pth'] = _bytes(sd)
    loopback_server.files['/org/repo/resolve/main/model.safetensors'] = save_safetensors(sd)
    m = Conv2Former(arch=TINY, pretrained=loopback_server.url('/w/model.pth'))
    m.init_weights()
    assert torch.equal(m.downsample_layers[0][0].weight, sd['downsample_layers.0.0.weight'])
    # hf-hub:<org>/<repo> -> <hub>/<org>/<repo>/resolve/main/model.safetensors (here the hub is our server)
    assert hub.hf_hub_url('timm/convnext_tiny.in12k') == (
        'https://huggingface.co/timm/convnext_tiny.in12k/resolve/main/model.safetensors')
    monkeypatch.setattr(hub, '_HF', loopback_server.url('/'))
    for _ in range(2):
        m = Conv2Former(arch=TINY, pretrained='hf-hub:org/repo')
        m.init_weights()
    assert torch.equal(m.stages[3][0].mlp.fc2.weight, sd['stages.3.0.mlp.fc2.weight'])
    assert _cache_files(torch_home) == ['model.pth', 'org--repo--model.safetensors']
    assert loopback_server.hits == {'/w/model.pth': 1, '/org/repo/resolve/main/model.safetensors': 1}


def test_http_errors_are_clear(loopback_server, torch_home):
    with pytest.raises(DownloadError, match='HTTP 404'):
        hub.resolve(loopback_server.url('/nothing.pth'))
    assert _cache_files(torch_home) == []


def test_release_of_another_size_is_refused_before_downloading(loopback_server, torch_home, monkeypatch):
    monkeypatch.setitem(hub.CHECKPOINTS, 'conv2former_b_22k.fixture', _entry(
        'conv2former_b_22k.fixture', loopback_server.url('/b22k.pth'), arch='conv2former_b_22k'))
    with torch.device('meta'):
        m = build_backbone('conv2former_b', pretrained='conv2former_b_22k.fixture')
    with pytest.raises(CheckpointMismatchError, match=r'release of conv2former_b_22k.*build conv2former_b_22k.*'
                                                      r'conv2former_b\.in1k'):
        m.init_weights()
    assert loopback_server.hits == {}


def test_conv2former_baidu_files_say_where_to_put_them(torch_home):
    entry = hub.get('conv2former_t.in1k')
    with pytest.raises(hub.CheckpointError) as e:
        hub.resolve('conv2former_t.in1k')
    msg = str(e.value)
    assert 'no public direct download' in msg and 'pan.baidu.com/s/1Rfsi5p5usr3UE46jigtlcg' in msg
    assert 'gwq4' in msg and str(torch_home / 'conv2former_t.in1k.pth') in msg
    torch_home.mkdir(parents=True)  # the user puts the file there: the name now resolves to it
    torch.save({'state_dict': _tiny_state_dict()}, torch_home / entry.local_name)
    assert hub.resolve('conv2former_t.in1k') == str(torch_home / 'conv2former_t.in1k.pth')


def test_convert_tool_takes_a_name(loopback_server, torch_home, monkeypatch, tmp_path, capsys):
    sd = _tiny_state_dict(seed=5)
    loopback_server.files['/c2f.pth'] = _bytes({'state_dict': sd})
    monkeypatch.setitem(hub.CHECKPOINTS, 'conv2former_n.conv', _entry('conv2former_n.conv',
                                                                      loopback_server.url('/c2f.pth')))
    out = tmp_path / 'out.pth'
    assert convert_tool.main(['conv2former_n.conv', str(out), '--arch', 'Conv2Former',
                              '--arch-cfg', json.dumps(TINY)]) == 0
    assert 'named checkpoint conv2former_n.conv' in capsys.readouterr().out
    written = torch.load(out, weights_only=True)
    assert written['meta']['checkpoint_name'] == 'conv2former_n.conv'
    assert written['meta']['source'] == str(torch_home / 'c2f.pth')
    assert all(torch.equal(written['state_dict'][k], v) for k, v in sd.items())
    assert convert_tool.main(['conv2former_n.cnv', str(out)]) == 2
    assert "close: conv2former_n.conv" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- the doc
def test_checkpoints_doc_is_in_sync(tmp_path, capsys):
    assert ckpt_tool.main(['doc', '--check']) == 0
    stale = tmp_path / 'c.md'
    stale.write_text(hub.render_markdown().replace('convnext_tiny.in1k', 'convnext_tiny.old'))
    assert ckpt_tool.main(['doc', '--check', '--out', str(stale)]) == 1
    assert 'is stale' in capsys.readouterr().out
    text = hub.render_markdown()
    for c in hub.CHECKPOINTS.values():
        assert f'`{c.name}`' in text and (c.url or c.manual) in text
