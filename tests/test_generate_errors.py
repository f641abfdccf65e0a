"""Bad input to ``vitzoo generate`` and ``vitzoo cache_latents``: one line naming the flag and what it expects.

Command-line cases run the real entry point in a fresh process (exit status 2, exactly one non-empty line on
stderr, no traceback); the many flag variants of one rule run in-process through :func:`vitzoo.cli.main`.
Nothing is downloaded: hub cases run with ``HF_HUB_OFFLINE=1`` and ids that are not cached.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from vitzoo.cli import main


def _vitzoo(*argv: str, offline: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("VITZOO_DEBUG", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "vitzoo.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=300)


def _one_error_line(done: subprocess.CompletedProcess, *expected: str) -> str:
    """The single stderr line of a refused command, which must contain every ``expected`` text."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _refused(capsys, *argv: str) -> str:
    """In-process: the error line of a command refused at parse time or by its run()."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def lit_dir(tmp_path_factory):
    """A saved pixel-space LiTPipeline: 8x8 grey images, patch 2, 3 classes, a null class."""
    from vitzoo.diffusion.lit import LiTTransformer2DModel
    from vitzoo.diffusion.pipelines import LiTPipeline, ddpm_scheduler

    torch.manual_seed(0)
    transformer = LiTTransformer2DModel(sample_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=1,
                                        num_heads=2, num_classes=3, class_dropout_prob=0.1)
    path = tmp_path_factory.mktemp("lit") / "pipe"
    LiTPipeline(transformer=transformer, scheduler=ddpm_scheduler(),
                id2label={0: "zero", 1: "one", 2: "two"}).save_pretrained(path)
    return path


# ---------------------------------------------------------------- 1. steps


@pytest.mark.parametrize("pipeline,steps", [("linfusion", "-1"), ("lit", "0")])
def test_steps_must_be_positive(pipeline, steps):
    done = _vitzoo("generate", "--pipeline", pipeline, "--model", "tiny-random", "--steps", steps)
    _one_error_line(done, "--steps", f"expected a positive integer, got {steps}")


def test_steps_zero_refused_for_linfusion_too(capsys):
    line = _refused(capsys, "generate", "--pipeline", "linfusion", "--model", "tiny-random", "--steps", "0")
    assert "--steps" in line and "expected a positive integer, got 0" in line


# ---------------------------------------------------------------- 2. sizes and other numbers


def test_negative_height_refused_at_parse_time():
    done = _vitzoo("generate", "--pipeline", "linfusion", "--model", "tiny-random", "--height", "-512")
    _one_error_line(done, "--height", "expected a positive integer, got -512")


def test_linfusion_height_must_be_a_multiple_of_8():
    done = _vitzoo("generate", "--pipeline", "linfusion", "--model", "tiny-random", "--linfusion", "random",
                   "--height", "100")
    _one_error_line(done, "--height 100", "multiples of 8")


@pytest.mark.parametrize("argv,expected", [
    (["--pipeline", "lit", "--width", "0"], "--width: expected a positive integer, got 0"),
    (["--pipeline", "lit", "--guidance-scale", "-1"], "--guidance-scale: expected a number >= 0, got -1"),
    (["--pipeline", "lit", "--per-class", "0"], "--per-class: expected a positive integer, got 0"),
    (["--pipeline", "lit", "--images-per-call", "-2"], "--images-per-call: expected a positive integer, got -2"),
    (["--pipeline", "lit", "--cell-size", "0"], "--cell-size: expected a positive integer, got 0"),
    (["--pipeline", "linfusion", "--sweep", "512", "-1"], "--sweep: expected a positive integer, got -1"),
    (["--pipeline", "linfusion", "--sweep-timeout", "0"], "--sweep-timeout: expected a positive number, got 0"),
    (["--pipeline", "linfusion", "--base-size", "0"], "--base-size: expected a positive integer, got 0"),
    (["--pipeline", "linfusion", "--upscale-strength", "0"], "--upscale-strength: expected a strength in (0, 1]"),
    (["--pipeline", "linfusion", "--strengths", "0.4", "1.5"], "--strengths: expected a strength in (0, 1], got 1.5"),
    (["--pipeline", "linfusion", "--ff-chunks", "0"], "--ff-chunks: expected a positive integer, got 0"),
    (["--pipeline", "linfusion", "--unet-batch-size", "-1"], "--unet-batch-size: expected an integer >= 0"),
    (["--pipeline", "linfusion", "--png-compress-level", "10"], "--png-compress-level: expected an integer in [0, 9]"),
    (["--pipeline", "linfusion", "--vae-tile-size", "-8"], "--vae-tile-size: expected a positive integer"),
])
def test_numeric_flags_refused_at_parse_time(capsys, argv, expected):
    assert expected in _refused(capsys, "generate", "--model", "tiny-random", *argv)


@pytest.mark.parametrize("argv,expected", [
    (["--width", "12"], "--width 12 is not possible: Stable Diffusion's VAE needs multiples of 8"),
    (["--vae-tile-size", "100"], "--vae-tile-size 100 is not possible"),
    (["--sweep", "64", "100"], "--sweep 100 is not possible"),
])
def test_linfusion_sizes_must_be_multiples_of_8(capsys, argv, expected):
    assert expected in _refused(capsys, "generate", "--pipeline", "linfusion", "--model", "tiny-random",
                                "--linfusion", "random", *argv)


def test_cache_latents_numbers_refused_at_parse_time(capsys, tmp_path):
    line = _refused(capsys, "cache_latents", "--data-dir", str(tmp_path), "--output", str(tmp_path / "out"),
                    "--batch-size", "0")
    assert "--batch-size: expected a positive integer, got 0" in line


def test_cache_latents_checks_the_folder_before_loading_a_vae(capsys, tmp_path):
    line = _refused(capsys, "cache_latents", "--data-dir", str(tmp_path / "missing"), "--output",
                    str(tmp_path / "out"), "--vae", "nobody/no-such-vae")
    assert "--data-dir" in line and "no such image folder" in line


# ---------------------------------------------------------------- 3. options a pipeline cannot honour


def test_lit_height_that_the_model_cannot_generate(lit_dir):
    done = _vitzoo("generate", "--pipeline", "lit", "--model", str(lit_dir), "--height", "63", "--device", "cpu")
    _one_error_line(done, "--height 63 is not possible", "multiples of 2", "trained at 8x8", "omitted")


def test_lit_refuses_a_prompt():
    done = _vitzoo("generate", "--pipeline", "lit", "--prompt", "a cat")
    _one_error_line(done, "--prompt", "class-conditional", "--class-labels")


@pytest.mark.parametrize("argv,expected", [
    (["--pipeline", "lit", "--negative-prompt", "blur"], "--negative-prompt: LiT is class-conditional"),
    (["--pipeline", "lit", "--base-size", "256"], "--base-size is an option of --pipeline linfusion"),
    (["--pipeline", "lit", "--linfusion", "random"], "--linfusion is an option of --pipeline linfusion"),
    (["--pipeline", "linfusion", "--model", "tiny-random", "--class-labels", "3"],
     "--class-labels is an option of --pipeline lit, not of --pipeline linfusion"),
    (["--pipeline", "linfusion", "--model", "tiny-random", "--per-class", "8"], "--per-class is an option of"),
    (["--pipeline", "linfusion", "--model", "tiny-random", "--linfusion", "random", "--negative-prompt", "blur",
      "--guidance-scale", "1"], "--negative-prompt needs guidance"),
    (["--pipeline", "linfusion", "--model", "tiny-random", "--linfusion", "random", "--sweep-out", "x"],
     "--sweep-out only apply with --sweep"),
    (["--pipeline", "linfusion", "--model", "tiny-random", "--sweep", "64", "--height", "64", "--output", "a.png"],
     "--height, --output cannot be combined with --sweep"),
    (["--pipeline", "linfusion", "--model", "tiny-random", "--linfusion", "random", "--scheduler", "Nope"],
     "--scheduler 'Nope' is not a diffusers scheduler class"),
    (["--pipeline", "linfusion", "--model", "tiny-random", "--linfusion", "no/such/dir"],
     "--linfusion no/such/dir: no such directory or file"),
])
def test_unused_or_impossible_options_are_errors(capsys, argv, expected):
    assert expected in _refused(capsys, "generate", *argv)


@pytest.mark.parametrize("argv,expected", [
    (["--class-labels", "seven"], "--class-labels: unknown class label 'seven'"),
    (["--class-labels", "5"], "--class-labels: class ids must lie in [0, 3), got [5]"),
    (["--scheduler", "StableDiffusionPipeline"], "--scheduler 'StableDiffusionPipeline' is not a diffusers scheduler"),
])
def test_lit_labels_and_scheduler_name_their_flag(capsys, lit_dir, argv, expected):
    assert expected in _refused(capsys, "generate", "--pipeline", "lit", "--model", str(lit_dir), "--device", "cpu",
                                *argv)


def test_lit_guidance_needs_a_null_class(capsys, tmp_path):
    from vitzoo.diffusion.lit import LiTTransformer2DModel
    from vitzoo.diffusion.pipelines import LiTPipeline, ddpm_scheduler

    transformer = LiTTransformer2DModel(sample_size=4, patch_size=2, in_channels=1, hidden_size=32, depth=1,
                                        num_heads=2, num_classes=3, class_dropout_prob=0.0)
    LiTPipeline(transformer=transformer, scheduler=ddpm_scheduler()).save_pretrained(tmp_path / "pipe")
    line = _refused(capsys, "generate", "--pipeline", "lit", "--model", str(tmp_path / "pipe"), "--device", "cpu",
                    "--guidance-scale", "4")
    assert "--guidance-scale 4 needs a model trained with label dropout" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("argv", [["--pipeline", "lit"], ["--pipeline", "linfusion", "--model", "tiny-random",
                                                       "--linfusion", "random"]])
def test_missing_cuda_device_is_named(capsys, argv):
    line = _refused(capsys, "generate", *argv, "--device", "cuda")
    assert "--device cuda: no CUDA device is available here; use --device cpu" in line


# ---------------------------------------------------------------- 4. --linfusion auto without a known base


def test_linfusion_auto_names_the_flag_and_its_values():
    done = _vitzoo("generate", "--pipeline", "linfusion", "--model", "tiny-random")
    line = _one_error_line(done, "--linfusion auto", "--model tiny-random", "'random'", "'none'")
    assert "pretrained=" not in line


# ---------------------------------------------------------------- 5. hub ids that cannot be fetched


def test_hub_errors_turns_an_unfetchable_id_into_one_line(tmp_path):
    from huggingface_hub.errors import LocalEntryNotFoundError

    from vitzoo.diffusion.hub import hub_errors

    with pytest.raises(FileNotFoundError, match=r"^--vae 'someone/vae' is neither a local folder nor in the "
                                                r"Hugging Face cache.*network is unavailable or the id is wrong$"):
        with hub_errors("someone/vae", what="--vae"):
            try:
                raise LocalEntryNotFoundError("cannot find the requested files in the local cache")
            except OSError as err:
                raise OSError("someone/vae does not appear to have a file named config.json.") from err
    with pytest.raises(OSError, match="disk full"):  # not a fetch failure: unchanged
        with hub_errors("someone/vae"):
            raise OSError("disk full")
    with pytest.raises(OSError, match="broken"):  # an existing local folder: unchanged
        with hub_errors(tmp_path):
            raise LocalEntryNotFoundError("broken")


@pytest.mark.parametrize("argv,flag", [
    (["cache_latents", "--vae", "vitzoo-tests/no-such-vae"], "--vae 'vitzoo-tests/no-such-vae'"),
    (["generate", "--pipeline", "linfusion", "--model", "vitzoo-tests/no-such-sd", "--linfusion", "random"],
     "--model 'vitzoo-tests/no-such-sd'"),
    (["generate", "--pipeline", "linfusion", "--model", "tiny-random", "--linfusion", "vitzoo-tests/no-such-linfusion",
      "--device", "cpu"], "--linfusion 'vitzoo-tests/no-such-linfusion'"),
])
def test_offline_hub_id_is_one_line(tmp_path, argv, flag):
    if argv[0] == "cache_latents":
        (tmp_path / "images" / "a").mkdir(parents=True)
        argv = [*argv, "--data-dir", str(tmp_path / "images"), "--output", str(tmp_path / "cache")]
    done = _vitzoo(*argv)
    _one_error_line(done, flag, "neither a local folder nor in the Hugging Face cache", "HF_HUB_OFFLINE=1")


def test_linfusion_library_reports_an_offline_hub_id(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    import huggingface_hub

    from vitzoo.diffusion.linfusion import LinFusion

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("outgoing traffic has been disabled")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="LinFusion checkpoint 'someone/linfusion' is neither a local folder"):
        LinFusion.from_checkpoint("someone/linfusion")


# ---------------------------------------------------------------- 6. no noise in normal output


def test_lit_run_prints_no_dtype_or_loading_noise(lit_dir, tmp_path):
    done = _vitzoo("generate", "--pipeline", "lit", "--model", str(lit_dir), "--steps", "1", "--per-class", "1",
                   "--device", "cpu", "--output", str(tmp_path / "grid.png"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip() == "", done.stderr
    assert "8x8 px" in done.stdout


def test_linfusion_from_pretrained_prints_no_dtype_warnings(tmp_path):
    from vitzoo.diffusion.pipelines import HighResolutionPipeline
    from vitzoo.testing.tiny_diffusion import tiny_stable_diffusion

    tiny_stable_diffusion(pipeline_class=HighResolutionPipeline).save_pretrained(tmp_path / "sd")
    done = _vitzoo("generate", "--pipeline", "linfusion", "--model", str(tmp_path / "sd"), "--linfusion", "random",
                   "--steps", "1", "--height", "64", "--width", "64", "--base-size", "32", "--dtype", "bfloat16",
                   "--device", "cpu", "--output", str(tmp_path / "out.png"))
    assert done.returncode == 0, done.stderr[-3000:]
    for noise in ("torch_dtype", "kept in float32", "Traceback"):
        assert noise not in done.stderr, done.stderr[-3000:]
