"""Evaluation and inference of a ``train_aigi`` detector: the bodies of ``vitzoo eval_aigi`` and ``vitzoo detect_aigi``.

- :func:`evaluate_folder`: accuracy on real and on fake, AP and ROC-AUC per generator with mean ± std (spec
  ``../shared/specs/ppl.md`` §4, :func:`vitzoo.aigi.per_generator_metrics`), after optional perturbations applied
  before the model (:class:`Perturb`: Gaussian blur, resizing, JPEG; the robustness protocol of §3.4); CDE maps
  (§2) of a few images as a PNG grid; and :func:`pasted_patch_scores`, the heatmap inside vs outside patches of a
  reconstruction pasted into held-out real images with known masks (randomized patch reconstruction, §3.2).
- :func:`detect_files`: P(fake) and a patch heatmap for every image of files and folders, tiled with
  :func:`vitzoo.aigi.predict_large` when an image is larger than the input; a CSV and a JSON report. Files that
  are not images, truncated or corrupt are reported and skipped (:func:`vitzoo.aigi.imageio.read_image_rgb`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..aigi import binary_metrics, cde_map, per_generator_metrics, predict_large, randomized_patch_reconstruction
from ..aigi.data import AigiFolderDataset
from ..aigi.imageio import is_image_path, read_image_rgb
from .aigi import LoadedDetector, image_transform, score_images
from .._atomic import atomic_write

__all__ = ["Perturb", "detect_files", "evaluate_folder", "overlay_heatmap", "pasted_patch_scores", "save_png"]

_logger = logging.getLogger("vitzoo.aigi")


class Perturb:
    """The robustness perturbations, in the order of the CNNDetection / PPL protocol: Gaussian blur of standard
    deviation ``blur`` pixels, resizing by the factor ``resize`` (bicubic), then JPEG re-encoding at ``jpeg_quality``.
    Each is off when None; deterministic (no random draw)."""

    def __init__(self, *, jpeg_quality: Optional[int] = None, resize: Optional[float] = None,
                 blur: Optional[float] = None):
        if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
            raise ValueError(f"--jpeg-quality must be in 1..100, got {jpeg_quality}")
        self.jpeg_quality, self.resize, self.blur = jpeg_quality, resize, blur

    @property
    def active(self) -> dict[str, Any]:
        return {k: v for k, v in (("blur", self.blur), ("resize", self.resize), ("jpeg_quality", self.jpeg_quality))
                if v is not None}

    def __call__(self, image):
        from PIL import Image, ImageFilter

        if self.blur:
            image = image.filter(ImageFilter.GaussianBlur(radius=self.blur))
        if self.resize is not None and self.resize != 1:
            width, height = image.size
            image = image.resize((max(1, round(width * self.resize)), max(1, round(height * self.resize))),
                                 Image.BICUBIC)
        if self.jpeg_quality is not None:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=self.jpeg_quality)
            buffer.seek(0)
            with Image.open(buffer) as decoded:
                image = decoded.convert("RGB")
        return image


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def save_png(path: Path, pixels: np.ndarray) -> Path:
    """Write a uint8 [H, W, 3] array as a PNG atomically."""
    from PIL import Image

    return atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, *, cmap: str = "inferno", alpha: float = 0.5,
                    vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """``image`` uint8 [H, W, 3] blended with a matplotlib colormap of ``heatmap`` [h, w] (one cell per patch,
    repeated over its pixels: the map's resolution is the patch grid); returns uint8 [H, W, 3]."""
    import matplotlib

    height, width = image.shape[:2]
    rows = np.minimum((np.arange(height) * heatmap.shape[0]) // height, heatmap.shape[0] - 1)
    cols = np.minimum((np.arange(width) * heatmap.shape[1]) // width, heatmap.shape[1] - 1)
    values = np.clip((heatmap[rows][:, cols] - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    colours = matplotlib.colormaps[cmap](values)[..., :3] * 255
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).round().astype(np.uint8)


def _pixels(loaded: LoadedDetector, images: torch.Tensor) -> np.ndarray:
    """Normalised [B, 3, H, W] -> uint8 [B, H, W, 3]."""
    mean = torch.tensor(loaded.data_config["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(loaded.data_config["std"]).view(1, -1, 1, 1)
    return (images.cpu() * std + mean).clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy()


def _folder(loaded: LoadedDetector, root: Path, split: str, generators, *, perturb: Optional[Perturb] = None,
            recon=None) -> AigiFolderDataset:
    from torchvision import transforms

    steps = ([perturb] if perturb is not None and perturb.active else []) + [
        image_transform(loaded.data_config, train=False)]
    return AigiFolderDataset(root, split, generators=generators, transform=transforms.Compose(steps), recon=recon,
                             min_side=loaded.detector.patch_size, substitute=False)


@torch.no_grad()
def pasted_patch_scores(loaded: LoadedDetector, root: Path, split: str = "val", *, ratio: float = 0.5,
                        seed: int = 0, max_images: Optional[int] = None, batch_size: int = 32,
                        device: torch.device = torch.device("cpu"), figure: Optional[Path] = None,
                        figure_images: int = 4) -> dict[str, Any]:
    """Paste patches of their reconstruction into the real images of ``split`` that have one (RPR, spec §3.2,
    ``ratio`` of the patches, masks from ``seed``) and compare the heatmaps inside the pasted patches with those
    outside: the patch probe's ``sigmoid(patch_logit)`` and the CDE map. Means over all patches of all images;
    ``images_inside_higher`` is the fraction of images whose probe mean inside exceeds the one outside. With
    ``figure``, a PNG there of the first ``figure_images`` pasted images, their true masks and probe heatmaps."""
    dataset = _folder(loaded, root, split, None, recon="auto")
    paired = [i for i, s in enumerate(dataset.samples) if s.label == 0 and s.recon is not None]
    if not paired:
        raise ValueError(f"no real image of the {split!r} split of {root} has a reconstruction (root/recon/...); "
                         f"--pasted needs them")
    paired = paired[:max_images] if max_images else paired
    generator = torch.Generator().manual_seed(seed)
    detector = loaded.detector
    sums = {"probe_inside": 0.0, "probe_outside": 0.0, "cde_inside": 0.0, "cde_outside": 0.0}
    inside_count = outside_count = higher = images = 0
    for start in range(0, len(paired), batch_size):
        items = [dataset[index] for index in paired[start:start + batch_size]]
        items = [item for item in items if item.recon is not None and not item.unreadable]
        if not items:
            continue
        real = torch.stack([item.image for item in items]).to(device)
        recon = torch.stack([item.recon for item in items]).to(device)
        mixed, mask = randomized_patch_reconstruction(real, recon, ratio, detector.patch_size, generator)
        maps = {"cde": cde_map(detector, mixed)}
        output = detector(mixed)
        if output.patch_logit is not None:
            maps["probe"] = output.patch_logit.float().sigmoid()
        inside = mask.bool()
        for name, values in maps.items():
            sums[f"{name}_inside"] += float(values[inside].sum())
            sums[f"{name}_outside"] += float(values[~inside].sum())
        if "probe" in maps:
            per_image_in = (maps["probe"] * inside).sum((1, 2)) / inside.sum((1, 2)).clamp_min(1)
            per_image_out = (maps["probe"] * ~inside).sum((1, 2)) / (~inside).sum((1, 2)).clamp_min(1)
            higher += int((per_image_in > per_image_out).sum())
        inside_count += int(inside.sum())
        outside_count += int((~inside).sum())
        if figure is not None and start == 0 and "probe" in maps:
            _pasted_figure(figure, _pixels(loaded, mixed[:figure_images]), inside[:figure_images],
                           maps["probe"][:figure_images])
        images += len(items)
    result = {"images": images, "ratio": ratio, "seed": seed, "patches_inside": inside_count,
              "patches_outside": outside_count}
    has_probe = detector.patch_head is not None
    for key, total in sums.items():
        count = inside_count if key.endswith("inside") else outside_count
        result[key] = total / count if count and (has_probe or key.startswith("cde")) else None
    result["images_inside_higher"] = higher / images if images and has_probe else None
    return result


def _pasted_figure(path: Path, pixels: np.ndarray, masks: torch.Tensor, probe: torch.Tensor) -> Path:
    """Rows: the pasted images, their true masks (bright = reconstructed patch), the probe heatmaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(pixels)
    figure, axes = plt.subplots(3, count, figsize=(1.6 * count, 5.0), squeeze=False)
    for column in range(count):
        axes[0, column].imshow(pixels[column])
        axes[1, column].imshow(masks[column].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axes[2, column].imshow(probe[column].cpu().numpy(), cmap="magma", vmin=0, vmax=1)
        for axis in axes[:, column]:
            axis.axis("off")
    for row, title in enumerate(("pasted image", "true mask", "probe heatmap")):
        axes[row, 0].set_title(title, fontsize=7, loc="left")
    figure.tight_layout()
    path = atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)
    return path


@torch.no_grad()
def cde_grid(loaded: LoadedDetector, dataset: AigiFolderDataset, count: int, path: Path,
             device: torch.device = torch.device("cpu")) -> Path:
    """A PNG of ``count`` images (reals and fakes alternately) over their CDE maps (spec §2): each column an image
    titled with its label and P(fake), and below it the map (red: hiding the patch lowers the fake logit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reals = [i for i, s in enumerate(dataset.samples) if s.label == 0]
    fakes = [i for i, s in enumerate(dataset.samples) if s.label == 1]
    order = [i for pair in zip(fakes, reals) for i in pair] + fakes[len(reals):] + reals[len(fakes):]
    items = [dataset[i] for i in order[:count]]
    images = torch.stack([item.image for item in items]).to(device)
    maps = cde_map(loaded.detector, images).cpu().numpy()
    probs = loaded.detector(images).logit.float().sigmoid().cpu().tolist()
    pixels = _pixels(loaded, images)
    limit = float(np.abs(maps).max()) or 1.0
    figure, axes = plt.subplots(2, len(items), figsize=(1.6 * len(items), 3.4), squeeze=False)
    for column, (item, image, heat, prob) in enumerate(zip(items, pixels, maps, probs)):
        axes[0, column].imshow(image)
        axes[0, column].set_title(f"{'fake' if item.label else 'real'} p={prob:.2f}", fontsize=7)
        axes[1, column].imshow(overlay_heatmap(image, heat, cmap="coolwarm", alpha=0.65, vmin=-limit, vmax=limit))
        for axis in axes[:, column]:
            axis.axis("off")
    figure.suptitle(f"CDE maps (±{limit:.2f} logit)", fontsize=8)
    figure.tight_layout()
    path = atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)
    return path


def evaluate_folder(loaded: LoadedDetector, root: Path, output: Path, *, split: str = "val",
                    generators: Optional[Sequence[str]] = None, perturb: Optional[Perturb] = None,
                    batch_size: int = 32, workers: int = 0, cde: int = 0, pasted: bool = False,
                    pasted_ratio: float = 0.5, seed: int = 0,
                    device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """Score the ``split`` of ``root``; write ``metrics.json``, ``metrics.md`` (the per-generator table),
    ``scores.csv`` and, when asked, ``cde.png`` and ``pasted.png`` under ``output``; return the metrics."""
    from torch.utils.data import DataLoader

    perturb = perturb or Perturb()
    dataset = _folder(loaded, root, split, generators, perturb=perturb, recon=None)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=dataset.collate)
    scored = score_images(loaded.detector, loader, desc=f"eval {split}", device=device)
    table = per_generator_metrics(scored["scores"], scored["labels"], scored["generators"])
    overall = binary_metrics(scored["scores"], scored["labels"])
    result: dict[str, Any] = {"checkpoint": loaded.source, "data": str(root), "split": split,
                              "images": len(scored["scores"]), "skipped": scored["skipped"] + len(dataset.report.skipped),
                              "perturbation": perturb.active, "overall": _clean(overall), **table.to_dict()}
    if pasted:
        result["pasted"] = pasted_patch_scores(loaded, root, split, ratio=pasted_ratio, seed=seed,
                                               batch_size=batch_size, device=device, figure=output / "pasted.png")
        if loaded.detector.patch_head is not None:
            result["pasted_png"] = str(output / "pasted.png")
    if cde:
        result["cde_png"] = str(cde_grid(loaded, dataset, cde, output / "cde.png", device=device))
    markdown = table.to_markdown()
    atomic_write(output / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1) + "\n"))
    atomic_write(output / "metrics.md", lambda tmp: Path(tmp).write_text(markdown + "\n"))

    def write_scores(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "generator", "label", "p_fake"])
            for row in zip(scored["paths"], scored["generators"], scored["labels"], scored["scores"]):
                writer.writerow([row[0], row[1], row[2], f"{row[3]:.6f}"])

    atomic_write(output / "scores.csv", write_scores)
    result["table"] = markdown
    return result


def _listing(inputs: Sequence[str]) -> list[tuple[Path, str]]:
    """(file, name for its outputs) for every file of ``inputs`` (folders walked recursively, hidden entries left
    out); a missing input is an error."""
    found: list[tuple[Path, str]] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            for current, dirs, files in os.walk(entry):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(f for f in files if not f.startswith(".")):
                    path = Path(current) / name
                    found.append((path, str(Path(entry.resolve().name) / path.relative_to(entry))))
        elif entry.is_file():
            found.append((entry, entry.name))
        else:
            raise FileNotFoundError(f"input {entry} does not exist")
    return found


def _unique(name: str, used: set[str]) -> str:
    stem, candidate, k = str(Path(name).with_suffix("")), str(Path(name).with_suffix("")), 1
    while candidate in used:
        candidate, k = f"{stem}_{k}", k + 1
    used.add(candidate)
    return candidate


def detect_files(loaded: LoadedDetector, inputs: Sequence[str], output: Path, *, stride: Optional[int] = None,
                 agg: str = "mean_logit", heatmap: str = "auto", threshold: float = 0.5, batch_size: int = 16,
                 cmap: str = "inferno", alpha: float = 0.5,
                 device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """P(fake) and a heatmap overlay for every image of ``inputs``; ``report.csv`` / ``report.json`` and
    ``heatmaps/<name>.png`` under ``output``. Bad files are reported (status ``skipped`` or ``unreadable`` with
    the reason) and never stop the run. ``heatmap``: ``auto`` (the probe when the detector has one, else CDE),
    ``probe``, ``cde`` or ``none``. Consecutive images of one size are scored as one batch."""
    from torchvision.transforms.functional import to_tensor
    from tqdm.auto import tqdm

    detector = loaded.detector
    if heatmap == "auto":
        heatmap = "probe" if detector.patch_head is not None else "cde"
    crop = loaded.input_size
    files = _listing(inputs)
    if not files:
        raise ValueError(f"no files in {', '.join(map(str, inputs))}")
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    pending: list[tuple[dict[str, Any], str, Any]] = []

    def flush() -> None:
        # images of one size go through the detector together (their tiles in batches of batch_size)
        if not pending:
            return
        pixels = torch.stack([to_tensor(image) for _, _, image in pending])
        result = predict_large(detector, loaded.normalize(pixels).to(device), crop=crop, stride=stride, agg=agg,
                               heatmap=heatmap, batch_size=batch_size)
        for index, (row, name, image) in enumerate(pending):
            logit = float(result.logit[index])
            probability = 1 / (1 + math.exp(-logit))
            row.update(p_fake=round(probability, 6), logit=round(logit, 6),
                       prediction="fake" if probability >= threshold else "real", width=image.width,
                       height=image.height, tiles=int(result.tile_logit[index].numel()))
            if result.heatmap is not None:
                heat = result.heatmap[index].float().cpu().numpy()
                if heatmap == "cde":
                    heat = 0.5 + heat / (2 * max(float(np.abs(heat).max()), 1e-6))
                target = output / "heatmaps" / f"{_unique(name, used)}.png"
                row["heatmap"] = str(save_png(target, overlay_heatmap(np.asarray(image), heat, cmap=cmap,
                                                                      alpha=alpha)))
        pending.clear()

    for path, name in tqdm(files, desc="detect", unit="image"):
        row: dict[str, Any] = {"path": str(path), "status": "ok", "p_fake": None, "logit": None, "prediction": None,
                               "width": None, "height": None, "tiles": None, "heatmap": None, "note": ""}
        rows.append(row)
        if not is_image_path(path):
            row.update(status="skipped", note="not an image file (extension)")
            _logger.warning("skipping %s: not an image file", path)
            continue
        read = read_image_rgb(path, min_side=detector.patch_size)
        if read.image is None:
            row.update(status="unreadable", note=read.reason)
            _logger.warning("unreadable image %s: %s", path, read.reason)
            continue
        row["note"] = read.reason
        if pending and (pending[0][2].size != read.image.size or len(pending) >= batch_size):
            flush()
        pending.append((row, name, read.image))
    flush()
    fields = list(rows[0])

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    counts = {status: sum(r["status"] == status for r in rows) for status in ("ok", "skipped", "unreadable")}
    report = {"model": loaded.source, "threshold": threshold, "input_size": crop, "stride": stride or crop,
              "aggregation": agg, "heatmap": heatmap, "files": len(rows), **counts,
              "fake": sum(r["prediction"] == "fake" for r in rows), "results": rows}
    atomic_write(output / "report.csv", write_csv)
    atomic_write(output / "report.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1) + "\n"))
    return report
