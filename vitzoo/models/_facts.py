"""What each paper reports for its variants and where the official checkpoints are, as typed data.

Each family module holds one table, ``PAPER_FACTS = register_paper_facts({"<arch>.<tag>": PaperFacts(...)})``,
next to its ``default_cfgs``; the model cards and the "no downloadable weights" message read it from
here. Keys are full ``arch.tag`` names because one architecture can have several weights with
different figures (``l2vit_base.official_in1k`` and ``l2vit_base.official_in22k_ft_in1k``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

__all__ = ["PaperFacts", "register_paper_facts", "paper_facts"]


@dataclass(frozen=True)
class PaperFacts:
    """A paper's figures for one variant and its official checkpoint.

    Attributes:
        top1: ImageNet-1k top-1 (%) the paper reports; None where it reports none.
        gflops: GFLOPs the paper reports (its own counting, often not fvcore's).
        params_m: parameters (millions) the paper reports.
        checkpoint_name: the official checkpoint's file name (or how the release names it).
        checkpoint_url: where the official checkpoint is published.
        weights: which weights of the file the official evaluation uses (model vs EMA).
    """

    top1: Optional[float] = None
    gflops: Optional[float] = None
    params_m: Optional[float] = None
    checkpoint_name: Optional[str] = None
    checkpoint_url: Optional[str] = None
    weights: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_FACTS: dict[str, PaperFacts] = {}


def register_paper_facts(table: dict[str, PaperFacts]) -> dict[str, PaperFacts]:
    """Record a family's table (keys ``arch.tag``) and return it; a name registered twice is an error."""
    for name, facts in table.items():
        if "." not in name:
            raise ValueError(f"paper facts are keyed by 'arch.tag', got {name!r}")
        if name in _FACTS and _FACTS[name] != facts:
            raise ValueError(f"paper facts for {name!r} are registered twice")
        _FACTS[name] = facts
    return table


def paper_facts(name: str) -> Optional[PaperFacts]:
    """The facts of ``arch.tag``, or of an architecture's default tag (its first pretrained cfg)."""
    if "." in name:
        return _FACTS.get(name)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    tag = getattr(cfg, "tag", None) if cfg is not None else None
    return _FACTS.get(f"{name}.{tag}") if tag else None
