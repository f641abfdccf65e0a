"""LiT, the linear diffusion transformer, as a diffusers model.

Paper: Wang et al., "LiT: Delving into a Simple Linear Diffusion Transformer for Image Generation",
ICCV 2025, arXiv:2501.12976. Origin: https://github.com/techmonsterwang/LiT (license not recorded; the
repository could not be obtained). Re-implemented: LiT keeps DiT's design (official DiT,
https://github.com/facebookresearch/DiT, CC BY-NC 4.0) and replaces every self-attention with the
few-head ReLU linear attention plus a 5x5 depthwise convolution on V (:class:`vitzoo.mixers.lit.LiTMixer`).
The attention is a reconstruction; ``../shared/specs/lit.md`` §0 and §2.3 list its open points.

    from vitzoo.diffusion.lit import LiTTransformer2DModel
    model = LiTTransformer2DModel.from_variant("XL/2", resolution=256)
    eps_v = model(latents, timestep, class_labels).sample          # [B, 8, 32, 32]: ε, then v

Weights of a pretrained DiT initialise a LiT through :func:`vitzoo.diffusion.inherit.inherit_from_dit`.
"""

from __future__ import annotations

# DiffusionPipeline.from_pretrained finds a custom component's loader by looking its base class up in the
# component's module, so ModelMixin must be a name here
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401

from .dit import DIT_VARIANTS, VzDiTTransformer2DModel

__all__ = ["LIT_VARIANTS", "LiTTransformer2DModel"]

# DiT's sizes with fewer heads ("few heads are a free lunch", spec §1.1): 2 for S/2 (paper ablation),
# 4 for L/2 and XL/2 (the authors' heads figure, XL/2 ablation); 3 for B/2 is the likely reading of that
# figure, not confirmed by the text.
LIT_VARIANTS: dict[str, dict[str, int]] = {
    name: dict(cfg, num_heads=heads) for (name, cfg), heads in zip(DIT_VARIANTS.items(), (2, 3, 4, 4))
}


class LiTTransformer2DModel(VzDiTTransformer2DModel, defaults=dict(num_heads=4, mixer="lit")):
    """LiT: DiT whose self-attention is LiT's linear attention (``mixer="lit"``).

    Same arguments and outputs as :class:`vitzoo.diffusion.dit.VzDiTTransformer2DModel`; the defaults are
    LiT-XL/2 at 256 px (4 heads). Published variants: ``from_variant("S/2" | "B/2" | "L/2" | "XL/2",
    resolution=256)`` and ``from_variant("XL/2", resolution=512)``.
    """

    VARIANTS = LIT_VARIANTS
