"""Shared test setup: quiet threads, deterministic seeds, golden-data access that never skips on CI."""

from __future__ import annotations

import collections
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

import pytest
import torch

from vitzoo.testing.golden import GoldenCase, GoldenMissingError, golden_dir, list_cases, load_case, load_keys_manifest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


def pytest_configure(config):
    """Warm, once and before xdist starts its workers, the caches that third-party packages write on first import
    without a lock. yapf (imported by mmengine's config) pickles its grammar to the user cache dir on first import;
    two workers importing mmdet at once on a fresh machine read each other's half-written pickle (EOFError) and
    collect different tests."""
    if hasattr(config, "workerinput") or importlib.util.find_spec("yapf") is None:
        return
    importlib.import_module("yapf")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(42)


# ---------------------------------------------------------------- golden data
# Every golden access of the tests goes through `golden` below. A user's clone has no ../shared/golden: its tests
# skip with a reason that starts with GOLDEN_SKIP, which the terminal summary counts (skip reasons travel back
# from xdist workers with the reports, so the count holds under -n). Under CI=true the data must be there.

GOLDEN_SKIP = "[golden]"
MISSING_CASE = "no-golden-cases"
_T = TypeVar("_T")


def golden(read: Callable[..., _T], *args: Any) -> _T:
    """``read(*args)`` (a reader of ``vitzoo.testing.golden``), with missing golden data turned into a skip on a
    user's clone and into a failure naming the missing folder under ``CI=true``."""
    try:
        return read(*args)
    except GoldenMissingError as err:
        missing = str(err)  # reported outside the handler, so that the message is not followed by a chained trace
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"golden data missing under CI=true, where it must be present: {missing}", pytrace=False)
    pytest.skip(f"{GOLDEN_SKIP} {missing}")


def golden_case(family: str, name: str) -> GoldenCase:
    """The golden case ``name`` of ``family`` (``golden_case("rala", "tiny")``)."""
    return golden(load_case, family, name)


def golden_manifest(family: str, variant: str) -> dict[str, Any]:
    """The key manifest ``<variant>.keys.json`` of a full-size official variant."""
    return golden(load_keys_manifest, family, variant)


def golden_folder(family: str) -> Path:
    """The family's golden folder, for files other than cases and manifests."""
    return golden(golden_dir, family)


def golden_case_names(family: str) -> list[str]:
    """The family's case names for ``parametrize`` at collection time, where a skip cannot be raised: without
    data, one stand-in name, ``MISSING_CASE``, whose ``golden_case`` then skips (or fails on CI) in the test."""
    try:
        return list_cases(family) or [MISSING_CASE]
    except GoldenMissingError:
        return [MISSING_CASE]


def _skip_reason(report: pytest.TestReport) -> str:
    """A skipped report's reason: ``(path, line, reason)`` in process and after the trip from an xdist worker."""
    longrepr = report.longrepr
    return str(longrepr[-1]) if isinstance(longrepr, (tuple, list)) else str(longrepr)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter):
    """Outermost wrapper, so that the golden-skip count comes last, after pytest's short summary of skips."""
    try:
        return (yield)
    finally:
        report_golden_skips(terminalreporter)


def report_golden_skips(terminalreporter) -> None:
    """How many tests skipped for missing golden data, and why, in one closing section (only when some did)."""
    reasons = collections.Counter(reason.split(GOLDEN_SKIP, 1)[1].strip()
                                  for reason in map(_skip_reason, terminalreporter.stats.get("skipped", []))
                                  if GOLDEN_SKIP in reason)
    if not reasons:
        return
    count = sum(reasons.values())
    terminalreporter.write_sep("=", f"{count} test{'s' * (count != 1)} skipped: no golden data (official outputs "
                                    "for the parity tests); set VITZOO_GOLDEN_DIR to run them", yellow=True)
    for reason, n in reasons.most_common():
        terminalreporter.write_line(f"{n} x {reason}")


def launch_two_processes(function: Callable[..., None], *args: str) -> None:
    """accelerate's ``debug_launcher(function, args, num_processes=2)``, run from a fresh interpreter.

    The launcher forks, and a process that has run a ``torch.compile``d backward cannot fork children that use
    autograd ("Unable to handle autograd's threading in combination with fork-based multiprocessing"). Whether
    this test process has depends on which tests xdist gave it before, so the fork happens in a clean one.
    ``function`` must be importable by its module and name; ``args`` are strings.
    """
    code = ("from accelerate import debug_launcher\n"
            f"from {function.__module__} import {function.__name__} as function\n"
            f"debug_launcher(function, args={args!r}, num_processes=2)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, sys.path)))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"the two-process run failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


def assert_exports_and_compiles(model: torch.nn.Module, x: torch.Tensor) -> None:
    """``torch.export.export`` and ``torch.compile(fullgraph=True)`` (eager backend: graph capture without
    graph breaks, no C++ build) of an eval-mode ``model`` both reproduce its eager output on ``x``."""
    with torch.no_grad():
        expected = model(x)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), expected)


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
