"""Diffusion models built from vitzoo mixers, native to diffusers.

- ``vitzoo.diffusion.dit``: DiT with any vitzoo mixer as its self-attention (a diffusers ``ModelMixin``).
- ``vitzoo.diffusion.lit``: LiT, the linear diffusion transformer: that DiT with LiT's mixer and head count.
- ``vitzoo.diffusion.lightnet``: LightNet as a diffusion backbone: that DiT with the one-scan LightNet attention.
- ``vitzoo.diffusion.inherit``: initialising a LiT from a pretrained DiT.
- ``vitzoo.diffusion.gaussian_diffusion``: DiT's training diffusion (forward process, learned-variance loss).
- ``vitzoo.diffusion.linfusion``: LinFusion attention processors for Stable Diffusion UNets.
- ``vitzoo.diffusion.distill``: the distillation objectives of LiT and LinFusion.
- ``vitzoo.diffusion.pipelines``: diffusers pipelines (class-conditional, high resolution), which
  stream large images through ``highres_vae`` (tiled VAE) and ``highres_png`` (band-wise PNG writer).

Needs diffusers (a core dependency); nothing here is imported by ``import vitzoo``.
"""
