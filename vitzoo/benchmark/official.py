"""The official implementations, built from a user's local copies of their repositories, for side-by-side timing.

vitzoo never ships or downloads the official code. A user who wants the comparison clones the four repositories
into one folder (``InLine``, ``RALA``, ``MALA``, ``L2ViT``; the README's commits are in ``shared/specs``) and passes
that folder; :func:`load_official` imports the model file by path and calls the official constructor with the
arguments of the official config for that variant (the facts below, from each repository's configs). The official
files decorate their constructors with timm's ``register_model`` under names vitzoo also registers
(``inline_pvt_tiny``...), so the import runs with ``register_model`` neutralised and timm's registry stays vitzoo's.
The official files need ``einops`` (``pip install einops``).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence
from unittest import mock

import torch
from torch import nn

from .measure import interleaved_medians

__all__ = ["OFFICIAL_MODELS", "OfficialModel", "SideBySide", "compare_with_official", "load_official",
           "time_side_by_side"]


@dataclass(frozen=True)
class OfficialModel:
    """Where an official variant lives and how its repository builds it.

    ``path`` is relative to the folder of clones; ``constructor`` names a function or class in that file;
    ``kwargs`` are the official config's arguments; ``img_size`` says whether the constructor takes the input size
    (models with absolute position embeddings or fixed attention masks, built for the size they are timmed at).
    """

    path: str
    constructor: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    img_size: bool = False


_SWIN = dict(embed_dim=96, num_heads=[3, 6, 12, 24], window_size=56)  # cfgs/inline_swin_*.yaml
OFFICIAL_MODELS: dict[str, OfficialModel] = {
    # InLine, LeapLabTHU/InLine: models/build.py with cfgs/*.yaml (DeiT sizes from models/inline_deit.py)
    "inline_deit_tiny": OfficialModel("InLine/models/inline_deit.py", "VisionTransformer",
                                      dict(patch_size=16, embed_dim=192, depth=12, num_heads=6), img_size=True),
    "inline_deit_small": OfficialModel("InLine/models/inline_deit.py", "VisionTransformer",
                                       dict(patch_size=16, embed_dim=320, depth=12, num_heads=10), img_size=True),
    "inline_pvt_tiny": OfficialModel("InLine/models/inline_pvt.py", "inline_pvt_tiny",
                                     dict(attn_type="IIII", la_sr_ratios="1111"), img_size=True),
    "inline_pvt_small": OfficialModel("InLine/models/inline_pvt.py", "inline_pvt_small",
                                      dict(attn_type="IIII", la_sr_ratios="1111"), img_size=True),
    "inline_swin_tiny": OfficialModel("InLine/models/inline_swin.py", "InLineSwin",
                                      dict(_SWIN, depths=[2, 2, 6, 2], attn_type="IIIS"), img_size=True),
    "inline_swin_small": OfficialModel("InLine/models/inline_swin.py", "InLineSwin",
                                       dict(_SWIN, depths=[2, 2, 18, 2], attn_type="IISS"), img_size=True),
    "inline_cswin_tiny": OfficialModel("InLine/models/inline_cswin.py", "inline_cswin_tiny",
                                       dict(attn_type="IISS", la_split_size="56-28-14-7"), img_size=True),
    "inline_cswin_small": OfficialModel("InLine/models/inline_cswin.py", "inline_cswin_small",
                                        dict(attn_type="IISS", la_split_size="56-28-14-7"), img_size=True),
    # RAVLT, qhfan/RALA; MAViT, qhfan/MALA: the registered constructors take no size
    "ravlt_t": OfficialModel("RALA/classfication/RALA.py", "RAVLT_T"),
    "ravlt_s": OfficialModel("RALA/classfication/RALA.py", "RAVLT_S"),
    "mavit_t": OfficialModel("MALA/classfication_release/model.py", "MALA_T"),
    "mavit_s": OfficialModel("MALA/classfication_release/model.py", "MALA_S"),
    # L²ViT, ChuanyangZheng/L2ViT
    "l2vit_tiny": OfficialModel("L2ViT/classification/models/l2vit.py", "L2ViT_Tiny"),
    "l2vit_small": OfficialModel("L2ViT/classification/models/l2vit.py", "L2ViT_Small"),
}


def load_official(root: str | Path, name: str, img_size: int = 224) -> nn.Module:
    """The official model for vitzoo's ``name``, built from the clones under ``root``, in eval mode."""
    if name not in OFFICIAL_MODELS:
        raise ValueError(f"no official model is known for {name!r}; known: {', '.join(sorted(OFFICIAL_MODELS))}")
    spec = OFFICIAL_MODELS[name]
    path = Path(root) / spec.path
    if not path.is_file():
        raise FileNotFoundError(f"{name}: the official file {spec.path} is not under {root} (clone the official "
                                f"repository {spec.path.split('/')[0]} there)")
    module = _import_file(path, Path(root) / spec.path.split("/")[0])
    if not hasattr(module, spec.constructor):
        raise ValueError(f"{path} defines no {spec.constructor!r}; is it the official repository's version?")
    kwargs = dict(spec.kwargs, **({"img_size": img_size} if spec.img_size else {}))
    return getattr(module, spec.constructor)(**kwargs).eval()


def _import_file(path: Path, repo_root: Path):
    """Import ``path`` as a module of its own, with timm's ``register_model`` made a no-op during the import and the
    repository root on ``sys.path`` for the file's own imports of its repository's modules."""
    name = "vitzoo_official_" + "_".join(path.with_suffix("").parts[-3:]).replace("-", "_")
    if name in sys.modules:
        return sys.modules[name]

    def keep(fn: Optional[Callable] = None, **_: Any):
        return fn if fn is not None else (lambda f: f)

    with mock.patch("timm.models.register_model", keep), mock.patch("timm.models.registry.register_model", keep), \
            mock.patch("timm.models._registry.register_model", keep), \
            mock.patch.object(sys, "path", [str(repo_root), *sys.path]):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module


@dataclass
class SideBySide:
    """One model at one input: median ms of the official model and of vitzoo's, unfused and fused."""

    model: str
    img_size: int
    batch: int
    official_ms: float
    vitzoo_ms: float
    vitzoo_fused_ms: float
    status: str = "ok"

    @property
    def speedup(self) -> float:
        return self.official_ms / self.vitzoo_ms

    @property
    def speedup_fused(self) -> float:
        return self.official_ms / self.vitzoo_fused_ms


def time_side_by_side(official: nn.Module, vitzoo_model: nn.Module, x: torch.Tensor, *,
                      repeats: int = 9) -> tuple[float, float, float]:
    """Median ms of ``official``, ``vitzoo_model`` and ``vitzoo.optimize(vitzoo_model)`` on ``x``, timed interleaved
    (:func:`~vitzoo.benchmark.measure.interleaved_medians`)."""
    from ..models import optimize

    candidates = [official.eval(), vitzoo_model.eval(), optimize(vitzoo_model, fuse=True)]
    official_ms, vitzoo_ms, fused_ms = interleaved_medians([partial(model, x) for model in candidates],
                                                           repeats=repeats)
    return official_ms, vitzoo_ms, fused_ms


def compare_with_official(root: str | Path, names: Sequence[str], inputs: Sequence[tuple[int, int]], *,
                          repeats: int = 9, progress: Optional[Callable[[str], None]] = None) -> list[SideBySide]:
    """Every (model, (img_size, batch)) pair timed side by side; a model the official code cannot build or run at a
    size (a fixed window that does not tile it) gets a row with ``status`` saying why."""
    import timm

    rows = []
    for img_size, batch in inputs:
        x = torch.randn(batch, 3, img_size, img_size)
        for name in names:
            try:
                official = load_official(root, name, img_size)
                kwargs = {"img_size": img_size} if OFFICIAL_MODELS[name].img_size else {}
                ours = timm.create_model(name, **kwargs)
                times = time_side_by_side(official, ours, x, repeats=repeats)
                rows.append(SideBySide(name, img_size, batch, *times))
            except (RuntimeError, ValueError, TypeError, AssertionError) as err:
                reason = " ".join(str(err).split())[:120]
                rows.append(SideBySide(name, img_size, batch, float("nan"), float("nan"), float("nan"),
                                       f"official code fails: {type(err).__name__}: {reason}"))
            if progress:
                progress(f"{name} {img_size}x{batch}")
    return rows
