"""A neck / head whose in_channels do not match the backbone's out_channels is reported when the model is
built (tools' prepare_config), naming both lists; mmdet/mmseg themselves build such a model silently and
fail only inside a convolution of the first forward."""
import pytest

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from glue import ChannelMismatchError, check_model_channels  # noqa: E402
from glue.channels import backbone_out_channels  # noqa: E402
from glue.runtime import load_config, prepare_config  # noqa: E402

DET = 'configs/toy/conv2former_toy_maskrcnn.py'
SEG = 'configs/toy/conv2former_toy_upernet.py'


def test_matching_configs_pass():
    for path in (DET, SEG, 'configs/det/convnext_t_cascade.py', 'configs/seg/unified_pvt_micro_upernet.py'):
        check_model_channels(load_config(path).model)


def test_neck_mismatch_names_both_lists(tmp_path):
    cfg = load_config(DET)
    cfg.model.neck.in_channels = [32, 64, 128, 512]
    with pytest.raises(ChannelMismatchError, match=r'in_channels \[32, 64, 128, 512\] do not match the '
                                                   r'out_channels \[32, 64, 128, 256\]'):
        check_model_channels(cfg.model)
    with pytest.raises(ChannelMismatchError):  # the tools check when they prepare the run
        prepare_config(cfg, DET, work_dir=str(tmp_path))
    # mmdet itself builds the model without a word
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    MODELS.build(cfg.model)


def test_out_indices_change_the_expected_list():
    cfg = load_config(DET)
    cfg.model.backbone.out_indices = (1, 2, 3)
    with pytest.raises(ChannelMismatchError, match=r'\[32, 64, 128, 256\] do not match the out_channels '
                                                   r'\[64, 128, 256\] .*out_indices=\(1, 2, 3\)'):
        check_model_channels(cfg.model)
    cfg.model.neck.in_channels = [64, 128, 256]
    check_model_channels(cfg.model)


@pytest.mark.parametrize('head,value,match', [
    ('decode_head', [64, 128, 128], r'decode_head \(UPerHead\) in_channels \[64, 128, 128\].*give '
                                    r'\[64, 128, 256\]'),
    ('auxiliary_head', 64, r'auxiliary_head \(FCNHead\) in_channels 64 \(in_index 2\).*give 128'),
])
def test_seg_head_mismatch(head, value, match):
    cfg = load_config(SEG)
    cfg.model[head].in_channels = value
    with pytest.raises(ChannelMismatchError, match=match):
        check_model_channels(cfg.model)
    cfg = load_config(SEG)
    cfg.model[head].in_index = 7 if head == 'auxiliary_head' else [1, 2, 7]
    with pytest.raises(ChannelMismatchError, match='points outside the 4 maps'):
        check_model_channels(cfg.model)


def test_foreign_backbones_are_not_checked():
    assert backbone_out_channels(dict(type='ResNet', depth=50)) is None
    check_model_channels(dict(backbone=dict(type='ResNet', depth=50), neck=dict(type='FPN', in_channels=[1])))
    assert backbone_out_channels(dict(type='mmdet.ConvNeXt', arch='tiny', out_indices=(3,))) == [768]
