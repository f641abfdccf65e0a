"""argparse ``type=`` functions for numeric flags: a value outside the expected range is refused where it is
parsed, with argparse's one usage line naming the flag and what was expected (exit status 2)."""

from __future__ import annotations

import argparse
from typing import Callable

__all__ = ["bounded_int", "multiple_of", "nonnegative_float", "nonnegative_int", "positive_float", "positive_int",
           "probability"]


def _number(kind: type, text: str, expected: str):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if kind is float and value != value:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _number(int, text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    value = _number(int, text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(float, text, "a positive number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(float, text, "a number >= 0")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1]."""
    value = _number(float, text, "a probability in [0, 1]")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text}")
    return value


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An integer in [low, high]."""

    def parse(text: str) -> int:
        value = _number(int, text, f"an integer in [{low}, {high}]")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {text}")
        return value

    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


def multiple_of(step: int, what: str = "") -> Callable[[str], int]:
    """A positive integer multiple of ``step`` (``what`` says why, e.g. "the VAE's factor")."""
    reason = f" ({what})" if what else ""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value % step:
            below = max(step, value // step * step)
            raise argparse.ArgumentTypeError(f"expected a positive multiple of {step}{reason}, got {text} "
                                             f"(e.g. {below})")
        return value

    parse.__name__ = f"multiple of {step}"
    return parse
