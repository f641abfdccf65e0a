"""SD-XL high resolution (LinFusion §6 B) and super-resolution (§6 C) on a tiny random SD-XL built in code,
``vitzoo upscale`` for both families, and ``vitzoo generate --pipeline linfusion-xl``.

Expected schedules are computed here from the spec's formulas (``../shared/specs/linfusion.md`` §6 B, C), not
read from the implementation."""

from __future__ import annotations

import json
import math

import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vitzoo.diffusion.pipelines import HighResolutionXLPipeline, SuperResolutionXLPipeline, stage_strengths
from vitzoo.diffusion.pipelines.pipeline_high_resolution_sdxl import (
    dilated_convs,
    gaussian_blur,
    restandardize,
    xl_stage_sizes,
)


def _read_png(path) -> np.ndarray:
    with PIL.Image.open(path) as image:
        return np.array(image)


def _f(t: float) -> float:
    """§6 B: cos_f = 0.5 (1 + cos(π (1000 − t) / 1000))."""
    return 0.5 * (1 + math.cos(math.pi * (1000 - t) / 1000))


@pytest.fixture(scope="module")
def tiny_xl(tmp_path_factory):
    from vitzoo.testing.tiny_diffusion import tiny_stable_diffusion_xl

    return tiny_stable_diffusion_xl(directory=tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def hr(tiny_xl):
    pipe = HighResolutionXLPipeline.from_pipe(tiny_xl)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------- schedule = the spec's formulas


def test_stage_sizes_and_strengths_follow_the_spec():
    # base latent long side 128 (1024 px); S = ceil(log2(L / 128)); base = ceil(128 · side / L); x 2^s
    assert xl_stage_sizes(16384, 16384, 1024) == [(1024 * 2 ** s,) * 2 for s in range(5)]
    assert xl_stage_sizes(1024, 2048, 1024) == [(512, 1024), (1024, 2048)]  # the spec's 2048 x 1024 example
    # latent 344 x 512: S = 2, base = (ceil(128 * 344 / 512), 128) = (86, 128)
    assert xl_stage_sizes(2752, 4096, 1024) == [(688, 1024), (1376, 2048), (2752, 4096)]
    with pytest.raises(ValueError, match="reaches 4096x2752, not 3000x2000"):
        xl_stage_sizes(2000, 3000, 1024)
    assert xl_stage_sizes(768, 512, 1024) == [(768, 512)]
    for stages in (1, 4, 6):
        assert stage_strengths(stages, 0.32) == pytest.approx(np.linspace(0.32, 0, stages + 1)[:-1].tolist())
    assert stage_strengths(4, 0.32) == pytest.approx([0.32, 0.24, 0.16, 0.08])  # the 16K chain of §6 C


def test_stage_plan_weights_follow_the_spec(hr):
    plan = hr.stage_plan((64, 64), 0.32, 10, 2, (3.0, 1.0, 1.0), 0.8)
    # Euler "leading" over 1000 steps with offset 1: 901, 801, ..., 1; strength 0.32 of 10 steps = the last 3
    assert plan.timesteps.tolist() == [201, 101, 1] and plan.steps == 3
    assert plan.kernel_size == 3
    for t, skip, dilated, sigma in zip([201, 101, 1], plan.skip_weights, plan.dilated_weights, plan.blur_sigmas):
        assert skip == pytest.approx(_f(t) ** 3, rel=1e-12)
        assert dilated == pytest.approx(_f(t), rel=1e-12)
        assert sigma == pytest.approx(0.8 * (0.99 * _f(t) + 0.01), rel=1e-12)
    assert plan.skip_weights[0] == pytest.approx(0.000896309, rel=1e-5)


def _record_dilations(pipe, run):
    """Run ``run()`` and return the set of (latent side, conv_in dilation) the UNet saw."""
    seen = set()
    handle = pipe.unet.conv_in.register_forward_pre_hook(
        lambda module, args: seen.add((args[0].shape[-1], module.dilation[0])))
    try:
        run()
    finally:
        handle.remove()
    return seen


def test_dilation_per_stage_is_two_to_the_stage(hr):
    seen = _record_dilations(hr, lambda: hr("a", height=128, width=128, base_size=32, num_inference_steps=3,
                                            output_type="latent", generator=torch.Generator().manual_seed(0)))
    # stages 32 / 64 / 128 px = latents 4 / 8 / 16; stage s adds a pass with dilation 2^s
    assert seen == {(4, 1), (8, 1), (8, 2), (16, 1), (16, 4)}
    assert all(m.dilation == (1, 1) for m in hr.unet.modules() if isinstance(m, torch.nn.Conv2d))


def test_blur_restandardize_and_dilation_helpers():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 11)
    k, sigma = 5, 0.7
    taps = torch.exp(-(torch.arange(k) - (k - 1) / 2) ** 2 / (2 * sigma ** 2))
    kernel = (taps[:, None] * taps[None, :]) / taps.sum() ** 2
    expected = torch.nn.functional.conv2d(x, kernel.expand(4, 1, k, k), padding=k // 2, groups=4)
    torch.testing.assert_close(gaussian_blur(x, k, sigma), expected, atol=1e-6, rtol=1e-6)
    assert gaussian_blur(x, 1, sigma) is x
    mean, std = torch.rand(2, 4, 1, 1), torch.rand(2, 4, 1, 1) + 0.5
    y = restandardize(x, mean, std)
    torch.testing.assert_close(y.mean(dim=(2, 3), keepdim=True), mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(2, 3), keepdim=True), std, atol=1e-5, rtol=0)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    with dilated_convs(conv, 3):
        assert conv.dilation == (3, 3) and conv.padding == (3, 3) and conv(x).shape == x.shape
    assert conv.dilation == (1, 1) and conv.padding == (1, 1)


# ---------------------------------------------------------------- equal to diffusers at the base


def test_one_stage_without_linfusion_equals_diffusers_sdxl(tiny_xl, hr):
    common = dict(prompt="a cat", negative_prompt="blur", num_inference_steps=3, guidance_scale=5.0,
                  height=64, width=48, original_size=(96, 80), crops_coords_top_left=(4, 8))
    ours = hr(**common, base_size=64, unet_batch_size=None, feed_forward_chunks=None,
              generator=torch.Generator().manual_seed(0)).images[0]
    theirs = tiny_xl(**common, generator=torch.Generator().manual_seed(0)).images[0]
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    chunked = hr(**common, base_size=64, generator=torch.Generator().manual_seed(0)).images[0]
    assert np.abs(np.asarray(chunked).astype(int) - np.asarray(theirs).astype(int)).max() <= 1


def test_save_pretrained_round_trip(hr, tmp_path):
    hr.save_pretrained(tmp_path / "xl")
    index = json.loads((tmp_path / "xl" / "model_index.json").read_text())
    assert index["_class_name"] == "HighResolutionXLPipeline" and "text_encoder_2" in index
    again = HighResolutionXLPipeline.from_pretrained(tmp_path / "xl", local_files_only=True)
    again.set_progress_bar_config(disable=True)
    run = lambda p: p("a cat", height=64, width=64, base_size=32, num_inference_steps=2,  # noqa: E731
                      output_type="pt", generator=torch.Generator().manual_seed(0)).images
    torch.testing.assert_close(run(again), run(hr), atol=0, rtol=0)
    sr = SuperResolutionXLPipeline.from_pretrained(tmp_path / "xl", local_files_only=True)
    assert type(sr).__name__ == "SuperResolutionXLPipeline" and sr.text_encoder_2 is not None


# ---------------------------------------------------------------- super-resolution


def test_super_resolution_two_x_and_chain(tiny_xl, tmp_path):
    from vitzoo.diffusion.linfusion import LinFusion

    sr = SuperResolutionXLPipeline.from_pipe(tiny_xl)
    sr.set_progress_bar_config(disable=True)
    linfusion = LinFusion.construct_for(sr, pretrained=False, mid_dim_scale=16)
    try:
        assert linfusion.config.modules_list[0]["projection_mid_dim"] == 32 // 16  # LinFusion-XL layout
        image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8))
        seen = _record_dilations(sr, lambda: sr("a", image=image, num_inference_steps=3, base_size=32,
                                                output_type="np", generator=torch.Generator().manual_seed(0)))
        # 2x by default, rounded up to the VAE's 8: 28x20 -> 56x40; dilation ceil(56 / 32) = 2
        assert seen == {(7, 1), (7, 2)}
        chained = sr("a", image=image, height=80, width=112, chain=True, num_inference_steps=3, base_size=32,
                     output_type="png", output_path=tmp_path / "sr.png", intermediate_dir=tmp_path / "stages",
                     generator=torch.Generator().manual_seed(0))
        assert chained.stage_sizes == [(20, 28), (40, 56), (80, 112)]
        assert _read_png(tmp_path / "sr.png").shape == (80, 112, 3)
        assert (tmp_path / "stages" / "stage1_56x40.png").is_file()
        with pytest.raises(ValueError, match="must be larger than the image"):
            sr("a", image=image, height=16, width=16)
    finally:
        linfusion.unmount()


class _LargestFloat(TorchDispatchMode):
    """Records the largest floating-point tensor any op produces."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                self.largest = max(self.largest, tensor.numel())
        return out


def test_full_resolution_image_never_exists_as_floats(hr, tmp_path):
    size = 256
    with _LargestFloat() as probe:
        hr("a", height=size, width=size, base_size=64, num_inference_steps=2, vae_tile_size=64, output_type="png",
           output_path=tmp_path / "big.png", generator=torch.Generator().manual_seed(0))
    assert _read_png(tmp_path / "big.png").shape == (size, size, 3)
    # one float RGB image would be 3 · 256²; the largest tensor is a UNet skip concat at the latent (48 x 32²)
    assert probe.largest <= 48 * (size // 8) ** 2 < 3 * size * size, probe.largest


# ---------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def odd_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "in.png"
    PIL.Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("model", ["tiny-random", "tiny-random-xl"])
def test_upscale_cli_end_to_end(odd_image, tmp_path, capsys, model):
    from vitzoo.cli import main

    out, stats = tmp_path / "out.png", tmp_path / "stats.json"
    assert main(["upscale", str(odd_image), "--to", "128", "--model", model, "--linfusion", "random", "--steps", "3",
                 "--output", str(out), "--stats-json", str(stats)]) == 0
    assert "input 48x40 centre-cropped to 48x39" in capsys.readouterr().out
    assert _read_png(out).shape == (104, 128, 3)
    record = json.loads(stats.read_text())
    assert record["family"] == ("sdxl" if model.endswith("xl") else "sd")
    assert record["stage_sizes"] == [[39, 48], [56, 64], [104, 128]]


def _error(capsys, *argv):
    from vitzoo.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_upscale_cli_refuses_bad_input(odd_image, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    assert "is not an image" in _error(capsys, "upscale", str(tmp_path / "notes.png"), "--to", "128", "--model",
                                       "tiny-random")
    assert "no such file" in _error(capsys, "upscale", str(tmp_path / "missing.png"), "--to", "128", "--model",
                                    "tiny-random")
    assert "expected model_index.json" in _error(capsys, "upscale", str(odd_image), "--to", "128", "--model",
                                                 str(tmp_path / "no-model"))
    assert "must be larger than the image's long side" in _error(capsys, "upscale", str(odd_image), "--to", "40",
                                                                 "--model", "tiny-random")
    assert "multiples of 8" in _error(capsys, "upscale", str(odd_image), "--to", "130", "--model", "tiny-random")
    assert "--to" in _error(capsys, "upscale", str(odd_image), "--model", "tiny-random")


def test_generate_cli_linfusion_xl(tmp_path, capsys):
    from vitzoo.cli import main

    out, stats = tmp_path / "xl.png", tmp_path / "xl.json"
    assert main(["generate", "--pipeline", "linfusion-xl", "--model", "tiny-random-xl", "--linfusion", "random",
                 "--height", "128", "--width", "128", "--base-size", "64", "--steps", "2", "--output", str(out),
                 "--stats-json", str(stats)]) == 0
    assert _read_png(out).shape == (128, 128, 3)
    assert json.loads(stats.read_text())["stage_sizes"] == [[64, 64], [128, 128]]
    capsys.readouterr()
    assert "reaches" in _error(capsys, "generate", "--pipeline", "linfusion-xl", "--model", "tiny-random-xl",
                               "--linfusion", "random", "--height", "200", "--width", "304")
    assert "tiny model of --pipeline linfusion-xl" in _error(capsys, "generate", "--pipeline", "linfusion",
                                                             "--model", "tiny-random-xl", "--linfusion", "random")
    assert "--cosine-scales is an option of --pipeline linfusion-xl" in _error(
        capsys, "generate", "--pipeline", "linfusion", "--model", "tiny-random", "--cosine-scales", "1", "1", "1")
