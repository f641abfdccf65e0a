"""Loading official-format checkpoints: safe unpickling, weight choice, key checks, conversion."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import load_file

from conftest import write_official_checkpoint
from vitzoo.models import CheckpointError, read_checkpoint, reduced_config, select_state_dict
from vitzoo.models._checkpoint import read_checkpoint_metadata

SMALL = reduced_config("vzvit_tiny")["kwargs"]


def _model(**kw):
    return timm.create_model("vzvit_tiny", **dict(SMALL, **kw)).eval()


def test_official_container_loads_through_timm(tmp_path):
    source, ema = _model(), _model()
    path = tmp_path / "official.pth"
    write_official_checkpoint(path, {"model": source.state_dict(), "model_ema": ema.state_dict()})
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # what timm would do
    loaded = timm.create_model("vzvit_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL).eval()
    x = torch.randn(1, 3, 64, 64)
    # vzvit follows DeiT's evaluation, which uses 'model', although timm would pick 'model_ema'
    torch.testing.assert_close(loaded(x), source(x))
    assert not torch.allclose(loaded(x), ema(x))


def test_unpickling_executes_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(1)}, "payload": Exploit()}, path)
    checkpoint = read_checkpoint(path)
    assert not marker.exists()
    assert type(checkpoint["payload"]).__module__ == "inert:posix" or "inert:" in type(checkpoint["payload"]).__module__
    assert select_state_dict(checkpoint)["w"].item() == 1.0


def test_corrupt_and_missing_files(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model": _model().state_dict()}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(truncated)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="safetensors"):
        read_checkpoint(text)
    with pytest.raises(CheckpointError, match="safetensors"):
        read_checkpoint_metadata(text)


def test_safetensors_metadata_is_read(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt", "note": "[1, 2]"})
    assert read_checkpoint_metadata(path) == {"format": "pt", "note": "[1, 2]"}
    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.pt")
    assert read_checkpoint_metadata(tmp_path / "weights.pt") == {}


def test_mismatched_checkpoint_names_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": timm.create_model("vzvit_tiny", **dict(SMALL, depth=4)).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(blocks\.3\."):
        timm.create_model("vzvit_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL)
    wide = tmp_path / "wide.pth"
    torch.save(timm.create_model("vzvit_tiny", **dict(SMALL, embed_dim=48)).state_dict(), wide)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        timm.create_model("vzvit_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(wide)), **SMALL)
    with pytest.raises(CheckpointError, match="top-level keys"):
        select_state_dict({"optimizer": {"state": {}}, "epoch": 3})


def test_new_head_and_input_channels(tmp_path):
    source = _model()
    path = tmp_path / "ck.pth"
    torch.save({"model": source.state_dict()}, path)
    overlay = dict(file=str(path))
    ten = timm.create_model("vzvit_tiny", pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10, **SMALL)
    torch.testing.assert_close(ten.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert ten.head.out_features == 10
    gray = timm.create_model("vzvit_tiny", pretrained=True, pretrained_cfg_overlay=overlay, in_chans=1, **SMALL)
    torch.testing.assert_close(gray.patch_embed.proj.weight[:, 0], source.patch_embed.proj.weight.sum(1))
    features = timm.create_model("vzvit_tiny", pretrained=True, pretrained_cfg_overlay=overlay, features_only=True, **SMALL)
    assert len(features(torch.randn(1, 3, 64, 64))) == 3


def test_position_embedding_is_resampled_from_another_grid(tmp_path):
    path = tmp_path / "ck.pth"
    torch.save({"model": _model().state_dict()}, path)
    model = timm.create_model("vzvit_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              **dict(SMALL, img_size=96))
    assert model.pos_embed.shape[1] == 1 + 36


def test_convert_cli_round_trip(tmp_path):
    source = _model()
    official = tmp_path / "official.pth"
    write_official_checkpoint(official, {"model": source.state_dict()})
    out = tmp_path / "vz.safetensors"
    kwargs = '{"embed_dim": 32, "depth": 3, "num_heads": 2, "img_size": 64}'
    result = subprocess.run([sys.executable, "tools/convert.py", "vzvit_tiny", str(official), str(out),
                             "--model-kwargs", kwargs], capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr
    tensors = load_file(str(out))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(tensors[key], value)
    again = timm.create_model("vzvit_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(out)), **SMALL).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(again(x), source(x))


def test_timm_deit_weights_give_timm_deit_outputs(tmp_path):
    """vzvit with the softmax mixer is DeiT: timm's own ViT weights load unchanged and agree."""
    from timm.models.vision_transformer import VisionTransformer

    deit = VisionTransformer(img_size=64, patch_size=16, embed_dim=32, depth=3, num_heads=2, num_classes=10).eval()
    path = tmp_path / "deit.pth"
    torch.save({"model": deit.state_dict()}, path)
    # the checkpoint's head has 10 classes: say so, or timm's rule drops a head that differs from 1000
    overlay = dict(file=str(path), num_classes=10)
    ours = timm.create_model("vzvit_tiny", pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10, **SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), deit(x), atol=1e-5, rtol=1e-5)
