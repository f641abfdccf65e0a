"""Model names and constructor keywords given on the command line, checked before anything is built: an
unknown name or a misspelt keyword is one line naming the flag, the closest valid names and the accepted
keywords, instead of a ``TypeError`` deep inside a model's constructor."""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Mapping

__all__ = ["check_mixer_kwargs", "check_model_kwargs"]

# keywords timm.create_model and build_model_with_cfg consume themselves, and the device/dtype keywords
# every vitzoo model takes
_FACTORY_KEYWORDS = {
    "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir", "scriptable",
    "exportable", "no_jit", "features_only", "out_indices", "feature_cls", "feature_cfg", "flatten_sequential",
    "output_stride", "device", "dtype",
}


def _accepted_keywords(model_class: type) -> set[str] | None:
    """The keyword names ``model_class(...)`` takes, following ``**kwargs`` up the class hierarchy; None when
    some constructor passes arbitrary keywords on to something that cannot be inspected."""
    names: set[str] = set()
    for cls in model_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names - {"self"}
    return None


def check_model_kwargs(name: str, kwargs: Mapping[str, Any], flag: str = "--model-kwargs") -> None:
    """Raise ``ValueError`` when ``name`` is not a registered model, or when ``kwargs`` holds a keyword its
    constructor does not take (with the closest accepted keywords)."""
    import timm
    import torch

    from ..models import check_model_name

    if not timm.is_model(name):
        check_model_name(name)
    if not kwargs:
        return
    with torch.device("meta"):
        model_class = type(timm.create_model(name))
    accepted = _accepted_keywords(model_class)
    if accepted is None:
        return
    accepted |= _FACTORY_KEYWORDS
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ValueError(f"{flag}: {name} ({model_class.__name__}) takes no keyword {key!r}; {hint}"
                             f"it takes {', '.join(sorted(accepted - _FACTORY_KEYWORDS))}")


def check_mixer_kwargs(name: str, kwargs: Mapping[str, Any], flag: str = "--mixer") -> None:
    """Raise ``ValueError`` when ``kwargs`` holds a keyword the mixer ``name`` does not take (the name itself is
    checked by :func:`vitzoo.mixers.get_mixer_class`, which lists the known mixers)."""
    from ..mixers import get_mixer_class

    mixer_class = get_mixer_class(name)
    accepted = _accepted_keywords(mixer_class)
    if accepted is None:
        return
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ValueError(f"{flag}: mixer {name!r} ({mixer_class.__name__}) takes no keyword {key!r}; {hint}"
                             f"it takes {', '.join(sorted(accepted))}")
