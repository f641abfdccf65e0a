"""vitzoo perf_report and the official-code loader: a stand-in official repository (a file with the official
constructor name, registered with timm's decorator as the official files do) is timed side by side without touching
timm's registry, the report is written with its CSVs and PNGs, and a later run without clones shows the recorded
table."""

from __future__ import annotations

import textwrap

import pytest
import timm
import torch

from vitzoo.benchmark import BenchResult
from vitzoo.benchmark.official import load_official
from vitzoo.benchmark.report import crossover
from vitzoo.cli import main

STAND_IN = '''
from timm.models.registry import register_model
from torch import nn


@register_model
def ravlt_t(pretrained=False, **kwargs):  # the vitzoo name: importing it must not replace vitzoo's registration
    return nn.Linear(1, 1)


@register_model
def RAVLT_T(args=None):
    return nn.Sequential(nn.Conv2d(3, 8, 4, 4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
'''


@pytest.fixture
def official_root(tmp_path):
    path = tmp_path / "official" / "RALA" / "classfication" / "RALA.py"
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent(STAND_IN))
    return tmp_path / "official"


def test_report_times_the_official_code_and_records_it(official_root, tmp_path, capsys):
    out = tmp_path / "docs"
    common = ["perf_report", "--out", str(out), "--families", "RAVLT", "--sizes", "64", "--diffusion-sizes",
              "--compile-models", "--mixers", "linear", "--mixer-tokens", "64", "256", "--max-seconds", "0.2"]
    assert main([*common, "--official-root", str(official_root), "--official-models", "ravlt_t",
                 "--official-inputs", "64x2", "--repeats", "2"]) == 0
    assert type(timm.create_model("ravlt_t")).__name__ == "RAVLT"  # timm's registry is still vitzoo's
    report = (out / "performance.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| ravlt_t | 2×64²"))
    official_ms, vitzoo_ms, fused_ms, ratio, ratio_fused = (float(c.strip(" *")) for c in row.split("|")[3:8])
    assert min(official_ms, vitzoo_ms, fused_ms) > 0 and ratio == pytest.approx(official_ms / vitzoo_ms, abs=0.006)
    assert "measured in this run" in report and "| RAVLT |" in report
    assert str(official_root) not in report  # no path of the measuring machine in a file meant to be committed
    recorded = (out / "perf" / "official_vs_vitzoo.csv").read_text().splitlines()
    assert recorded[0].startswith("# machine: ") and recorded[2].startswith("ravlt_t,64,2,")
    for name in ("families_vs_softmax.csv", "families_vs_softmax.png", "linear_mixers_scaling.csv"):
        assert (out / "perf" / name).stat().st_size > 0
    scaling = next(line for line in report.splitlines() if line.startswith("| linear |"))
    assert scaling.endswith("× |")

    assert main(common) == 0  # no clones: the recorded table, said to be recorded
    report = (out / "performance.md").read_text()
    assert "recorded by an earlier run" in report and row in report


def test_load_official_names_what_is_missing(official_root):
    with pytest.raises(ValueError, match="no official model is known for 'resnet50'"):
        load_official(official_root, "resnet50")
    with pytest.raises(FileNotFoundError, match="MALA/classfication_release/model.py.*clone the official repository MALA"):
        load_official(official_root, "mavit_t")
    model = load_official(official_root, "ravlt_t")
    assert not model.training and model(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_bad_flags_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["perf_report", "--official-inputs", "224by8"])
    assert "expected SIZExBATCH" in capsys.readouterr().err
    assert main(["perf_report", "--out", str(tmp_path), "--families", "Mamba"]) == 2
    assert "unknown families ['Mamba']" in capsys.readouterr().err


def _result(size: str, ms: float) -> BenchResult:
    return BenchResult("m", "model", size, 1, 1, ms, 1000 / ms, 1.0, "cpu", "float32")


@pytest.mark.parametrize("linear, softmax, expected", [
    ([3, 5, 9], [4, 8, 30], "≤ 224 (faster at every size)"),
    ([3, 5, 9], [2, 8, 30], "between 224 and 512"),
    ([3, 9, 9], [2, 8, 30], "between 512 and 1024"),
    ([3, 9, 40], [2, 8, 30], "> 1024 (softmax faster up to the largest size)"),
])
def test_crossover_is_the_size_from_which_linear_stays_faster(linear, softmax, expected):
    sizes = ("224", "512", "1024")
    assert crossover([_result(s, ms) for s, ms in zip(sizes, linear)],
                     [_result(s, ms) for s, ms in zip(sizes, softmax)]) == expected


def test_memory_probe_sees_a_big_tensor_and_hands_the_allocator_back_for_timing(monkeypatch):
    """A probe maps big tensors so the high-water mark sees them, and afterwards puts back the 32 MiB mmap threshold:
    left at 128 KiB, every later timing paid a page fault per big allocation (linear mixers 1.4-2x slower)."""
    import vitzoo.benchmark.measure as measure
    from vitzoo.benchmark import PeakMemory

    thresholds = []
    setter = measure._set_mmap_threshold
    monkeypatch.setattr(measure, "_set_mmap_threshold", lambda size: thresholds.append(size) or setter(size))
    with PeakMemory("cpu") as probe:
        block = torch.ones(16 * 2 ** 20)  # 64 MiB, touched
    assert probe.peak_mb >= 60 and block[-1] == 1
    assert thresholds == [128 * 1024, 32 * 2 ** 20]
