"""Shared test setup: quiet threads, deterministic seeds, golden-data access that never skips on CI."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(42)


def golden_case(family: str, name: str):
    """A golden case, or a skip outside CI when the data is absent (a failure under ``CI=true``)."""
    from vitzoo.golden import GoldenMissingError, load_case

    try:
        return load_case(family, name)
    except GoldenMissingError as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"golden data missing on CI: {err}")
        pytest.skip(str(err))


def error_ratio(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """RMS of the difference relative to the RMS of the reference (fla's low-precision check)."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).pow(2).mean().sqrt() / expected.pow(2).mean().sqrt().clamp_min(1e-12)).item()


def write_official_checkpoint(path, weights: dict, *, extra: dict | None = None, config_kind: str = "both") -> None:
    """Save a checkpoint built like the official training scripts': weights inside a container next to
    an ``argparse.Namespace`` (DeiT-style ``main.py``) and/or a yacs ``CfgNode`` (Swin-style), plus
    numpy scalars. yacs is not installed, so a stand-in class is pickled under the name
    ``yacs.config.CfgNode``, exactly the reference an official file holds."""
    import argparse
    import sys
    import types

    import numpy as np

    container = dict(weights)
    container.update(extra or {})
    container.setdefault("epoch", 299)
    container.setdefault("max_accuracy", np.float64(82.5))
    if config_kind in ("both", "argparse"):
        container["args"] = argparse.Namespace(model="x", lr=5e-4, drop_path=0.1)
    created = []
    if config_kind in ("both", "yacs"):
        if "yacs.config" not in sys.modules:
            yacs, config = types.ModuleType("yacs"), types.ModuleType("yacs.config")

            class CfgNode(dict):
                pass

            CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
            config.CfgNode = CfgNode
            sys.modules["yacs"], sys.modules["yacs.config"] = yacs, config
            created = ["yacs", "yacs.config"]
        node = sys.modules["yacs.config"].CfgNode
        container["config"] = node({"MODEL": node({"TYPE": "x", "DROP_PATH_RATE": 0.1}), "TRAIN": node({"EPOCHS": 300})})
    try:
        torch.save(container, path)
    finally:
        for name in created:
            del sys.modules[name]
