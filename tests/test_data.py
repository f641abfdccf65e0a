"""Datasets: the embedded digits ImageFolder, ImageFolder checks, corrupt-image skipping, per-sample seeding."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitzoo.data import (DatasetError, ImageFolderDataset, SeededSampler, build_digits_imagefolder,
                         check_image_folder, resolve_split, seeded_rng)

COLOURS = ((220, 40, 40), (40, 200, 40), (40, 40, 220), (200, 200, 40))


def write_image_folder(root: Path, *, classes: int = 3, train: int = 8, val: int = 4, size: int = 16,
                       val_name: str = "val", seed: int = 0) -> Path:
    """A small ImageNet-layout folder of PNGs: class k is a noisy image tinted with COLOURS[k]."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), (val_name, val)):
        for label in range(classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise = rng.integers(0, 60, size=(size, size, 3))
                pixels = np.clip(np.array(COLOURS[label]) + noise - 30, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def corrupt(path: Path, kind: str) -> None:
    """Damage an image file: ``truncated`` cuts a PNG in half, ``garbage`` replaces it with text."""
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"this is not an image at all" * 3)


def test_digits_imagefolder_is_stratified_real_and_reused(tmp_path):
    from sklearn.datasets import load_digits

    root = build_digits_imagefolder(tmp_path / "digits")
    found = check_image_folder(root)
    assert found["train"][1] == [str(d) for d in range(10)] and found["validation"][0].name == "val"
    counts = {split: {c: len(os.listdir(root / split / c)) for c in map(str, range(10))} for split in ("train", "val")}
    assert sum(counts["train"].values()) == 1437 and sum(counts["val"].values()) == 360
    truth = np.bincount(load_digits().target, minlength=10)
    for digit in range(10):
        # stratified: each class keeps ~20 % of its images in val
        assert abs(counts["val"][str(digit)] - 0.2 * truth[digit]) <= 1
    image = Image.open(root / "train" / "3" / sorted(os.listdir(root / "train" / "3"))[0])
    assert image.size == (32, 32) and image.mode == "RGB"
    # the 32x32 PNG is the 8x8 scan upsampled: pooling it back gives the original grey levels
    index = int(sorted(os.listdir(root / "train" / "3"))[0].split(".")[0])
    pooled = np.asarray(image.convert("L"), dtype=np.float64).reshape(8, 4, 8, 4).mean(axis=(1, 3))
    original = load_digits().images[index] * 255 / 16
    assert load_digits().target[index] == 3
    assert np.corrcoef(pooled.ravel(), original.ravel())[0, 1] > 0.95
    stamp = (root / "vitzoo_digits.json").stat().st_mtime_ns
    assert build_digits_imagefolder(tmp_path / "digits") == root
    assert (root / "vitzoo_digits.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["digits"]  # no staging folder left behind
    with pytest.raises(DatasetError, match="other settings"):
        build_digits_imagefolder(tmp_path / "digits", size=16)
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetError, match="not a vitzoo/digits folder"):
        build_digits_imagefolder(tmp_path / "other")


def test_check_image_folder_errors_name_the_problem(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="does not exist"):
        check_image_folder(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="is not a directory"):
        check_image_folder(tmp_path / "file")
    root = write_image_folder(tmp_path / "data", val_name="valid")
    assert resolve_split(root, "validation").name == "valid"
    with pytest.raises(DatasetError, match=r"no 'test' split .* found \['train', 'valid'\]"):
        resolve_split(root, "test")
    (root / "train" / "class_9").mkdir()
    with pytest.raises(DatasetError, match=r"empty class folder.*'class_9'"):
        check_image_folder(root)
    (root / "train" / "class_9").rmdir()
    (root / "valid" / "class_7").mkdir()
    Image.new("RGB", (16, 16)).save(root / "valid" / "class_7" / "a.png")
    with pytest.raises(DatasetError, match=r"classes that 'train' does not: \['class_7'\]"):
        check_image_folder(root)
    Image.new("RGB", (16, 16)).save(root / "train" / "stray.png")
    with pytest.raises(DatasetError, match="holds images directly"):
        check_image_folder(root)

    def denied(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(DatasetError, match="not readable"):
        check_image_folder(root)


def test_corrupt_and_truncated_images_are_skipped_and_counted(tmp_path, caplog):
    root = write_image_folder(tmp_path, classes=3, train=4)
    corrupt(root / "train" / "class_0" / "001.png", "truncated")
    corrupt(root / "train" / "class_2" / "000.png", "garbage")
    dataset = ImageFolderDataset(root / "train", transform=lambda image: torch.tensor(np.asarray(image)))
    with caplog.at_level("WARNING", logger="vitzoo.data"):
        items = [dataset[i] for i in range(len(dataset))]
    unreadable = [index for _, _, indices in items for index in indices]
    assert len(items) == 12 and unreadable == [1, 8]
    # a damaged file is replaced by the next readable one, with that image's label
    assert items[1][1] == 0 and torch.equal(items[1][0], items[2][0])
    assert items[8][1] == 2 and torch.equal(items[8][0], items[9][0])
    assert "class_0/001.png" in caplog.text and "class_2/000.png" in caplog.text
    for path in (root / "train" / "class_1").iterdir():
        corrupt(path, "garbage")
    dataset.max_consecutive_failures = 3
    with pytest.raises(DatasetError, match="3 unreadable images in a row"):
        dataset[4]


def test_evaluation_split_uses_the_training_class_indices(tmp_path):
    root = write_image_folder(tmp_path, classes=3)
    for path in (root / "val" / "class_0").iterdir():
        path.unlink()
    (root / "val" / "class_0").rmdir()
    train = ImageFolderDataset(root / "train")
    val = ImageFolderDataset(root / "val", class_to_idx=train.class_to_idx)
    # without the mapping timm would renumber class_1 -> 0
    assert sorted({target for _, target, _ in (val[i] for i in range(len(val)))}) == [1, 2]


def test_seeded_sampler_makes_augmentation_a_function_of_position(tmp_path):
    from timm.data import create_transform
    from torch.utils.data import DataLoader, DistributedSampler

    root = write_image_folder(tmp_path, classes=2, train=6)
    transform = create_transform(16, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.5)
    dataset = ImageFolderDataset(root / "train", transform=transform)
    order = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=0)
    sampler = SeededSampler(order, seed=7)
    items = list(sampler)
    assert len({seed for _, seed in items}) == len(items)

    def batches(workers):
        loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=workers,
                            generator=torch.Generator().manual_seed(0))
        sampler.set_epoch(1)
        return [images for images, _, _ in loader]

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    main_process = batches(0)
    # the caller's random stream is untouched by the per-sample seeding
    assert torch.equal(torch.rand(3), before)
    for a, b in zip(main_process, batches(2)):
        assert torch.equal(a, b)
    sampler.set_epoch(2)
    other_epoch = [images for images, _, _ in DataLoader(dataset, batch_size=4, sampler=sampler)]
    assert not torch.equal(other_epoch[0], main_process[0])


def test_seeded_rng_restores_every_generator():
    import random

    state = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    with seeded_rng(5):
        inside = random.random(), np.random.rand(), torch.rand(1)
    with seeded_rng(5):
        again = random.random(), np.random.rand(), torch.rand(1)
    assert inside[:2] == again[:2] and torch.equal(inside[2], again[2])
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    assert torch.equal(torch.get_rng_state(), state[2])
