"""Building vitzoo models through timm, with official checkpoint files loaded the vitzoo way.

Every family's ``_create_<family>`` calls :func:`build_vitzoo_model`. With
``pretrained=True, pretrained_cfg_overlay=dict(file=...)`` the file is read by
:func:`~vitzoo.models._checkpoint.read_checkpoint` (no code from the file runs), the family chooses
which weights in the container its official evaluation used (``weight_keys``), its
``checkpoint_filter_fn`` maps the keys, and the load is strict with errors naming the keys. timm's
own loader would pick ``model_ema`` over ``model`` before the filter could choose.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from timm.models import build_model_with_cfg
from timm.models._builder import resolve_pretrained_cfg

from ._checkpoint import DEFAULT_WEIGHT_KEYS, load_pretrained_file
from ._facts import paper_facts
from ._helpers import check_image_size

__all__ = ["build_vitzoo_model", "make_cfg", "PretrainedWeightsError"]


class PretrainedWeightsError(ValueError):
    """``pretrained=True`` without a weight source vitzoo can read."""


def make_cfg(**kwargs: Any) -> dict[str, Any]:
    """A timm pretrained-cfg dict with vitzoo's defaults (ImageNet mean/std, bicubic, crop 0.875).
    Paper figures and official checkpoint names are not cfg fields: they live in the family's
    ``PAPER_FACTS`` table (:mod:`vitzoo.models._facts`)."""
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "license": "unknown",
        **kwargs,
    }


def build_vitzoo_model(
        model_cls: Callable[..., Any],
        variant: str,
        pretrained: bool = False,
        *,
        checkpoint_filter_fn: Optional[Callable] = None,
        weight_keys: Iterable[str] = DEFAULT_WEIGHT_KEYS,
        feature_cfg: Optional[dict] = None,
        **kwargs: Any,
):
    """``timm.models.build_model_with_cfg`` plus vitzoo's handling of local checkpoint files.

    Args:
        model_cls: the family's model class.
        variant: the registered architecture name.
        pretrained: load weights from ``pretrained_cfg_overlay=dict(file=...)`` (or a cfg URL / hub id).
        checkpoint_filter_fn: maps official keys to vitzoo's; idempotent on vitzoo weights.
        weight_keys: container keys to try, in order (``"model_ema"`` first where the official
            evaluation used EMA weights).
        feature_cfg: timm feature config (``out_indices``, ``feature_cls``).
    """
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    pretrained_cfg = kwargs.pop("pretrained_cfg", None)
    feature_cfg = dict(feature_cfg or {})
    if kwargs.get("img_size") is not None and "input_size" not in overlay:
        # the cfg reports the size the model is built for (timm's data config reads it); channels stay the
        # weights' own, which the loader compares with in_chans
        height, width = check_image_size(kwargs["img_size"], model=variant)
        channels = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg,
                                          pretrained_cfg_overlay=overlay).input_size[0]
        overlay["input_size"] = (channels, height, width)
    file = overlay.get("file") if pretrained else None
    if pretrained and not file:
        resolved = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay)
        if not (resolved.url or resolved.hf_hub_id or resolved.state_dict):
            facts = paper_facts(f"{variant}.{resolved.tag}") if resolved.tag else None
            where = ""
            if facts is not None and facts.checkpoint_name:
                where = f" (official checkpoint {facts.checkpoint_name}"
                where += f" from {facts.checkpoint_url})" if facts.checkpoint_url else ")"
            raise PretrainedWeightsError(
                f"{variant} has no downloadable weights; pass a local file with "
                f"pretrained_cfg_overlay=dict(file='...'){where}"
            )
    if file:
        resolved = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay).to_dict()

        def construct(**model_kwargs):
            model = model_cls(**model_kwargs)
            load_pretrained_file(
                model, file, pretrained_cfg=resolved, filter_fn=checkpoint_filter_fn,
                weight_keys=weight_keys, in_chans=model_kwargs.get("in_chans", 3),
            )
            return model

        return build_model_with_cfg(
            construct, variant, False, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay,
            feature_cfg=feature_cfg, **kwargs,
        )
    return build_model_with_cfg(
        model_cls, variant, pretrained, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay,
        pretrained_filter_fn=checkpoint_filter_fn, feature_cfg=feature_cfg, **kwargs,
    )
