"""Diffusion models built from vitzoo mixers, native to diffusers.

- ``vitzoo.diffusion.lit``: LiT, the linear diffusion transformer (a diffusers ``ModelMixin``).
- ``vitzoo.diffusion.linfusion``: LinFusion attention processors for Stable Diffusion UNets.
- ``vitzoo.diffusion.pipelines``: diffusers pipelines (class-conditional, high resolution).

Needs diffusers (a core dependency); nothing here is imported by ``import vitzoo``.
"""
