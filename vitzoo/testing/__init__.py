"""Helpers for tests and offline demos, not part of the model API:

- :mod:`.golden`: the reader of the official implementations' golden outputs (``../shared/golden``);
- :mod:`.tiny_diffusion`: a tiny, randomly initialised Stable Diffusion pipeline built from configs in code
  (the ``tiny-random`` model id of ``vitzoo generate`` / ``vitzoo distill``, and the diffusion tests).

They sit beside ``vitzoo.diffusion`` in the import order (they may import models and diffusion, never train
or commands), so the test suite, the tools and the offline toy paths reach them through one import path.
"""
