"""Model cards, one markdown file per card, generated from the registry and measured figures.

A module's models go into one card named after the module, unless it declares
``CARDS = {card name: model-name pattern}``: several cards from one module (``vitzoo.models.ravlt``
writes ``ravlt.md`` and ``mavit.md``), or one card shared by several modules that name the same card
(``inline_deit``, ``inline_pvt``, ... all write ``inline.md``). A card combines: the modules'
docstrings (for a shared card, the first line of each); one row per registered variant (parameters
counted on the meta device, the pretrained cfg's preprocessing, paper figures and checkpoint names
from the family's ``PAPER_FACTS`` table); measured figures from ``model_cards/data/<card>.json`` (FLOPs, parity,
benchmarks, written by ``vitzoo cards --flops`` and by the benchmark runs); and the hand-written
``model_cards/notes/<card>.md``.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any, Optional

import torch

from .models import list_models, model_family, paper_facts

__all__ = ["families", "card_models", "variant_facts", "render_card", "write_cards"]


def _cards() -> dict[str, list[tuple[str, str]]]:
    """Card name -> [(model module, model-name pattern), ...] over every module that registers models.

    A module's models go into one card named after the module, unless the module declares
    ``CARDS = {card: pattern}``: several cards from one module (RAVLT and MAViT), or one card shared
    by several modules that name the same card (the four InLine backbones).
    """
    cards: dict[str, list[tuple[str, str]]] = {}
    for module_name in sorted({model_family(name) for name in list_models()}):
        module = importlib.import_module(f"vitzoo.models.{module_name}")
        for card, pattern in (getattr(module, "CARDS", None) or {module_name: "*"}).items():
            cards.setdefault(card, []).append((module_name, pattern))
    return cards


def families() -> list[str]:
    """The card names."""
    return sorted(_cards())


def card_models(card: str) -> list[str]:
    """The registered models a card covers."""
    cards = _cards()
    if card not in cards:
        raise ValueError(f"no model card {card!r}; cards: {', '.join(sorted(cards))}")
    return [name for module_name, pattern in cards[card] for name in list_models(pattern, family=module_name)]


def _count_params(name: str) -> int:
    import timm

    with torch.device("meta"):
        model = timm.create_model(name)
    return sum(p.numel() for p in model.parameters())


def variant_facts(name: str) -> dict[str, Any]:
    """Registry facts about one variant: params, preprocessing, paper figures, checkpoint."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    facts = paper_facts(name)
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
        **{f"paper_{key}" if key in ("top1", "gflops", "params_m") else key: value
           for key, value in (facts.as_dict() if facts else {}).items()},
    }


def _data_path(root: Path, family: str) -> Path:
    return root / "data" / f"{family}.json"


def load_measured(root: Path, family: str) -> dict[str, Any]:
    path = _data_path(root, family)
    return json.loads(path.read_text()) if path.is_file() else {}


def measure_flops(family: str, root: Path) -> dict[str, float]:
    """fvcore GFLOPs of every variant at its cfg input size, stored in the family's data file."""
    import timm

    from .benchmark import count_flops

    flops = {}
    for name in card_models(family):
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
    members = [module_name for module_name, _ in _cards()[card]]
    docs = {m: inspect.cleandoc(importlib.import_module(f"vitzoo.models.{m}").__doc__ or m) for m in members}
    if len(members) == 1:
        return docs[members[0]]
    return "\n".join(f"- `{m}`: {doc.splitlines()[0]}" for m, doc in docs.items())


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (tuple, list)):
        return "×".join(str(v) for v in value[1:]) if len(value) == 3 else ", ".join(map(str, value))
    return str(value)


def render_card(family: str, root: Path) -> str:
    """The markdown text of one card (see :func:`_cards`)."""
    names = card_models(family)
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
    """Write ``<root>/<card>.md`` for every card, for one card (``family="mavit"``), or for every card of
    a model module whose name is not itself a card; with ``flops`` re-measure FLOPs first."""
    root = Path(root)
    written = []
    cards = _cards()
    if family is None:
        selected = sorted(cards)
    elif family in cards:
        selected = [family]
    else:
        selected = sorted(card for card, members in cards.items() if any(m == family for m, _ in members))
        if not selected:
            raise ValueError(f"no model card or model module {family!r}; cards: {', '.join(sorted(cards))}")
    for fam in selected:
        if flops:
            measure_flops(fam, root)
        path = root / f"{fam}.md"
        path.write_text(render_card(fam, root) + "\n")
        written.append(path)
    return written
