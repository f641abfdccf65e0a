"""DiT's training diffusion: the DDPM forward process and the improved-DDPM loss with learned variance.

Papers: Ho et al., "Denoising Diffusion Probabilistic Models", arXiv:2006.11239 (DDPM); Nichol and
Dhariwal, "Improved Denoising Diffusion Probabilistic Models", arXiv:2102.09672 (learned-range variance
and the VLB term). Origin of the configuration: https://github.com/facebookresearch/DiT ``diffusion/``
(from openai/improved-diffusion, MIT), ``create_diffusion(timestep_respacing="")``: 1000 linear betas
from 1e-4 to 0.02, ε prediction, learned-range variance, MSE loss (not rescaled). Re-implemented.

The losses take model outputs rather than a model, so one student forward serves the diffusion loss
and the distillation terms (:mod:`vitzoo.diffusion.distill.lit`). Sampling is left to diffusers'
schedulers (``DDPMScheduler(variance_type="learned_range")`` is the same reverse process).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = [
    "BETA_SCHEDULE",
    "GaussianDiffusion",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "normal_kl",
]

# DiT's β schedule in diffusers' scheduler-config terms, the one definition: GaussianDiffusion's defaults and
# pipelines.ddpm_scheduler read it. diffusers computes its betas in float32, this module in float64 (as the
# official numpy code), so each computes its own tables from these numbers.
BETA_SCHEDULE: dict[str, Any] = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of the standard normal CDF that improved DDPM uses."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log-likelihood of data in [-1, 1] quantised to 256 bins under N(means, e^(2·log_scales)), elementwise.

    The outermost bins extend to ±infinity (DDPM eq. 13).
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.dim())))


class GaussianDiffusion:
    """The fixed coefficient tables of a linear-β DDPM and the loss terms DiT trains with.

    Tables are computed in float64 on the CPU (as the official numpy code does), stored in float32 and
    gathered per timestep, so the arithmetic that follows is float32 like the official loss.

    Args:
        num_timesteps: T.
        beta_start, beta_end: the linear β schedule, scaled by 1000/T as in improved DDPM.
        Defaults are :data:`BETA_SCHEDULE`'s.
    """

    def __init__(self, num_timesteps: int = BETA_SCHEDULE["num_train_timesteps"],
                 beta_start: float = BETA_SCHEDULE["beta_start"], beta_end: float = BETA_SCHEDULE["beta_end"]):
        scale = 1000 / num_timesteps
        betas = torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=torch.float64)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        tables = {
            "betas": betas,
            "log_betas": torch.log(betas),
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1).sqrt(),
            "posterior_variance": posterior_variance,
            # the posterior variance is 0 at t = 0; its log is clipped to the t = 1 value
            "posterior_log_variance_clipped": torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]])),
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod),
        }
        self.num_timesteps = num_timesteps
        self.tables = {name: table.float() for name, table in tables.items()}

    def _at(self, name: str, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """tables[name][t] broadcast to ``like`` ([B] -> [B, 1, 1, 1])."""
        values = self.tables[name].to(timesteps.device)[timesteps].to(like.dtype)
        return values.view(-1, *([1] * (like.dim() - 1)))

    def sample_timesteps(self, batch: int, device: torch.device,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform training timesteps [B] in [0, T)."""
        return torch.randint(0, self.num_timesteps, (batch,), device=device, generator=generator)

    def q_sample(self, x_start: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·ε (DDPM eq. 4)."""
        return (self._at("sqrt_alphas_cumprod", timesteps, x_start) * x_start
                + self._at("sqrt_one_minus_alphas_cumprod", timesteps, x_start) * noise)

    def q_posterior(self, x_start: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0) (DDPM eqs. 6-7)."""
        mean = (self._at("posterior_mean_coef1", timesteps, x_t) * x_start
                + self._at("posterior_mean_coef2", timesteps, x_t) * x_t)
        return mean, self._at("posterior_log_variance_clipped", timesteps, x_t).expand_as(x_t)

    def model_log_variance(self, variance_values: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Learned-range log-variance: v in [-1, 1] interpolates between log β̃_t and log β_t (improved DDPM eq. 15)."""
        min_log = self._at("posterior_log_variance_clipped", timesteps, variance_values)
        max_log = self._at("log_betas", timesteps, variance_values)
        frac = (variance_values + 1) / 2
        return frac * max_log + (1 - frac) * min_log

    def p_mean_variance(self, eps: torch.Tensor, variance_values: torch.Tensor, x_t: torch.Tensor,
                        timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean and log-variance of p(x_{t-1} | x_t) from the predicted ε and v, and the implied x_0 (not clipped)."""
        pred_xstart = (self._at("sqrt_recip_alphas_cumprod", timesteps, x_t) * x_t
                       - self._at("sqrt_recipm1_alphas_cumprod", timesteps, x_t) * eps)
        mean, _ = self.q_posterior(pred_xstart, x_t, timesteps)
        return mean, self.model_log_variance(variance_values, timesteps), pred_xstart

    def vb_terms_bpd(self, eps: torch.Tensor, variance_values: torch.Tensor, x_start: torch.Tensor,
                     x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The variational bound term L_t in bits per dimension, per sample [B]: the KL to the true posterior
        for t > 0, the discretised decoder NLL at t = 0."""
        true_mean, true_log_variance = self.q_posterior(x_start, x_t, timesteps)
        mean, log_variance, _ = self.p_mean_variance(eps, variance_values, x_t, timesteps)
        kl = _mean_flat(normal_kl(true_mean, true_log_variance, mean, log_variance)) / math.log(2.0)
        nll = -_mean_flat(discretized_gaussian_log_likelihood(x_start, mean, 0.5 * log_variance)) / math.log(2.0)
        return torch.where(timesteps == 0, nll, kl)

    def training_losses(self, model_output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor,
                        timesteps: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """DiT's loss per sample [B]: ``mse`` (ε), ``vb`` (learned variance; the mean's gradient is stopped so
        the VLB trains only v) and ``loss = mse + vb``. ``model_output`` is [B, 2C, H, W] (ε then v)."""
        channels = x_t.shape[1]
        if model_output.shape[1] != 2 * channels:
            raise ValueError(
                f"expected a learned-sigma output with {2 * channels} channels, got {model_output.shape[1]}")
        eps, variance_values = model_output.split(channels, dim=1)
        mse = _mean_flat((noise - eps) ** 2)
        vb = self.vb_terms_bpd(eps.detach(), variance_values, x_start, x_t, timesteps)
        return {"mse": mse, "vb": vb, "loss": mse + vb}
