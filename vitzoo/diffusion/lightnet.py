"""LightNet as a diffusion backbone: DiT whose every self-attention is a LightNet attention (one scan).

Paper: Qin et al., "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet",
arXiv:2405.21022. The paper evaluates class-conditional image generation by plugging the LightNet attention into
DiT; its generation setup (sizes, FID table) could not be obtained (``../shared/specs/lightnet.md`` §0, §5), so this
is DiT's skeleton (adaLN-Zero blocks, sin-cos position table, learned variance; :mod:`vitzoo.diffusion.dit`) with
the ``lightnet`` mixer (:class:`vitzoo.mixers.lightnet.LightNetMixer`, the non-causal layout of spec §9) and the
paper's MD-LRPE on q and k in every block (``mixer_kwargs=dict(use_lrpe=True)``, paper §1). DiT's head counts are
kept. Everything else (the LiT pipeline, the diffusion training engine, the digits recipe) is shared with LiT:

    from vitzoo.diffusion.lightnet import LightNetTransformer2DModel
    model = LightNetTransformer2DModel.from_variant("S/2", resolution=256)
"""

from __future__ import annotations

# DiffusionPipeline.from_pretrained finds a custom component's loader by looking its base class up in the
# component's module, so ModelMixin must be a name here
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401

from .dit import VzDiTTransformer2DModel

__all__ = ["LightNetTransformer2DModel"]


class LightNetTransformer2DModel(VzDiTTransformer2DModel,
                                 defaults=dict(mixer="lightnet", mixer_kwargs=dict(use_lrpe=True))):
    """DiT with the ``lightnet`` mixer and MD-LRPE (``mixer_kwargs=dict(use_lrpe=True)``) in every block.

    Same arguments, variants (``from_variant("S/2" | "B/2" | "L/2" | "XL/2")``) and outputs as
    :class:`vitzoo.diffusion.dit.VzDiTTransformer2DModel`; ``mixer_kwargs=dict(use_lrpe=False)`` drops the relative
    encoding (the sin-cos table still gives positions).
    """
