"""The ``device=`` / ``dtype=`` constructor keywords of timm's model contract, for every vitzoo model.

timm (1.0.31 on) builds models with ``timm.create_model(name, device="meta")`` for meta-device
initialisation and with ``dtype=`` for low-precision weights, and passes both to the model class.
:func:`takes_device_dtype` gives a model class's ``__init__`` these two keywords once, instead of
threading them through every layer of every family: the model is built under the ``torch.device``
context manager (every tensor factory allocates there: a meta model holds no memory), then cast to
``dtype``. The cast comes after construction so that tables computed at build time (position indices,
RoPE frequencies, drop-path rates) are computed in float32, as in the official code.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any, Callable, Optional, Union

import torch

__all__ = ["takes_device_dtype"]


def takes_device_dtype(init: Callable[..., None]) -> Callable[..., None]:
    """Decorate a model's ``__init__`` so it accepts ``device`` and ``dtype`` keywords (both default None).

    An unknown keyword (a misspelt ``--model-kwargs`` entry) raises ``TypeError`` naming the model class
    the user built (not the base class whose ``__init__`` received it) and the closest accepted names."""
    signature = inspect.signature(init)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [p.name for p in list(signature.parameters.values())[1:] if p.kind in named] + ["device", "dtype"]

    @functools.wraps(init)
    def wrapper(self: torch.nn.Module, *args: Any, device: Optional[Union[str, torch.device]] = None,
                dtype: Optional[torch.dtype] = None, **kwargs: Any) -> None:
        unknown = [] if takes_any else [name for name in kwargs if name not in accepted]
        if unknown:
            close = difflib.get_close_matches(unknown[0], accepted, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else f"; it takes {', '.join(accepted)}"
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}{hint}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating-point torch.dtype (e.g. torch.bfloat16), got {dtype!r}")
        if device is None:
            init(self, *args, **kwargs)
        else:
            with torch.device(device):
                init(self, *args, **kwargs)
        if dtype is not None:
            self.to(dtype=dtype)

    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in ("device", "dtype")]
    var_kw = [p for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    wrapper.__signature__ = signature.replace(parameters=params + extra + var_kw)
    return wrapper
