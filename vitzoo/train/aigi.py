"""The AI-generated-image detection engine: PPL (Panoptic Patch Learning, arXiv:2504.01396, ICLR 2026) on the
training core, a :class:`vitzoo.aigi.PatchDetector` on any patch-token backbone trained with randomized patch
reconstruction and the patch contrastive loss.

    vitzoo train_aigi -c configs/aigi/photos.yaml               # the embedded vitzoo/aigi-photos, CPU minutes
    vitzoo train_aigi --data-dir /data/GenImage --generators sdv14 --backbone vit_large_patch14_clip_224 \\
        --pretrained-backbone clip_l14.safetensors --finetune lora --img-size 224
    vitzoo train_aigi --resume runs/<experiment>                # continues exactly

Data (spec ``../shared/specs/ppl.md`` §3.2, §3.4): a GenImage-style folder (:class:`vitzoo.aigi.data.AigiFolderDataset`),
real images optionally paired with their reconstruction (``root/recon/``). Every training sample is augmented
from its own seed (a random crop to the input size, whose patch grid is the token grid the masks are drawn on,
and a horizontal flip, the same on an image and its reconstruction), and the RPR rule of §3.2 step 5 runs per
sample from that seed: a fake sample becomes, with probability ``--rpr-prob`` (p_rpr = 0.9), a mixed image built
from a real image and its reconstruction, with ``--rpr-ratio`` (r_rpr = 0.5) of the patches mixed:

- ``--rpr iclr`` (default; the ICLR form): the real image with patches of its reconstruction, patch labels = mask;
- ``--rpr v1`` (arXiv v1/v2, random patch replacement): the reconstruction with real patches pasted in,
  patch labels = 1 − mask;
- ``--rpr none``: no mixing (reals all-0 patch labels, fakes all-1).

The real partner of a fake is the real image of the same generator with the same file stem when one has a
reconstruction (DRCT-style folders, where the fakes are the reconstructions, like ``vitzoo/aigi-photos``),
otherwise a paired real drawn from the sample's seed. The step is :func:`vitzoo.aigi.ppl_loss` (λ 0.3, α 1.0,
plus the patch probe's BCE); after each epoch the validation split is scored (accuracy on real / fake / mean,
AP, ROC-AUC; ``best`` by AUC). The end of a run exports ``detector.safetensors`` (LoRA merged) and
``detector.json`` (:func:`export_detector`), which ``vitzoo eval_aigi`` and ``vitzoo detect_aigi`` rebuild with
:func:`load_detector`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from ..aigi import PatchDetector, binary_metrics, ppl_loss, random_patch_replacement, randomized_patch_reconstruction
from ..aigi.data import AigiFolderDataset
from ..aigi.embedded import AIGI_PHOTOS_DATASET, build_embedded_aigi
from ..data import DatasetError
from .._atomic import atomic_write
from .engine import Engine, StepResult, per_update_optimizer
from .loop import Trainer, TrainResult

__all__ = ["CHECKPOINT_KIND", "EXPORT_CONFIG", "EXPORT_WEIGHTS", "RPR_CHOICES", "AIGIEngine", "LoadedDetector",
           "PatchCrop", "aigi_data_root", "check_aigi_args", "create_detector", "detector_config", "export_detector",
           "image_transform", "load_detector", "score_images", "train_aigi"]

_logger = logging.getLogger("vitzoo.train")

CHECKPOINT_KIND = "vitzoo-aigi-detector"
EXPORT_WEIGHTS = "detector.safetensors"
EXPORT_CONFIG = "detector.json"
RPR_CHOICES = ("iclr", "v1", "none")


def check_aigi_args(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse resolved flags that cannot make a run."""
    if not args.data_dir and args.dataset != AIGI_PHOTOS_DATASET:
        raise ValueError(f"no data: pass --data-dir DIR (GenImage-style <generator>/{{train,val}}/{{ai,nature}}) or "
                         f"--dataset {AIGI_PHOTOS_DATASET}")
    return args


def aigi_data_root(args: argparse.Namespace, accelerator=None) -> Path:
    """The dataset root of ``args``, building ``vitzoo/aigi-photos`` first when it is the dataset (one process
    builds, the others wait)."""
    if args.dataset != AIGI_PHOTOS_DATASET:
        return Path(args.data_dir)
    if accelerator is None:
        return build_embedded_aigi(args.data_dir or None, seed=0)
    with accelerator.main_process_first():
        return build_embedded_aigi(args.data_dir or None, seed=0, progress=accelerator.is_main_process)


def detector_config(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~vitzoo.aigi.PatchDetector` arguments of ``args`` (JSON-ready; stored in checkpoints)."""
    kwargs = dict(args.backbone_kwargs or {})
    kwargs["img_size"] = args.img_size
    return dict(backbone=args.backbone, backbone_kwargs=kwargs, finetune=args.finetune, lora_rank=args.lora_rank,
                lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                lora_targets=list(args.lora_targets) if args.lora_targets else None,
                partial_blocks=args.partial_blocks, patch_head=bool(args.patch_head))


def create_detector(config: dict[str, Any], *, seed: int, pretrained_file: Optional[str] = None) -> PatchDetector:
    """The detector of ``config``, initialised from ``seed`` alone (the global generator is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return PatchDetector(config["backbone"], pretrained_file=pretrained_file or None,
                                 **{k: v for k, v in config.items() if k != "backbone"})
        except TypeError as err:
            # a --backbone-kwargs key the backbone's constructor does not take
            raise ValueError(f"backbone {config['backbone']}: {err}") from err


class PatchCrop:
    """A crop of ``size × size`` pixels (random in training, centred otherwise) and, in training, a horizontal
    flip with probability 0.5; an image with a side below ``size`` is first enlarged (bicubic) so that side is
    ``size``. Random draws use Python's ``random``, which the dataset seeds per sample (spec §3.1: random crop
    for training, centre crop for testing)."""

    def __init__(self, size: int, *, train: bool):
        self.size, self.train = size, train

    def __call__(self, image):
        from PIL import Image

        width, height = image.size
        if min(width, height) < self.size:
            scale = self.size / min(width, height)
            width, height = max(self.size, round(width * scale)), max(self.size, round(height * scale))
            image = image.resize((width, height), Image.BICUBIC)
        if self.train:
            left, top = random.randint(0, width - self.size), random.randint(0, height - self.size)
        else:
            left, top = (width - self.size) // 2, (height - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        if self.train and random.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return image


def image_transform(data_config: dict[str, Any], *, train: bool):
    """PIL RGB image -> normalised tensor [3, S, S] at the detector's input size (:class:`PatchCrop`)."""
    from torchvision import transforms

    size = int(data_config["input_size"][-1])
    return transforms.Compose([PatchCrop(size, train=train), transforms.ToTensor(),
                               transforms.Normalize(data_config["mean"], data_config["std"])])


class RPRTrainSet(torch.utils.data.Dataset):
    """The training split with the RPR rule applied per sample (module docstring). Items are dicts:
    ``image`` [3, S, S], ``label``, ``patch_label`` [h, w], ``mixed`` (whether RPR replaced the sample),
    ``seed`` and ``unreadable`` (indices of unreadable files passed over)."""

    def __init__(self, folder: AigiFolderDataset, *, patch: int, grid: tuple[int, int], mode: str, prob: float,
                 ratio: float):
        self.folder, self.patch, self.grid = folder, patch, grid
        self.mode, self.prob, self.ratio = mode, prob, ratio
        samples = folder.samples
        self.paired = [i for i, s in enumerate(samples) if s.label == 0 and s.recon is not None]
        by_stem = {(samples[i].generator, samples[i].path.stem): i for i in self.paired}
        self.partner = {i: by_stem.get((s.generator, s.path.stem)) for i, s in enumerate(samples) if s.label == 1}
        if mode != "none" and not self.paired:
            _logger.warning("--rpr %s: no real training image has a reconstruction (root/recon/...), so no sample "
                            "is mixed; build them with vitzoo.aigi.reconstruct or pass --rpr none", mode)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, item) -> dict[str, Any]:
        index, seed = item if isinstance(item, tuple) else (item, random.getrandbits(32))
        generator = torch.Generator().manual_seed(seed)
        label = self.folder.samples[index].label
        # one coin and one partner draw per sample whatever its label, so draws do not depend on the data
        coin = float(torch.rand(1, generator=generator))
        draw = int(torch.randint(len(self.paired) or 1, (1,), generator=generator))
        mix = label == 1 and self.mode != "none" and bool(self.paired) and coin < self.prob
        if not mix:
            got = self.folder[(index, seed)]
            patch_label = torch.full(self.grid, float(got.label))
            return dict(image=got.image, label=got.label, patch_label=patch_label, mixed=False, seed=seed,
                        unreadable=got.unreadable)
        partner = self.partner.get(index)
        got = self.folder[(self.paired[draw] if partner is None else partner, seed)]
        if got.recon is None:
            # the partner was unreadable and replaced by another file: keep that file as it is
            return dict(image=got.image, label=got.label, patch_label=torch.full(self.grid, float(got.label)),
                        mixed=False, seed=seed, unreadable=got.unreadable)
        if self.mode == "iclr":
            image, patch_label = randomized_patch_reconstruction(got.image[None], got.recon[None], self.ratio,
                                                                 self.patch, generator)
        else:
            image, patch_label = random_patch_replacement(got.recon[None], got.image[None], self.ratio, self.patch,
                                                          generator)
        return dict(image=image[0], label=1, patch_label=patch_label[0], mixed=True, seed=seed,
                    unreadable=got.unreadable)

    @staticmethod
    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"image": torch.stack([i["image"] for i in items]),
                "label": torch.tensor([i["label"] for i in items], dtype=torch.float32),
                "patch_label": torch.stack([i["patch_label"] for i in items]),
                "mixed": torch.tensor([i["mixed"] for i in items]),
                "seed": [i["seed"] for i in items],
                "unreadable": [u for i in items for u in i["unreadable"]]}


@torch.no_grad()
def score_images(detector: nn.Module, loader, accelerator=None, *, desc: str = "score",
                 device: Optional[torch.device] = None) -> dict[str, Any]:
    """P(fake) of every valid image of an evaluation loader (batches of
    :meth:`~vitzoo.aigi.data.AigiFolderDataset.collate`): ``scores``, ``labels``, ``generators``, ``paths`` (lists,
    gathered across processes when ``accelerator`` prepared the loader) and ``skipped`` (unreadable files)."""
    from tqdm.auto import tqdm

    detector.eval()
    device = device if device is not None else (accelerator.device if accelerator is not None else torch.device("cpu"))
    main = accelerator is None or accelerator.is_main_process
    rows: list[tuple[str, float, int, str]] = []
    skipped: set[int] = set()
    for batch in tqdm(loader, desc=desc, leave=False, disable=not main):
        logits = detector(batch["image"].to(device)).logit.float().sigmoid().cpu().tolist()
        for path, score, label, generator, valid in zip(batch["path"], logits, batch["label"].tolist(),
                                                        batch["generator"], batch["valid"].tolist()):
            if valid:
                rows.append((path, score, label, generator))
        skipped.update(batch["unreadable"])
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        rows = gather_object(rows)
        skipped = set().union(*gather_object([skipped]))
    # a sharded loader pads the last batch with repeats: one row per file
    rows = list(dict((row[0], row) for row in rows).values())
    if not rows:
        raise DatasetError(f"no readable evaluation images ({len(skipped)} unreadable)")
    paths, scores, labels, generators = (list(column) for column in zip(*rows))
    return {"paths": paths, "scores": scores, "labels": labels, "generators": generators, "skipped": len(skipped)}


class AIGIEngine(Engine):
    """A :class:`~vitzoo.aigi.PatchDetector` trained with PPL on a GenImage-style folder, scored per epoch."""

    kind = CHECKPOINT_KIND
    step_key = "epoch"
    decision_key = "auc"

    def default_experiment(self) -> str:
        return f"aigi-{self.args.backbone}-{self.args.img_size}"

    def build(self, trainer: Trainer, state: Optional[dict[str, Any]]) -> None:
        args, accelerator = self.args, trainer.accelerator
        root = aigi_data_root(args, accelerator)
        self.config = detector_config(args)
        # a resume loads the checkpoint's weights over these, and the backbone file may be gone by then
        detector = create_detector(self.config, seed=args.seed,
                                   pretrained_file=args.pretrained_backbone if state is None else None)
        if args.finetune == "lora" and not args.pretrained_backbone:
            _logger.warning("--finetune lora on a randomly initialised backbone: LoRA adapts pretrained weights; "
                            "pass --pretrained-backbone FILE or use --finetune full")
        size = int(detector.data_config["input_size"][-1])
        if size % detector.patch_size:
            raise ValueError(f"--img-size {size} is not a multiple of the backbone's patch size {detector.patch_size}")
        self.data_config = dict(detector.data_config)
        grid = (size // detector.patch_size,) * 2
        folder = AigiFolderDataset(root, args.train_split, generators=args.generators or None,
                                   transform=image_transform(self.data_config, train=True),
                                   min_side=detector.patch_size)
        self.train_set = RPRTrainSet(folder, patch=detector.patch_size, grid=grid, mode=args.rpr,
                                     prob=args.rpr_prob, ratio=args.rpr_ratio)
        self.collate_fn = RPRTrainSet.collate
        self.val_set = AigiFolderDataset(root, args.val_split, transform=image_transform(self.data_config, train=False),
                                         min_side=detector.patch_size, substitute=False)
        self.model = detector.to(accelerator.device)
        self._unreadable: set[int] = set()
        if args.model_ema:
            self.decision_key = "ema_auc"

    def configure_optimizer(self, trainer: Trainer) -> None:
        """timm optimizer over the trainable parameters and a per-update schedule, once the epoch length is known."""
        from torch.utils.data import DataLoader

        args = self.args
        self.optimizer, self.scheduler, self.num_epochs = per_update_optimizer(self.model, args,
                                                                               trainer.updates_per_epoch)
        loader = DataLoader(self.val_set, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                            collate_fn=self.val_set.collate)
        self.val_loader = trainer.accelerator.prepare(loader)
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        _logger.info("PPL detector on %s (%s, %.2f M params, %.2f M trainable), %d train / %d val images "
                     "(%d real with reconstructions), RPR %s, lr %.3g, %d epochs of %d updates", args.backbone,
                     args.finetune, sum(p.numel() for p in self.model.parameters()) / 1e6, trainable / 1e6,
                     len(self.train_set), len(self.val_set), len(self.train_set.paired), args.rpr, args.lr,
                     self.num_epochs, trainer.updates_per_epoch)

    def identity(self) -> dict[str, str]:
        return {"detector_config": json.dumps(self.config, sort_keys=True)}

    def metadata(self) -> dict[str, str]:
        return {"weights": "ema" if self.args.model_ema else "model",
                "data_config": json.dumps(_json_data_config(self.data_config))}

    def start_epoch(self, epoch: int) -> None:
        self._unreadable = set()

    def step(self, model, batch) -> StepResult:
        args, device = self.args, self.accelerator.device
        new = set(batch["unreadable"]) - self._unreadable
        self._unreadable |= new
        # the token subset of the contrastive term comes from the batch's sample seeds: exact on resume
        generator = torch.Generator().manual_seed(int(batch["seed"][0]))
        with self.accelerator.autocast():
            output = model(batch["image"].to(device))
            loss, terms = ppl_loss(output, batch["label"].to(device), batch["patch_label"].to(device), lam=args.lam,
                                   margin=args.margin, contrastive=args.contrastive, temperature=args.temperature,
                                   patch_probe_weight=args.patch_probe_weight, max_tokens=args.max_tokens,
                                   generator=generator)
        terms.pop("loss", None)
        terms["mixed"] = batch["mixed"].float().mean()
        return StepResult(loss=loss, samples=batch["image"].shape[0], terms=terms,
                          skipped=torch.tensor(float(len(new))))

    def _scored(self, trainer: Trainer) -> nn.Module:
        return trainer.ema.module if trainer.ema is not None else trainer.model

    def evaluate(self, trainer: Trainer, epoch: int) -> dict[str, float]:
        scored = score_images(self._scored(trainer), self.val_loader, trainer.accelerator, desc=f"eval {epoch + 1}")
        metrics = binary_metrics(scored["scores"], scored["labels"])
        metrics.pop("note", None)
        scores = torch.tensor(scored["scores"], dtype=torch.float64).clamp(1e-7, 1 - 1e-7)
        labels = torch.tensor(scored["labels"], dtype=torch.float64)
        metrics["val_loss"] = float(torch.nn.functional.binary_cross_entropy(scores, labels))
        metrics["acc_mean"] = (metrics["acc_real"] + metrics["acc_fake"]) / 2
        prefix = "ema_" if trainer.ema is not None else ""
        row = {f"{prefix}{k}": v for k, v in metrics.items()}
        row["skipped"] = scored["skipped"]
        return row

    def export_weights(self, trainer: Trainer) -> Optional[dict[str, torch.Tensor]]:
        return trainer.ema.module.state_dict() if trainer.ema is not None else None

    def finish(self, trainer: Trainer) -> Optional[Path]:
        """``<run>/detector.safetensors`` + ``detector.json``: the final weights (the EMA's with ``--model-ema``),
        LoRA merged."""
        detector = create_detector(self.config, seed=self.args.seed)
        detector.load_state_dict((trainer.ema.module if trainer.ema is not None else trainer.trainable).state_dict())
        return export_detector(detector, self.config, self.data_config, trainer.run_dir)


def _json_data_config(config: dict[str, Any]) -> dict[str, Any]:
    keys = ("input_size", "mean", "std", "interpolation", "crop_pct")
    return {k: (list(config[k]) if isinstance(config[k], tuple) else config[k]) for k in keys if k in config}


def export_detector(detector: PatchDetector, config: dict[str, Any], data_config: dict[str, Any],
                    directory: Union[str, Path]) -> Path:
    """Write ``detector.safetensors`` (LoRA merged into the backbone, so loading needs no peft) and
    ``detector.json`` (backbone, its kwargs, the fine-tuning it had, input size, normalisation) atomically;
    returns the JSON's path. ``detector`` is merged in place when it still has LoRA."""
    from safetensors.torch import save_file

    if not detector.is_merged:
        detector.merge_lora()
    directory = Path(directory)
    record = {"kind": CHECKPOINT_KIND, "format": 1, "merged": True, "patch_size": detector.patch_size,
              "data_config": _json_data_config(data_config), "detector_config": config}
    weights = {k: v.detach().contiguous().cpu() for k, v in detector.state_dict().items()}
    atomic_write(directory / EXPORT_WEIGHTS,
                 lambda tmp: save_file(weights, tmp, metadata={"kind": CHECKPOINT_KIND, "merged": "1",
                                                               "detector_config": json.dumps(config),
                                                               "data_config": json.dumps(record["data_config"])}))
    return atomic_write(directory / EXPORT_CONFIG,
                        lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))


class LoadedDetector:
    """A detector rebuilt from a run (:func:`load_detector`): ``detector`` (eval mode, LoRA merged),
    ``data_config`` (input size, mean, std), ``config`` (its :class:`PatchDetector` arguments) and ``source``."""

    def __init__(self, detector: PatchDetector, data_config: dict[str, Any], config: dict[str, Any], source: str):
        self.detector, self.data_config, self.config, self.source = detector, data_config, config, source

    @property
    def input_size(self) -> int:
        return int(self.data_config["input_size"][-1])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> the detector's normalised input."""
        mean = torch.tensor(self.data_config["mean"], dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.data_config["std"], dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std


def _weights_file(path: Path) -> Path:
    if path.is_dir():
        for name in (EXPORT_WEIGHTS, "best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"no {EXPORT_WEIGHTS}, best.safetensors or last.safetensors in {path}")
    if path.suffix == ".json" and path.with_name(EXPORT_WEIGHTS).is_file():
        return path.with_name(EXPORT_WEIGHTS)
    if not path.is_file():
        raise FileNotFoundError(f"detector {path} does not exist (expected a train_aigi run directory, its "
                                f"{EXPORT_WEIGHTS} or a best/last.safetensors)")
    return path


def load_detector(path: Union[str, Path], *, device: Union[str, torch.device] = "cpu") -> LoadedDetector:
    """Rebuild the detector of a ``train_aigi`` run directory (its exported ``detector.safetensors``, else
    ``best`` / ``last``), or of one of those files; LoRA is merged for inference."""
    from ..models._checkpoint import load_state_dict_checked, read_checkpoint, read_checkpoint_metadata

    file = _weights_file(Path(path))
    metadata = read_checkpoint_metadata(file)
    if metadata.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{file} is not a train_aigi detector (its kind is {metadata.get('kind')!r}, expected "
                         f"{CHECKPOINT_KIND!r})")
    config = json.loads(metadata["detector_config"])
    merged = metadata.get("merged") == "1"
    build = dict(config, finetune="frozen") if merged else config
    detector = create_detector(build, seed=0)
    load_state_dict_checked(detector, read_checkpoint(file), source=str(file))
    if not detector.is_merged:
        detector.merge_lora()
    detector.to(device).eval()
    return LoadedDetector(detector, json.loads(metadata["data_config"]), config, str(file))


def train_aigi(args: argparse.Namespace, *, on_update=None) -> TrainResult:
    """Train (or resume) a PPL detector from resolved flags (:func:`vitzoo.commands.train_aigi.parse_args`)."""
    return Trainer(AIGIEngine(check_aigi_args(args)), on_update=on_update).fit()
