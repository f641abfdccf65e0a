"""The one rule for reusing a generated dataset folder (``vitzoo/digits``, ``vitzoo/shapes``, ``vitzoo/aigi-photos``).

A builder writes its folder under a temporary name with a JSON manifest of the settings it was built with, then
renames it into place. On the next call the folder is reused when its manifest holds the same settings; a folder
without a manifest, or built with other settings, is refused rather than silently mixed or overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .folder import DatasetError

__all__ = ["reusable_build"]


def reusable_build(root: Path, manifest: str, expected: dict[str, Any], dataset: str) -> bool:
    """True when ``root`` holds ``dataset`` built with the ``expected`` settings (``root/manifest`` has them);
    False when ``root`` does not exist yet.

    Raises:
        DatasetError: ``root`` exists but has no manifest, or its manifest records other settings.
    """
    if not root.exists():
        return False
    path = root / manifest
    if not path.is_file():
        raise DatasetError(f"{root} exists but is not a {dataset} folder (no {manifest}); choose another --data-dir")
    found = json.loads(path.read_text())
    recorded = {key: found.get(key) for key in expected}
    if recorded != expected:
        raise DatasetError(f"{root} holds {dataset} built with other settings ({recorded}); expected {expected}")
    return True
