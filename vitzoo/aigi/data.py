"""Real-versus-generated image folders in the GenImage layout, with optional aligned reconstructions.

Accepted layouts (``<split>`` is ``train`` or ``val``; ``training``, ``validation``, ``valid``, ``eval``
and ``test`` are found too, as in :data:`vitzoo.data.folder.SPLIT_SYNONYMS`)::

    root/<generator>/<split>/<label>/**/<image>      GenImage (generator first)
    root/<split>/<generator>/<label>/**/<image>      CNNDetection / UniversalFakeDetect (split first)
    root/<split>/<generator>/<category>/<label>/<image>   CNNDetection's per-category training folders

``<label>`` is ``ai`` / ``nature`` (GenImage), ``1_fake`` / ``0_real`` (CNNDetection, UniversalFakeDetect)
or ``fake`` / ``real``: label 1 for generated, 0 for real. Images may sit in nested folders below the
label folder. ``root/recon`` is never a generator: it is the default place of the paired
reconstructions (below).

Paired reconstructions (the aligned fake of a real image, which Randomized Patch Reconstruction pastes
patches from): a folder that mirrors ``root`` (``recon/<generator>/<split>/nature/x.png`` for
``root/<generator>/<split>/nature/x.jpg``; the extension may be the original one or ``.png``, which is
what :mod:`vitzoo.aigi.reconstruct` writes), or a dict from a real image's path to its reconstruction.

Bad files never stop a run. A file whose extension is not an image's is listed as skipped at scan time;
a file that cannot be decoded is skipped when read (replaced by the next readable one for training,
masked out for evaluation, as :class:`vitzoo.data.ImageFolderDataset` does); images are converted as
:func:`vitzoo.aigi.imageio.read_image_rgb` documents. :attr:`AigiFolderDataset.report` counts all of it
and each problem is logged once per file.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional, Sequence, Union

from PIL import Image

from ..data.folder import SPLIT_SYNONYMS, DatasetError
from ..data.sampling import seeded_rng
from .imageio import ImageRead, is_image_path, read_image_rgb

__all__ = ["AI_LABEL_NAMES", "AigiFolderDataset", "AigiItem", "AigiSample", "REAL_LABEL_NAMES", "RECON_DIR",
           "ReadReport", "find_generators", "read_image_rgb", "scan_aigi_folder"]

_logger = logging.getLogger("vitzoo.aigi")

AI_LABEL_NAMES = ("ai", "1_fake", "fake")
REAL_LABEL_NAMES = ("nature", "0_real", "real")
RECON_DIR = "recon"
_LABELS = {**{name: 1 for name in AI_LABEL_NAMES}, **{name: 0 for name in REAL_LABEL_NAMES}}
_EVAL_SPLITS = ("val", "validation", "valid", "eval", "evaluation", "test")


class AigiSample(NamedTuple):
    """One listed image: its file, label (1 generated, 0 real), generator and paired reconstruction."""

    path: Path
    label: int
    generator: str
    recon: Optional[Path]


class AigiItem(NamedTuple):
    """What the dataset returns for one index.

    ``image`` and ``recon`` are PIL images or, after the transform, tensors; ``recon`` is None without a
    reconstruction. ``unreadable`` holds the indices of the unreadable files passed over for this item.
    """

    image: Any
    label: int
    generator: str
    path: str
    recon: Any
    unreadable: tuple[int, ...]


def _split_names(split: str) -> tuple[str, ...]:
    """Folder names that hold ``split`` (``val`` also matches ``validation``, ``test``, ...)."""
    for group in (_EVAL_SPLITS, *SPLIT_SYNONYMS):
        if split in group:
            return (split,) + tuple(name for name in group if name != split)
    return (split,)


def _subdirs(path: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(path) if entry.is_dir() and not entry.name.startswith("."))
    except OSError as err:
        raise DatasetError(f"{path} cannot be listed: {err}") from err


def _pick(names: Iterable[str], wanted: Sequence[str]) -> Optional[str]:
    names = set(names)
    return next((name for name in wanted if name in names), None)


def find_generators(root: Union[str, Path], split: str) -> dict[str, Path]:
    """``{generator: split folder}`` for ``split`` under ``root``, in either layout (module docstring).

    Generators without that split are left out (GenImage-style test generators may have only ``val``).

    Raises:
        DatasetError: ``root`` is missing or holds no generator with ``split``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data directory {root} does not exist or is not a directory")
    names = _split_names(split)
    top = [name for name in _subdirs(root) if name != RECON_DIR]
    split_first = _pick(top, names)
    if split_first is not None:
        found = {gen: root / split_first / gen for gen in _subdirs(root / split_first)}
    else:
        found = {}
        for gen in top:
            chosen = _pick(_subdirs(root / gen), names)
            if chosen is not None:
                found[gen] = root / gen / chosen
    if not found:
        raise DatasetError(
            f"no {split!r} images in {root}: expected <generator>/{split}/{{ai,nature}}/ (GenImage) or "
            f"{split}/<generator>/{{1_fake,0_real}}/ (CNNDetection); found folders {top or 'none'}")
    return found


def _label_folders(split_dir: Path) -> list[tuple[Path, int]]:
    """Label folders (``ai``, ``0_real``, ...) at any depth below a generator's split folder."""
    found = []
    for current, dirs, _ in os.walk(split_dir):
        dirs.sort()
        for name in list(dirs):
            if name.lower() in _LABELS:
                found.append((Path(current) / name, _LABELS[name.lower()]))
                dirs.remove(name)
    return found


def _files(folder: Path) -> list[Path]:
    found = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(current) / name for name in sorted(files) if not name.startswith(".")]
    return found


def _recon_lookup(recon: Union[None, str, Path, Mapping], root: Path) -> Callable[[Path], Optional[Path]]:
    if recon is None:
        return lambda path: None
    if isinstance(recon, Mapping):
        table = {Path(k).resolve(): Path(v) for k, v in recon.items()}
        return lambda path: table.get(path.resolve())
    recon_root = Path(recon)
    if not recon_root.is_dir():
        raise DatasetError(f"reconstruction folder {recon_root} does not exist; expected a folder mirroring {root}")

    def lookup(path: Path) -> Optional[Path]:
        relative = path.relative_to(root)
        for candidate in (recon_root / relative, recon_root / relative.with_suffix(".png")):
            if candidate.is_file():
                return candidate
        return None

    return lookup


def scan_aigi_folder(root: Union[str, Path], split: str = "train", *, generators: Optional[Sequence[str]] = None,
                     recon: Union[None, str, Path, Mapping] = "auto"
                     ) -> tuple[list[AigiSample], list[tuple[Path, str]]]:
    """List the images of ``split`` and the files skipped because they are not images.

    Args:
        root: dataset root (module docstring).
        split: ``"train"`` or ``"val"`` (or a synonym).
        generators: generator names to keep (all when None); an unknown name is an error naming those found.
        recon: folder mirroring ``root`` with reconstructions of the real images, a dict real path ->
            reconstruction path, None for no pairing, or ``"auto"``: ``root/recon`` when it exists.

    Returns:
        ``(samples, skipped)``: samples sorted by generator and path; ``skipped`` lists ``(path, reason)``.
    """
    root = Path(root)
    found = find_generators(root, split)
    if generators is not None:
        unknown = [g for g in generators if g not in found]
        if unknown:
            raise DatasetError(f"generator(s) {unknown} have no {split!r} split in {root}; found {sorted(found)}")
        found = {g: found[g] for g in generators}
    if isinstance(recon, str) and recon == "auto":
        recon = root / RECON_DIR if (root / RECON_DIR).is_dir() else None
    lookup = _recon_lookup(recon, root)
    samples, skipped = [], []
    for generator, split_dir in found.items():
        folders = _label_folders(split_dir)
        if not folders:
            raise DatasetError(f"{split_dir} has no label folders: expected {AI_LABEL_NAMES} for generated and "
                               f"{REAL_LABEL_NAMES} for real images")
        for folder, label in folders:
            for path in _files(folder):
                if not is_image_path(path):
                    skipped.append((path, "not an image file (extension)"))
                    continue
                samples.append(AigiSample(path, label, generator, lookup(path) if label == 0 else None))
    if not samples:
        raise DatasetError(f"no images in the {split!r} split of {root} (generators {sorted(found)})")
    return samples, skipped


class ReadReport:
    """What happened to the files of a dataset: skipped, unreadable, converted, resized; each file once."""

    def __init__(self):
        self.skipped: dict[str, str] = {}
        self.unreadable: dict[str, str] = {}
        self.converted: dict[str, str] = {}
        self.missing_recon: list[str] = []

    def add_skipped(self, path: Union[str, Path], reason: str) -> None:
        if str(path) not in self.skipped:
            self.skipped[str(path)] = reason
            _logger.warning("skipping %s: %s", path, reason)

    def add_read(self, path: Union[str, Path], read: ImageRead) -> None:
        key = str(path)
        if read.image is None and key not in self.unreadable:
            self.unreadable[key] = read.reason
            _logger.warning("unreadable image %s: %s", path, read.reason)
        elif read.image is not None and read.reason and key not in self.converted:
            self.converted[key] = read.reason
            _logger.info("%s: %s", path, read.reason)

    def counts(self) -> dict[str, int]:
        """``{"skipped", "unreadable", "converted", "missing_recon"}`` file counts."""
        return {"skipped": len(self.skipped), "unreadable": len(self.unreadable), "converted": len(self.converted),
                "missing_recon": len(self.missing_recon)}

    def summary(self) -> str:
        """One line, e.g. ``"2 skipped (not images), 1 unreadable, 5 converted (CMYK -> RGB: 2, ...)"``."""
        kinds = Counter(note.split(";")[0] for note in self.converted.values())
        detail = ", ".join(f"{kind}: {count}" for kind, count in kinds.most_common(4))
        return (f"{len(self.skipped)} skipped (not images), {len(self.unreadable)} unreadable, "
                f"{len(self.converted)} converted{f' ({detail})' if detail else ''}, "
                f"{len(self.missing_recon)} real images without a reconstruction")


class AigiFolderDataset:
    """Images of one split of a GenImage-style folder, labelled 1 (generated) or 0 (real), per generator.

    An item is an :class:`AigiItem` ``(image, label, generator, path, recon, unreadable)``. The index may
    be an ``int`` or an ``(index, seed)`` pair from :class:`vitzoo.data.SeededSampler`: the transform then
    runs under that seed, so a resumed run repeats an uninterrupted one. The transform runs on the image
    and on its reconstruction under the same seed, so a random crop or flip lands on the same pixels of
    both (the builder keeps them the same size; a pair of different sizes is an error naming both).

    Args:
        root: dataset root (module docstring).
        split: ``"train"`` or ``"val"``.
        generators: generator names to keep (all when None).
        transform: applied to the PIL image (and to the reconstruction).
        recon: see :func:`scan_aigi_folder`.
        min_side: images with a shorter side are upsampled to it (``small``), e.g. the patch size 14.
        small: ``"upsample"``, ``"pad"`` or ``"skip"`` (an unreadable file), see :func:`read_image_rgb`.
        substitute: replace an unreadable file by the next readable one (training) or return a blank
            placeholder that :meth:`collate` marks invalid (evaluation).
        max_consecutive_failures: unreadable files in a row after which the data is declared damaged.

    :attr:`report` is filled by the process that reads; with ``DataLoader`` workers the unreadable files
    reach the main process through each item's ``unreadable`` indices (``collate``'s ``"unreadable"``), as
    with :class:`vitzoo.data.ImageFolderDataset`.
    """

    def __init__(self, root: Union[str, Path], split: str = "train", *, generators: Optional[Sequence[str]] = None,
                 transform: Optional[Callable] = None, recon: Union[None, str, Path, Mapping] = "auto",
                 min_side: int = 14, small: str = "upsample", substitute: Optional[bool] = None,
                 max_consecutive_failures: int = 50):
        self.root = Path(root)
        self.split = split
        self.samples, skipped = scan_aigi_folder(root, split, generators=generators, recon=recon)
        self.paired = any(sample.recon is not None for sample in self.samples)
        self.report = ReadReport()
        for path, reason in skipped:
            self.report.add_skipped(path, reason)
        if self.paired:
            # only generators with reconstructions are expected to pair every real image
            paired = {s.generator for s in self.samples if s.recon is not None}
            self.report.missing_recon = [str(s.path) for s in self.samples
                                         if s.label == 0 and s.recon is None and s.generator in paired]
            if self.report.missing_recon:
                _logger.warning("%d real image(s) have no reconstruction (e.g. %s)", len(self.report.missing_recon),
                                self.report.missing_recon[0])
        self.transform = transform
        self.min_side = min_side
        self.small = small
        self.substitute = split in SPLIT_SYNONYMS[0] if substitute is None else substitute
        self.max_consecutive_failures = max_consecutive_failures

    @property
    def generators(self) -> list[str]:
        return sorted({sample.generator for sample in self.samples})

    @property
    def labels(self) -> list[int]:
        return [sample.label for sample in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, path: Path) -> ImageRead:
        read = read_image_rgb(path, min_side=self.min_side, small=self.small)
        self.report.add_read(path, read)
        return read

    def _transform(self, image: Image.Image, seed: Optional[int]) -> Any:
        if self.transform is None:
            return image
        with seeded_rng(seed):
            return self.transform(image)

    def __getitem__(self, item) -> AigiItem:
        index, seed = item if isinstance(item, tuple) else (item, None)
        unreadable: list[int] = []
        while True:
            sample = self.samples[index]
            image = self._read(sample.path).image
            if image is not None:
                break
            unreadable.append(index)
            if not self.substitute:
                image = Image.new("RGB", (self.min_side, self.min_side))
                return AigiItem(self._transform(image, seed), sample.label, sample.generator, str(sample.path),
                                None, tuple(unreadable))
            if len(unreadable) >= self.max_consecutive_failures:
                raise DatasetError(f"{len(unreadable)} unreadable images in a row (last: {sample.path}); "
                                   f"the dataset looks damaged")
            index = (index + 1) % len(self.samples)
        recon = None
        if sample.recon is not None:
            recon = self._read(sample.recon).image
            if recon is not None and recon.size != image.size:
                raise DatasetError(f"reconstruction {sample.recon} is {recon.size[0]}x{recon.size[1]} but "
                                   f"{sample.path} is {image.size[0]}x{image.size[1]}; a pair must be pixel-aligned")
        if recon is not None and seed is None and self.transform is not None:
            # one seed for both calls, so the random crop / flip is the same on the pair
            seed = random.getrandbits(32)
        return AigiItem(self._transform(image, seed), sample.label, sample.generator, str(sample.path),
                        None if recon is None else self._transform(recon, seed), tuple(unreadable))

    def collate(self, items: list[AigiItem]) -> dict[str, Any]:
        """Batch tensor items into a dict.

        Keys: ``image`` [B, C, H, W], ``label`` [B] (long), ``generator`` and ``path`` (lists), ``recon``
        [B, C, H, W] (zeros where an item has none) with ``has_recon`` [B] (bool), ``unreadable`` (indices
        of the unreadable files met) and ``valid`` [B] (False for the placeholders of an evaluation split).
        """
        import torch

        images = torch.stack([item.image for item in items])
        recon = torch.stack([item.recon if item.recon is not None else torch.zeros_like(item.image)
                             for item in items])
        return {
            "image": images,
            "label": torch.tensor([item.label for item in items], dtype=torch.long),
            "generator": [item.generator for item in items],
            "path": [item.path for item in items],
            "recon": recon,
            "has_recon": torch.tensor([item.recon is not None for item in items]),
            "unreadable": [index for item in items for index in item.unreadable],
            "valid": torch.tensor([self.substitute or not item.unreadable for item in items]),
        }
