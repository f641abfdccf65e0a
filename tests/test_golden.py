"""The golden-data helper finds ../shared/golden (or $VITZOO_GOLDEN_DIR) and reads cases."""

from __future__ import annotations

import pytest

from conftest import golden_case
from vitzoo.golden import GoldenMissingError, golden_dir, list_cases, load_keys_manifest


def test_cases_and_manifests_are_readable():
    case = golden_case("rala", "mixer")
    assert case.meta and case.weights and "out" in case.io
    assert "mixer" in list_cases("rala")
    manifest = load_keys_manifest("rala", "RAVLT_T")
    assert manifest["num_params"] == 14_897_768 and len(manifest["keys"]) == 302


def test_env_var_wins_and_missing_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "fam").mkdir()
    monkeypatch.setenv("VITZOO_GOLDEN_DIR", str(tmp_path))
    assert golden_dir("fam") == tmp_path / "fam"
    with pytest.raises(GoldenMissingError, match="no folder"):
        golden_dir("nothing")
    with pytest.raises(GoldenMissingError, match="no nope.json"):
        from vitzoo.golden import load_case

        load_case("fam", "nope")


def test_ci_fails_instead_of_skipping(monkeypatch, tmp_path):
    monkeypatch.setenv("VITZOO_GOLDEN_DIR", str(tmp_path / "absent"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CI", "true")
    import vitzoo.golden as golden

    monkeypatch.setattr(golden, "__file__", str(tmp_path / "x" / "golden.py"))
    with pytest.raises(pytest.fail.Exception, match="golden data missing on CI"):
        golden_case("rala", "mixer")
