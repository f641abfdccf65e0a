"""The golden-data reader finds ../shared/golden (or $VITZOO_GOLDEN_DIR) and reads cases; the tests' one helper
turns missing data into a counted skip on a user's clone and into a failure naming the folder under CI=true."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import conftest
import vitzoo.testing.golden as golden
from conftest import golden_case, golden_case_names, golden_folder, golden_manifest


def test_cases_and_manifests_are_readable():
    case = golden_case("rala", "mixer")
    assert case.meta and case.weights and "out" in case.io
    assert "mixer" in golden_case_names("rala")
    manifest = golden_manifest("rala", "RAVLT_T")
    assert manifest["num_params"] == 14_897_768 and len(manifest["keys"]) == 302


def test_env_var_wins_and_missing_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "fam").mkdir()
    monkeypatch.setenv("VITZOO_GOLDEN_DIR", str(tmp_path))
    assert golden.golden_dir("fam") == tmp_path / "fam"
    with pytest.raises(golden.GoldenMissingError, match="no folder"):
        golden.golden_dir("nothing")
    with pytest.raises(golden.GoldenMissingError, match="no nope.json"):
        golden.load_case("fam", "nope")


@pytest.fixture(params=["empty_env_dir", "absent_env_dir", "no_env_nothing_found"])
def no_golden(request, tmp_path, monkeypatch):
    """A world without golden data; returns the folder the messages must name. The default search is pointed
    at an empty tree as well, so that the ../shared/golden beside this checkout cannot be found."""
    monkeypatch.setattr(golden, "_search_starts", lambda: (tmp_path / "checkout" / "vitzoo", tmp_path / "checkout"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CI", raising=False)
    if request.param == "empty_env_dir":
        monkeypatch.setenv("VITZOO_GOLDEN_DIR", str(tmp_path))
        return tmp_path / "rala"
    if request.param == "absent_env_dir":
        monkeypatch.setenv("VITZOO_GOLDEN_DIR", str(tmp_path / "absent"))
        return tmp_path / "absent"
    monkeypatch.delenv("VITZOO_GOLDEN_DIR", raising=False)
    return tmp_path / "shared" / "golden"


HELPERS = [pytest.param(lambda: golden_case("rala", "mixer"), id="case"),
           pytest.param(lambda: golden_manifest("rala", "RAVLT_T"), id="manifest"),
           pytest.param(lambda: golden_folder("rala"), id="folder")]


@pytest.mark.parametrize("read", HELPERS)
def test_missing_golden_data_skips_on_a_users_clone(no_golden, read):
    with pytest.raises(pytest.skip.Exception, match=conftest.GOLDEN_SKIP.replace("[", r"\[")) as skipped:
        read()
    assert str(no_golden) in str(skipped.value)


@pytest.mark.parametrize("ci", ["true", "TRUE"])
@pytest.mark.parametrize("read", HELPERS)
def test_missing_golden_data_fails_under_ci_naming_the_folder(no_golden, read, ci, monkeypatch):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="golden data missing under CI=true") as failed:
        read()
    assert str(no_golden) in str(failed.value)


def test_collection_time_case_list_never_crashes(no_golden, monkeypatch):
    """Without data, parametrize gets one stand-in name whose case skips (or fails on CI) in the test."""
    assert golden_case_names("rala") == [conftest.MISSING_CASE]
    with pytest.raises(pytest.skip.Exception):
        golden_case("rala", conftest.MISSING_CASE)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        golden_case("rala", conftest.MISSING_CASE)


def test_terminal_summary_counts_golden_skips_only():
    """The closing line counts skips by their reason, which is all that comes back from an xdist worker."""
    reason = "golden data not found: VITZOO_GOLDEN_DIR=/x is not a folder"
    skipped = [SimpleNamespace(longrepr=("tests/conftest.py", 40, f"Skipped: {conftest.GOLDEN_SKIP} {reason}")),
               SimpleNamespace(longrepr=["tests/conftest.py", 40, f"Skipped: {conftest.GOLDEN_SKIP} {reason}"]),
               SimpleNamespace(longrepr=("tests/test_x.py", 3, "Skipped: needs a GPU"))]
    lines = []
    reporter = SimpleNamespace(stats={"skipped": skipped}, write_line=lines.append,
                               write_sep=lambda sep, title, **markup: lines.append(title))
    conftest.report_golden_skips(reporter)
    assert lines == ["2 tests skipped: no golden data (official outputs for the parity tests); "
                     "set VITZOO_GOLDEN_DIR to run them", f"2 x {reason}"]
    lines.clear()
    reporter.stats["skipped"] = skipped[2:]
    conftest.report_golden_skips(reporter)
    assert lines == []
