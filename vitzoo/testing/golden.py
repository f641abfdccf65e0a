"""Find and read the golden data: outputs of the official implementations, used to prove parity.

The data lives in ``../shared/golden/<family>/`` beside every checkout (or in ``$VITZOO_GOLDEN_DIR``);
its README describes the files. A case ``<name>`` is ``<name>.json`` (provenance, constructor
kwargs, notes), ``<name>.weights.safetensors`` (official key names) and ``<name>.io.safetensors``
(inputs, outputs, intermediates). ``<variant>.keys.json`` manifests hold full-size key lists.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import torch

__all__ = ["GoldenMissingError", "golden_dir", "GoldenCase", "load_case", "list_cases", "load_keys_manifest"]


class GoldenMissingError(FileNotFoundError):
    """The golden directory (or a file in it) is not where vitzoo looks."""


def _search_starts() -> tuple[Path, ...]:
    """Folders where the default search begins: this package's and the working directory (tests replace it)."""
    return Path(__file__).resolve().parent, Path.cwd().resolve()


def golden_dir(family: Optional[str] = None) -> Path:
    """``$VITZOO_GOLDEN_DIR`` when set (then the only place looked at, so that a wrong setting is reported
    rather than silently replaced), else the first ``shared/golden`` in a start folder or a parent of one
    (``../shared/golden`` beside the checkout). Raises :class:`GoldenMissingError` naming the missing folder."""
    env = os.environ.get("VITZOO_GOLDEN_DIR")
    if env:
        root = Path(env)
        if not root.is_dir():
            raise GoldenMissingError(f"golden data not found: VITZOO_GOLDEN_DIR={env} is not a folder")
    else:
        candidates = dict.fromkeys(folder / "shared" / "golden"
                                   for start in _search_starts() for folder in (start, *start.parents))
        root = next((candidate for candidate in candidates if candidate.is_dir()), None)
        if root is None:
            raise GoldenMissingError(f"golden data not found: none of {', '.join(map(str, candidates))} exists; "
                                     "put it at ../shared/golden beside the checkout or set VITZOO_GOLDEN_DIR")
    if family is None:
        return root
    path = root / family
    if not path.is_dir():
        raise GoldenMissingError(f"golden data has no folder {family!r}: {path} does not exist")
    return path


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise GoldenMissingError(f"golden file {path} does not exist")
    return load_file(str(path))


@dataclass
class GoldenCase:
    """One golden case of a family, read lazily."""

    family: str
    name: str
    root: Path = field(repr=False)

    @cached_property
    def meta(self) -> dict[str, Any]:
        path = self.root / f"{self.name}.json"
        if not path.is_file():
            raise GoldenMissingError(f"golden case {self.family}/{self.name} has no {path.name}")
        return json.loads(path.read_text())

    @cached_property
    def weights(self) -> dict[str, torch.Tensor]:
        """The official state dict (official key names)."""
        return _read_safetensors(self.root / f"{self.name}.weights.safetensors")

    @cached_property
    def io(self) -> dict[str, torch.Tensor]:
        """Inputs, outputs and intermediates."""
        return _read_safetensors(self.root / f"{self.name}.io.safetensors")

    def tensors(self, suffix: str) -> dict[str, torch.Tensor]:
        """Another safetensors file of the case, ``<name>.<suffix>.safetensors``."""
        return _read_safetensors(self.root / f"{self.name}.{suffix}.safetensors")


def load_case(family: str, name: str) -> GoldenCase:
    """The golden case ``name`` of ``family`` (e.g. ``load_case("rala", "tiny")``)."""
    root = golden_dir(family)
    case = GoldenCase(family, name, root)
    case.meta  # fail early, naming the file
    return case


def list_cases(family: str) -> list[str]:
    """Names of the family's cases that have inputs/outputs (``<name>.io.safetensors``)."""
    return sorted(p.name[: -len(".io.safetensors")] for p in golden_dir(family).glob("*.io.safetensors"))


def load_keys_manifest(family: str, variant: str) -> dict[str, Any]:
    """``{"num_params": N, "keys": [[name, shape], ...]}`` of a full-size official variant."""
    path = golden_dir(family) / f"{variant}.keys.json"
    if not path.is_file():
        raise GoldenMissingError(f"no key manifest {path}")
    return json.loads(path.read_text())
