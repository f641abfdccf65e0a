"""Model cards, one markdown file per family, generated from the registry and measured figures.

Several family modules may share one card by setting the same module-level ``CARD = "<name>"``
(the InLine backbones: ``inline_deit``, ``inline_pvt``, ... all write ``inline.md``); a module
without ``CARD`` has a card of its own, named after it. A card combines: the family module's docstring
(for a shared card, the first line of each module's); one row per registered variant (parameters counted
on the meta device, the pretrained cfg's preprocessing, paper figures and checkpoint names from
``make_cfg`` notes); measured figures from ``model_cards/data/<family>.json`` (FLOPs, parity,
benchmarks, written by ``vitzoo cards --flops`` and by the benchmark runs); and the hand-written
``model_cards/notes/<family>.md``.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any, Optional

import torch

from .models import cfg_notes, list_models, model_family

__all__ = ["families", "card_of", "variant_facts", "render_card", "write_cards"]


def card_of(family: str) -> str:
    """The card a family's models go into: its module's ``CARD``, else the family's own name."""
    module = importlib.import_module(f"vitzoo.models.{family}")
    return getattr(module, "CARD", family)


def families() -> list[str]:
    """Cards (families, grouped by ``CARD``) that hold at least one registered model."""
    return sorted({card_of(model_family(name)) for name in list_models()})


def _card_families(card: str) -> list[str]:
    return sorted({fam for fam in map(model_family, list_models()) if card_of(fam) == card})


def _card_models(card: str) -> list[str]:
    return [name for name in list_models() if card_of(model_family(name)) == card]


def _count_params(name: str) -> int:
    import timm

    with torch.device("meta"):
        model = timm.create_model(name)
    return sum(p.numel() for p in model.parameters())


def variant_facts(name: str) -> dict[str, Any]:
    """Registry facts about one variant: params, preprocessing, paper figures, checkpoint."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    notes = cfg_notes(cfg)
    return {
        "name": name,
        "params": _count_params(name),
        "input_size": cfg.get("input_size"),
        "crop_pct": cfg.get("crop_pct"),
        "interpolation": cfg.get("interpolation"),
        "mean": cfg.get("mean"),
        "std": cfg.get("std"),
        "license": cfg.get("license"),
        "origin_url": cfg.get("origin_url"),
        "paper_ids": cfg.get("paper_ids"),
        **notes,
    }


def _data_path(root: Path, family: str) -> Path:
    return root / "data" / f"{family}.json"


def load_measured(root: Path, family: str) -> dict[str, Any]:
    path = _data_path(root, family)
    return json.loads(path.read_text()) if path.is_file() else {}


def measure_flops(family: str, root: Path) -> dict[str, float]:
    """fvcore GFLOPs of every variant at its cfg input size, stored in the family's data file."""
    import timm

    from .commands.info import count_flops

    flops = {}
    for name in _card_models(family):
        model = timm.create_model(name)
        flops[name] = round(count_flops(model, tuple(model.pretrained_cfg["input_size"])), 3)
        del model
    data = load_measured(root, family)
    data["gflops"] = flops
    path = _data_path(root, family)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return flops


def _doc_summary(card: str) -> str:
    members = _card_families(card)
    docs = {fam: inspect.cleandoc(importlib.import_module(f"vitzoo.models.{fam}").__doc__ or fam) for fam in members}
    if members == [card]:
        return docs[card]
    return "\n".join(f"- `{fam}`: {doc.splitlines()[0]}" for fam, doc in docs.items())


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (tuple, list)):
        return "×".join(str(v) for v in value[1:]) if len(value) == 3 else ", ".join(map(str, value))
    return str(value)


def render_card(family: str, root: Path) -> str:
    """The markdown text of one family's card."""
    names = _card_models(family)
    facts = [variant_facts(n) for n in names]
    measured = load_measured(root, family)
    gflops = measured.get("gflops", {})
    lines = [f"# {family}", "", _doc_summary(family), "", "## Variants", "",
             "| model | params | GFLOPs (fvcore) | input | crop | interpolation | paper top-1 | official checkpoint | license |",
             "|---|---|---|---|---|---|---|---|---|"]
    for f in facts:
        lines.append(
            f"| `{f['name']}` | {f['params'] / 1e6:.3f} M | {_fmt(gflops.get(f['name']))} | {_fmt(f['input_size'])} | "
            f"{_fmt(f['crop_pct'])} | {_fmt(f['interpolation'])} | {_fmt(f.get('paper_top1'))} | "
            f"{_fmt(f.get('checkpoint_name'))} | {_fmt(f['license'])} |"
        )
    lines += ["", "Parameters are counted by building each variant on the meta device; FLOPs by fvcore at the "
              "input size above (one multiply-add = 1 FLOP).", ""]
    example = names[0]
    lines += ["## Usage", "", "```python", "import timm, vitzoo", "",
              f'model = timm.create_model("{example}", pretrained=True,',
              '                          pretrained_cfg_overlay=dict(file="<official checkpoint>"))',
              "cfg = timm.data.resolve_data_config({}, model=model)",
              "transform = timm.data.create_transform(**cfg)",
              "```", "", "Convert an official checkpoint to safetensors once:", "", "```bash",
              f"vitzoo convert {example} <official checkpoint> {example}.safetensors", "```", ""]
    for section in ("parity", "benchmarks"):
        if measured.get(section):
            lines += [f"## {section.capitalize()}", "", measured[section].rstrip(), ""]
    notes = root / "notes" / f"{family}.md"
    if notes.is_file():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines)


def write_cards(root: str | Path = "model_cards", family: Optional[str] = None, flops: bool = False) -> list[Path]:
    """Write ``<root>/<family>.md`` for one or every family; with ``flops`` re-measure FLOPs first."""
    root = Path(root)
    written = []
    if family in {model_family(name) for name in list_models()}:
        family = card_of(family)
    elif family and family not in families():
        raise ValueError(f"no model card {family!r}; cards: {', '.join(families())}")
    for fam in [family] if family else families():
        if flops:
            measure_flops(fam, root)
        path = root / f"{fam}.md"
        path.write_text(render_card(fam, root) + "\n")
        written.append(path)
    return written
