"""Reading official checkpoints safely, choosing their weights, and loading them with clear errors.

Official files embed training objects (an ``argparse.Namespace``, a yacs ``CfgNode``, numpy scalars)
that ``torch.load(weights_only=True)`` refuses. :func:`read_checkpoint` unpickles with an unpickler
that resolves only the globals torch's own weights-only loader allows (tensor rebuilders, dtypes,
``OrderedDict``) and turns every other class into an inert placeholder that stores what it was given.
Nothing named in the file is imported or executed.
"""

from __future__ import annotations

import pickle
import types
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import torch
from torch import nn

__all__ = [
    "unwrap_state_dict",
    "CheckpointError",
    "read_checkpoint",
    "read_checkpoint_metadata",
    "select_state_dict",
    "load_state_dict_checked",
    "load_pretrained_file",
]

DEFAULT_WEIGHT_KEYS = ("state_dict", "model", "module")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model it is loaded into."""


class _Inert(dict):
    """Stands in for a class the checkpoint names but vitzoo will not import; keeps args and state."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.__dict__["args"] = args

    def __setstate__(self, state):
        self.__dict__["state"] = state

    def append(self, item):
        self.__dict__.setdefault("items", []).append(item)

    def extend(self, items):
        self.__dict__.setdefault("items", []).extend(items)


def _allowed_globals() -> dict[str, Any]:
    from torch import _weights_only_unpickler

    return dict(_weights_only_unpickler._get_allowed_globals())


class _InertUnpickler(pickle.Unpickler):
    _allowed = None

    def find_class(self, module: str, name: str) -> Any:
        if _InertUnpickler._allowed is None:
            _InertUnpickler._allowed = _allowed_globals()
        found = self._allowed.get(f"{module}.{name}")
        if found is not None:
            return found
        return type(name, (_Inert,), {"__module__": f"inert:{module}"})


def _inert_load(file, **kwargs) -> Any:
    return _InertUnpickler(file, **kwargs).load()


# torch.load takes a pickle "module": it subclasses .Unpickler and calls .load for legacy headers
_INERT_PICKLE = types.SimpleNamespace(Unpickler=_InertUnpickler, load=_inert_load, __name__="vitzoo_inert_pickle")


def read_checkpoint(path: str | Path) -> Any:
    """Read a ``.safetensors`` file or a torch pickle (``.pth``/``.pt``/``.bin``) without executing it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_INERT_PICKLE)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {err}") from err


def read_checkpoint_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` header (what ``save_file(..., metadata=)`` wrote); empty for
    a torch pickle, whose extra information is part of what :func:`read_checkpoint` returns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _pickled_class(obj: _Inert) -> str:
    return f"{type(obj).__module__[len('inert:'):]}.{type(obj).__name__}"


def _is_pickled_module(obj: Any) -> bool:
    # what torch.save(model) pickles: an nn.Module's __dict__, with its parameter and submodule tables
    state = obj.__dict__.get("state") if isinstance(obj, _Inert) else None
    return isinstance(state, Mapping) and "_parameters" in state and "_modules" in state


def _describe(obj: Any) -> str:
    """What a value in a checkpoint is, in words, for errors (a pickled class is named, never imported)."""
    if _is_pickled_module(obj):
        return f"pickled module object ({_pickled_class(obj)})"
    if isinstance(obj, _Inert):
        return f"pickled {_pickled_class(obj)} object"
    return type(obj).__name__


def _not_weights(obj: Any) -> Optional[str]:
    """Why ``obj`` is not a state dict when it was clearly meant to be one (a pickled module, or a
    string-keyed mapping whose tensors sit next to a few other values); None otherwise."""
    if _is_pickled_module(obj):
        return (f"a {_describe(obj)}, not a state dict; vitzoo reads weights only and never imports the pickled "
                "class: save a state dict with torch.save(model.state_dict(), path)")
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) for k in obj):
        others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if len(others) < len(obj):
            shown = ", ".join(f"{k!r} ({_describe(obj[k])})" for k in others[:4])
            more = f" and {len(others) - 4} more" if len(others) > 4 else ""
            return (f"a state dict with {len(others)} non-tensor entr{'y' if len(others) == 1 else 'ies'}: "
                    f"{shown}{more}; every value of a state dict must be a tensor")
    return None


def select_state_dict(checkpoint: Any, keys: Iterable[str] = DEFAULT_WEIGHT_KEYS) -> dict[str, torch.Tensor]:
    """The weights inside a checkpoint container: the first of ``keys`` that holds tensors, else the
    container itself when it is a flat tensor dict. A ``module.`` prefix (DDP) is removed.

    Raises :class:`CheckpointError` naming what was found instead: a pickled module object
    (``torch.save(model)``), a state dict with non-tensor entries, or the container's keys."""
    if _is_state_dict(checkpoint):
        return unwrap_state_dict(checkpoint)
    keys = list(keys)
    if _is_pickled_module(checkpoint):
        raise CheckpointError(f"the checkpoint is {_not_weights(checkpoint)}")
    # a pickled dict subclass (a config node) keeps its items in the placeholder and is read as a dict
    if not isinstance(checkpoint, Mapping) or (isinstance(checkpoint, _Inert) and not checkpoint):
        raise CheckpointError(f"expected a dict of weights, got a {_describe(checkpoint)}")
    found = [k for k in keys if _is_state_dict(checkpoint.get(k))]
    if found:
        return unwrap_state_dict(checkpoint[found[0]])
    problems = [f"{k!r} holds {problem}" for k in keys if (problem := _not_weights(checkpoint.get(k)))]
    if not problems and not any(k in checkpoint for k in keys) and (problem := _not_weights(checkpoint)):
        problems = [f"the checkpoint is {problem}"]
    if problems:
        raise CheckpointError("; ".join(problems))
    raise CheckpointError(
        f"no weights under any of {keys}; the checkpoint has top-level keys {sorted(map(str, checkpoint))[:12]}"
    )


def unwrap_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's own keys: a ``module.`` prefix (DDP, DeepSpeed) is removed, and of a detector's or
    segmenter's weights (mmdet / mmseg ``backbone.*``, ``neck.*``, heads) only the backbone is kept,
    without its prefix. Idempotent; every family's ``checkpoint_filter_fn`` starts here."""
    out = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    if any(k.startswith("backbone.") for k in out):
        out = {k[len("backbone."):]: v for k, v in out.items() if k.startswith("backbone.")}
    return out


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_checked(
        model: nn.Module,
        state_dict: Mapping[str, torch.Tensor],
        *,
        source: str = "checkpoint",
        allow_missing: Iterable[str] = (),
) -> None:
    """``load_state_dict`` that raises :class:`CheckpointError` naming missing, unexpected and
    mis-shaped keys (except those in ``allow_missing``) instead of loading a partial model."""
    own = model.state_dict()
    mismatched = [
        f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = [k for k in own if k not in state_dict and k not in set(allow_missing)]
    unexpected = [k for k in state_dict if k not in own]
    if mismatched or missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_names(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_names(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches ({_names(mismatched, 4)})")
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=False)


def load_pretrained_file(
        model: nn.Module,
        path: str | Path,
        *,
        pretrained_cfg: Mapping[str, Any],
        filter_fn: Optional[Callable[[dict, nn.Module], dict]] = None,
        weight_keys: Iterable[str] = DEFAULT_WEIGHT_KEYS,
        in_chans: int = 3,
) -> None:
    """Load an official or vitzoo checkpoint file into ``model`` the way timm's ``load_pretrained`` would
    (classifier dropped when ``num_classes`` differs, first conv adapted to ``in_chans``), but choosing
    the weights with the family's ``weight_keys`` before the filter runs."""
    from timm.models import adapt_input_conv

    try:
        state_dict = select_state_dict(read_checkpoint(path), weight_keys)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    first_conv = pretrained_cfg.get("first_conv")
    pretrained_chans = pretrained_cfg.get("input_size", (3,))[0]
    if first_conv and in_chans != pretrained_chans and f"{first_conv}.weight" in state_dict:
        state_dict[f"{first_conv}.weight"] = adapt_input_conv(in_chans, state_dict[f"{first_conv}.weight"])
    allow_missing: list[str] = []
    classifier = pretrained_cfg.get("classifier")
    if classifier and getattr(model, "num_classes", None) != pretrained_cfg.get("num_classes"):
        for name in (classifier,) if isinstance(classifier, str) else classifier:
            for suffix in (".weight", ".bias"):
                state_dict.pop(name + suffix, None)
                allow_missing.append(name + suffix)
    load_state_dict_checked(model, state_dict, source=str(path), allow_missing=allow_missing)
