"""Model names, mixer names and constructor keywords given on the command line, checked before anything
else is built: an unknown name or a misspelt keyword is one line naming the flag and the closest valid names,
instead of a ``TypeError`` deep inside a run."""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Mapping

__all__ = ["check_mixer_kwargs", "check_model_kwargs"]


def check_model_kwargs(name: str, kwargs: Mapping[str, Any], flag: str = "--model-kwargs") -> None:
    """Raise ``ValueError`` when ``name`` is not a registered model or ``name(**kwargs)`` cannot be built.

    The model is built once on the meta device (no memory, no weights): a misspelt keyword gets the model's own
    message (vitzoo models name the closest accepted keywords), a bad value its constructor's ``ValueError``.
    """
    import timm
    import torch

    from ..models import check_model_name

    if not timm.is_model(name):
        check_model_name(name)
    try:
        with torch.device("meta"):
            timm.create_model(name, **kwargs)
    except TypeError as err:
        raise ValueError(f"{flag}: {err}") from None


def check_mixer_kwargs(name: str, kwargs: Mapping[str, Any], flag: str = "--mixer") -> None:
    """Raise ``ValueError`` when ``name`` is not a mixer (:func:`vitzoo.mixers.get_mixer_class` lists them) or
    ``kwargs`` holds a keyword its constructor does not take (with the closest accepted ones)."""
    from ..mixers import get_mixer_class

    mixer_class = get_mixer_class(name)
    parameters = list(inspect.signature(mixer_class.__init__).parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    accepted = sorted(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ValueError(f"{flag}: mixer {name!r} ({mixer_class.__name__}) takes no keyword {key!r}; {hint}"
                             f"it takes {', '.join(accepted)}")
