"""Evaluation metrics of AI-generated-image detection: accuracy on real and on fake, AP and ROC-AUC, per
generator with mean ± std across generators.

Spec ``../shared/specs/ppl.md`` §4: the papers report accuracy per generator at threshold 0.5 summarised as
"mAcc ± std"; UniversalFakeDetect adds AP and real / fake accuracy. AP and AUC come from scikit-learn
(``average_precision_score``, ``roc_auc_score``), the implementations the field's tables use. The std across
generators is the population std (``numpy.std``, ddof 0) [infer: the papers do not say which].

Labels: 1 = AI-generated (fake), 0 = real; scores are P(fake) (``sigmoid(logit)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = ["METRICS", "GeneratorTable", "binary_metrics", "per_generator_metrics"]

METRICS = ("acc", "acc_real", "acc_fake", "ap", "auc")


def _numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values).reshape(-1)


def _arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = _numpy(scores).astype(np.float64), _numpy(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"got {scores.shape[0]} scores for {labels.shape[0]} labels")
    if scores.size == 0:
        raise ValueError("no scores to evaluate")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    return scores, labels.astype(np.int64)


def binary_metrics(scores, labels, threshold: float = 0.5) -> dict[str, float]:
    """``acc`` (all images), ``acc_real``, ``acc_fake``, ``ap`` and ``auc`` of one set of images.

    An image is called fake when ``score >= threshold``. With one class only, the accuracy of the absent class,
    AP (no positives) and AUC are NaN, and the result's ``"note"`` says why, rather than raising.

    Args:
        scores: P(fake) per image (array-like or tensor).
        labels: 1 = fake, 0 = real.
        threshold: the decision threshold on the score (0.5 as in the papers).
    """
    scores, labels = _arrays(scores, labels)
    predicted = scores >= threshold
    real, fake = labels == 0, labels == 1
    result = {
        "acc": float((predicted == fake).mean()),
        "acc_real": float((~predicted[real]).mean()) if real.any() else math.nan,
        "acc_fake": float(predicted[fake].mean()) if fake.any() else math.nan,
    }
    if real.any() and fake.any():
        result["ap"] = float(average_precision_score(labels, scores))
        result["auc"] = float(roc_auc_score(labels, scores))
    else:
        result["ap"] = result["auc"] = math.nan
        result["note"] = f"only {'fake' if fake.any() else 'real'} images: AP and ROC-AUC are undefined (NaN)"
    return result


@dataclass
class GeneratorTable:
    """Per-generator metrics and their mean ± std across generators (NaN entries left out of both).

    Attributes:
        rows: ``{generator: {metric: value, ..., "count": n}}`` in the order generators first appear.
        mean, std: ``{metric: value}`` over generators.
        notes: ``{generator: note}`` for generators with undefined metrics.
    """

    rows: dict[str, dict[str, float]]
    mean: dict[str, float]
    std: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-ready dict (NaN written as None)."""
        def clean(values: dict) -> dict:
            return {key: (None if isinstance(value, float) and math.isnan(value) else value)
                    for key, value in values.items()}
        return {"generators": {name: clean(row) for name, row in self.rows.items()}, "mean": clean(self.mean),
                "std": clean(self.std), "notes": dict(self.notes)}

    def to_markdown(self, percent: bool = True) -> str:
        """A Markdown table, one row per generator and a final ``mean ± std`` row."""
        scale = 100.0 if percent else 1.0

        def cell(value: float) -> str:
            return "n/a" if math.isnan(value) else f"{value * scale:.2f}"

        lines = ["| generator | n | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
        for name, row in self.rows.items():
            lines.append(f"| {name} | {row['count']} | " + " | ".join(cell(row[m]) for m in METRICS) + " |")
        lines.append("| mean ± std | | " + " | ".join(
            f"{cell(self.mean[m])} ± {cell(self.std[m])}" for m in METRICS) + " |")
        return "\n".join(lines)


def per_generator_metrics(scores, labels, generators: Sequence[str], threshold: float = 0.5) -> GeneratorTable:
    """:func:`binary_metrics` for each generator's images (its fakes and the reals evaluated with it, as in
    GenImage's ``<generator>/val/{ai,nature}``), and mean ± std across generators (spec §4: mAcc ± std)."""
    scores, labels = _arrays(scores, labels)
    generators = np.asarray([str(name) for name in generators])
    if generators.shape != scores.shape:
        raise ValueError(f"got {generators.shape[0]} generator names for {scores.shape[0]} scores")
    rows, notes = {}, {}
    for name in dict.fromkeys(generators.tolist()):
        select = generators == name
        row = binary_metrics(scores[select], labels[select], threshold)
        if "note" in row:
            notes[name] = row.pop("note")
        rows[name] = dict(row, count=int(select.sum()))
    mean, std = {}, {}
    for metric in METRICS:
        values = np.array([row[metric] for row in rows.values()], dtype=np.float64)
        values = values[~np.isnan(values)]
        mean[metric] = float(values.mean()) if values.size else math.nan
        std[metric] = float(values.std()) if values.size else math.nan
    return GeneratorTable(rows=rows, mean=mean, std=std, notes=notes)
