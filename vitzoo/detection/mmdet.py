"""vitzoo's hierarchical backbones in mmdet 3.x: importing this module registers them in
``mmdet.registry.MODELS`` under the official class names.

    custom_imports = dict(imports=['vitzoo.detection.mmdet'], allow_failed_imports=False)
    model = dict(backbone=dict(type='RAVLT', arch='s', out_indices=(0, 1, 2, 3),
                               init_cfg=dict(type='Pretrained', checkpoint='RAVLT_S.pth')))

``RAVLT`` and ``MALA`` (MAViT's official mmdet class), ``L2ViT``, and ``InLinePVT`` / ``InLineSwin`` /
``InLineCSWin``. The RALA repository's detection copy calls RAVLT ``GLTA``; vitzoo keeps the paper's name.
The InLine repository has no detection code: its classification classes are ``PyramidVisionTransformer``
(which mmdet already registers for PVT), ``InLineSwin`` and ``CSWinTransformer`` (the plain CSWin's name),
so the three carry InLine in their names. Each is an mmengine ``BaseModule`` wrapping the same
``features_only`` net as :func:`vitzoo.detection.build_detector` (:func:`~vitzoo.detection.create_features`:
per-stage output norms, no final norm or head), with the same frozen stages, ``norm_eval`` and padding.
Its parameters carry the vitzoo model's own names (``stem.*``, ``stages.*``, ``out_norms.*``), so a
detector checkpoint this adapter saves (``state_dict`` with ``backbone.`` / ``neck.`` / heads) reloads
into it, into ``build_detector(pretrained_backbone=...)`` and into ``timm.create_model(features_only=True)``.

Pretrained weights (``init_cfg=dict(type='Pretrained', checkpoint=...)``, or the legacy ``pretrained=``)
load in ``init_weights`` through vitzoo's one checkpoint path, not mmengine's loader: the family's
``checkpoint_filter_fn`` reads official classification files, official or vitzoo-trained mmdet files
(``backbone.`` keys kept) and vitzoo files, and the load is strict (a missing or unexpected key raises
:class:`~vitzoo.models.CheckpointError` naming it).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch

try:
    from mmdet.registry import MODELS
    from mmengine.logging import print_log
    from mmengine.model import BaseModule
except ImportError as err:
    raise ImportError("vitzoo.detection.mmdet needs mmdet 3.x with mmengine and mmcv (or mmcv-lite): "
                      "pip install 'vitzoo[detection]'") from err

from ..models import list_models
from .backbone import freeze_stages, hold_eval, pad_multiple, padded_features
from .features import create_features

__all__ = ["MMDET_BACKBONES", "RAVLT", "MALA", "L2ViT", "InLinePVT", "InLineSwin", "InLineCSWin"]

InitCfg = Union[dict, Sequence[dict], None]

# what mmengine's PretrainedInit takes; a prefix other than the detector's backbone cannot be honoured by
# vitzoo's loader, which keeps the 'backbone.' part of a detector checkpoint by itself
_PRETRAINED_KEYS = {"type", "checkpoint", "prefix", "map_location"}


def _checkpoint_file(init_cfg: InitCfg, pretrained: Optional[str]) -> Optional[str]:
    """The checkpoint named by ``init_cfg`` (type Pretrained) or the legacy ``pretrained``; None for none."""
    if pretrained is not None:
        if init_cfg:
            raise ValueError("give init_cfg=dict(type='Pretrained', checkpoint=...) or pretrained=..., not both")
        if not isinstance(pretrained, str):
            raise TypeError(f"pretrained must be a checkpoint path, got {type(pretrained).__name__}")
        return pretrained
    cfgs = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg or [])
    files = []
    for cfg in cfgs:
        if not isinstance(cfg, dict) or cfg.get("type") != "Pretrained":
            raise ValueError(f"vitzoo backbones take init_cfg=dict(type='Pretrained', checkpoint=...) only (their own "
                             f"initialisation is the official one); got {cfg!r}")
        if set(cfg) - _PRETRAINED_KEYS:
            raise ValueError(f"init_cfg keys {sorted(set(cfg) - _PRETRAINED_KEYS)} are not understood; "
                             f"use {sorted(_PRETRAINED_KEYS)}")
        if cfg.get("prefix") not in (None, "", "backbone."):
            raise ValueError(f"init_cfg prefix {cfg['prefix']!r}: vitzoo reads a whole classification or backbone "
                             "checkpoint, or the 'backbone.' part of a detector's; other prefixes are not supported")
        if not cfg.get("checkpoint"):
            raise ValueError(f"init_cfg {cfg!r} names no checkpoint file")
        files.append(str(cfg["checkpoint"]))
    if len(files) > 1:
        raise ValueError(f"init_cfg names {len(files)} checkpoints; give one")
    return files[0] if files else None


class _VitzooBackbone(BaseModule):
    """A vitzoo hierarchical backbone as an mmdet backbone: images [B, 3, H, W] -> tuple of NCHW maps,
    one per ``out_indices`` entry (strides 4, 8, 16, 32 for 0..3).

    Args:
        arch: the size, as in the family's vitzoo model names (``'t'`` for ``ravlt_t``, ``'tiny'`` for
            ``l2vit_tiny``); the official detection classes take the architecture numbers instead, which
            ``**kwargs`` still can (``embed_dims``, ``depths``, ``drop_path_rate``, ...).
        model_name: a full vitzoo model name of this family instead of ``arch``.
        out_indices: stages to return; each gets its output LayerNorm, as in the official backbones.
        frozen_stages: -1 for none, 0 the stem, k the stem and stages 0..k-1 (mmdet's meaning).
        norm_eval: keep every BatchNorm (stem, merges; ``SyncBatchNorm`` too) in eval mode in training.
            Default False: the official RAVLT/MALA ``norm_eval`` never reached their SyncBatchNorms and
            L²ViT has none, so the published models trained with batch statistics.
        pretrained: legacy form of ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``.
        init_cfg: ``dict(type='Pretrained', checkpoint=<file>)`` (``prefix='backbone.'`` allowed), loaded by
            :meth:`init_weights`; without it the weights are the official initialisation.
        **kwargs: more ``timm.create_model`` arguments of the vitzoo model (``drop_path_rate``, ``img_size``, ...).
    """

    #: prefix of the family's vitzoo model names
    family_prefix = ""

    def __init__(self, arch: Optional[str] = None, *, model_name: Optional[str] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1, norm_eval: bool = False,
                 pretrained: Optional[str] = None, init_cfg: InitCfg = None, **kwargs: Any):
        checkpoint = _checkpoint_file(init_cfg, pretrained)
        super().__init__(init_cfg=dict(type="Pretrained", checkpoint=checkpoint) if checkpoint else None)
        self.model_name = self._resolve(arch, model_name)
        self.out_indices = tuple(out_indices)
        self.backbone_kwargs = dict(kwargs)
        self.checkpoint = checkpoint
        features = create_features(self.model_name, self.out_indices, backbone_kwargs=self.backbone_kwargs)
        # the vitzoo model's children become this module's own, so its parameter names are the model's
        # (no wrapper prefix); the features net that calls them is kept unregistered
        self._features = [features]
        for name, child in features.model.named_children():
            self.add_module(name, child)
        self.reductions = tuple(features.feature_info.reduction())
        self.size_multiple = pad_multiple(features)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self._frozen = freeze_stages(features, frozen_stages)
        self.train()

    @classmethod
    def arches(cls) -> list[str]:
        """The ``arch`` values: the sizes of the family's registered vitzoo models."""
        return [name[len(cls.family_prefix):] for name in list_models() if name.startswith(cls.family_prefix)]

    def _resolve(self, arch: Optional[str], model_name: Optional[str]) -> str:
        kind = type(self).__name__
        if (arch is None) == (model_name is None):
            raise ValueError(f"{kind} needs one of arch= ({', '.join(map(repr, self.arches()))}) or model_name= "
                             f"(a vitzoo {self.family_prefix}* model)")
        if model_name is not None:
            if not model_name.startswith(self.family_prefix) or model_name[len(self.family_prefix):] not in self.arches():
                raise ValueError(f"{kind} builds the vitzoo {self.family_prefix}* models "
                                 f"({', '.join(self.family_prefix + a for a in self.arches())}), got {model_name!r}")
            return model_name
        if arch not in self.arches():
            raise ValueError(f"unknown {kind} arch {arch!r}; choose one of {', '.join(map(repr, self.arches()))}")
        return self.family_prefix + arch

    def init_weights(self) -> None:
        """Load ``init_cfg``'s checkpoint through vitzoo's checkpoint path (the family's filter, strict),
        or keep the official initialisation the model was built with."""
        if self.checkpoint is not None:
            loaded = create_features(self.model_name, self.out_indices, pretrained_backbone=self.checkpoint,
                                     backbone_kwargs=self.backbone_kwargs)
            self._features[0].load_state_dict(loaded.state_dict())
            print_log(f"{type(self).__name__}({self.model_name}): loaded {self.checkpoint} through vitzoo "
                      f"({len(loaded.state_dict())} tensors, no missing or unexpected keys)", logger="current")
        self._is_init = True

    def train(self, mode: bool = True) -> "_VitzooBackbone":
        """``nn.Module.train``, then frozen stages (and, with ``norm_eval``, every BatchNorm) back to eval."""
        super().train(mode)
        self._features[0].train(mode)
        hold_eval(self._features[0], self._frozen, self.norm_eval, mode)
        return self

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Images [B, C, H, W] (any size: padded to the largest stride, maps cropped back) -> maps."""
        return tuple(padded_features(self._features[0], images, self.size_multiple, self.reductions))


class RAVLT(_VitzooBackbone):
    """RAVLT (RALA, Fan et al., CVPR 2025; official mmdet class ``GLTA``): ``arch`` 't', 's', 'b', 'l'."""

    family_prefix = "ravlt_"


class MALA(_VitzooBackbone):
    """MAViT (MALA, Fan et al., arXiv:2507.00698; official mmdet class ``MALA``): ``arch`` 't', 's', 'b', 'l'."""

    family_prefix = "mavit_"


class L2ViT(_VitzooBackbone):
    """L²ViT (Zheng, arXiv:2501.16182; official mmdet class ``L2ViT``): ``arch`` 'tiny', 'small', 'base'."""

    family_prefix = "l2vit_"


class InLinePVT(_VitzooBackbone):
    """InLine-PVT (Han et al., NeurIPS 2024): ``arch`` 'tiny', 'small', 'medium', 'large'."""

    family_prefix = "inline_pvt_"


class InLineSwin(_VitzooBackbone):
    """InLine-Swin (Han et al., NeurIPS 2024): ``arch`` 'tiny', 'small', 'base'."""

    family_prefix = "inline_swin_"


class InLineCSWin(_VitzooBackbone):
    """InLine-CSwin (Han et al., NeurIPS 2024): ``arch`` 'tiny', 'small', 'base'."""

    family_prefix = "inline_cswin_"


MMDET_BACKBONES = (RAVLT, MALA, L2ViT, InLinePVT, InLineSwin, InLineCSWin)

for _cls in MMDET_BACKBONES:
    _existing = MODELS.module_dict.get(_cls.__name__)
    if _existing is not None and _existing.__module__ != __name__:
        raise RuntimeError(f"mmdet's MODELS already holds a {_cls.__name__!r} from {_existing.__module__}; "
                           "vitzoo will not replace it")
    MODELS.register_module(module=_cls, force=True)
