"""Throughput and peak memory of mixers and models over a range of token counts or resolutions.

Memory is measured where it is allocated: on CUDA with the caching allocator's peak counter, on the
CPU as the growth of the process's resident-set high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``) with glibc told to serve large blocks by ``mmap`` so freed memory is
returned and the next allocation shows up again. CPU figures therefore include allocator overhead.
Time is the median per call from :class:`torch.utils.benchmark.Timer` (``blocked_autorange``).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import gc
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch

__all__ = [
    "BenchResult", "PeakMemory", "bench_denoiser", "bench_mixer", "bench_model", "grid_for_tokens", "markdown_table",
    "interleaved_medians", "parse_target",
    "write_csv",
    "plot_results",
]


@dataclass
class BenchResult:
    """One measured point. ``ms`` is the median time of one forward (or forward+backward) call."""

    target: str
    kind: str
    size: str
    tokens: int
    batch: int
    ms: float
    items_per_s: float
    peak_mem_mb: float
    device: str
    dtype: str
    status: str = "ok"


class PeakMemory:
    """Context manager: ``.peak_mb`` is the memory the block needed above what was in use before it."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.peak_mb = float("nan")

    @staticmethod
    def _rss_kb(field_name: str) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"{field_name} not in /proc/self/status")

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            _set_mmap_threshold(_PROBE_MMAP_THRESHOLD)
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")
            self._base = self._rss_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = self._rss_kb("VmHWM") * 1024
            _set_mmap_threshold(_TIMING_MMAP_THRESHOLD)
        self.peak_mb = max(peak - self._base, 0) / 2 ** 20


_PROBE_MMAP_THRESHOLD = 128 * 1024
_TIMING_MMAP_THRESHOLD = 32 * 1024 * 1024


def _set_mmap_threshold(size: int) -> None:
    """Set glibc's mmap threshold (M_MMAP_THRESHOLD = -3) and return free heap memory to the OS.

    A memory probe wants 128 KiB, so that big tensors are mapped on allocation and unmapped on free
    and the resident-set high-water mark sees each of them. Timing wants the opposite: with the low
    threshold every big allocation faults in fresh pages, which measured 1.4-2.0x slower for the linear
    mixers at 1K-65K tokens; so the probe puts back 32 MiB, the top of glibc's own dynamic threshold.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, size)
        libc.malloc_trim(0)
    except OSError:
        pass


def grid_for_tokens(tokens: int) -> tuple[int, int]:
    """The most nearly square (H, W) with H·W = tokens and H <= W."""
    height = int(math.isqrt(tokens))
    while tokens % height:
        height -= 1
    return height, tokens // height


def _measure(fn: Callable[[], Any], device: torch.device, min_iters: int, max_seconds: float) -> tuple[float, float]:
    """Median ms per call and peak MB of one call of ``fn``.

    After one warm-up call (lazy initialisation and kernel selection are not part of the measurement),
    a call measures the peak memory and the scale of one call; then
    :meth:`torch.utils.benchmark.Timer.blocked_autorange` runs blocks of calls (it synchronises the
    accelerator around each block) for about ``min_iters`` calls, at most ``max_seconds`` (the last
    block may run over), and the time is the median over blocks. The Timer runs at the threads torch
    uses now.
    """
    from torch.utils.benchmark import Timer

    timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    # the Timer synchronises the current accelerator device: make it the measured one
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        fn()
        with PeakMemory(device) as mem:
            one_call = timer.timeit(1).median
        ms = timer.blocked_autorange(min_run_time=min(min_iters * one_call, max_seconds)).median * 1000
    return ms, mem.peak_mb


def _run_point(fn, device, min_iters, max_seconds) -> tuple[float, float, str]:
    try:
        ms, mem = _measure(fn, device, min_iters, max_seconds)
        return ms, mem, "ok"
    except torch.OutOfMemoryError:
        return float("nan"), float("nan"), "oom"
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _sweep(label: str, kind: str, points: Iterable[tuple[str, int, int, Callable[[], Callable[[], Any]]]], *,
           batch: int, device: torch.device, dtype: torch.dtype, min_iters: int, max_seconds: float,
           progress: Optional[Callable[[str], None]]) -> list[BenchResult]:
    """Measure each point ``(size label, tokens, items per call, make_step)``; inputs are made by
    ``make_step`` before the measurement, so peak memory counts what one call needs beyond them."""
    results = []
    for size, tokens, items, make_step in points:
        step = make_step()
        ms, mem, status = _run_point(step, device, min_iters, max_seconds)
        results.append(BenchResult(label, kind, size, tokens, batch, ms, items / ms * 1000 if ms == ms else float("nan"),
                                   mem, str(device), str(dtype).replace("torch.", ""), status))
        if progress:
            progress(f"{label} {size}: {ms:.2f} ms, {mem:.1f} MB")
        del step
    return results


def bench_mixer(
        name: str,
        token_counts: Sequence[int],
        *,
        dim: int = 64,
        num_heads: int = 4,
        batch: int = 1,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        backward: bool = False,
        mixer_kwargs: Optional[dict] = None,
        label: Optional[str] = None,
        min_iters: int = 3,
        max_seconds: float = 5.0,
        progress: Optional[Callable[[str], None]] = None,
) -> list[BenchResult]:
    """Time one mixer on near-square maps of each token count; ``items_per_s`` is tokens/s."""
    from ..mixers import create_mixer

    dev = torch.device(device)
    mixer = create_mixer(name, dim, num_heads, **(mixer_kwargs or {})).to(dev, dtype)

    def point(tokens: int):
        size = grid_for_tokens(tokens)

        def make_step():
            x = torch.randn(batch, tokens, dim, device=dev, dtype=dtype, requires_grad=backward)

            def step():
                if backward:
                    mixer(x, size).float().square().mean().backward()
                else:
                    with torch.no_grad():
                        mixer(x, size)

            return step

        return f"{size[0]}x{size[1]}", tokens, batch * tokens, make_step

    return _sweep(label or name, "mixer", map(point, token_counts), batch=batch, device=dev, dtype=dtype,
                  min_iters=min_iters, max_seconds=max_seconds, progress=progress)


def bench_model(
        name: str,
        img_sizes: Sequence[int],
        *,
        batch: int = 1,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        model_kwargs: Optional[dict] = None,
        label: Optional[str] = None,
        min_iters: int = 3,
        max_seconds: float = 5.0,
        progress: Optional[Callable[[str], None]] = None,
        fuse: bool = False,
        compile: bool = False,
) -> list[BenchResult]:
    """Time inference of a registered model at square input sizes; ``items_per_s`` is images/s and ``tokens``
    the token count of the first stage at that size. ``fuse`` / ``compile`` time the model as
    :func:`vitzoo.optimize` returns it (the label gets ``+fuse`` / ``+compile``; compilation happens in the
    warm-up call, outside the timing)."""
    import timm

    from ..models import optimize
    from ..models._registry import check_model_name

    check_model_name(name)
    dev = torch.device(device)
    built = timm.create_model(name, **(model_kwargs or {})).to(dev, dtype).eval()
    model = optimize(built, fuse=fuse, compile=compile, inplace=True)
    label = (label or name) + ("+fuse" if fuse else "") + ("+compile" if compile else "")

    def point(img: int):
        def make_step():
            x = torch.randn(batch, built.in_chans, img, img, device=dev, dtype=dtype)

            def step():
                with torch.no_grad():
                    model(x)

            return step

        return f"{img}x{img}", _first_stage_tokens(built, img), batch, make_step

    return _sweep(label, "model", map(point, img_sizes), batch=batch, device=dev, dtype=dtype,
                  min_iters=min_iters, max_seconds=max_seconds, progress=progress)


def _first_stage_tokens(model, img: int) -> int:
    """Tokens the model's first mixing stage sees on an ``img`` x ``img`` input (its first feature map's
    positions: the patch grid of a plain ViT, stage 1 of a hierarchical backbone)."""
    info = getattr(model, "feature_info", None)
    reduction = info[0]["reduction"] if info else 1
    return math.ceil(img / reduction) ** 2


def bench_denoiser(
        name: str,
        resolutions: Sequence[int],
        *,
        batch: int = 1,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        denoiser_kwargs: Optional[dict] = None,
        label: Optional[str] = None,
        min_iters: int = 3,
        max_seconds: float = 5.0,
        progress: Optional[Callable[[str], None]] = None,
) -> list[BenchResult]:
    """Time one denoising step of a registered denoiser (:mod:`vitzoo.benchmark.denoisers`) at image
    resolutions; ``tokens`` is what the denoiser's attention sees at that resolution."""
    from .denoisers import get_denoiser

    dev = torch.device(device)
    bench = get_denoiser(name, **(denoiser_kwargs or {}))
    module = bench.module.to(dev, dtype).eval()

    def point(resolution: int):
        def make_step():
            inputs = bench.make_inputs(resolution, batch, dev, dtype)

            def step():
                with torch.no_grad():
                    module(**inputs)

            return step

        return f"{resolution}x{resolution}", bench.tokens(resolution), batch, make_step

    return _sweep(label or name, "denoiser", map(point, resolutions), batch=batch, device=dev, dtype=dtype,
                  min_iters=min_iters, max_seconds=max_seconds, progress=progress)


def interleaved_medians(steps: Sequence[Callable[[], Any]], *, repeats: int = 9, warmup: int = 2) -> list[float]:
    """Median ms per call of each step, timed in turns: every repetition calls each step once, in order, so that a
    slow phase of a shared machine hits all of them alike (comparisons and ratios rather than absolute times)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    times: list[list[float]] = [[] for _ in steps]
    with torch.inference_mode():
        for step in steps:
            for _ in range(warmup):
                step()
        for _ in range(repeats):
            for step, spent in zip(steps, times):
                start = time.perf_counter()
                step()
                spent.append(time.perf_counter() - start)
    return [statistics.median(spent) * 1e3 for spent in times]


def parse_target(spec: str) -> tuple[str, dict]:
    """``"vzvit_small:mixer=linear,depth=2"`` -> ``("vzvit_small", {"mixer": "linear", "depth": 2})``; values are
    read as JSON where they parse (numbers, booleans, lists) and kept as strings otherwise."""
    name, _, rest = spec.partition(":")
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected key=value in {spec!r}, got {item!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return name, kwargs


def write_csv(results: Iterable[BenchResult], path: str | Path) -> Path:
    """Write results as CSV (one row per point, columns = :class:`BenchResult` fields)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(BenchResult)])
        writer.writeheader()
        for result in results:
            writer.writerow(asdict(result))
    return path


def markdown_table(results: Iterable[BenchResult]) -> str:
    """Results as a markdown table (time, throughput, peak memory)."""
    lines = ["| target | size | tokens | batch | ms | items/s | peak MB | device |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.target} | {r.size} | {r.tokens} | {r.batch} | {r.ms:.2f} | {r.items_per_s:.1f} | "
                     f"{r.peak_mem_mb:.1f} | {r.device} |" if r.status == "ok" else
                     f"| {r.target} | {r.size} | {r.tokens} | {r.batch} | {r.status} | | | {r.device} |")
    return "\n".join(lines)


def plot_results(results: Sequence[BenchResult], path: str | Path, *, title: str = "") -> Path:
    """Log-log plot of time and peak memory against tokens, one line per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    for target in dict.fromkeys(r.target for r in results):
        points = [r for r in results if r.target == target and r.status == "ok"]
        xs = [r.tokens for r in points]
        ax_time.plot(xs, [r.ms for r in points], marker="o", label=target)
        ax_mem.plot(xs, [max(r.peak_mem_mb, 1e-3) for r in points], marker="o", label=target)
    xlabel = {"mixer": "tokens (H·W)", "denoiser": "attention tokens"}.get(results[0].kind if results else "", "first-stage tokens")
    for ax, ylabel in ((ax_time, "time per call (ms)"), (ax_mem, "peak memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    device = results[0].device if results else ""
    fig.suptitle(title or f"vitzoo bench ({device})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
