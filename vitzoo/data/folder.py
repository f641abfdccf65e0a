"""ImageFolder datasets (``<root>/<split>/<class>/<image>``, the ImageNet layout) for training and evaluation.

- :func:`check_image_folder` finds the problems that would otherwise surface hours into a run (a missing
  split, an unreadable root, an empty class folder, classes that differ between splits) and raises a
  :class:`DatasetError` naming the path and what was expected, before any model is built.
- :class:`ImageFolderDataset` is timm's ``ImageDataset`` that decodes every image inside a ``try``:
  a corrupted or truncated file is skipped with a warning, replaced by the next readable image (so
  batches keep their size), and counted in the sample it was replaced in, so the count survives
  ``DataLoader`` worker processes and reaches the epoch metrics.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from PIL import Image
from timm.data import ImageDataset
from timm.data.readers.img_extensions import get_img_extensions
from timm.utils.misc import natural_key

from .sampling import seeded_rng

__all__ = ["DatasetError", "ImageFolderDataset", "check_image_folder", "resolve_split", "SPLIT_SYNONYMS"]

_logger = logging.getLogger("vitzoo.data")

# timm's split names (``--train-split train``, ``--val-split validation``) and the folder names they may have
SPLIT_SYNONYMS = (
    ("train", "training"),
    ("validation", "val", "valid", "eval", "evaluation"),
)

# decoding errors PIL raises for damaged files (SyntaxError for some broken PNG chunks)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class DatasetError(ValueError):
    """A dataset that cannot be trained or evaluated on, found before the run starts."""


def _names_for(split: str) -> tuple[str, ...]:
    for group in SPLIT_SYNONYMS:
        if split in group:
            return (split,) + tuple(name for name in group if name != split)
    return (split,)


def _listdir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except PermissionError as err:
        raise DatasetError(f"{path} is not readable (permission denied)") from err
    except OSError as err:
        raise DatasetError(f"{path} cannot be listed: {err}") from err


def resolve_split(root: Union[str, Path], split: str) -> Path:
    """The folder of ``split`` under ``root`` (``validation`` also finds ``val``, ``valid``, ...).

    Raises:
        DatasetError: the root is missing, not a directory or unreadable, or has no such split.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data directory {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"data directory {root} is not a directory")
    folders = sorted(entry.name for entry in _listdir(root) if entry.is_dir())
    for name in _names_for(split):
        if name in folders:
            return root / name
    expected = " or ".join(repr(n) for n in _names_for(split))
    raise DatasetError(
        f"no {split!r} split in {root}: expected a folder named {expected}, found "
        f"{folders if folders else 'no folders'} (layout: <root>/<split>/<class>/<image>)"
    )


def _scan_classes(split_dir: Path) -> list[str]:
    """Class folder names of one split in timm's order; each must hold at least one image directly."""
    extensions = get_img_extensions(as_set=True)
    entries = _listdir(split_dir)
    stray = [e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in extensions]
    if stray:
        raise DatasetError(
            f"{split_dir} holds images directly ({', '.join(sorted(stray)[:3])}, ...): put each image in a "
            f"folder named after its class (<split>/<class>/<image>)"
        )
    classes = sorted((e.name for e in entries if e.is_dir()), key=natural_key)
    if not classes:
        raise DatasetError(f"{split_dir} has no class folders (layout: <root>/<split>/<class>/<image>)")
    empty = []
    for name in classes:
        has_image = any(e.is_file() and os.path.splitext(e.name)[1].lower() in extensions
                        for e in _listdir(split_dir / name))
        if not has_image:
            empty.append(name)
    if empty:
        shown = ", ".join(repr(n) for n in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise DatasetError(
            f"{len(empty)} empty class folder(s) in {split_dir}: {shown}; each class folder needs at least one "
            f"image ({', '.join(sorted(extensions))}) directly inside it"
        )
    return classes


def check_image_folder(root: Union[str, Path], splits: Sequence[str] = ("train", "validation")
                       ) -> dict[str, tuple[Path, list[str]]]:
    """Check an ImageFolder tree and return ``{split: (folder, class names)}``.

    The first split defines the classes; every later split must use only those class names (a
    validation split without some classes is allowed; one with an unknown class is not, because timm
    would silently renumber the classes).

    Raises:
        DatasetError: naming the path and what was expected.
    """
    found = {}
    for split in splits:
        folder = resolve_split(root, split)
        found[split] = (folder, _scan_classes(folder))
    reference_split, (_, reference) = next(iter(found.items()))
    for split, (folder, classes) in list(found.items())[1:]:
        unknown = sorted(set(classes) - set(reference), key=natural_key)
        if unknown:
            raise DatasetError(
                f"{folder} has classes that {reference_split!r} does not: {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''}; both splits must use the same class folder names"
            )
        missing = sorted(set(reference) - set(classes), key=natural_key)
        if missing:
            _logger.warning("%s has no images of %d class(es) of %r (e.g. %s)", folder, len(missing),
                            reference_split, missing[:3])
    return found


class ImageFolderDataset(ImageDataset):
    """timm's ``ImageDataset`` over one split folder that skips unreadable images and names them.

    An item is ``(image, target, unreadable)``: ``unreadable`` is the tuple of indices of the unreadable files
    passed over to produce this sample. For training (``substitute=True``) an unreadable file is replaced by
    the next readable one, so batches stay full; for evaluation (``substitute=False``) it is not replaced:
    the item holds a blank placeholder image that :meth:`collate` marks invalid, so no image is ever evaluated
    in its place or twice. Counting the distinct indices counts files, however often they are read.

    The index may be an ``int`` or an ``(index, seed)`` pair from
    :class:`~vitzoo.data.sampling.SeededSampler`; with a seed, the random transform runs under RNGs
    seeded from it, so augmentation depends on (seed, epoch, position) only and a resumed run repeats
    an uninterrupted one exactly, whatever the number of loader workers.

    Args:
        folder: the split folder (``<root>/train``).
        class_to_idx: class name -> index; pass the training split's mapping to evaluation splits so
            indices agree even when a class is missing there. None: built from the folder.
        transform: image transform (a timm transform).
        max_consecutive_failures: unreadable files in a row after which the data is declared damaged.
        substitute: replace an unreadable file by the next readable one (training) or skip it (evaluation).
    """

    def __init__(self, folder: Union[str, Path], *, class_to_idx: Optional[dict[str, int]] = None,
                 transform: Optional[Callable] = None, max_consecutive_failures: int = 50, substitute: bool = True):
        super().__init__(str(folder), reader="", class_map=dict(class_to_idx) if class_to_idx else "",
                         transform=transform)
        if len(self.reader) == 0:
            raise DatasetError(f"no images found in {folder}")
        self.max_consecutive_failures = max_consecutive_failures
        self.substitute = substitute

    @property
    def class_to_idx(self) -> dict[str, int]:
        return dict(self.reader.class_to_idx)

    @property
    def classes(self) -> list[str]:
        return [name for name, _ in sorted(self.reader.class_to_idx.items(), key=lambda item: item[1])]

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        unreadable: list[int] = []
        while True:
            path, target = self.reader.samples[index]
            try:
                with Image.open(path) as raw:
                    # convert() decodes every pixel, so truncated files fail here rather than in a transform
                    image = raw.convert("RGB")
                break
            except _DECODE_ERRORS as err:
                unreadable.append(index)
                _logger.warning("skipping unreadable image %s: %s", path, err)
                if not self.substitute:
                    # a placeholder of the transform's output shape keeps the batch regular; collate() masks it
                    image = Image.new("RGB", (8, 8))
                    break
                if len(unreadable) >= self.max_consecutive_failures:
                    raise DatasetError(f"{len(unreadable)} unreadable images in a row (last: {path}); the dataset "
                                       f"looks damaged") from err
                index = (index + 1) % len(self.reader)
        if self.transform is not None:
            with seeded_rng(seed):
                image = self.transform(image)
        return image, target, tuple(unreadable)

    def collate(self, items: list[tuple[Any, int, tuple[int, ...]]]) -> tuple[Any, Any, list[int], Any]:
        """Batch items as ``(images, targets, unreadable, valid)``: ``unreadable`` lists the indices of the
        unreadable files met while making the batch; ``valid`` is False for the placeholders of an evaluation
        dataset (``substitute=False``), True everywhere else."""
        import torch
        from torch.utils.data import default_collate

        images, targets = default_collate([(image, target) for image, target, _ in items])
        unreadable = [index for _, _, indices in items for index in indices]
        valid = torch.tensor([self.substitute or not indices for _, _, indices in items])
        return images, targets, unreadable, valid

