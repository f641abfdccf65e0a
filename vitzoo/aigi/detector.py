"""The PPL detector: any ViT-style backbone that exposes patch tokens, an image-level head and an optional
patch probe, with LoRA / partial / full / frozen fine-tuning of the backbone.

Panoptic Patch Learning (Yang, Chen et al., "All Patches Matter, More Patches Better: Enhance AI-Generated
Image Detection via Panoptic Patch Learning", arXiv:2504.01396, ICLR 2026). No official code exists
(``../shared/specs/ppl.md`` §0); this is re-implemented from the paper's description.

What the paper has (spec §3.1): a LoRA-tuned CLIP or DINOv2 ViT/14, a linear head on the image embedding
giving one logit trained with BCE, and the last block's patch tokens used only by the patch contrastive loss.
What vitzoo adds (spec §6, an extension): ``patch_logit``, a linear probe on every patch token trained with
BCE on the patch labels of randomized patch reconstruction, which gives a heatmap in one forward pass.

LoRA comes from ``peft`` (``LoraModel`` injected into the backbone in place, merged with peft's
``merge_and_unload``); the LoRA rank, alpha and target modules of the paper are unknown (spec §3.1), so the
defaults here (rank 8, alpha 16, every ``nn.Linear`` inside each block's token mixer) are vitzoo's choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import timm
import torch
from timm.data import resolve_data_config
from torch import nn

__all__ = ["DEFAULT_LORA_TARGETS", "DetectorOutput", "FINETUNE_MODES", "PatchDetector", "resolve_lora_targets"]

FINETUNE_MODES = ("lora", "partial", "full", "frozen")

# every nn.Linear inside a block's token mixer: timm ViT/CLIP/DINOv2 `attn.qkv`, `attn.proj`; vzvit mixers
# name theirs differently (`qkvo`, `q_proj`/`o_proj`, `to_q`, `output_gate.0`), so match the mixer, not the names
DEFAULT_LORA_TARGETS = (r"(^|\.)blocks\.\d+\.attn\.",)

SUPPORTED = ("plain ViT-style backbones with patch tokens: vitzoo vzvit_* and inline_deit_*, timm vit_* "
             "(including the CLIP and DINOv2 ViTs)")


@dataclass
class DetectorOutput:
    """What :class:`PatchDetector` returns.

    Attributes:
        logit: image-level logit [B] (the paper's head); ``sigmoid(logit)`` = P(AI-generated).
        image_embed: the embedding the head reads [B, D]: the cls token, or the mean of the patch tokens
            when the backbone has none.
        patch_embed: the last block's patch tokens after the backbone's final norm [B, h, w, D]; the paper's
            patch contrastive loss (spec §3.3) reads them.
        patch_logit: the patch probe's logits [B, h, w] (spec §6, an extension not in the paper), or None
            when the detector was built with ``patch_head=False``.
    """

    logit: torch.Tensor
    image_embed: torch.Tensor
    patch_embed: torch.Tensor
    patch_logit: Optional[torch.Tensor] = None


def _build_backbone(backbone: Union[str, nn.Module], pretrained_file: Optional[str],
                    backbone_kwargs: Optional[dict[str, Any]]) -> nn.Module:
    if isinstance(backbone, nn.Module):
        if pretrained_file is not None or backbone_kwargs:
            raise ValueError("pretrained_file and backbone_kwargs apply to a backbone given by name, not to a module")
        return backbone
    kwargs = dict(backbone_kwargs or {})
    if pretrained_file is not None:
        if not Path(pretrained_file).is_file():
            raise FileNotFoundError(f"pretrained_file {pretrained_file!r} does not exist (weights are read from a "
                                    "local file only, never downloaded)")
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained_file)))
    try:
        return timm.create_model(backbone, num_classes=0, **kwargs)
    except TypeError as err:
        raise ValueError(f"backbone {backbone!r} cannot be built with {', '.join(sorted(kwargs)) or 'no arguments'} "
                         f"({err}); supported: {SUPPORTED}") from err


def _patch_size(backbone: nn.Module) -> int:
    """The backbone's square patch side, or a ValueError naming the supported backbones."""
    patch_embed = getattr(backbone, "patch_embed", None)
    size = getattr(patch_embed, "patch_size", None)
    if (size is None or not hasattr(backbone, "num_prefix_tokens") or not hasattr(backbone, "blocks")
            or not hasattr(backbone, "forward_features")):
        raise ValueError(f"{type(backbone).__name__} exposes no patch tokens (it needs patch_embed.patch_size, "
                         f"num_prefix_tokens, blocks and forward_features); supported: {SUPPORTED}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    if size[0] != size[1]:
        raise ValueError(f"only square patches are supported, got patch size {size}")
    return int(size[0])


def resolve_lora_targets(backbone: nn.Module, patterns: Optional[Sequence[str]] = None) -> list[str]:
    """Full names of the ``nn.Linear`` modules of ``backbone`` that any regex in ``patterns`` finds
    (``re.search``; default :data:`DEFAULT_LORA_TARGETS`); a ValueError when none match."""
    patterns = tuple(DEFAULT_LORA_TARGETS if patterns is None else patterns)
    linears = [name for name, module in backbone.named_modules() if isinstance(module, nn.Linear)]
    found = [name for name in linears if any(re.search(pattern, name) for pattern in patterns)]
    if not found:
        sample = ", ".join(linears[:8]) or "none"
        raise ValueError(f"no nn.Linear of {type(backbone).__name__} matches the LoRA target patterns {patterns}; "
                         f"its Linear modules include: {sample}")
    return found


class PatchDetector(nn.Module):
    """Binary AI-generated-image detector on a patch-token backbone (PPL, spec §3.1 and §6).

    Args:
        backbone: a timm / vitzoo model name (built with ``timm.create_model(name, num_classes=0,
            **backbone_kwargs)``) or a module with the timm ViT contract (``forward_features`` -> [B, prefix +
            h*w, D], ``num_prefix_tokens``, ``patch_embed.patch_size``, ``blocks``).
        pretrained_file: local weights for a named backbone, read through timm's
            ``pretrained=True, pretrained_cfg_overlay=dict(file=...)`` (vitzoo families convert official files).
        backbone_kwargs: keyword arguments for ``timm.create_model`` (``img_size``, ``dynamic_img_size``, ...).
        finetune: ``"lora"`` (peft LoRA in the backbone, the paper's setting), ``"partial"`` (the last
            ``partial_blocks`` blocks and the final norm), ``"full"`` or ``"frozen"`` (heads only, a linear probe
            as UniversalFakeDetect). The heads always train.
        lora_rank, lora_alpha, lora_dropout: peft ``LoraConfig`` ``r``, ``lora_alpha``, ``lora_dropout``.
        lora_targets: regexes searched in the full names of the backbone's ``nn.Linear`` modules; default
            :data:`DEFAULT_LORA_TARGETS` (every Linear of every block's token mixer).
        partial_blocks: how many of the last blocks train with ``finetune="partial"``.
        patch_head: add the patch probe (``patch_logit``, spec §6 extension).
    """

    def __init__(
            self,
            backbone: Union[str, nn.Module],
            *,
            pretrained_file: Optional[str] = None,
            backbone_kwargs: Optional[dict[str, Any]] = None,
            finetune: str = "lora",
            lora_rank: int = 8,
            lora_alpha: float = 16,
            lora_dropout: float = 0.0,
            lora_targets: Optional[Sequence[str]] = None,
            partial_blocks: int = 1,
            patch_head: bool = True,
    ):
        super().__init__()
        if finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {finetune!r}")
        self.backbone = _build_backbone(backbone, pretrained_file, backbone_kwargs)
        self.patch_size = _patch_size(self.backbone)
        self.num_prefix_tokens = int(self.backbone.num_prefix_tokens)
        self.has_cls_token = getattr(self.backbone, "cls_token", None) is not None
        proj = getattr(self.backbone.patch_embed, "proj", None)
        self.in_chans = int(getattr(proj, "in_channels", getattr(self.backbone, "in_chans", 3)))
        self.embed_dim = int(getattr(self.backbone, "num_features", 0) or getattr(self.backbone, "embed_dim"))
        self.data_config = self._data_config()
        self.finetune = finetune
        self.lora_targets: list[str] = []
        # the peft tuner wraps self.backbone in place; kept outside the module tree so the state dict has no
        # second copy of the backbone, and used only to merge
        self._lora_tuner = None
        self._set_finetune(finetune, lora_rank, lora_alpha, lora_dropout, lora_targets, partial_blocks)
        self.head = nn.Linear(self.embed_dim, 1)
        self.patch_head = nn.Linear(self.embed_dim, 1) if patch_head else None

    def _data_config(self) -> dict[str, Any]:
        """timm's data config (mean, std, interpolation, crop) with the input size the backbone was built for."""
        config = resolve_data_config({}, model=self.backbone)
        img_size = getattr(self.backbone.patch_embed, "img_size", None)
        if img_size is not None:
            config["input_size"] = (self.in_chans, *tuple(img_size))
        return config

    def _set_finetune(self, finetune: str, lora_rank: int, lora_alpha: float, lora_dropout: float,
                      lora_targets: Optional[Sequence[str]], partial_blocks: int) -> None:
        backbone = self.backbone
        if finetune == "full":
            backbone.requires_grad_(True)
            return
        backbone.requires_grad_(False)
        if finetune == "partial":
            depth = len(backbone.blocks)
            if not 1 <= partial_blocks <= depth:
                raise ValueError(f"partial_blocks must be in 1..{depth} for a {depth}-block backbone, "
                                 f"got {partial_blocks}")
            backbone.blocks[depth - partial_blocks:].requires_grad_(True)
            if isinstance(getattr(backbone, "norm", None), nn.Module):
                backbone.norm.requires_grad_(True)
        elif finetune == "lora":
            try:
                from peft import LoraConfig
                from peft.tuners.lora import LoraModel
            except ImportError as error:
                raise ImportError("finetune='lora' needs peft: pip install 'vitzoo[aigi]'") from error
            self.lora_targets = resolve_lora_targets(backbone, lora_targets)
            config = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                target_modules=self.lora_targets, bias="none")
            # plain attribute, not a submodule: LoraModel wraps the same backbone
            object.__setattr__(self, "_lora_tuner", LoraModel(backbone, config, "default"))

    @property
    def is_merged(self) -> bool:
        """True after :meth:`merge_lora` (or for a detector that never had LoRA)."""
        return self._lora_tuner is None

    def merge_lora(self) -> "PatchDetector":
        """Fold the LoRA weights into the backbone (peft's ``merge_and_unload``) for inference.

        The backbone gets back plain ``nn.Linear`` layers and its original state-dict keys, so outputs are
        unchanged and the forward costs what the base model costs; LoRA can no longer train or be saved apart.
        Load a trained :meth:`trainable_state_dict` before merging.
        """
        if self._lora_tuner is None:
            raise RuntimeError("this detector has no unmerged LoRA (finetune is not 'lora', or it was merged)")
        self.backbone = self._lora_tuner.merge_and_unload()
        self._lora_tuner = None
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The entries of :meth:`state_dict` that train: LoRA weights and heads (plus the tuned blocks with
        ``finetune="partial"``, everything with ``"full"``); what a fine-tuning checkpoint needs to store."""
        names = {name for name, param in self.named_parameters() if param.requires_grad}
        return {key: value for key, value in self.state_dict().items() if key in names}

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` saved into a detector built the same way."""
        expected = set(self.trainable_state_dict())
        unexpected, missing = set(state_dict) - expected, expected - set(state_dict)
        if unexpected or missing:
            raise ValueError(f"state dict does not fit this detector: {len(missing)} missing "
                             f"({sorted(missing)[:3]}...), {len(unexpected)} unexpected ({sorted(unexpected)[:3]}...)")
        self.load_state_dict(state_dict, strict=False)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Gradient checkpointing of the backbone's blocks (timm's switch)."""
        self.backbone.set_grad_checkpointing(enable)

    def grid_size(self, images: torch.Tensor) -> tuple[int, int]:
        """The patch grid (h, w) of ``images`` [B, C, H, W]; a ValueError for input the backbone cannot take."""
        if images.ndim != 4:
            raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
        channels, height, width = images.shape[1:]
        if channels != self.in_chans:
            raise ValueError(f"expected {self.in_chans}-channel images, got {channels} channels "
                             "(convert grayscale / RGBA / CMYK to RGB first)")
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}")
        patch_embed = self.backbone.patch_embed
        fixed = getattr(patch_embed, "img_size", None)
        if getattr(patch_embed, "strict_img_size", False) and fixed is not None and (height, width) != tuple(fixed):
            raise ValueError(f"this backbone takes only {fixed[0]}x{fixed[1]} images, got {height}x{width}; build it "
                             "with backbone_kwargs=dict(dynamic_img_size=True) for other sizes")
        return height // self.patch_size, width // self.patch_size

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        """Detect. ``images``: [B, C, H, W] normalised with :attr:`data_config` (mean / std); H and W are
        multiples of the patch size."""
        height, width = self.grid_size(images)
        tokens = self.backbone.forward_features(images)
        expected = self.num_prefix_tokens + height * width
        if tokens.ndim != 3 or tokens.shape[1] != expected:
            raise ValueError(f"the backbone returned features of shape {tuple(tokens.shape)}, expected [B, "
                             f"{expected}, D] ({self.num_prefix_tokens} prefix + {height}x{width} patch tokens); "
                             f"supported: {SUPPORTED}")
        patches = tokens[:, self.num_prefix_tokens:]
        image_embed = tokens[:, 0] if self.has_cls_token else patches.mean(dim=1)
        patch_embed = patches.reshape(tokens.shape[0], height, width, tokens.shape[-1])
        patch_logit = self.patch_head(patch_embed).squeeze(-1) if self.patch_head is not None else None
        return DetectorOutput(logit=self.head(image_embed).squeeze(-1), image_embed=image_embed,
                              patch_embed=patch_embed, patch_logit=patch_logit)
