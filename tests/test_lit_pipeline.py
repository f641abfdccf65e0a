"""LiTPipeline: labels to images with any scheduler, guidance, seeding, callbacks, save/load with its VAE;
the ``--pipeline lit`` generate command and the bench denoisers."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler

from vitzoo.diffusion.dit import VzDiTTransformer2DModel
from vitzoo.diffusion.lit import LiTTransformer2DModel
from vitzoo.diffusion.pipelines import LiTPipeline, LiTPipelineOutput, ddpm_scheduler

LABELS = {0: "zero, nought", 1: "one", 2: "two"}


def _transformer(cls=LiTTransformer2DModel, **kwargs):
    torch.manual_seed(0)
    model = cls(**dict(dict(sample_size=4, hidden_size=32, depth=1, num_heads=2, num_classes=3), **kwargs))
    for param in model.parameters():
        if param.requires_grad:  # official init zeroes the output; random weights make outputs depend on inputs
            torch.nn.init.normal_(param, std=0.1)
    return model.eval()


def _vae():
    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                         sample_size=8).eval()


@pytest.fixture
def pipe():
    pipeline = LiTPipeline(transformer=_transformer(), scheduler=ddpm_scheduler(), vae=_vae(), id2label=LABELS)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_labels_to_images(pipe):
    out = pipe(["one", 2, "Nought"], num_inference_steps=2, output_type="pt", generator=torch.manual_seed(0))
    assert isinstance(out, LiTPipelineOutput) and out.class_labels == [1, 2, 0]
    assert out.images.shape == (3, 3, 8, 8) and 0 <= out.images.min() and out.images.max() <= 1
    pil = pipe([0], num_inference_steps=2).images
    assert pil[0].size == (8, 8)
    images, ids = pipe([1], num_inference_steps=2, output_type="np", return_dict=False)
    assert images.shape == (1, 8, 8, 3) and ids == [1]


def test_generator_seeding_is_reproducible_and_labels_matter(pipe):
    first = pipe([1, 2], num_inference_steps=3, output_type="pt", generator=torch.manual_seed(7)).images
    again = pipe([1, 2], num_inference_steps=3, output_type="pt", generator=torch.manual_seed(7)).images
    other = pipe([2, 2], num_inference_steps=3, output_type="pt", generator=torch.manual_seed(7)).images
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first[0], other[0])
    torch.testing.assert_close(first[1], other[1], atol=1e-5, rtol=1e-5)


def test_guided_step_is_official_cfg(pipe):
    """One DDIM step (deterministic) from given latents equals the scheduler applied to the official CFG
    rule on the model's output, computed here by hand."""
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    latents = torch.randn(2, 4, 4, 4)
    out = pipe([0, 2], guidance_scale=3.0, num_inference_steps=1, latents=latents, output_type="latent").images
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(1)
    t = scheduler.timesteps[0]
    model = pipe.transformer
    raw = model(torch.cat([latents, latents]), t.expand(4), torch.tensor([0, 2, 3, 3])).sample
    cond, uncond = raw[:2], raw[2:]
    # guidance touches the first 3 channels only (official DiT), unless the model is configured otherwise
    eps = torch.cat([uncond[:, :3] + 3.0 * (cond[:, :3] - uncond[:, :3]), cond[:, 3:4]], dim=1)
    expected = scheduler.step(eps, t, latents).prev_sample
    torch.testing.assert_close(out, expected)


def test_ddpm_gets_the_learned_variance(pipe):
    """With variance_type='learned_range', DDPM receives [ε, v]: its noise scale follows v."""
    latents = torch.randn(1, 4, 4, 4)
    seen = []
    step = pipe.scheduler.step
    pipe.scheduler.step = lambda output, *a, **k: seen.append(output.shape[1]) or step(output, *a, **k)
    pipe([1], num_inference_steps=2, latents=latents, output_type="latent", guidance_scale=1.0)
    assert seen == [8, 8]
    pipe.scheduler = DDIMScheduler.from_config(ddpm_scheduler().config)
    step = pipe.scheduler.step
    pipe.scheduler.step = lambda output, *a, **k: seen.append(output.shape[1]) or step(output, *a, **k)
    pipe([1], num_inference_steps=2, latents=latents, output_type="latent", guidance_scale=1.0)
    assert seen[2:] == [4, 4]


def test_dpm_solver_and_its_variance_setting(pipe):
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="variance_type=None"):
        pipe([1], num_inference_steps=2)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, variance_type=None)
    out = pipe([1, 0], num_inference_steps=3, output_type="pt", generator=torch.manual_seed(0)).images
    assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()


def test_callback_sees_and_replaces_latents(pipe):
    steps = []

    def callback(pipeline, i, t, tensors):
        steps.append(i)
        return {"latents": torch.zeros_like(tensors["latents"])}

    out = pipe([1], num_inference_steps=2, output_type="latent", callback_on_step_end=callback)
    assert steps == [0, 1] and torch.count_nonzero(out.images) == 0
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe([1], num_inference_steps=2, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["noise"])


def test_bad_inputs_are_named(pipe):
    with pytest.raises(ValueError, match="unknown class label 'three'"):
        pipe(["three"], num_inference_steps=1)
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 3\)"):
        pipe([3], num_inference_steps=1)
    with pytest.raises(ValueError, match="multiples of 4"):
        pipe([1], num_inference_steps=1, height=10)
    with pytest.raises(ValueError, match="output_type"):
        pipe([1], num_inference_steps=1, output_type="jpeg")
    no_null = LiTPipeline(transformer=_transformer(class_dropout_prob=0.0), scheduler=ddpm_scheduler())
    with pytest.raises(ValueError, match="null class"):
        no_null([1], guidance_scale=2.0, num_inference_steps=1)


def test_other_resolutions_and_pixel_space():
    pipe = LiTPipeline(transformer=_transformer(in_channels=1), scheduler=ddpm_scheduler())
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae_scale_factor == 1
    out = pipe([0, 1], num_inference_steps=2, height=4, width=6, output_type="pt").images
    assert out.shape == (2, 1, 4, 6)
    assert pipe([2], num_inference_steps=1).images[0].mode == "L"


def test_save_pretrained_round_trip_with_vae(pipe, tmp_path):
    expected = pipe([1, 2], num_inference_steps=2, output_type="pt", generator=torch.manual_seed(3)).images
    pipe.save_pretrained(tmp_path)
    loaded = LiTPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.transformer, LiTTransformer2DModel) and isinstance(loaded.vae, AutoencoderKL)
    assert loaded.get_label_ids(["nought", "two"]) == [0, 2]
    again = loaded([1, 2], num_inference_steps=2, output_type="pt", generator=torch.manual_seed(3)).images
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=1e-5)


def test_dit_twin_and_pixel_pipeline_round_trip(tmp_path):
    pipe = LiTPipeline(transformer=_transformer(VzDiTTransformer2DModel, in_channels=1),
                       scheduler=ddpm_scheduler())
    pipe.save_pretrained(tmp_path)
    loaded = LiTPipeline.from_pretrained(tmp_path)
    assert type(loaded.transformer) is VzDiTTransformer2DModel and loaded.vae is None


def test_imagenet_names_by_default():
    pipe = LiTPipeline(transformer=_transformer(num_classes=1000), scheduler=ddpm_scheduler())
    assert pipe.get_label_ids(["golden retriever", "Tench", 207, "3"]) == [207, 0, 207, 3]


def test_generate_command_writes_a_grid(pipe, tmp_path):
    """Run as a fresh process: loading a saved pipeline must not rely on modules a test imported."""
    import os
    import subprocess
    import sys

    from PIL import Image

    pipe.save_pretrained(tmp_path / "pipe")
    out = tmp_path / "grid.png"
    command = [sys.executable, "-m", "vitzoo.cli", "generate", "--pipeline", "lit", "--model", str(tmp_path / "pipe"),
               "--class-labels", "one", "0", "--per-class", "3", "--steps", "2", "--scheduler",
               "DPMSolverMultistepScheduler", "--output", str(out), "--cell-size", "16", "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with Image.open(out) as grid:
        assert grid.size == (2 + 3 * (16 + 2), 2 + 2 * (16 + 2))
    from vitzoo.cli import main

    assert main(["generate", "--pipeline", "lit", "--model", str(tmp_path / "none"), "--output", str(out)]) == 2


@pytest.mark.parametrize("name,heads", [("lit", 2), ("dit", 6)])
def test_bench_denoisers_are_registered(name, heads):
    from vitzoo.benchmark.denoisers import get_denoiser

    bench = get_denoiser(name, variant="S/2", depth=1)
    assert bench.module.blocks[0].attn.num_heads == heads
    inputs = bench.make_inputs(128, 2, torch.device("cpu"), torch.float32)
    assert inputs["hidden_states"].shape == (2, 4, 16, 16) and bench.tokens(2048) == 128 * 128
    with torch.no_grad():
        assert bench.module(**inputs).sample.shape == (2, 8, 16, 16)


def test_class_consistency_report():
    from vitzoo.commands.generate.lit import class_consistency

    report = class_consistency([0, 0, 1, 2, 2, 2], [0, 0, 0, 2, 2, 2], {0: "zero", 1: "one", 2: "two"}, 3)
    assert report["accuracy"] == 5 / 6 and report["per_class"] == {"zero": 2 / 3, "two": 1.0}
    assert report["chance"] == 1 / 3 and report["samples"] == 6
