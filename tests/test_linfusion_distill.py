"""LinFusion distillation: the image-caption folder, the three-term objective with the teacher being the same
UNet's original attention, and the accelerate engine (only LinFusion trains, checkpoints, exact resume,
graceful stop, YAML configs, two processes)."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from conftest import launch_two_processes

from vitzoo.data.captions import ImageCaptionFolder
from vitzoo.diffusion.distill import LinFusionDistiller, linfusion_distillation_loss
from vitzoo.diffusion.linfusion import LinFusion


def _write_folder(root, count=6, size=(40, 48)):
    rng = np.random.default_rng(0)
    for i in range(count):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(sub / f"{i}.png")
        (sub / f"{i}.txt").write_text(f"  picture number {i}\n")
    return root


# ---------------------------------------------------------------- data


def test_caption_folder_reads_pairs_and_resizes_both_ways(tmp_path):
    root = _write_folder(tmp_path / "data")
    (root / "notes.md").write_text("not an image")
    stretch = ImageCaptionFolder(root, 32)
    assert [p.relative_to(root).as_posix() for p in stretch.images][:3] == ["a/1.png", "a/3.png", "a/5.png"]
    item = stretch[3]
    assert item["caption"] == "picture number 0"
    assert item["pixel_values"].shape == (3, 32, 32) and item["pixel_values"].dtype == torch.float32
    with PIL.Image.open(root / "b" / "0.png") as image:
        expected = np.asarray(image.resize((32, 32), PIL.Image.BICUBIC), dtype=np.float32) / 127.5 - 1
    np.testing.assert_allclose(item["pixel_values"].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert item["original_size"].tolist() == [40, 48] and item["crop_top_left"].tolist() == [0, 0]
    crop = ImageCaptionFolder(root, 20, resize="center-crop")[0]
    assert crop["pixel_values"].shape == (3, 20, 20)
    assert crop["crop_top_left"].tolist() == [0, 2]  # 40x48 -> 20x24, centre crop of the width


def test_caption_folder_names_images_without_captions(tmp_path):
    root = _write_folder(tmp_path / "data")
    (root / "a" / "1.txt").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 6 images .* a/1.png needs a/1.txt"):
        ImageCaptionFolder(root, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageCaptionFolder(tmp_path / "empty", 32)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageCaptionFolder(tmp_path / "absent", 32)
    with pytest.raises(ValueError, match="resize must be one of"):
        ImageCaptionFolder(root, 32, resize="crop")


# ---------------------------------------------------------------- objective


def test_loss_is_the_official_three_term_sum():
    torch.manual_seed(0)
    student, teacher, target = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    feats_s = [torch.randn(2, 9, 8), torch.randn(2, 4, 16)]
    feats_t = [torch.randn(2, 9, 8), torch.randn(2, 4, 16)]
    losses = linfusion_distillation_loss(student, teacher, target, feats_s, feats_t)
    denoise = ((student - target) ** 2).mean()
    kd = ((student - teacher) ** 2).mean()
    feature = (((feats_s[0] - feats_t[0]) ** 2).mean() + ((feats_s[1] - feats_t[1]) ** 2).mean()) / 2
    torch.testing.assert_close(losses["loss"], denoise + 0.5 * kd + 0.5 * feature)
    torch.testing.assert_close(losses["loss_feature"], feature)
    with pytest.raises(ValueError, match="1 student and 2 teacher"):
        linfusion_distillation_loss(student, teacher, target, feats_s[:1], feats_t)


@pytest.fixture()
def tiny(tmp_path):
    from vitzoo.testing.tiny_diffusion import tiny_stable_diffusion

    pipe = tiny_stable_diffusion(directory=tmp_path / "tokenizer")
    pipe.unet.requires_grad_(False)
    return pipe


@pytest.mark.parametrize("checkpointing", [False, True])
def test_distiller_teacher_is_the_original_attention_and_only_linfusion_learns(tiny, checkpointing):
    unet = tiny.unet
    inputs = (torch.randn(2, 4, 6, 8), torch.tensor([3, 700]))
    context = torch.randn(2, 16, 32)
    with torch.no_grad():
        teacher = unet(*inputs, encoder_hidden_states=context).sample
    linfusion = LinFusion.construct_for(unet, pretrained=False)
    distiller = LinFusionDistiller(unet, linfusion)
    if checkpointing:
        unet.enable_gradient_checkpointing()
        unet.train()
    target = torch.randn(2, 4, 6, 8)
    losses = distiller(*inputs, target, context)
    student = unet(*inputs, encoder_hidden_states=context).sample
    torch.testing.assert_close(losses["loss_kd"], F.mse_loss(student, teacher))
    torch.testing.assert_close(losses["loss_denoise"], F.mse_loss(student, target))
    losses["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in linfusion.parameters() if p.dim() > 1)
    assert all(p.grad is None for name, p in unet.named_parameters() if ".processor." not in name)
    grads = [p.grad.clone() for p in linfusion.parameters()]
    if checkpointing:  # recomputation in backward must not change the gradients (nor record extra features)
        unet.disable_gradient_checkpointing()
        linfusion.zero_grad(set_to_none=True)
        distiller(*inputs, target, context)["loss"].backward()
        for grad, param in zip(grads, linfusion.parameters()):
            torch.testing.assert_close(param.grad, grad, atol=1e-6, rtol=1e-5)


def test_feature_term_compares_each_attn1_output(tiny):
    unet = tiny.unet
    linfusion = LinFusion.construct_for(unet, pretrained=False)
    inputs = (torch.randn(1, 4, 4, 4), torch.tensor([10]))
    context = torch.randn(1, 16, 32)
    outputs = {}
    hooks = [attn.register_forward_hook(lambda m, a, o, n=name: outputs.__setitem__(n, o))
             for name, attn in linfusion.attention_modules()]
    with torch.no_grad():
        unet(*inputs, encoder_hidden_states=context)
        student = dict(outputs)
        with linfusion.original_attention():
            unet(*inputs, encoder_hidden_states=context)
    for hook in hooks:
        hook.remove()
    expected = torch.stack([F.mse_loss(student[n], outputs[n]) for n in student]).mean()
    with torch.no_grad():
        losses = LinFusionDistiller(unet, linfusion)(*inputs, torch.zeros(1, 4, 4, 4), context)
    torch.testing.assert_close(losses["loss_feature"], expected)


def test_target_follows_the_prediction_type():
    from diffusers import DDPMScheduler

    from vitzoo.train.distill import diffusion_target

    latents, noise, timesteps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.tensor([5, 900])
    assert diffusion_target(DDPMScheduler(), latents, noise, timesteps) is noise
    scheduler = DDPMScheduler(prediction_type="v_prediction")
    alphas = scheduler.alphas_cumprod[timesteps].view(2, 1, 1, 1)
    expected = alphas.sqrt() * noise - (1 - alphas).sqrt() * latents  # v = sqrt(a) eps - sqrt(1 - a) x0
    torch.testing.assert_close(diffusion_target(scheduler, latents, noise, timesteps), expected)
    with pytest.raises(ValueError, match="supports epsilon and v_prediction"):
        diffusion_target(DDPMScheduler(prediction_type="sample"), latents, noise, timesteps)


# ---------------------------------------------------------------- the engine


@pytest.fixture()
def setup(tmp_path, tiny):
    tiny.save_pretrained(tmp_path / "sd")
    return tmp_path / "sd", _write_folder(tmp_path / "data"), tmp_path


def _distill(model, data, output, *extra):
    from vitzoo.cli import main

    return main(["distill", "--method", "linfusion", "--model", str(model), "--data-dir", str(data),
                 "--output", str(output.parent), "--experiment", output.name, "--resolution", "32", "--batch-size",
                 "2", "--workers", "0", "--device", "cpu", "--log-interval", "1", *extra])


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_distill_trains_checkpoints_and_exports(setup):
    model, data, tmp = setup
    unet_file = next((model / "unet").glob("*.safetensors"))
    unet_before = unet_file.read_bytes()
    assert _distill(model, data, tmp / "run", "--max-steps", "4", "--checkpoint-steps", "2") == 0
    run = tmp / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(r[f"train_{k}"]) for r in rows for k in ("loss", "loss_denoise", "loss_kd", "loss_feature"))
    progress = torch.load(run / "last.state.pt", weights_only=True)["progress"]
    assert (progress["update_step"], progress["epoch"], progress["batch_in_epoch"]) == (4, 1, 1)  # 3 batches/epoch
    assert unet_file.read_bytes() == unet_before
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    exported = LinFusion.from_checkpoint(run / "linfusion")
    fresh = LinFusion.construct_for(unet, pretrained=False, mount=False)
    assert set(exported.state_dict()) == set(fresh.state_dict())
    # the checkpoint's metadata makes the file self-describing
    trained = LinFusion.construct_for(unet, pretrained=run / "last.safetensors")
    for key, value in exported.state_dict().items():
        torch.testing.assert_close(trained.state_dict()[key], value, atol=0, rtol=0)
    assert any(not torch.equal(value, fresh.state_dict()[key]) for key, value in exported.state_dict().items())
    assert (run / "curves.png").is_file()


def test_resume_continues_exactly(setup):
    model, data, tmp = setup
    assert _distill(model, data, tmp / "straight", "--max-steps", "4", "--checkpoint-steps", "10") == 0
    assert _distill(model, data, tmp / "split", "--max-steps", "2", "--checkpoint-steps", "10") == 0
    assert _distill(model, data, tmp / "split", "--max-steps", "4", "--resume", str(tmp / "split")) == 0
    straight, split = _weights(tmp / "straight" / "last.safetensors"), _weights(tmp / "split" / "last.safetensors")
    for key in straight:
        torch.testing.assert_close(split[key], straight[key], atol=0, rtol=0)
    rows = [json.loads(line) for line in (tmp / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_signal_stops_with_a_checkpoint_and_resume_finishes(setup, monkeypatch):
    import vitzoo.train.loop as core

    model, data, tmp = setup

    @contextlib.contextmanager
    def signalled():
        class Flag:
            signal_number = 15

            def __bool__(self):
                return True

        yield Flag()

    monkeypatch.setattr(core, "graceful_stop", signalled)
    assert _distill(model, data, tmp / "stopped", "--max-steps", "3", "--checkpoint-steps", "10") == 128 + 15
    assert torch.load(tmp / "stopped" / "last.state.pt", weights_only=True)["progress"]["update_step"] == 1
    assert not (tmp / "stopped" / "linfusion").exists()  # no export of an unfinished run
    monkeypatch.undo()
    assert _distill(model, data, tmp / "stopped", "--max-steps", "3", "--resume", str(tmp / "stopped")) == 0
    assert _distill(model, data, tmp / "straight", "--max-steps", "3") == 0
    stopped, straight = _weights(tmp / "stopped" / "last.safetensors"), _weights(tmp / "straight" / "last.safetensors")
    for key in straight:
        torch.testing.assert_close(stopped[key], straight[key], atol=0, rtol=0)


def test_config_file_sets_defaults_and_typed_flags_win(setup, tmp_path):
    from vitzoo.cli import build_parser
    from vitzoo.commands.distill import resolve

    config = tmp_path / "c.yaml"
    config.write_text("lr: 2.0e-4\nbatch_size: 4\nmid_dim_scale: 16\nresize: center-crop\n")
    args = resolve(build_parser().parse_args(["distill", "-c", str(config), "--batch-size", "3"]))
    values = (args.lr, args.batch_size, args.mid_dim_scale, args.resize, args.weight_decay)
    assert values == (2e-4, 3, 16, "center-crop", 0.0)
    config.write_text("learning_rate: 1.0e-4\n")
    with pytest.raises(ValueError, match="unknown key 'learning_rate'"):
        resolve(build_parser().parse_args(["distill", "-c", str(config)]))
    config.write_text("resize: crop\n")
    with pytest.raises(ValueError, match="expected one of"):
        resolve(build_parser().parse_args(["distill", "-c", str(config)]))


@pytest.mark.parametrize("name", ["linfusion_sd15", "linfusion_sd21", "linfusion_sdxl"])
def test_shipped_configs_parse(name):
    from pathlib import Path

    from vitzoo.cli import build_parser
    from vitzoo.commands.distill import resolve

    path = Path(__file__).resolve().parents[1] / "configs" / "diffusion" / f"{name}.yaml"
    args = resolve(build_parser().parse_args(["distill", "-c", str(path)]))
    assert args.method == "linfusion" and args.lr == 1e-4 and args.weight_decay == 0.0


@pytest.mark.slow
def test_two_processes_stay_in_sync(setup):
    model, data, tmp = setup
    launch_two_processes(_two_process_run, str(model), str(data), str(tmp))
    weights = _weights(tmp / "ddp" / "last.safetensors")
    ranks = [torch.load(tmp / "ddp" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in weights.items():
        torch.testing.assert_close(ranks[0][key], value, atol=0, rtol=0)
        torch.testing.assert_close(ranks[1][key], value, atol=0, rtol=0)
    assert len(torch.load(tmp / "ddp" / "last.state.pt", weights_only=True)["rng"]) == 2


def _two_process_run(model, data, output):
    import argparse

    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    from vitzoo.cli import build_parser
    from vitzoo.commands.distill import resolve
    from vitzoo.train import distill as engine

    # a forked child inherits the parent's single-process accelerate state from the earlier in-process runs
    AcceleratorState._reset_state(reset_partial_state=True)
    args = resolve(build_parser().parse_args(
        ["distill", "--model", model, "--data-dir", data, "--output", output, "--experiment", "ddp", "--resolution",
         "32", "--batch-size", "1", "--workers", "0", "--device", "cpu", "--max-steps", "2"]))
    assert isinstance(args, argparse.Namespace)
    built = {}
    original = engine.DISTILL_METHODS["linfusion"].build

    def build(pipe, run_args):
        built["objective"], built["trainable"] = original(pipe, run_args)
        return built["objective"], built["trainable"]

    engine.DISTILL_METHODS["linfusion"].build = build
    try:
        engine.distill(args)
    finally:
        engine.DISTILL_METHODS["linfusion"].build = original
    rank = PartialState().process_index
    torch.save({k: v.detach().cpu() for k, v in built["trainable"].state_dict().items()}, f"{output}/ddp/rank{rank}.pt")


def test_sdxl_pipeline_distils_with_pooled_embeddings_and_micro_conditioning(tmp_path):
    """SD-XL: two text encoders (penultimate states concatenated, pooled text_embeds) and time ids from the
    original size and crop corner of each image, as the official SD-XL script conditions the UNet."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from vitzoo.testing.tiny_diffusion import TINY_VAE_CONFIG, tiny_clip_tokenizer
    from vitzoo.train import distill as engine

    tokenizer = tiny_clip_tokenizer(tmp_path / "tok")
    text = dict(hidden_size=16, intermediate_size=20, num_attention_heads=2, num_hidden_layers=2,
                vocab_size=len(tokenizer), max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), attention_head_dim=(2, 4), cross_attention_dim=32,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 16)
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL(**TINY_VAE_CONFIG), text_encoder=CLIPTextModel(CLIPTextConfig(**text)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text, projection_dim=16)),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=EulerDiscreteScheduler())
    pipe.save_pretrained(tmp_path / "sdxl")
    data = _write_folder(tmp_path / "data")
    batch = engine._collate([ImageCaptionFolder(data, 32, resize="center-crop")[i] for i in range(2)])
    embeds, added = engine._conditioning(pipe, batch["caption"], batch, 32, torch.device("cpu"))
    assert embeds.shape == (2, 16, 32) and added["text_embeds"].shape == (2, 16)
    assert added["time_ids"].tolist() == [[40, 48, 0, 3, 32, 32]] * 2  # 40x48 -> 32x38, crop 3 px from the left
    assert _distill(tmp_path / "sdxl", data, tmp_path / "run", "--max-steps", "1", "--resize", "center-crop",
                    "--mid-dim-scale", "8") == 0
    exported = LinFusion.from_checkpoint(tmp_path / "run" / "linfusion")
    assert [s["projection_mid_dim"] for s in exported.config.modules_list] == [4] * 8  # 32 channels / 8, 8 attn1
