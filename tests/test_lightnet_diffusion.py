"""LightNet as a diffusion backbone (vitzoo.diffusion.lightnet): DiT's skeleton with the one-scan LightNet attention
and MD-LRPE, trained by the shared diffusion engine and sampled by the shared LiT pipeline."""

from __future__ import annotations

import numpy as np
import torch

from vitzoo.benchmark.denoisers import get_denoiser
from vitzoo.commands.train_lit import parse_args
from vitzoo.diffusion.dit import DIT_VARIANTS, VzDiTTransformer2DModel
from vitzoo.diffusion.lightnet import LightNetTransformer2DModel
from vitzoo.diffusion.pipelines import LiTPipeline, ddpm_scheduler
from vitzoo.mixers.lightnet import LightNetMixer
from vitzoo.train.diffusion import DiffusionEngine
from vitzoo.train.loop import Trainer

TINY = dict(sample_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=3)


def _model(**kwargs):
    torch.manual_seed(0)
    return LightNetTransformer2DModel(**dict(TINY, **kwargs))


def test_every_block_is_a_lightnet_attention_with_md_lrpe():
    model = _model()
    assert model.config.mixer == "lightnet" and model.config.mixer_kwargs == dict(use_lrpe=True)
    for block in model.blocks:
        assert isinstance(block.attn, LightNetMixer) and block.attn.use_lrpe and not block.attn.causal
    assert not any(b.attn.use_lrpe for b in _model(mixer_kwargs=dict(use_lrpe=False)).blocks)
    # the same DiT skeleton: only the mixers' parameters differ from the softmax twin's
    twin = VzDiTTransformer2DModel(**TINY)
    outside = {k for k in model.state_dict() if ".attn." not in k}
    assert outside == {k for k in twin.state_dict() if ".attn." not in k}


def test_forward_depends_on_position_and_class():
    model = _model().eval()
    x = torch.randn(2, 1, 8, 8)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        for p in model.parameters():  # adaLN-Zero starts at the identity: give every layer a say
            p.add_(torch.randn_like(p) * 0.05)
        out = model(x, t, torch.tensor([0, 1])).sample
        other_class = model(x, t, torch.tensor([2, 1])).sample
        flipped = model(x.flip(-1), t, torch.tensor([0, 1])).sample
    assert out.shape == (2, 2, 8, 8) and torch.isfinite(out).all()
    assert (out[0] - other_class[0]).abs().max() > 1e-4 and torch.equal(out[1], other_class[1])
    assert (flipped.flip(-1) - out).abs().max() > 1e-4


def test_pipeline_round_trip_keeps_the_class(tmp_path):
    pipe = LiTPipeline(transformer=_model(), scheduler=ddpm_scheduler(), id2label={0: "a", 1: "b", 2: "c"})
    pipe.save_pretrained(tmp_path)
    loaded = LiTPipeline.from_pretrained(tmp_path)
    assert type(loaded.transformer) is LightNetTransformer2DModel
    assert loaded.transformer.config.mixer_kwargs == dict(use_lrpe=True)
    for a, b in zip(pipe.transformer.state_dict().values(), loaded.transformer.state_dict().values()):
        assert torch.equal(a, b)
    loaded.set_progress_bar_config(disable=True)
    images = loaded(["c", "a"], num_inference_steps=2, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()


def test_the_diffusion_engine_trains_it(tmp_path):
    args = parse_args(["--dataset", "vitzoo/digits", "--data-dir", str(tmp_path / "data"), "--model", "lightnet",
                       "--model-kwargs", "hidden_size=32", "depth=2", "num_heads=2", "patch_size=2",
                       "--batch-size", "8", "--max-steps", "2", "--lr", "1e-3", "--device", "cpu", "--workers", "0",
                       "--output", str(tmp_path), "--experiment", "ln", "--log-interval", "1"])
    trainer = Trainer(DiffusionEngine(args))
    assert isinstance(trainer.trainable, LightNetTransformer2DModel)
    result = trainer.fit()
    assert result.steps == 2 and np.isfinite(result.last_loss)
    assert type(LiTPipeline.from_pretrained(result.exported).transformer) is LightNetTransformer2DModel


def test_benchmark_registry_builds_a_published_size():
    with torch.device("meta"):
        bench = get_denoiser("lightnet", variant="S/2", resolution=256)
    cfg = bench.module.config
    assert (cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.mixer) == (384, 12, 6, "lightnet")
    assert DIT_VARIANTS["S/2"]["num_heads"] == 6 and bench.tokens(256) == 256

