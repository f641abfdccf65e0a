"""The performance report, ``docs/performance.md``: one function (and ``vitzoo perf_report``) measures everything it
shows and writes the markdown, CSVs and PNGs, each naming the machine they came from.

Sections: vitzoo against the official code (timed side by side, :mod:`.official`; measured when a folder of
official clones is given, otherwise the recorded CSV of the last such run is shown with its machine), every vision
family against its softmax twin over input sizes with the crossover size, the diffusion transformers against DiT,
``torch.compile`` speedups, and the scaling of every linear mixer in the token count.
"""

from __future__ import annotations

import csv
import math
import os
import platform
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from .measure import (BenchResult, bench_denoiser, bench_model, grid_for_tokens, interleaved_medians, parse_target,
                      plot_results, write_csv)
from .official import SideBySide, compare_with_official

__all__ = ["DEFAULT_FAMILIES", "LINEAR_MIXERS", "OFFICIAL_INPUTS", "ReportOptions", "crossover", "machine",
           "write_report"]

# family -> (vitzoo model, its softmax twin): the same backbone with softmax attention where the paper has linear
DEFAULT_FAMILIES: dict[str, tuple[str, str]] = {
    "InLine-DeiT": ("inline_deit_tiny", "inline_deit_tiny:mixer=softmax"),
    "InLine-PVT": ("inline_pvt_tiny", "inline_pvt_tiny:mixers=softmax"),
    "InLine-Swin": ("inline_swin_tiny", "inline_swin_tiny:mixers=window"),
    "InLine-CSwin": ("inline_cswin_tiny", "inline_cswin_tiny:mixers=cswin"),
    "RAVLT": ("ravlt_t", "ravlt_t:mixers=rala_softmax"),
    "MAViT": ("mavit_t", "mavit_t:mixers=rala_softmax"),
    "L2ViT": ("l2vit_tiny", "l2vit_tiny:global_mixer=softmax"),
    "LightNet": ("lightnet_tiny", "lightnet_tiny:mixer=softmax"),
}
DIFFUSION = (("LiT-S/2", "lit:variant=S/2"), ("LightNet-DiT-S/2", "lightnet:variant=S/2"), ("DiT-S/2", "dit:variant=S/2"))
LINEAR_MIXERS = ("linear", "inline", "rala", "mala", "l2vit", "lit", "linfusion", "lightnet")
OFFICIAL_MODELS_TIMED = ("inline_deit_tiny", "inline_deit_small", "inline_pvt_tiny", "inline_pvt_small",
                         "inline_swin_tiny", "inline_swin_small", "inline_cswin_tiny", "inline_cswin_small", "ravlt_t",
                         "ravlt_s", "mavit_t", "mavit_s", "l2vit_tiny", "l2vit_small")
OFFICIAL_INPUTS = ((224, 8), (512, 1))
OFFICIAL_CSV = "official_vs_vitzoo.csv"


@dataclass
class ReportOptions:
    """What the report measures; the defaults are the published report's."""

    families: dict[str, tuple[str, str]]
    sizes: Sequence[int] = (224, 512, 1024)
    diffusion: Sequence[tuple[str, str]] = DIFFUSION
    diffusion_sizes: Sequence[int] = (256, 512, 1024, 2048)
    compile_models: Sequence[str] = ("inline_deit_tiny", "inline_pvt_tiny", "ravlt_t", "l2vit_tiny")
    mixers: Sequence[str] = LINEAR_MIXERS
    mixer_tokens: tuple[int, int] = (1024, 65536)
    official_root: Optional[Path] = None
    official_models: Sequence[str] = OFFICIAL_MODELS_TIMED
    official_inputs: Sequence[tuple[int, int]] = OFFICIAL_INPUTS
    repeats: int = 9
    max_seconds: float = 10.0


def machine() -> str:
    """The machine in one line: CPU model, cores, torch threads, torch version (and the GPU when timing on CUDA)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def crossover(linear: Sequence[BenchResult], softmax: Sequence[BenchResult]) -> str:
    """The smallest measured size from which the linear model is faster at every larger measured size."""
    pairs = [(a.size, a.ms, b.ms) for a, b in zip(linear, softmax) if a.status == b.status == "ok"]
    if not pairs:
        return "not measured"
    faster = [ms_linear < ms_softmax for _, ms_linear, ms_softmax in pairs]
    if all(faster):
        return f"≤ {pairs[0][0]} (faster at every size)"
    if not faster[-1]:
        return f"> {pairs[-1][0]} (softmax faster up to the largest size)"
    first = max(i for i, is_faster in enumerate(faster) if not is_faster) + 1
    return f"between {pairs[first - 1][0]} and {pairs[first][0]}"


def write_report(out: str | Path, options: ReportOptions, *,
                 progress: Optional[Callable[[str], None]] = None) -> Path:
    """Measure everything in ``options`` and write ``<out>/performance.md`` with its CSVs and PNGs in ``<out>/perf``."""
    out = Path(out)
    data = out / "perf"
    data.mkdir(parents=True, exist_ok=True)
    host = machine()
    note = progress or (lambda message: None)
    sections = [f"# Performance\n\nGenerated by `vitzoo perf_report` on: **{host}**. Inference, float32, medians. "
                "Every number below was measured in the run that wrote this file, except the official-code table "
                "when it says it was recorded.\n"]
    sections.append(_official_section(data, options, host, note))
    sections.append(_twins_section(data, options, host, note))
    if options.diffusion:
        sections.append(_diffusion_section(data, options, host, note))
    if options.compile_models:
        sections.append(_compile_section(data, options, host, note))
    if options.mixers:
        sections.append(_mixer_section(data, options, host, note))
    path = out / "performance.md"
    path.write_text("\n".join(sections))
    return path


def _official_section(data: Path, options: ReportOptions, host: str, note) -> str:
    path = data / OFFICIAL_CSV
    if options.official_root is not None:
        rows = compare_with_official(options.official_root, options.official_models, options.official_inputs,
                                     repeats=options.repeats, progress=note)
        _write_rows(path, rows, host)
        origin = "measured in this run from clones of the official repositories (`--official-root`)"
    elif path.is_file():
        rows, recorded_on = _read_rows(path)
        origin = f"recorded by an earlier run of this command with `--official-root` on: {recorded_on}"
    else:
        return ("## Against the official code\n\nNot measured: pass `--official-root` (a folder with clones of the "
                "official repositories, see `vitzoo/benchmark/official.py`).\n")
    lines = ["## Against the official code", "",
             f"official ms / vitzoo ms, the official model and vitzoo's timed interleaved in one process ({origin}). "
             "`fused` is `vitzoo.optimize(model)` (BatchNorms folded, Linear + activation as one oneDNN call); no "
             "`torch.compile`.", "",
             "| model | input | official ms | vitzoo ms | fused ms | official / vitzoo | official / fused |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.status != "ok":
            lines.append(f"| {row.model} | {row.batch}×{row.img_size}² | {row.status} | | | | |")
            continue
        lines.append(f"| {row.model} | {row.batch}×{row.img_size}² | {row.official_ms:.1f} | {row.vitzoo_ms:.1f} | "
                     f"{row.vitzoo_fused_ms:.1f} | {row.speedup:.2f} | **{row.speedup_fused:.2f}** |")
    measured = [row for row in rows if row.status == "ok"]
    if measured:
        geo = math.exp(sum(math.log(row.speedup_fused) for row in measured) / len(measured))
        lines += ["", f"Geometric mean official / fused over {len(measured)} cases: {geo:.2f}; lowest unfused "
                      f"official / vitzoo: {min(row.speedup for row in measured):.2f}."]
    return "\n".join(lines) + "\n"


def _write_rows(path: Path, rows: Sequence[SideBySide], host: str) -> None:
    with open(path, "w", newline="") as handle:
        handle.write(f"# machine: {host}\n")
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(SideBySide)])
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))


def _read_rows(path: Path) -> tuple[list[SideBySide], str]:
    with open(path, newline="") as handle:
        first = handle.readline()
        if not first.startswith("# machine: "):
            raise ValueError(f"{path} does not start with the '# machine: ...' line vitzoo perf_report writes")
        rows = [SideBySide(row["model"], int(row["img_size"]), int(row["batch"]), float(row["official_ms"]),
                           float(row["vitzoo_ms"]), float(row["vitzoo_fused_ms"]), row["status"])
                for row in csv.DictReader(handle)]
    return rows, first[len("# machine: "):].strip()


def _twins_section(data: Path, options: ReportOptions, host: str, note) -> str:
    results: list[BenchResult] = []
    lines = ["## Linear attention against its softmax twin", "",
             "Each family's tiny model (fused) against the same backbone with softmax attention in the linear "
             "stages, batch 1. The crossover is the input size from which the linear model is faster.", "",
             "| family | size | linear ms | softmax ms | linear img/s | linear peak MB | softmax peak MB |",
             "|---|---|---|---|---|---|---|"]
    crossovers = []
    for family, (linear_spec, softmax_spec) in options.families.items():
        pair = [_bench_spec(spec, options, fuse=True, note=note) for spec in (linear_spec, softmax_spec)]
        results += pair[0] + pair[1]
        for a, b in zip(*pair):
            lines.append(f"| {family} | {a.size} | {_ms(a)} | {_ms(b)} | {a.items_per_s:.2f} | {a.peak_mem_mb:.0f} | "
                         f"{b.peak_mem_mb:.0f} |")
        crossovers.append(f"| {family} | {crossover(*pair)} |")
    write_csv(results, data / "families_vs_softmax.csv")
    plot_results(results, data / "families_vs_softmax.png", title=f"linear vs softmax twins, batch 1 ({host})")
    lines += ["", "| family | crossover |", "|---|---|", *crossovers, "",
              "![families](perf/families_vs_softmax.png)", ""]
    return "\n".join(lines)


def _diffusion_section(data: Path, options: ReportOptions, host: str, note) -> str:
    results: list[BenchResult] = []
    for label, spec in options.diffusion:
        name, kwargs = parse_target(spec)
        results += bench_denoiser(name, options.diffusion_sizes, denoiser_kwargs=kwargs, label=label,
                                  max_seconds=options.max_seconds, progress=note)
    write_csv(results, data / "diffusion_vs_dit.csv")
    plot_results(results, data / "diffusion_vs_dit.png", title=f"one denoising step, batch 1 ({host})")
    lines = ["## Diffusion transformers", "", "One denoising step, random weights, batch 1.", "",
             "| model | image | tokens | ms | peak MB |", "|---|---|---|---|---|"]
    lines += [f"| {r.target} | {r.size} | {r.tokens} | {_ms(r)} | {r.peak_mem_mb:.0f} |" for r in results]
    return "\n".join(lines + ["", "![diffusion](perf/diffusion_vs_dit.png)", ""])


def _compile_section(data: Path, options: ReportOptions, host: str, note) -> str:
    results: list[BenchResult] = []
    lines = ["## torch.compile", "", "Fused model, eager against `torch.compile` (default mode; compiled in a warm-up "
             "call outside the timing), 224², batch 1.", "", "| model | eager ms | compiled ms | speedup |",
             "|---|---|---|---|"]
    for name in options.compile_models:
        eager = _bench_spec(name, options, fuse=True, note=note, sizes=(224,))
        compiled = _bench_spec(name, options, fuse=True, compile=True, note=note, sizes=(224,))
        results += eager + compiled
        lines.append(f"| {name} | {_ms(eager[0])} | {_ms(compiled[0])} | {eager[0].ms / compiled[0].ms:.2f} |")
    write_csv(results, data / "compile.csv")
    return "\n".join(lines) + "\n"


def _mixer_section(data: Path, options: ReportOptions, host: str, note) -> str:
    from ..mixers import create_mixer

    low, high = options.mixer_tokens
    lines = ["## Linear mixers in the token count", "",
             f"Each linear mixer, dim 64, 4 heads, batch 1: time for {high:,} tokens over time for {low:,} "
             f"({high // low}× the tokens), the two timed in turns ({options.repeats} repetitions, medians).", "",
             f"| mixer | {low:,} tokens ms | {high:,} tokens ms | ratio |", "|---|---|---|---|"]
    rows = []
    for name in options.mixers:
        mixer = create_mixer(name, 64, 4).eval()
        steps = []
        for tokens in (low, high):
            size = grid_for_tokens(tokens)
            steps.append(partial(mixer, torch.randn(1, size[0] * size[1], 64), size))
        low_ms, high_ms = interleaved_medians(steps, repeats=options.repeats)
        rows.append({"mixer": name, "tokens_low": low, "ms_low": low_ms, "tokens_high": high, "ms_high": high_ms,
                     "ratio": high_ms / low_ms})
        lines.append(f"| {name} | {low_ms:.2f} | {high_ms:.1f} | {high_ms / low_ms:.1f}× |")
        note(f"{name}: {high_ms / low_ms:.1f}x")
    with open(data / "linear_mixers_scaling.csv", "w", newline="") as handle:
        handle.write(f"# machine: {host}\n")
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return "\n".join(lines) + "\n"


def _bench_spec(spec: str, options: ReportOptions, *, fuse: bool = False, compile: bool = False, note,
                sizes: Optional[Sequence[int]] = None) -> list[BenchResult]:
    name, kwargs = parse_target(spec)
    return bench_model(name, sizes or options.sizes, model_kwargs=kwargs, label=spec, fuse=fuse, compile=compile,
                       max_seconds=options.max_seconds, progress=note)


def _ms(result: BenchResult) -> str:
    return f"{result.ms:.1f}" if result.status == "ok" else result.status
