"""Stochastic-depth schedules, computed in plain Python so models build on the meta device."""

from __future__ import annotations

from typing import Sequence, Union

__all__ = ["drop_path_rates"]


def drop_path_rates(rate: float, depths: Union[int, Sequence[int]]) -> Union[list[float], list[list[float]]]:
    """DropPath probabilities rising linearly from 0 to ``rate`` over all blocks (``linspace`` order).

    With an int depth returns one list; with per-stage depths returns one list per stage.
    """
    per_stage = not isinstance(depths, int)
    total = sum(depths) if per_stage else depths
    rates = [rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
    if not per_stage:
        return rates
    out, start = [], 0
    for depth in depths:
        out.append(rates[start:start + depth])
        start += depth
    return out
