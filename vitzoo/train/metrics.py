"""Machine-readable training logs: one JSON object per line, the same rows as CSV, TensorBoard
scalars when tensorboard is installed, and a PNG of the curves for people."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Optional

from .._atomic import atomic_write

__all__ = ["MetricsLogger"]


class MetricsLogger:
    """Append-only metrics for one run directory (``metrics.jsonl``, ``metrics.csv``, ``curves.png``).

    Resuming appends to the existing files; rows with a ``step`` already logged are replaced, so a
    resumed run does not duplicate the epochs it repeats. Each file is rewritten atomically
    (:func:`~vitzoo.train.checkpoint.atomic_write`): a kill mid-write leaves the previous rows intact.
    """

    def __init__(self, directory: str | Path, *, tensorboard: bool = True, step_key: str = "epoch"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.step_key = step_key
        self.jsonl = self.directory / "metrics.jsonl"
        self.rows: list[dict[str, Any]] = []
        if self.jsonl.is_file():
            self.rows = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.directory / "tensorboard"))
            except ImportError:
                self._writer = None

    def log(self, row: dict[str, Any]) -> None:
        """Record one row (typically one epoch) and rewrite the JSONL and CSV files."""
        step = row.get(self.step_key)
        self.rows = [r for r in self.rows if r.get(self.step_key) != step or step is None] + [dict(row)]
        text = "".join(json.dumps(r, default=float) + "\n" for r in self.rows)
        atomic_write(self.jsonl, lambda tmp: Path(tmp).write_text(text))
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.directory / "metrics.csv", lambda tmp: Path(tmp).write_text(buffer.getvalue()))
        if self._writer is not None and step is not None:
            for key, value in row.items():
                if key != self.step_key and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def plot(self, path: Optional[str | Path] = None, *, title: str = "") -> Path:
        """PNG with one panel per metric against ``step_key``: losses, accuracies, learning rate."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path or self.directory / "curves.png")
        keys = [k for k in dict.fromkeys(k for r in self.rows for k in r)
                if k != self.step_key and all(isinstance(r.get(k, 0.0), (int, float)) for r in self.rows)]
        groups = {}
        for key in keys:
            group = "loss" if "loss" in key else "lr" if key == "lr" else "accuracy" if ("top" in key or "acc" in key) else key
            groups.setdefault(group, []).append(key)
        fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(4.2 * max(len(groups), 1), 3.6), squeeze=False)
        for ax, (group, members) in zip(axes[0], groups.items()):
            for key in members:
                points = [(r[self.step_key], r[key]) for r in self.rows
                          if key in r and isinstance(r[key], (int, float)) and math.isfinite(r[key])]
                if points:
                    ax.plot(*zip(*points), marker="o", markersize=3, label=key)
            ax.set_xlabel(self.step_key)
            ax.set_title(group)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
        plt.close(fig)
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
