"""Class-conditional image generation with LiT (or its DiT twin), a diffusers ``DiffusionPipeline``.

Paper: Wang et al., "LiT: Delving into a Simple Linear Diffusion Transformer for Image Generation",
arXiv:2501.12976; sampling follows DiT (Peebles and Xie, arXiv:2212.09748, https://github.com/facebookresearch/DiT,
CC BY-NC 4.0): 250-step DDPM with the learned variance, classifier-free guidance as the official
``forward_with_cfg`` does it (:func:`classifier_free_guidance`: the first 3 latent channels unless the model's
``guidance_channels`` says otherwise), latents divided by the VAE's scaling factor (0.18215 for SD's VAE)
before decoding. Re-implemented on the skeleton of diffusers' ``DiTPipeline``.

    from vitzoo.diffusion.pipelines import LiTPipeline, ddpm_scheduler
    pipe = LiTPipeline(transformer=lit, vae=vae, scheduler=ddpm_scheduler())
    images = pipe(["golden retriever", 207], guidance_scale=4.0, generator=torch.manual_seed(0)).images

Any diffusers scheduler works; DPM-Solver (``DPMSolverMultistepScheduler``, 20-25 steps) is the fast choice.
Without a VAE the pipeline works in pixel space (the transformer's channels are image channels in [-1, 1]).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline
from diffusers.schedulers import DDPMParallelScheduler, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..dit import VzDiTTransformer2DModel
from ..gaussian_diffusion import BETA_SCHEDULE
# from_pretrained resolves a saved component by its module, which must be imported: load the LiT and LightNet
# modules too
from ..lightnet import LightNetTransformer2DModel  # noqa: F401
from ..lit import LiTTransformer2DModel

__all__ = ["LiTPipeline", "LiTPipelineOutput", "classifier_free_guidance", "ddpm_scheduler"]

# schedulers whose ``step`` reads the variance channels of a learned-sigma output
_LEARNED_VARIANCE_SCHEDULERS = (DDPMScheduler, DDPMParallelScheduler)


def ddpm_scheduler(**overrides: Any) -> DDPMScheduler:
    """DiT's sampler as a diffusers scheduler: the training β schedule (:data:`~vitzoo.diffusion.gaussian_diffusion.
    BETA_SCHEDULE`, 1000 linear betas from 1e-4 to 0.02), the learned-range variance from the model, no x0
    clipping, and DiT's even spacing of the respaced steps (``linspace``)."""
    config = dict(BETA_SCHEDULE, variance_type="learned_range", clip_sample=False, timestep_spacing="linspace")
    return DDPMScheduler(**dict(config, **overrides))


def classifier_free_guidance(model_output: torch.Tensor, guidance_scale: float, *, eps_channels: int,
                             guidance_channels: Optional[int]) -> torch.Tensor:
    """DiT's guidance rule on a model output over the batch [conditional half; unconditional half].

    ``ε = ε_u + s·(ε_c − ε_u)`` on the first ``guidance_channels`` channels; the other channels (the rest of
    ε and all of v) are the conditional half's. The official DiT guides 3 channels.

    Args:
        model_output: [2B, C_out, H, W], conditional rows first.
        guidance_scale: s.
        eps_channels: the leading channels that hold ε (the latent channels); guidance never reaches past them.
        guidance_channels: leading channels to guide, capped at ``eps_channels``; None guides all of ε.

    Returns:
        the guided output of the conditional half [B, C_out, H, W].
    """
    if model_output.shape[0] % 2:
        raise ValueError(f"guidance needs an even batch [cond; uncond], got {model_output.shape[0]}")
    if guidance_channels is not None and guidance_channels < 1:
        raise ValueError(f"guidance_channels must be a positive count or None (all channels), got {guidance_channels}")
    # deliberately differs from the official slice for models with fewer than 3 channels: ε only, never v
    channels = eps_channels if guidance_channels is None else min(guidance_channels, eps_channels)
    cond, uncond = model_output.chunk(2)
    guided = uncond[:, :channels] + guidance_scale * (cond[:, :channels] - uncond[:, :channels])
    return torch.cat([guided, cond[:, channels:]], dim=1)


@dataclass
class LiTPipelineOutput(BaseOutput):
    """``images``: PIL images, a numpy array [B, H, W, C] or a tensor [B, C, H, W] in [0, 1] (latents for
    ``output_type="latent"``); ``class_labels``: the class id of each image."""

    images: Union[list[PIL.Image.Image], np.ndarray, torch.Tensor]
    class_labels: list[int]


class LiTPipeline(DiffusionPipeline):
    """Class labels (ids or names) -> images with a class-conditional LiT/DiT.

    Args:
        transformer: a :class:`~vitzoo.diffusion.lit.LiTTransformer2DModel` or its DiT twin.
        scheduler: any diffusers scheduler; :func:`ddpm_scheduler` is the paper's.
        vae: the autoencoder whose latents the transformer denoises; None for a pixel-space model.
        id2label: class id -> name(s), comma-separated synonyms allowed (``{"207": "golden retriever"}``).
            None with 1000 classes uses timm's ImageNet class names.
    """

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
            self,
            transformer: Union[LiTTransformer2DModel, VzDiTTransformer2DModel],
            scheduler: SchedulerMixin,
            vae: Optional[AutoencoderKL] = None,
            id2label: Optional[dict[Union[int, str], str]] = None,
    ):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae)
        id2label = {str(k): v for k, v in id2label.items()} if id2label else None
        self.register_to_config(id2label=id2label)
        self.labels = self._label_index(id2label)

    @property
    def vae_scale_factor(self) -> int:
        vae = getattr(self, "vae", None)
        return 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1

    def _label_index(self, id2label: Optional[dict[str, str]]) -> dict[str, int]:
        if id2label is None and self.transformer.config.num_classes == 1000:
            from timm.data import ImageNetInfo

            info = ImageNetInfo()
            id2label = {str(i): info.index_to_description(i) for i in range(1000)}
        labels = {}
        for key, names in (id2label or {}).items():
            for name in names.split(","):
                labels.setdefault(name.strip().lower(), int(key))
        return dict(sorted(labels.items()))

    def get_label_ids(self, labels: Union[str, int, Sequence[Union[str, int]]]) -> list[int]:
        """Class ids of ``labels``: ints, digit strings, or names (any comma-separated synonym, case-insensitive)."""
        labels = [labels] if isinstance(labels, (str, int)) else list(labels)
        ids = []
        for label in labels:
            if isinstance(label, (int, np.integer)) or (isinstance(label, str) and label.strip().isdigit()):
                ids.append(int(label))
            elif isinstance(label, str) and label.strip().lower() in self.labels:
                ids.append(self.labels[label.strip().lower()])
            else:
                known = ", ".join(list(self.labels)[:8]) or "none (pass id2label)"
                raise ValueError(f"unknown class label {label!r}; use a class id or one of the names ({known}, ...)")
        return ids

    def check_inputs(self, class_ids: list[int], guidance_scale: float, height: int, width: int,
                     callback_on_step_end_tensor_inputs: Sequence[str]) -> None:
        config = self.transformer.config
        if not class_ids:
            raise ValueError("give at least one class label")
        bad = [c for c in class_ids if not 0 <= c < config.num_classes]
        if bad:
            raise ValueError(f"class ids must lie in [0, {config.num_classes}), got {bad}")
        multiple = self.vae_scale_factor * config.patch_size
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple} (VAE factor x patch size), "
                             f"got {height}x{width}")
        if guidance_scale > 1 and self.transformer.null_class_id is None:
            raise ValueError("guidance_scale > 1 needs a model trained with label dropout (a null class)")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs may name {self._callback_tensor_inputs}, got {unknown}")
        # a config keeps keys its class ignores (DDIM built from DDPM's config): only ask schedulers that read it
        reads_variance = "variance_type" in inspect.signature(type(self.scheduler).__init__).parameters
        variance_type = getattr(self.scheduler.config, "variance_type", None) if reads_variance else None
        if (variance_type in ("learned", "learned_range") and config.learn_sigma
                and not isinstance(self.scheduler, _LEARNED_VARIANCE_SCHEDULERS)):
            # DPM-Solver with a learned variance slices the first 3 channels of the output, wrong for 4-channel latents
            scheduler = type(self.scheduler).__name__
            raise ValueError(
                f"{scheduler} with variance_type={variance_type!r} would read the variance channels itself; build it "
                f"with variance_type=None ({scheduler}.from_config(pipe.scheduler.config, variance_type=None)): "
                "LiTPipeline hands it the noise prediction")

    def prepare_latents(self, batch: int, height: int, width: int, dtype: torch.dtype, device: torch.device,
                        generator: Union[torch.Generator, list[torch.Generator], None],
                        latents: Optional[torch.Tensor] = None) -> torch.Tensor:
        factor = self.vae_scale_factor
        shape = (batch, self.transformer.config.in_channels, height // factor, width // factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        return latents.to(device, dtype) * self.scheduler.init_noise_sigma

    def _scheduler_input(self, model_output: torch.Tensor) -> torch.Tensor:
        """The full [ε, v] output for DDPM with learned variance, the noise prediction for every other scheduler."""
        if not self.transformer.config.learn_sigma:
            return model_output
        if isinstance(self.scheduler, _LEARNED_VARIANCE_SCHEDULERS) and self.scheduler.config.variance_type in (
                "learned", "learned_range"):
            return model_output
        return model_output[:, : self.transformer.config.in_channels]

    def _step_kwargs(self, generator: Any) -> dict[str, Any]:
        accepted = inspect.signature(self.scheduler.step).parameters
        return {"generator": generator} if "generator" in accepted else {}

    @torch.no_grad()
    def __call__(
            self,
            class_labels: Union[str, int, Sequence[Union[str, int]]],
            guidance_scale: float = 4.0,
            num_inference_steps: int = 250,
            height: Optional[int] = None,
            width: Optional[int] = None,
            generator: Union[torch.Generator, list[torch.Generator], None] = None,
            latents: Optional[torch.Tensor] = None,
            output_type: str = "pil",
            return_dict: bool = True,
            callback_on_step_end: Optional[Callable[[DiffusionPipeline, int, Any, dict], dict]] = None,
            callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> Union[LiTPipelineOutput, tuple]:
        """Generate one image per class label.

        Args:
            class_labels: class ids and/or names (see :meth:`get_label_ids`), one image each.
            guidance_scale: classifier-free guidance scale s; s <= 1 disables guidance. DiT's defaults are 4.0
                for visual samples and 1.5 for FID.
            num_inference_steps: denoising steps (250 with DDPM as in the paper; ~25 with DPM-Solver).
            height, width: image size in pixels; default ``sample_size`` x the VAE factor. Other sizes work
                (the position table is recomputed), with the quality a model trained at one size gives.
            generator: torch generator(s) for reproducible sampling.
            latents: initial noise [B, C, h, w] instead of drawing it.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict: return a :class:`LiTPipelineOutput` rather than a tuple.
            callback_on_step_end: ``f(pipe, step, timestep, tensors) -> dict`` called after every step with the
                tensors named in ``callback_on_step_end_tensor_inputs``; a returned ``"latents"`` replaces them.
            callback_on_step_end_tensor_inputs: which tensors the callback receives.

        Returns:
            :class:`LiTPipelineOutput`, or ``(images, class_ids)`` when ``return_dict`` is False.
        """
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")
        config = self.transformer.config
        height = height or config.sample_size * self.vae_scale_factor
        width = width or config.sample_size * self.vae_scale_factor
        class_ids = self.get_label_ids(class_labels)
        self.check_inputs(class_ids, guidance_scale, height, width, callback_on_step_end_tensor_inputs)
        device, batch = self._execution_device, len(class_ids)
        do_guidance = guidance_scale > 1
        labels = torch.tensor(class_ids, device=device)
        if do_guidance:
            labels = torch.cat([labels, torch.full_like(labels, self.transformer.null_class_id)])
        latents = self.prepare_latents(batch, height, width, self.transformer.dtype, device, generator, latents)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        step_kwargs = self._step_kwargs(generator)

        with self.progress_bar(total=len(timesteps)) as progress:
            for i, t in enumerate(timesteps):
                model_input = torch.cat([latents, latents]) if do_guidance else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                t_batch = torch.as_tensor(t, device=device).reshape(-1).expand(model_input.shape[0])
                output = self.transformer(model_input, t_batch, labels).sample
                if do_guidance:
                    output = classifier_free_guidance(output, guidance_scale, eps_channels=config.in_channels,
                                                      guidance_channels=config.guidance_channels)
                latents = self.scheduler.step(self._scheduler_input(output), t, latents, **step_kwargs).prev_sample
                if callback_on_step_end is not None:
                    tensors = {name: {"latents": latents}[name] for name in callback_on_step_end_tensor_inputs}
                    latents = callback_on_step_end(self, i, t, tensors).get("latents", latents)
                progress.update()

        if output_type == "latent":
            images = latents
        else:
            images = self._decode(latents)
            if output_type != "pt":
                images = images.cpu().permute(0, 2, 3, 1).float().numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, class_ids
        return LiTPipelineOutput(images=images, class_labels=class_ids)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images [B, C, H, W] in [0, 1]."""
        if self.vae is not None:
            latents = latents / self.vae.config.scaling_factor
            samples = self.vae.decode(latents.to(self.vae.dtype)).sample
        else:
            samples = latents
        return (samples.float() / 2 + 0.5).clamp(0, 1)
