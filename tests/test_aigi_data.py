"""The data side of AI-generated-image detection: folder layouts, bad files, reconstructions, the embedded set."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitzoo.aigi.data import AigiFolderDataset, find_generators, read_image_rgb, scan_aigi_folder
from vitzoo.aigi.embedded import build_embedded_aigi
from vitzoo.aigi.imageio import fit_min_side
from vitzoo.aigi.reconstruct import PipelineReconstructor, VaeReconstructor, load_vae, reconstruct_folder
from vitzoo.aigi.tiny_vae import tiny_vae, train_tiny_vae
from vitzoo.data import DatasetError

TINY = dict(block_out_channels=(8, 16))


def _png(path: Path, size=(16, 12), color=(10, 200, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _genimage_tree(root: Path) -> None:
    for generator, splits in (("sdv14", ("train", "val")), ("adm", ("val",))):
        for split in splits:
            for label in ("ai", "nature"):
                for k in range(2):
                    _png(root / generator / split / label / f"{label}{k}.png")


def test_genimage_layout_splits_generators_labels(tmp_path):
    _genimage_tree(tmp_path)
    train = AigiFolderDataset(tmp_path, "train")
    assert train.generators == ["sdv14"] and len(train) == 4
    assert sorted(train.labels) == [0, 0, 1, 1]
    for index in range(len(train)):
        item = train[index]
        assert item.label == (1 if "/ai/" in item.path else 0) and item.generator == "sdv14"
        assert item.image.mode == "RGB" and item.recon is None
    val = AigiFolderDataset(tmp_path, "validation")
    assert val.generators == ["adm", "sdv14"] and len(val) == 8
    only = AigiFolderDataset(tmp_path, "val", generators=["adm"])
    assert {s.generator for s in only.samples} == {"adm"}
    with pytest.raises(DatasetError, match="midjourney"):
        AigiFolderDataset(tmp_path, "val", generators=["midjourney"])
    with pytest.raises(DatasetError, match="no 'test2' images"):
        find_generators(tmp_path, "test2")


def test_cnndetection_layout_split_first_nested_categories(tmp_path):
    for category in ("airplane", "cat"):
        for label in ("0_real", "1_fake"):
            _png(tmp_path / "train" / "progan" / category / label / "x.png")
    for label in ("0_real", "1_fake"):
        _png(tmp_path / "test" / "sdv14" / label / "y.png")
    samples, skipped = scan_aigi_folder(tmp_path, "train")
    assert len(samples) == 4 and not skipped
    assert {(s.path.parent.name, s.label) for s in samples} == {("0_real", 0), ("1_fake", 1)}
    val, _ = scan_aigi_folder(tmp_path, "val")
    assert [(s.generator, s.label) for s in val] == [("sdv14", 0), ("sdv14", 1)]


def _bad_files(folder: Path) -> dict[str, Path]:
    """One file of each awkward kind, written by the test."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    files["text"] = folder / "notes.png"
    files["text"].write_text("this is not an image")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noise.save(buffer, format="JPEG", quality=90)
    files["truncated"] = folder / "truncated.jpg"
    files["truncated"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    files["cmyk"] = folder / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(files["cmyk"], quality=95)
    files["16bit"] = folder / "deep.png"
    Image.fromarray(np.full((16, 16), 32896, dtype=np.uint16)).save(files["16bit"])
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (0, 0, 16, 8))
    files["palette"] = folder / "palette.png"
    palette.save(files["palette"], transparency=0)
    rgba = Image.new("RGBA", (16, 16), (0, 0, 255, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 8, 16))
    files["rgba"] = folder / "rgba.png"
    rgba.save(files["rgba"])
    files["gray"] = folder / "gray.png"
    Image.new("L", (16, 16), 77).save(files["gray"])
    stored = Image.new("RGB", (32, 16), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    files["exif"] = folder / "rotated.jpg"
    stored.save(files["exif"], quality=95, exif=exif.tobytes())
    files["small"] = folder / "small.png"
    Image.new("RGB", (5, 7), (9, 9, 9)).save(files["small"])
    (folder / "README.txt").write_text("a file that is not an image at all")
    return files


def test_read_image_rgb_converts_every_kind(tmp_path):
    files = _bad_files(tmp_path)
    for kind in ("text", "truncated"):
        image, reason = read_image_rgb(files[kind])
        assert image is None and reason.startswith({"text": "not an image", "truncated": "truncated"}[kind])
    read = {kind: read_image_rgb(path) for kind, path in files.items() if kind not in ("text", "truncated")}
    assert all(r.image.mode == "RGB" for r in read.values())
    assert np.abs(np.asarray(read["cmyk"].image, dtype=int) - [255, 0, 0]).max() < 8
    assert "CMYK" in read["cmyk"].reason
    assert np.asarray(read["16bit"].image)[0, 0].tolist() == [128, 128, 128]
    palette = np.asarray(read["palette"].image)
    assert palette[0, 0].tolist() == [255, 0, 0] and palette[-1, -1].tolist() == [255, 255, 255]
    rgba = np.asarray(read["rgba"].image)
    assert rgba[0, 0].tolist() == [255, 0, 0] and rgba[0, -1].tolist() == [255, 255, 255]
    assert np.asarray(read["gray"].image)[0, 0].tolist() == [77, 77, 77]
    # stored 32x16 with red on the left, orientation 6 (rotate 90 degrees clockwise): upright 16x32, red on top
    exif = np.asarray(read["exif"].image, dtype=int)
    assert read["exif"].image.size == (16, 32) and "orientation 6" in read["exif"].reason
    assert exif[2, 8, 0] > 200 and exif[2, 8, 2] < 60 and exif[-3, 8, 2] > 200 and exif[-3, 8, 0] < 60
    assert read_image_rgb(files["small"], min_side=14).image.size == (14, 20)
    assert read_image_rgb(files["small"], min_side=14, small="pad").image.size == (14, 14)
    assert read_image_rgb(files["small"], min_side=14, small="skip").image is None
    with pytest.raises(ValueError, match="upsample"):
        fit_min_side(read["small"].image, 14, small="crop")


def test_folder_run_with_bad_files_never_crashes(tmp_path, caplog):
    files = _bad_files(tmp_path / "gen" / "val" / "ai")
    _png(tmp_path / "gen" / "val" / "nature" / "ok.png")
    _png(tmp_path / "gen" / "train" / "nature" / "ok.png")
    _bad_files(tmp_path / "gen" / "train" / "ai")
    with caplog.at_level(logging.WARNING, logger="vitzoo.aigi"):
        val = AigiFolderDataset(tmp_path, "val", min_side=14)
        text_index = next(i for i, sample in enumerate(val.samples) if sample.path.name == "notes.png")
        items = [val[i] for i in range(len(val))] + [val[text_index]]
    assert len(items) == len(files) + 2
    assert val.report.counts()["skipped"] == 1 and val.report.counts()["unreadable"] == 2
    assert val.report.counts()["converted"] >= 6
    assert sum(1 for item in items if item.unreadable) == 3
    # each unreadable file is logged once, however often it is read
    assert sum("notes.png" in record.getMessage() for record in caplog.records) == 1
    train = AigiFolderDataset(tmp_path, "train", min_side=14)
    assert all(train[i].image is not None and min(train[i].image.size) >= 14 for i in range(len(train)))

    import torchvision.transforms as T

    tensors = AigiFolderDataset(tmp_path, "val", transform=T.Compose([T.Resize((14, 14)), T.ToTensor()]))
    batch = tensors.collate([tensors[i] for i in range(len(tensors))])
    assert batch["image"].shape == (len(tensors), 3, 14, 14) and int((~batch["valid"]).sum()) == 2


def test_paired_reconstruction_gets_the_same_random_crop(tmp_path):
    import torchvision.transforms as T

    real = tmp_path / "gen" / "train" / "nature" / "a.jpg"
    real.parent.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(real)
    _png(tmp_path / "gen" / "train" / "ai" / "b.png")
    read_image_rgb(real).image.save(_png(tmp_path / "recon" / "gen" / "train" / "nature" / "a.png"))
    transform = T.Compose([T.RandomResizedCrop(16, scale=(0.2, 0.5)), T.RandomHorizontalFlip(), T.ToTensor()])
    data = AigiFolderDataset(tmp_path, "train", transform=transform)
    assert data.paired and data.report.counts()["missing_recon"] == 0
    real_index = data.labels.index(0)
    item = data[(real_index, 1234)]
    assert item.label == 0 and torch.equal(item.image, item.recon)
    assert torch.equal(data[(real_index, 1234)].image, item.image)
    batch = data.collate([data[0], data[1]])
    assert batch["has_recon"].tolist() == [i == real_index for i in range(2)]
    _png(tmp_path / "recon" / "gen" / "train" / "nature" / "a.png", size=(8, 8))
    with pytest.raises(DatasetError, match="pixel-aligned"):
        data[real_index]


def test_reconstruct_folder_keeps_sizes_paths_and_is_idempotent(tmp_path):
    source = tmp_path / "real"
    _png(source / "a.png", size=(23, 17))
    Image.new("RGB", (30, 30), (120, 50, 50)).save(_png(source / "sub" / "b.jpg"))
    (source / "broken.png").write_text("no")
    reconstructor = VaeReconstructor(tiny_vae(0, **TINY))
    report = reconstruct_folder(source, tmp_path / "fake", reconstructor, progress=False)
    assert sorted(p.relative_to(tmp_path / "fake").as_posix() for p in report.written) == ["a.png", "sub/b.png"]
    assert [p.name for p, _ in report.unreadable] == ["broken.png"]
    assert Image.open(tmp_path / "fake" / "a.png").size == (23, 17)
    assert Image.open(tmp_path / "fake" / "sub" / "b.png").size == (30, 30)
    stamp = (tmp_path / "fake" / "a.png").stat().st_mtime_ns
    again = reconstruct_folder(source, tmp_path / "fake", reconstructor, progress=False)
    assert not again.written and len(again.existing) == 2
    assert (tmp_path / "fake" / "a.png").stat().st_mtime_ns == stamp
    assert not list((tmp_path / "fake").rglob(".*"))


def test_pipeline_reconstructor_img2img_and_inpaint_keep_size():
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

    from vitzoo.testing.tiny_diffusion import tiny_stable_diffusion

    image = Image.fromarray(np.random.default_rng(2).integers(0, 255, (20, 28, 3), dtype=np.uint8))
    # the inpainting UNet of SD 1.4 inpainting (the spec's reconstructor) reads 9 channels: latents, mask, masked image
    for pipeline_class, unet_config in ((StableDiffusionImg2ImgPipeline, None), (StableDiffusionInpaintPipeline, None),
                                        (StableDiffusionInpaintPipeline, dict(in_channels=9))):
        pipe = tiny_stable_diffusion(pipeline_class=pipeline_class, unet_config=unet_config)
        reconstructor = PipelineReconstructor(pipe, num_inference_steps=4, strength=0.5, guidance_scale=1.0)
        assert reconstructor.inpaint == (pipeline_class is StableDiffusionInpaintPipeline)
        assert reconstructor(image).size == (28, 20)


def test_load_vae_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="VAE"):
        load_vae(tmp_path / "no_such_vae")


def test_train_tiny_vae_reduces_reconstruction_loss():
    import skimage.data

    photo = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((64, 64)))
    vae, losses = train_tiny_vae([photo], steps=60, batch_size=8, patch=16, lr=3e-3, progress=False, **TINY)
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.75 * np.mean(losses[:5])
    assert not vae.training


def test_embedded_builder_layout_held_out_and_deterministic(tmp_path):
    settings = dict(crop=28, crops_per_photo=2, vae_steps=3, vae_patch=16, progress=False,
                    train_photos=("skimage:astronaut", "skimage:camera"), val_photos=("skimage:coffee",))
    root = build_embedded_aigi(tmp_path / "a", seed=3, **settings)
    for split, stems in (("train", {"astronaut", "camera"}), ("val", {"coffee"})):
        for label in ("ai", "nature"):
            names = sorted(p.name for p in (root / "tinyvae" / split / label).iterdir())
            assert len(names) == 2 * len(stems) and {n.rsplit("_", 1)[0] for n in names} == stems
    assert not (root / "tinyvae_jpeg" / "train").exists()
    assert len(list((root / "tinyvae_jpeg" / "val" / "ai").glob("*.jpg"))) == 2
    data = AigiFolderDataset(root, "train")
    assert data.paired and data.report.counts()["missing_recon"] == 0
    assert AigiFolderDataset(root, "val").generators == ["tinyvae", "tinyvae_jpeg"]
    assert Image.open(next((root / "tinyvae" / "train" / "ai").iterdir())).size == (28, 28)
    assert build_embedded_aigi(tmp_path / "a", seed=3, **settings) == root
    with pytest.raises(DatasetError, match="other settings"):
        build_embedded_aigi(tmp_path / "a", seed=4, **settings)
    other = build_embedded_aigi(tmp_path / "b", seed=3, **settings)
    files = sorted(p.relative_to(root) for p in root.rglob("*.png"))
    assert files == sorted(p.relative_to(other) for p in other.rglob("*.png"))
    assert all((root / f).read_bytes() == (other / f).read_bytes() for f in files)
