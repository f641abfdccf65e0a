"""High resolution: the streamed PNG writer, the region-wise resize, the streaming tiled VAE, the stage
schedule, the HighResolutionPipeline against diffusers' own text-to-image + img2img chain, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch

from vitzoo.diffusion.highres_png import PngWriter
from vitzoo.diffusion.highres_vae import decode_tiled, encode_tiled, resize_region
from vitzoo.diffusion.pipelines.pipeline_high_resolution import (
    HighResolutionPipeline,
    _chunk_size,
    feed_forward_chunking,
    stage_sizes,
    stage_strengths,
)


def _read_png(path) -> np.ndarray:
    with PIL.Image.open(path) as image:
        return np.array(image)


# ---------------------------------------------------------------- PNG writer


@pytest.mark.parametrize("channels, bands", [(3, (5, 1, 17, 0, 22)), (1, (45,)), (4, (20, 25)), (2, (44, 1))])
def test_png_writer_matches_pillow_reading(tmp_path, channels, bands):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (45, 67, channels), dtype=np.uint8)
    path = tmp_path / "out.png"
    with PngWriter(path, 67, 45, channels=channels, chunk_bytes=1000) as writer:
        start = 0
        for rows in bands:
            writer.write(image[start:start + rows])
            start += rows
    back = _read_png(path)
    np.testing.assert_array_equal(back.reshape(45, 67, channels), image)


def test_png_writer_accepts_torch_rows_and_compresses_smooth_images(tmp_path):
    ramp = torch.arange(256, dtype=torch.uint8).repeat(64, 1)[..., None].expand(64, 256, 3).contiguous()
    with PngWriter(tmp_path / "ramp.png", 256, 64) as writer:
        writer.write(ramp)
    np.testing.assert_array_equal(_read_png(tmp_path / "ramp.png"), ramp.numpy())
    assert (tmp_path / "ramp.png").stat().st_size < ramp.numel() / 20  # the Sub filter makes a ramp constant


def test_png_writer_refuses_incomplete_or_overfull_images(tmp_path):
    path = tmp_path / "bad.png"
    writer = PngWriter(path, 4, 3)
    writer.write(np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="exceed the image height 3"):
        writer.write(np.zeros((2, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="wrote 2 of 3 rows"):
        writer.close()
    assert not path.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"uint8 rows \[n, 4, 3\]"):
        PngWriter(path, 4, 3).write(np.zeros((1, 5, 3), np.uint8))
    with pytest.raises(RuntimeError):
        with PngWriter(path, 4, 3) as writer:
            raise RuntimeError("interrupted")
    assert not path.exists()


# ---------------------------------------------------------------- resize


@pytest.mark.parametrize("size", [(74, 106), (77, 128), (13, 20), (37, 53)])
def test_resize_region_equals_pillow_bicubic(size):
    image = torch.randint(0, 256, (2, 3, 37, 53), dtype=torch.uint8)
    full = resize_region(image, size, (0, size[0]), (0, size[1]))
    for b in range(2):
        pil = PIL.Image.fromarray(image[b].permute(1, 2, 0).numpy()).resize(size[::-1], PIL.Image.BICUBIC)
        np.testing.assert_array_equal(full[b].permute(1, 2, 0).numpy().astype(np.uint8), np.asarray(pil))
    part = resize_region(image, size, (size[0] // 3, size[0] - 2), (1, size[1] // 2))
    torch.testing.assert_close(part, full[:, :, size[0] // 3:size[0] - 2, 1:size[1] // 2], atol=0, rtol=0)


# ---------------------------------------------------------------- tiled VAE


@pytest.fixture(scope="module")
def vae():
    from diffusers import AutoencoderKL

    from vitzoo.testing.tiny_diffusion import TINY_VAE_CONFIG

    torch.manual_seed(0)
    return AutoencoderKL(**{**TINY_VAE_CONFIG, "sample_size": 64}).eval()


def test_streamed_decode_equals_diffusers_tiled_decode(vae):
    latents = torch.randn(2, 4, 21, 30)
    vae.enable_tiling()
    try:
        with torch.no_grad():
            expected = vae.decode(latents).sample
    finally:
        vae.disable_tiling()
    bands, out = [], torch.full_like(expected, float("nan"))

    def sink(y0, band):
        bands.append(band.shape[2])
        out[:, :, y0:y0 + band.shape[2]] = band

    decode_tiled(vae, latents, sink)
    assert len(bands) > 1 and sum(bands) == expected.shape[2]  # several bands, never the whole image at once
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


def test_streamed_encode_equals_diffusers_tiled_encode(vae):
    image = torch.rand(2, 3, 152, 232) * 2 - 1
    vae.enable_tiling()
    try:
        with torch.no_grad():
            expected = vae.encode(image).latent_dist.parameters
    finally:
        vae.disable_tiling()
    asked = []

    def source(y0, y1, x0, x1):
        asked.append((y1 - y0, x1 - x0))
        return image[:, :, y0:y1, x0:x1]

    moments = encode_tiled(vae, source, 152, 232)
    assert max(h for h, _ in asked) <= 64 and max(w for _, w in asked) <= 64
    torch.testing.assert_close(moments, expected, atol=1e-6, rtol=1e-6)


def test_tile_size_must_fit_the_vae_factor(vae):
    with pytest.raises(ValueError, match="multiple of the VAE factor 8"):
        decode_tiled(vae, torch.randn(1, 4, 8, 8), lambda y0, band: None, tile_sample_size=60)


# ---------------------------------------------------------------- stage schedule and memory switches


def test_stage_schedule():
    assert stage_sizes(16384, 16384, 512) == [(512 * 2 ** k,) * 2 for k in range(6)]
    assert stage_sizes(8192, 16384, 1024) == [(512, 1024), (1024, 2048), (2048, 4096), (4096, 8192), (8192, 16384)]
    assert stage_sizes(512, 512, 512) == [(512, 512)]
    assert stage_sizes(1000, 1504, 512) == [(248, 376), (504, 752), (1000, 1504)]
    with pytest.raises(ValueError, match="multiples of 8"):
        stage_sizes(1001, 1504, 512)
    assert stage_strengths(4, 0.4) == pytest.approx([0.4, 0.3, 0.2, 0.1])  # SD-1.5 SDEdit chain
    assert stage_strengths(4, 0.32) == pytest.approx([0.32, 0.24, 0.16, 0.08])  # SD-XL chain


def test_feed_forward_chunks_divide_the_tokens():
    assert _chunk_size(4096, 16) == 256
    assert _chunk_size(625, 16) == 25
    assert _chunk_size(13, 4) == 1
    assert _chunk_size(10, 1) == 10


@pytest.fixture()
def tiny(tmp_path):
    from vitzoo.testing.tiny_diffusion import tiny_stable_diffusion

    return tiny_stable_diffusion(directory=tmp_path / "tokenizer", vae_config=dict(sample_size=64))


def test_feed_forward_chunking_is_exact_and_restored(tiny):
    unet = tiny.unet
    inputs = dict(sample=torch.randn(2, 4, 12, 20), timestep=torch.tensor([10, 500]),
                  encoder_hidden_states=torch.randn(2, 16, 32))
    blocks = [m for m in unet.modules() if hasattr(m, "set_chunk_feed_forward")]
    calls = []
    handles = [b.ff.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[1])) for b in blocks]
    with torch.no_grad():
        plain = unet(**inputs).sample
        assert calls == [240, 60, 240, 240]  # down block, mid block, two up-block layers
        calls.clear()
        with feed_forward_chunking(unet, 16):
            chunked = unet(**inputs).sample
    for handle in handles:
        handle.remove()
    assert calls == [15] * 16 + [4] * 15 + [15] * 32  # 240 tokens in 16 chunks, 60 in 15
    torch.testing.assert_close(chunked, plain)
    assert all(b._chunk_size is None and not b._forward_pre_hooks for b in blocks)


# ---------------------------------------------------------------- the pipeline


def test_pipeline_equals_diffusers_text_to_image_then_img2img(tiny, tmp_path):
    """Recipe A run by hand with diffusers (t2i, PIL bicubic resize, img2img at each strength, one shared
    generator) gives the same images stage by stage (each diffusers stage starts from our previous image,
    so that a one-level rounding flip is not amplified through the chain of random networks)."""
    from diffusers import StableDiffusionImg2ImgPipeline

    from vitzoo.diffusion.linfusion import LinFusion

    LinFusion.construct_for(tiny, pretrained=False)
    pipe = HighResolutionPipeline.from_pipe(tiny)
    pipe.set_progress_bar_config(disable=True)
    img2img = StableDiffusionImg2ImgPipeline.from_pipe(tiny)
    img2img.set_progress_bar_config(disable=True)
    common = dict(prompt="a cat", num_inference_steps=5, guidance_scale=5.0)
    # diffusers' default VAE path is untiled: tiles as large as the images keep ours untiled too
    ours = pipe(**common, height=128, width=256, base_size=64, strengths=[0.6, 0.4], vae_tile_size=256,
                output_type="np", intermediate_dir=tmp_path, generator=torch.Generator().manual_seed(0))
    assert ours.stage_sizes == [(32, 64), (64, 128), (128, 256)]
    stages = [_read_png(tmp_path / "stage0_64x32.png"), _read_png(tmp_path / "stage1_128x64.png"),
              np.round(ours.images[0] * 255).astype(np.uint8)]
    generator = torch.Generator().manual_seed(0)
    theirs = tiny(**common, height=32, width=64, generator=generator).images[0]
    np.testing.assert_array_equal(stages[0], np.asarray(theirs))
    for previous, current, strength in zip(stages[:-1], stages[1:], [0.6, 0.4]):
        image = PIL.Image.fromarray(previous).resize(current.shape[1::-1], PIL.Image.BICUBIC)
        theirs = img2img(**common, image=image, strength=strength, generator=generator).images[0]
        difference = np.abs(current.astype(int) - np.asarray(theirs).astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_pipeline_memory_options_do_not_change_the_image(tiny, tmp_path):
    pipe = HighResolutionPipeline.from_pipe(tiny)
    run = lambda **kw: pipe("a cat", height=96, width=160, num_inference_steps=3, base_size=48,  # noqa: E731
                            generator=torch.Generator().manual_seed(1), **kw)
    reference = run(unet_batch_size=None, feed_forward_chunks=None, output_type="pt").images
    chunked = run(unet_batch_size=1, feed_forward_chunks=4, output_type="pt").images
    torch.testing.assert_close(chunked, reference, atol=2 / 255, rtol=0)
    streamed = run(unet_batch_size=1, feed_forward_chunks=4, output_type="png", output_path=tmp_path / "out.png",
                   intermediate_dir=tmp_path / "stages")
    assert streamed.images == [tmp_path / "out.png"]
    png = torch.from_numpy(_read_png(tmp_path / "out.png")).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(png, chunked[0], atol=0, rtol=0)
    assert streamed.stage_sizes == [(24, 40), (48, 80), (96, 160)]  # 160 / 48 needs two doublings
    assert sorted(p.name for p in (tmp_path / "stages").iterdir()) == ["stage0_40x24.png", "stage1_80x48.png"]
    assert _read_png(tmp_path / "stages" / "stage1_80x48.png").shape == (48, 80, 3)


def test_pipeline_restores_processors_and_block_state(tiny):
    from vitzoo.diffusion.linfusion import LinFusion

    pipe = HighResolutionPipeline.from_pipe(tiny)
    LinFusion.construct_for(pipe, pretrained=False)
    blocks = [m for m in pipe.unet.modules() if hasattr(m, "set_chunk_feed_forward")]
    blocks[0].set_chunk_feed_forward(5, dim=1)
    processors = dict(pipe.unet.attn_processors)
    pipe("a cat", height=64, width=64, num_inference_steps=2, base_size=32, output_type="latent", feed_forward_chunks=8)
    assert all(pipe.unet.attn_processors[k] is v for k, v in processors.items())
    assert (blocks[0]._chunk_size, blocks[0]._chunk_dim) == (5, 1)
    assert all(b._chunk_size is None and not b._forward_pre_hooks for b in blocks[1:])


def test_pipeline_batches_write_one_png_each(tiny, tmp_path):
    pipe = HighResolutionPipeline.from_pipe(tiny)
    out = pipe(["a cat", "a dog"], height=64, width=96, num_inference_steps=2, base_size=32, output_type="png",
               output_path=tmp_path / "img.png", generator=torch.Generator().manual_seed(0))
    assert out.images == [tmp_path / "img_0.png", tmp_path / "img_1.png"]
    first, second = (_read_png(p) for p in out.images)
    assert first.shape == second.shape == (64, 96, 3) and not np.array_equal(first, second)


def test_pipeline_save_pretrained_round_trip(tiny, tmp_path):
    pipe = HighResolutionPipeline.from_pipe(tiny)
    pipe.save_pretrained(tmp_path / "hr")
    assert json.loads((tmp_path / "hr" / "model_index.json").read_text())["_class_name"] == "HighResolutionPipeline"
    again = HighResolutionPipeline.from_pretrained(tmp_path / "hr", local_files_only=True)
    run = lambda p: p("a cat", height=64, width=64, num_inference_steps=2, base_size=32, output_type="pt",  # noqa: E731
                      generator=torch.Generator().manual_seed(0)).images
    torch.testing.assert_close(run(again), run(pipe), atol=0, rtol=0)


def test_pipeline_rejects_bad_arguments(tiny):
    pipe = HighResolutionPipeline.from_pipe(tiny)
    with pytest.raises(ValueError, match="need 2 strengths"):
        pipe("a", height=128, width=128, base_size=32, strengths=[0.3])
    with pytest.raises(ValueError, match="output_type='png' and output_path go together"):
        pipe("a", height=64, width=64, output_type="png")
    with pytest.raises(ValueError, match="divisible by 8"):
        pipe("a", height=100, width=64)


# ---------------------------------------------------------------- CLI


def test_generate_cli_writes_the_png_and_stats(tmp_path):
    from vitzoo.cli import main

    out, stats = tmp_path / "tiny.png", tmp_path / "stats.json"
    code = main(["generate", "--pipeline", "linfusion", "--model", "tiny-random", "--linfusion", "random",
                 "--prompt", "a cat", "--height", "128", "--width", "192", "--steps", "2", "--base-size", "96",
                 "--vae-tile-size", "64", "--output", str(out), "--stats-json", str(stats),
                 "--save-stages", str(tmp_path / "stages")])
    assert code == 0
    assert _read_png(out).shape == (128, 192, 3)
    record = json.loads(stats.read_text())
    assert record["stage_sizes"] == [[64, 96], [128, 192]] and record["seconds"] > 0 and record["peak_mem_mb"] >= 0
    assert (tmp_path / "stages" / "stage0_96x64.png").is_file()


def test_generate_cli_needs_a_model():
    from vitzoo.cli import main

    assert main(["generate", "--pipeline", "linfusion", "--height", "64", "--width", "64"]) == 2


@pytest.mark.slow
def test_sweep_runs_fresh_processes_and_reuses_kept_points(tmp_path):
    import csv

    from vitzoo.cli import main

    stem = tmp_path / "bench" / "sweep"
    stem.parent.mkdir()
    kept = {"seconds": 12.5, "peak_mem_mb": 34.0, "device": "cpu"}
    (stem.parent / "sweep_none_64.json").write_text(json.dumps(kept))  # measured before: must be reused
    code = main(["generate", "--pipeline", "linfusion", "--model", "tiny-random", "--steps", "2", "--base-size", "32",
                 "--sweep", "64", "--sweep-attention", "random", "none", "--sweep-out", str(stem)])
    assert code == 0
    with open(stem.with_suffix(".csv")) as handle:
        rows = {row["target"]: row for row in csv.DictReader(handle)}
    assert rows["original attention"]["ms"] == "12500.0" and rows["original attention"]["peak_mem_mb"] == "34.0"
    assert rows["LinFusion (random)"]["status"] == "ok" and float(rows["LinFusion (random)"]["ms"]) > 0
    record = json.loads((stem.parent / "sweep_random_64.json").read_text())
    assert record["linfusion"] == "random" and record["stage_sizes"] == [[32, 32], [64, 64]]
    assert stem.with_suffix(".png").is_file()
