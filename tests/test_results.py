"""foldcnn.results: a measurement written as results/ data, with what docs/render.py and
tests/test_docs.py need (command, date, CPU, commit, load, columns that name row fields)."""
import json
import re
import subprocess

import pytest

from foldcnn.results import git_commit, slug, this_run, write_result

COLUMNS = [{"title": "model", "cell": "{model}"}, {"title": "gain", "cell": "{ratio:.2f}x"}]


def test_write_result_names_the_file_by_what_where_and_commit_and_records_the_run(tmp_path):
    rows = [{"model": "apex-squad-count", "ratio": 1.29}, {"model": "sot-timer", "ratio": 1.33}]
    path = write_result(tmp_path / "results", "best vs best", description="f=4 over f=1", columns=COLUMNS,
                        rows=rows, where="test-cpu", command="foldcnn bench ...", setup="batch 1,024")
    doc = json.loads(path.read_text())
    assert path.name == f"best-vs-best_test-cpu_{doc['commit']}.json"
    assert doc["command"] == "foldcnn bench ..." and doc["setup"] == "batch 1,024" and doc["rows"] == rows
    for key in ("what", "date", "time_utc", "cpu", "machine", "commit", "load", "columns"):
        assert doc[key], key
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", doc["date"])


def test_a_column_naming_no_row_field_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'ratio'"):
        write_result(tmp_path, "x", description="x", columns=COLUMNS, rows=[{"model": "m"}], where="w", command="c")
    assert not list(tmp_path.iterdir())


def test_commit_is_the_checkout_s_and_says_when_it_is_dirty(tmp_path):
    assert git_commit(tmp_path) == "unknown"  # not a checkout
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "f").write_text("a")
    run("add", "f")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "m")
    clean = git_commit(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{7,}", clean)
    (tmp_path / "f").write_text("b")
    assert git_commit(tmp_path) == clean + "-dirty"


def test_this_run_and_slug():
    run = this_run()
    assert run["cpu"].endswith("cores") and run["load"]
    assert slug("Vendor CPU 9000 (R)") == "vendor-cpu-9000-r"
