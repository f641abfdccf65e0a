"""Model cards split over several cards by a module's ``CARDS`` (vitzoo.cards), and the two RAVLT/MAViT cards."""

from __future__ import annotations

import types

import pytest

from vitzoo import cards
from vitzoo.cli import main


def test_module_cards_split_and_default(tmp_path):
    assert {"ravlt", "mavit", "vzvit"} <= set(cards.families())
    assert cards.card_models("mavit") == ["mavit_b", "mavit_l", "mavit_s", "mavit_t"]
    assert cards.card_models("ravlt") == ["ravlt_b", "ravlt_l", "ravlt_s", "ravlt_t"]
    assert cards.card_models("vzvit") == ["vzvit_base", "vzvit_small", "vzvit_tiny"]  # no CARDS: one card
    with pytest.raises(ValueError, match="no model card 'nope'"):
        cards.card_models("nope")


def test_cli_writes_each_card_with_its_own_models(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mavit.md").write_text("## Notes\n\nMAViT only.\n")
    assert main(["cards", "--family", "mavit", "--out", str(tmp_path)]) == 0
    assert main(["cards", "--family", "ravlt", "--out", str(tmp_path)]) == 0
    mavit, ravlt = (tmp_path / "mavit.md").read_text(), (tmp_path / "ravlt.md").read_text()
    assert mavit.startswith("# mavit") and "`mavit_s`" in mavit and "`ravlt_s`" not in mavit and "MAViT only." in mavit
    assert ravlt.startswith("# ravlt") and "`ravlt_s`" in ravlt and "`mavit_s`" not in ravlt
    assert "MAViT only." not in ravlt
    assert "25.591 M" in ravlt and "27.143 M" in mavit  # RAVLT-S / MAViT-S parameters


def test_a_module_name_that_is_no_card_writes_all_its_cards(tmp_path, monkeypatch):
    fake = types.SimpleNamespace(CARDS={"first": "vzvit_t*", "second": "vzvit_[bs]*"}, __doc__="A split family.")
    real_import = cards.importlib.import_module
    monkeypatch.setattr(cards.importlib, "import_module",
                        lambda name: fake if name == "vitzoo.models.vzvit" else real_import(name))
    written = cards.write_cards(tmp_path, "vzvit")
    assert [p.name for p in written] == ["first.md", "second.md"]
    assert "`vzvit_tiny`" in (tmp_path / "first.md").read_text()
    assert "`vzvit_tiny`" not in (tmp_path / "second.md").read_text()
    with pytest.raises(ValueError, match="no model card or model module 'nothing'"):
        cards.write_cards(tmp_path, "nothing")
