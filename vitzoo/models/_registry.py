"""vitzoo's view of timm's model registry: which registered models are ours, and from which family."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable

from timm.models import register_model as _timm_register_model

__all__ = ["register_model", "list_models", "model_family", "check_model_name", "reduced_config"]

_FAMILY_OF: dict[str, str] = {}


def register_model(fn: Callable) -> Callable:
    """``@register_model`` for vitzoo entrypoints: registers with timm and remembers the family (module)."""
    fn = _timm_register_model(fn)
    _FAMILY_OF[fn.__name__] = fn.__module__.rsplit(".", 1)[-1]
    return fn


def list_models(pattern: str = "*", *, family: str | None = None) -> list[str]:
    """vitzoo's own model names (not all of timm's) matching a shell-style ``pattern``, sorted."""
    names = [name for name, fam in _FAMILY_OF.items() if family is None or fam == family]
    return sorted(name for name in names if fnmatch.fnmatch(name, pattern))


def model_family(name: str) -> str:
    """The family (module under ``vitzoo.models``) of a registered model, e.g. ``"vzvit"``."""
    return _FAMILY_OF[check_model_name(name)]


def check_model_name(name: str) -> str:
    """Strip a pretrained tag (``arch.tag``) and return the architecture, or raise ``ValueError`` listing close
    names (an unknown architecture) or the architecture's tags (an unknown tag).

    ``timm.create_model`` cannot say this itself: it raises a fixed ``RuntimeError('Unknown model (...)')``
    after a plain registry lookup and offers no hook to extend the message, so vitzoo's entry points
    (``vitzoo.create_model``, the ``vitzoo`` commands) call this first."""
    arch = name.split(".", 1)[0]
    if arch not in _FAMILY_OF:
        close = difflib.get_close_matches(arch, list(_FAMILY_OF), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else " See vitzoo.list_models()."
        raise ValueError(f"unknown vitzoo model {name!r}.{hint}")
    tag = name[len(arch) + 1:]
    if tag:
        from timm.models import get_arch_pretrained_cfgs

        tags = sorted(full.split(".", 1)[-1] for full in get_arch_pretrained_cfgs(arch))
        if tag not in tags:
            raise ValueError(f"{arch} has no pretrained tag {tag!r}; its tags are {', '.join(tags) or 'none'}")
    return arch


def reduced_config(name: str) -> dict:
    """The family's reduced configuration for ``name``: ``dict(kwargs=..., input_size=(C, H, W))``.

    Each family module defines ``REDUCED_CONFIGS = {pattern: dict(kwargs=..., input_size=...)}``:
    small widths and depths that run the same code paths in milliseconds. The registry-wide contract
    tests build every model this way, so a new family is covered without new test code.
    """
    import importlib

    module = importlib.import_module(f"vitzoo.models.{model_family(name)}")
    for pattern, config in getattr(module, "REDUCED_CONFIGS", {}).items():
        if fnmatch.fnmatch(name, pattern):
            return config
    raise KeyError(f"{module.__name__} has no REDUCED_CONFIGS entry matching {name!r}")
