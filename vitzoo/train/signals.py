"""Turn SIGINT/SIGTERM into a flag a training loop polls, so it can checkpoint before exiting."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

__all__ = ["StopRequested", "graceful_stop"]

_logger = logging.getLogger("vitzoo.train")


class StopRequested:
    """Set by the handlers of :func:`graceful_stop`; ``bool(flag)`` tells whether a stop was asked."""

    def __init__(self):
        self.signal_number: int | None = None

    def __bool__(self) -> bool:
        return self.signal_number is not None


@contextlib.contextmanager
def graceful_stop(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[StopRequested]:
    """Within the block, the first SIGINT/SIGTERM only sets the returned flag (a second one raises
    ``KeyboardInterrupt`` so a stuck job can still be killed). Handlers are restored on exit.
    Outside the main thread (where signals cannot be caught) the flag simply never sets."""
    flag = StopRequested()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag:
            raise KeyboardInterrupt(f"second signal {signum}")
        flag.signal_number = signum
        _logger.warning("received signal %d: finishing the current step, saving a checkpoint, then exiting", signum)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
