"""What a person watches during training: a tqdm bar per epoch with loss, learning rate and images/s."""

from __future__ import annotations

import time
from typing import Optional

__all__ = ["EpochProgress"]


class EpochProgress:
    """A tqdm bar over one epoch's batches, shown on the main process only.

    Args:
        total: batches in the epoch.
        description: bar label, e.g. ``"train 3/300"``.
        initial: batches already done (a resumed epoch).
        enabled: False on non-main processes.
        world_size: processes contributing images, for the global images/s.
    """

    def __init__(self, total: int, description: str, *, initial: int = 0, enabled: bool = True, world_size: int = 1):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=description, unit="batch", disable=not enabled,
                        dynamic_ncols=True, leave=False)
        self.world_size = world_size
        self._images = 0
        self._since = time.perf_counter()
        self.images_per_second: Optional[float] = None

    def step(self, images: int) -> None:
        """One batch of ``images`` (per process) is done."""
        self._images += images
        self.bar.update(1)

    def report(self, **values: float) -> float:
        """Show ``values`` (loss, lr, ...) with the images/s since the last report; returns images/s."""
        now = time.perf_counter()
        self.images_per_second = self._images * self.world_size / max(now - self._since, 1e-9)
        self._images, self._since = 0, now
        shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in values.items()}
        shown["img/s"] = f"{self.images_per_second:.1f}"
        self.bar.set_postfix(shown, refresh=False)
        return self.images_per_second

    def close(self) -> None:
        self.bar.close()
