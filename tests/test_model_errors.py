"""Bad inputs to the model zoo fail with one line naming what was expected: input sizes, checkpoint
files, model names, ``img_size`` and misspelt constructor keywords."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import vitzoo
from vitzoo.models import CheckpointError, read_checkpoint, reduced_config, select_state_dict

META = torch.device("meta")


def _meta_model(name: str, **kwargs) -> nn.Module:
    with META:
        return timm.create_model(name, **kwargs)


@pytest.mark.parametrize("name, family", [
    ("inline_deit_tiny", "InLine-DeiT"),
    ("vzvit_tiny", "VzViT"),
    ("inline_swin_tiny", "InLine-Swin"),
])
def test_input_size_error_names_the_family(name, family):
    model = _meta_model(name, **reduced_config(name)["kwargs"])
    multiple = 16 if "deit" in name or "vzvit" in name else 32
    with pytest.raises(ValueError, match=f"^{family} needs height and width divisible by {multiple}, got 70x64$"):
        model(torch.empty(1, 3, 70, 64, device=META))


@pytest.mark.parametrize("name, family", [("ravlt_t", "RAVLT"), ("mavit_t", "MAViT"), ("l2vit_tiny", "l2vit")])
def test_channel_error_names_the_family(name, family):
    model = _meta_model(name, **reduced_config(name)["kwargs"])
    with pytest.raises(ValueError, match=f"^{family} expects 3 input channels, got 4"):
        model(torch.empty(1, 4, 64, 64, device=META))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)


def test_pickled_module_is_named_not_loaded(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(_Net(), path)
    checkpoint = read_checkpoint(path)
    # inert: the test module's class was never imported by the reader
    assert type(checkpoint).__module__.startswith("inert:")
    message = r"the checkpoint is a pickled module object \(test_model_errors\._Net\), not a state dict.*" \
              r"torch\.save\(model\.state_dict\(\), path\)"
    with pytest.raises(CheckpointError, match=message):
        select_state_dict(checkpoint)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": _Net(), "epoch": 3}, wrapped)
    with pytest.raises(CheckpointError, match=r"^'model' holds a pickled module object \(test_model_errors\._Net\)"):
        select_state_dict(read_checkpoint(wrapped))


def test_pickled_module_through_timm_names_the_file(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match=rf"^{path}: the checkpoint is a pickled module object "
                                              r"\(torch\.nn\.modules\.linear\.Linear\)"):
        timm.create_model("vzvit_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                          **reduced_config("vzvit_tiny")["kwargs"])


def test_non_tensor_entry_is_named(tmp_path):
    nested = tmp_path / "nested.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2), "step": 3}}, nested)
    with pytest.raises(CheckpointError, match=r"^'model' holds a state dict with 1 non-tensor entry: 'step' \(int\)"):
        select_state_dict(read_checkpoint(nested))
    flat = tmp_path / "flat.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "note": "hello", "epoch": 1}, flat)
    with pytest.raises(CheckpointError, match=r"^the checkpoint is a state dict with 2 non-tensor entries: "
                                              r"'note' \(str\), 'epoch' \(int\)"):
        select_state_dict(read_checkpoint(flat))
    # a container without weights still lists its keys
    with pytest.raises(CheckpointError, match=r"top-level keys \['epoch', 'optimizer'\]"):
        select_state_dict({"optimizer": {"state": {}}, "epoch": 3})


def test_create_model_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown vitzoo model 'ravlt_tt'\. Did you mean ravlt_t"):
        vitzoo.create_model("ravlt_tt")
    with pytest.raises(ValueError, match=r"ravlt_t has no pretrained tag 'bogus'; its tags are official_in1k"):
        vitzoo.create_model("ravlt_t.bogus")
    # timm's own message cannot be extended (timm/models/_factory.py raises a fixed RuntimeError)
    with pytest.raises(RuntimeError, match=r"Unknown model \(ravlt_tt\)"):
        timm.create_model("ravlt_tt")


@pytest.mark.parametrize("name", ["ravlt_t", "mavit_t", "l2vit_tiny", "l2vit_base_384", "vzvit_tiny",
                                  "inline_deit_small", "inline_pvt_tiny", "inline_swin_tiny", "inline_cswin_tiny"])
def test_img_size_is_accepted_and_reported(name):
    default = _meta_model(name)
    assert default.img_size == default.pretrained_cfg["input_size"][1:]
    model = _meta_model(name, img_size=(256, 320))
    assert model.img_size == (256, 320)
    assert model.pretrained_cfg["input_size"] == (3, 256, 320)
    assert timm.data.resolve_model_data_config(model)["input_size"] == (3, 256, 320)
    assert _meta_model(name, img_size=288).img_size == (288, 288)


@pytest.mark.parametrize("name", ["ravlt_t", "l2vit_tiny"])
def test_img_size_does_not_fix_the_input_size(name):
    torch.manual_seed(42)
    model = timm.create_model(name, **dict(reduced_config(name)["kwargs"], img_size=64)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 50, 70)).shape == (1, 1000)


@pytest.mark.parametrize("value", ["224", 0, -32, 3.5, (224, 224, 3), (224.0, 224), True])
@pytest.mark.parametrize("name", ["ravlt_t", "l2vit_tiny", "vzvit_tiny", "inline_swin_tiny"])
def test_bad_img_size_is_a_value_error(name, value):
    with pytest.raises(ValueError, match=rf"^{name}: img_size must be a positive int or \(height, width\)"):
        _meta_model(name, img_size=value)


@pytest.mark.parametrize("name, message", [
    ("vzvit_tiny", "VzViT: img_size needs height and width divisible by 16"),
    ("inline_pvt_tiny", "InLine-PVT: img_size needs height and width divisible by 32"),
])
def test_img_size_no_input_can_have_is_refused(name, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        _meta_model(name, img_size=200)


@pytest.mark.parametrize("name", vitzoo.list_models())
def test_misspelt_keyword_is_refused(name):
    # how `vitzoo train --model-kwargs mixr=linear` is refused: no model swallows an unknown keyword
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'mixr'"):
        _meta_model(name, mixr="linear")


@pytest.mark.parametrize("name, keyword, expected", [
    ("inline_deit_tiny", "embed_dims",
     "InLineDeiT got unexpected keyword argument 'embed_dims'; did you mean 'embed_dim'"),
    ("ravlt_t", "img_sz", "RAVLT got unexpected keyword argument 'img_sz'; did you mean 'img_size'"),
    ("l2vit_tiny", "drop_path", "L2ViT got unexpected keyword argument 'drop_path'; did you mean 'drop_path_rate'"),
])
def test_misspelt_keyword_names_the_model_and_a_close_name(name, keyword, expected):
    with pytest.raises(TypeError, match=f"^{expected}"):
        _meta_model(name, **{keyword: 1})


@pytest.mark.parametrize("name, key", [("vzvit_tiny", "mixer_kwargs"), ("ravlt_t", "mixer_kwargs"),
                                       ("l2vit_tiny", "global_mixer_kwargs")])
def test_misspelt_mixer_keyword_is_refused(name, key):
    with pytest.raises(TypeError, match="unexpected keyword argument 'epss'"):
        _meta_model(name, **{key: dict(epss=1e-6)})
