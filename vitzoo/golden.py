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


def golden_dir(family: Optional[str] = None) -> Path:
    """``$VITZOO_GOLDEN_DIR``, else the first ``shared/golden`` found beside a parent of this package
    or of the working directory. Raises :class:`GoldenMissingError` naming the places searched."""
    searched = []
    env = os.environ.get("VITZOO_GOLDEN_DIR")
    candidates = [Path(env)] if env else []
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        candidates += [parent / "shared" / "golden" for parent in start.parents]
    for candidate in candidates:
        searched.append(str(candidate))
        if candidate.is_dir():
            path = candidate / family if family else candidate
            if not path.is_dir():
                raise GoldenMissingError(f"golden data has no folder {family!r} in {candidate}")
            return path
    raise GoldenMissingError("golden data not found; set VITZOO_GOLDEN_DIR. Searched: " + ", ".join(searched[:4]))


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
