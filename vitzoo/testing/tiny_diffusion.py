"""A tiny, randomly initialised Stable Diffusion pipeline built offline from configs in code.

It has every component of SD-1.5 at toy width: a UNet with cross-attention transformer blocks at the
full latent resolution (so LinFusion has ``attn1`` layers where the token count is largest), a
four-block ``AutoencoderKL`` (factor 8 and a mid-block attention, like SD; 4 channels at full
resolution, because at 16K the VAE's full-resolution layers dominate a CPU run), a two-layer CLIP
text encoder and a
character-level CLIP tokenizer whose vocabulary is written to a directory. Nothing is downloaded.
It serves the tests, the 16K CPU demonstration of ``vitzoo generate --pipeline linfusion --model
tiny-random`` and the resolution sweep; its images are noise, only shapes, memory and time mean
anything.

:func:`tiny_sdxl_components` / :func:`tiny_stable_diffusion_xl` do the same for SD-XL: two CLIP text
encoders (the second with a text projection, whose pooled output is SD-XL's ``text_embeds``), a UNet with
SD-XL's layout (no attention at full latent resolution, ``addition_embed_type="text_time"`` for the
size/crop micro-conditioning), the same VAE and SD-XL's Euler scheduler; ``vitzoo generate --pipeline
linfusion-xl --model tiny-random-xl`` runs it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import torch

__all__ = [
    "TINY_UNET_CONFIG",
    "TINY_VAE_CONFIG",
    "TINY_XL_UNET_CONFIG",
    "tiny_clip_tokenizer",
    "tiny_sdxl_components",
    "tiny_stable_diffusion",
    "tiny_stable_diffusion_xl",
]

TINY_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8,
)
TINY_VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(4, 8, 8, 8), layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=4,
    sample_size=512,
)

TINY_XL_TEXT_WIDTHS = (16, 16)  # hidden sizes of text_encoder and text_encoder_2 (SD-XL: 768 and 1280)
TINY_XL_PROJECTION_DIM = 16  # text_encoder_2's projection, the pooled text_embeds (SD-XL: 1280)
TINY_XL_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2), attention_head_dim=(2, 4), use_linear_projection=True,
    cross_attention_dim=sum(TINY_XL_TEXT_WIDTHS), addition_embed_type="text_time", addition_time_embed_dim=8,
    # six time ids (original size, crop corner, target size) x 8 + the pooled text embedding
    projection_class_embeddings_input_dim=6 * 8 + TINY_XL_PROJECTION_DIM, norm_num_groups=8,
)


def _byte_characters() -> list[str]:
    """GPT-2's reversible byte -> printable-character table, the alphabet of CLIP's BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def tiny_clip_tokenizer(directory: Union[str, os.PathLike], model_max_length: int = 16):
    """Write a character-level CLIP BPE vocabulary (514 tokens, no merges) to ``directory`` and load it.

    ``from_pretrained`` on the directory is used because transformers 5 ignores the 4.x file keywords.
    """
    from transformers import CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    characters = _byte_characters()
    vocab = {c: i for i, c in enumerate(characters)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(characters)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(str(directory), model_max_length=model_max_length, local_files_only=True)


def tiny_stable_diffusion(
        *,
        directory: Optional[Union[str, os.PathLike]] = None,
        seed: int = 0,
        unet_config: Optional[dict[str, Any]] = None,
        vae_config: Optional[dict[str, Any]] = None,
        prediction_type: str = "epsilon",
        pipeline_class: Optional[type] = None,
):
    """A tiny SD-1.5-shaped pipeline with random weights (``torch.manual_seed(seed)``).

    Args:
        directory: where the tokenizer vocabulary is written (a temporary directory when None).
        seed: seed of the weights.
        unet_config: overrides of :data:`TINY_UNET_CONFIG`.
        vae_config: overrides of :data:`TINY_VAE_CONFIG` (``sample_size`` sets the VAE tile size).
        prediction_type: ``"epsilon"`` (SD-1.5) or ``"v_prediction"`` (SD-2.1 768).
        pipeline_class: a diffusers pipeline class taking SD components (default ``StableDiffusionPipeline``).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _tokenizer(directory)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**TINY_UNET_CONFIG, **(unet_config or {})})
    vae = AutoencoderKL(**{**TINY_VAE_CONFIG, **(vae_config or {})})
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=unet.config.cross_attention_dim, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)
    pipeline_class = pipeline_class or StableDiffusionPipeline
    pipe = pipeline_class(vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tokenizer(directory: Optional[Union[str, os.PathLike]]):
    if directory is None:
        with tempfile.TemporaryDirectory() as tmp:
            return tiny_clip_tokenizer(tmp)
    return tiny_clip_tokenizer(directory)


def tiny_sdxl_components(
        *,
        directory: Optional[Union[str, os.PathLike]] = None,
        seed: int = 0,
        unet_config: Optional[dict[str, Any]] = None,
        vae_config: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The components of a tiny SD-XL pipeline with random weights (``torch.manual_seed(seed)``).

    Args:
        directory: where the tokenizer vocabulary is written (a temporary directory when None).
        seed: seed of the weights.
        unet_config: overrides of :data:`TINY_XL_UNET_CONFIG`.
        vae_config: overrides of :data:`TINY_VAE_CONFIG` (SD-XL's VAE scaling factor 0.13025 is set).
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = _tokenizer(directory)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**TINY_XL_UNET_CONFIG, **(unet_config or {})})
    vae = AutoencoderKL(**{**TINY_VAE_CONFIG, "scaling_factor": 0.13025, "force_upcast": True, **(vae_config or {})})

    def text_config(width: int, **extra: Any):
        return CLIPTextConfig(
            hidden_size=width, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length, hidden_act="gelu",
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, **extra)

    text_encoder = CLIPTextModel(text_config(TINY_XL_TEXT_WIDTHS[0]))
    text_encoder_2 = CLIPTextModelWithProjection(text_config(TINY_XL_TEXT_WIDTHS[1],
                                                             projection_dim=TINY_XL_PROJECTION_DIM))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return dict(vae=vae.eval(), text_encoder=text_encoder.eval(), text_encoder_2=text_encoder_2.eval(),
                tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet.eval(), scheduler=scheduler)


def tiny_stable_diffusion_xl(*, pipeline_class: Optional[type] = None, linfusion: bool = False, **kwargs: Any):
    """A tiny SD-XL pipeline (:func:`tiny_sdxl_components`; ``kwargs`` go there).

    Args:
        pipeline_class: a diffusers pipeline class taking SD-XL components (default ``StableDiffusionXLPipeline``).
        linfusion: mount fresh LinFusion modules in the LinFusion-XL layout (every ``attn1``, MLP width C / 16,
            as ``Yuanshi/LinFusion-XL``); the container is ``pipe.linfusion``.
    """
    from diffusers import StableDiffusionXLPipeline

    pipeline_class = pipeline_class or StableDiffusionXLPipeline
    pipe = pipeline_class(**tiny_sdxl_components(**kwargs), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    if linfusion:
        from ..diffusion.linfusion import LinFusion

        pipe.linfusion = LinFusion.construct_for(pipe, pretrained=False, mid_dim_scale=16)
    return pipe
