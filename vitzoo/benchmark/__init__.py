"""Benchmarks of the zoo: throughput and peak memory of mixers, models and diffusion denoisers
(:mod:`.measure`), the denoisers they can time (:mod:`.denoisers`), fvcore FLOP counts (:mod:`.flops`), the official
implementations timed side by side from a user's clones (:mod:`.official`) and the performance report
(:mod:`.report`).
It sits above the model, diffusion and training packages and below the cards and the commands: nothing
under ``vitzoo/`` except those imports it."""

from .denoisers import DenoiserBench, get_denoiser, list_denoisers, register_denoiser
from .flops import count_flops
from .measure import (BenchResult, PeakMemory, bench_denoiser, bench_mixer, bench_model, grid_for_tokens,
                      interleaved_medians, markdown_table, parse_target, plot_results, write_csv)

__all__ = [
    "BenchResult", "DenoiserBench", "PeakMemory", "bench_denoiser", "bench_mixer", "bench_model", "count_flops",
    "get_denoiser", "grid_for_tokens", "interleaved_medians", "list_denoisers", "markdown_table", "parse_target",
    "plot_results", "register_denoiser", "write_csv",
]
