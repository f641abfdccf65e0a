"""Latent caching and the diffusion/distillation training engine: a few steps on tiny data, inheritance and
distillation from a DiT teacher, exact resume, the exported pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import launch_two_processes

from vitzoo.data.latents import LatentDataset, cache_latents, center_crop_arr, read_cache_index
from vitzoo.diffusion.dit import VzDiTTransformer2DModel
from vitzoo.commands.train_lit import parse_args as parse_train_lit_args
from vitzoo.train.diffusion import DiffusionEngine, train_lit
from vitzoo.train.loop import Trainer


def DiffusionTrainer(args):
    return Trainer(DiffusionEngine(args))


def _image_folder(root, classes=("a", "b"), per_class=4, size=(12, 10)):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def pixel_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    folder = _image_folder(root / "train", per_class=6)
    return cache_latents(folder, root / "cache", image_size=8, grayscale=True, flip=False, batch_size=5,
                         shard_size=7, dtype=torch.float32)


def test_center_crop_matches_adm():
    image = Image.fromarray(np.arange(40 * 30 * 3, dtype=np.uint8).reshape(30, 40, 3))
    out = center_crop_arr(image, 8)
    # 30 >= 16: box-halved to 20x15, bicubic to short side 8 (11x8), centre crop columns 1..9
    halved = image.resize((20, 15), Image.BOX).resize((11, 8), Image.BICUBIC)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(halved)[:, 1:9])


def test_pixel_cache_round_trip(pixel_cache, tmp_path):
    index = read_cache_index(pixel_cache)
    assert index["classes"] == ["a", "b"] and index["num_samples"] == 12 and index["shape"] == [1, 8, 8]
    assert [s["count"] for s in index["shards"]] == [10, 2]  # shards close at the batch after 7 images
    dataset = LatentDataset(pixel_cache)
    image, label = dataset[11]
    with Image.open(f"{index['source']}/b/5.png") as raw:
        expected = np.asarray(center_crop_arr(raw.convert("L"), 8), dtype=np.float32) / 127.5 - 1
    np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-6)
    assert label == 1
    with pytest.raises(FileExistsError, match="already exists"):
        cache_latents(index["source"], pixel_cache, image_size=8)
    with pytest.raises(FileNotFoundError, match="not a latent cache"):
        LatentDataset(tmp_path)


def test_vae_cache_stores_moments_and_samples_them(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        sample_size=16, scaling_factor=0.5)
    folder = _image_folder(tmp_path / "train", per_class=2)
    cache = cache_latents(folder, tmp_path / "cache", vae=vae, vae_name="tiny", image_size=16, batch_size=3)
    index = read_cache_index(cache)
    assert index["stored"] == "moments" and index["shape"] == [4, 8, 8] and index["vae"]["scaling_factor"] == 0.5
    shard = load_file(str(cache / index["shards"][0]["file"]))
    with Image.open(folder / "a" / "0.png") as raw:
        pixels = torch.from_numpy(np.asarray(center_crop_arr(raw.convert("RGB"), 16), dtype=np.float32) / 127.5 - 1)
    with torch.no_grad():
        posterior = vae.encode(pixels.permute(2, 0, 1)[None].flip(-1)).latent_dist
    torch.testing.assert_close(shard["mean_flip"][0].float(), posterior.mean[0], atol=2e-3, rtol=2e-3)
    dataset = LatentDataset(cache)
    torch.testing.assert_close(dataset[(0, 123)][0], dataset[(0, 123)][0])  # one seed, one draw
    mean, std, mean_flip, std_flip = (shard[k][0].float() for k in ("mean", "std", "mean_flip", "std_flip"))
    # without flips every draw is (mean + std * eps) * scaling_factor with eps ~ N(0, 1)
    eps = torch.stack([(LatentDataset(cache, flip=False)[(0, s)][0] / 0.5 - mean) / std for s in range(50)])
    assert abs(eps.mean().item()) < 0.05 and 0.9 < eps.std().item() < 1.1
    assert not torch.equal(mean_flip, mean) and std_flip.shape == std.shape


def test_flipped_views_are_drawn_at_random(tmp_path):
    folder = _image_folder(tmp_path / "train", classes=("a",), per_class=1)
    dataset = LatentDataset(cache_latents(folder, tmp_path / "cache", image_size=8, dtype=torch.float32))
    views = [dataset[(0, seed)][0] for seed in range(16)]
    image = LatentDataset(tmp_path / "cache", flip=False)[0][0]
    assert all(torch.equal(v, image) or torch.equal(v, image.flip(-1)) for v in views)
    assert 4 < sum(torch.equal(v, image) for v in views) < 12


def _args(cache, tmp_path, *extra):
    return parse_train_lit_args([
        "--data-dir", str(cache), "--output", str(tmp_path), "--device", "cpu", "--workers", "0",
        "--batch-size", "4", "--lr", "1e-3", "--log-interval", "1", "--checkpoint-steps", "2", "--seed", "3",
        "--model-kwargs", "hidden_size=32", "depth=2", "num_heads=2",
        "--model-ema-decay", "0.9", *extra])


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    torch.manual_seed(1)
    teacher = VzDiTTransformer2DModel(sample_size=8, in_channels=1, hidden_size=32, depth=2, num_heads=2,
                                      num_classes=2)
    for param in teacher.parameters():
        if param.requires_grad:
            torch.nn.init.normal_(param, std=0.05)
    path = tmp_path_factory.mktemp("teacher") / "DiT-tiny.pt"
    torch.save(teacher.state_dict(), path)
    return path


def test_training_with_inheritance_and_distillation(pixel_cache, teacher_file, tmp_path):
    args = _args(pixel_cache, tmp_path, "--experiment", "kd", "--max-steps", "3", "--teacher", str(teacher_file),
                 "--teacher-kwargs", "num_heads=2", "--inherit", "class2image", "--distill")
    trainer = DiffusionTrainer(args)
    teacher = torch.load(teacher_file)
    # inherited before any update: the MLP is the teacher's, the attention is new
    torch.testing.assert_close(trainer.trainable.blocks[1].mlp.fc1.weight, teacher["blocks.1.mlp.fc1.weight"])
    assert trainer.engine.teacher.blocks[0].attn.num_heads == 2
    assert not any(p.requires_grad for p in trainer.engine.teacher.parameters())
    result = trainer.fit()
    assert result.steps == 3 and np.isfinite(result.last_loss)
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["train_noise_kd"] > 0 for r in rows)
    assert not torch.equal(trainer.trainable.blocks[1].mlp.fc1.weight, teacher["blocks.1.mlp.fc1.weight"])
    weights = load_file(str(result.run_dir / "last.safetensors"))
    torch.testing.assert_close(weights["blocks.1.mlp.fc1.weight"], trainer.trainable.blocks[1].mlp.fc1.weight)
    from vitzoo.diffusion.pipelines import LiTPipeline

    pipe = LiTPipeline.from_pretrained(result.exported)
    assert pipe.labels == {"a": 0, "b": 1} and pipe.vae is None
    # the pipeline holds the EMA weights, not the last ones
    ema = trainer.ema.module.state_dict()
    torch.testing.assert_close(pipe.transformer.state_dict()["blocks.0.attn.q.weight"], ema["blocks.0.attn.q.weight"])
    assert not torch.equal(ema["blocks.0.attn.q.weight"], trainer.trainable.blocks[0].attn.q.weight)
    pipe.set_progress_bar_config(disable=True)
    assert pipe(["b"], num_inference_steps=2, output_type="pt").images.shape == (1, 1, 8, 8)


def test_stop_signal_and_resume_repeat_the_uninterrupted_run(pixel_cache, tmp_path, monkeypatch):
    """SIGINT during step 2 saves a checkpoint; `vitzoo train_lit --resume` (the run's own arguments) then
    continues to exactly the weights of an uninterrupted run."""
    import signal

    from vitzoo.cli import main

    straight = train_lit(_args(pixel_cache, tmp_path, "--experiment", "straight", "--max-steps", "5", "--no-pipeline"))
    with monkeypatch.context() as patch:
        step = DiffusionEngine.step
        calls = []

        def interrupted(self, *args):
            calls.append(1)
            if len(calls) == 2:
                signal.raise_signal(signal.SIGINT)
            return step(self, *args)

        patch.setattr(DiffusionEngine, "step", interrupted)
        stopped = train_lit(_args(pixel_cache, tmp_path, "--experiment", "split", "--max-steps", "5", "--no-pipeline"))
    assert stopped.stopped_by_signal == signal.SIGINT and stopped.steps == 2 and stopped.exported is None
    assert torch.load(stopped.run_dir / "last.state.pt")["progress"]["update_step"] == 2
    assert main(["train_lit", "--resume", str(stopped.run_dir)]) == 0
    a, b = load_file(str(straight.run_dir / "last.safetensors")), load_file(str(stopped.run_dir / "last.safetensors"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    ema_a = torch.load(straight.run_dir / "last.state.pt")["ema"]
    ema_b = torch.load(stopped.run_dir / "last.state.pt")["ema"]
    torch.testing.assert_close(ema_b["final_layer.linear.weight"], ema_a["final_layer.linear.weight"], rtol=0, atol=0)
    # 12 samples, batch 4, drop_last: 3 batches per epoch, so step 5 is in the second epoch
    assert torch.load(stopped.run_dir / "last.state.pt")["progress"]["epoch"] == 1


def test_yaml_config_and_typed_flags(pixel_cache, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"data_dir: {pixel_cache}\nbatch_size: 6\nlr: 0.5\nmodel_kwargs: {{hidden_size: 16, depth: 1}}\n")
    args = parse_train_lit_args(["-c", str(config), "--lr", "0.001"])
    assert (args.batch_size, args.lr, args.model_kwargs) == (6, 0.001, {"hidden_size": 16, "depth": 1})
    assert args.model_ema_decay == 0.9999  # untouched flags keep their defaults
    config.write_text("batch_sise: 6\n")
    with pytest.raises(ValueError, match="unknown key 'batch_sise'"):
        parse_train_lit_args(["-c", str(config), "--data-dir", str(pixel_cache)])
    with pytest.raises(ValueError, match="--dataset vitzoo/digits"):
        parse_train_lit_args([])


def test_bad_runs_fail_early(pixel_cache, teacher_file, tmp_path):
    with pytest.raises(ValueError, match="--distill needs --teacher"):
        _args(pixel_cache, tmp_path, "--distill")
    train_lit(_args(pixel_cache, tmp_path, "--experiment", "one", "--max-steps", "1", "--no-pipeline"))
    other = _args(pixel_cache, tmp_path, "--resume", str(tmp_path / "one"))
    other.model_kwargs = dict(other.model_kwargs, depth=3)
    with pytest.raises(ValueError, match="cannot resume .* model_config"):
        DiffusionTrainer(other)
    with pytest.raises(ValueError, match="already holds a run"):
        DiffusionTrainer(_args(pixel_cache, tmp_path, "--experiment", "one"))
    with pytest.raises(ValueError, match="12 training samples give 0 full batches of 13"):
        DiffusionTrainer(_args(pixel_cache, tmp_path, "--batch-size", "13"))


def _two_process_worker(cache: str, runs: str, report: str) -> None:
    import os

    from accelerate.state import AcceleratorState, GradientState, PartialState

    # the forked process inherits the parent's single-process accelerate state; start from scratch
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    torch.set_num_threads(1)
    args = _args(cache, runs, "--max-steps", "2", "--batch-size", "3", "--no-pipeline")
    trainer = DiffusionTrainer(args)
    seen = []
    step = trainer.engine.step
    trainer.engine.step = lambda model, batch: seen.append(batch[0].sum().item()) or step(model, batch)
    result = trainer.fit()
    rank = trainer.accelerator.process_index
    state = {k: float(v.double().sum()) for k, v in trainer.trainable.state_dict().items()}
    ema = float(sum(v.double().sum() for v in trainer.ema.module.state_dict().values()))
    (Path(report) / f"rank{rank}.json").write_text(json.dumps(dict(
        world=trainer.accelerator.num_processes, seen=seen, state=state, ema=ema, steps=result.steps, pid=os.getpid(),
        run_dir=str(result.run_dir))))


def test_two_processes_split_the_batches_and_stay_in_sync(pixel_cache, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    launch_two_processes(_two_process_worker, str(pixel_cache), str(tmp_path), str(report))
    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert {r["world"] for r in ranks} == {2} and ranks[0]["pid"] != ranks[1]["pid"]
    assert [r["steps"] for r in ranks] == [2, 2] and len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 2
    assert ranks[0]["seen"] != ranks[1]["seen"]  # each process trains on its own batches
    assert ranks[0]["state"] == ranks[1]["state"] and ranks[0]["ema"] == ranks[1]["ema"]  # DDP keeps them equal
    assert ranks[0]["run_dir"] == ranks[1]["run_dir"]  # one folder, named by the main process
    state = torch.load(Path(ranks[0]["run_dir"]) / "last.state.pt")
    assert state["progress"]["update_step"] == 2 and len(state["rng"]) == 2
