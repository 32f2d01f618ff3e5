"""Docs: measurements named by date, machine and commit (never by a working session), numbers as data
in results/, tables rendered from them and the README quoting nothing else."""
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where the project speaks of itself: the docs, the README, the experiments and the package.
CHECKED = ("README.md", "docs", "experiments", "src")
TEXT_SUFFIXES = {".md", ".py", ".sh", ".txt", ".toml", ".cfg", ".yaml", ".yml", ".json"}
# Build and cache output: setuptools copies README.md into <name>.egg-info/PKG-INFO.
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".hypothesis"}
# "session 7", "Session-4", "sessions 1-7", a line break between the word and the number.
SESSION_NUMBER = re.compile(r"\bsessions?[\s_-]*\d", re.IGNORECASE)


def checked_files() -> list[Path]:
    files = []
    for name in CHECKED:
        top = ROOT / name
        candidates = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in candidates:
            parts = path.relative_to(ROOT).parts
            if any(p in SKIPPED_DIRS or p.endswith(".egg-info") for p in parts):
                continue
            if path.is_file() and path.suffix in TEXT_SUFFIXES:
                files.append(path)
    return files


def session_mentions(text: str) -> list[str]:
    """Each line (1-based) that names a session by number, as 'LINE: excerpt'."""
    hits = []
    for m in SESSION_NUMBER.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        hits.append(f"{line}: {text[max(0, m.start() - 30):m.end() + 30]!r}")
    return hits


def test_the_pattern_catches_session_numbers_and_spares_runtime_sessions():
    for named in ("measured in session 7", "Session 8, 26 minutes", "the session-4 runs",
                  "in sessions 1-7", "higher than session\n4's", "(SESSION 3)"):
        assert session_mentions(named), named
    for fine in ("the same ORT session", "a Ray session already open", "ort.InferenceSession(",
                 "measured 2026-11-21 on Intel Xeon (AMX) at commit 70d2545", "sessions of 2 cores"):
        assert not session_mentions(fine), fine


def test_docs_readme_experiments_and_src_name_no_session_by_number():
    files = checked_files()
    assert any(p.name == "README.md" for p in files)
    assert any(p.parent.name == "docs" for p in files)
    assert any(p.suffix == ".py" and "experiments" in p.parts for p in files)
    assert any(p.suffix == ".py" and "src" in p.parts for p in files)
    found = {}
    for path in files:
        hits = session_mentions(path.read_text(encoding="utf-8"))
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert not found, ("name measurements by date, machine and commit (e.g. 'measured 2026-11-21 on "
                       f"Intel Xeon (AMX) at commit abc1234'), not by session: {found}")


# ------------------------------------------------------------------ numbers as data (results/)
RESULTS = ROOT / "results"
NUM = r"\d[\d,]*(?:\.\d+)?"
# What README.md may only quote from results/: percentages, ratios (1.34x) and images/s figures,
# alone or as a range ("1.29-1.34x", "0.87 to 0.99%"); every end of a range counts.
QUOTED = re.compile(rf"(?<![\w.])({NUM})(?:\s*(?:-|to)\s*({NUM}))?(?:\s*(%)|(x)\b|\s+(images/s))")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def load_render():
    """docs/render.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_render", ROOT / "docs" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quoted_numbers(text: str) -> list[str]:
    """Each percentage, ratio and images/s figure of ``text`` outside code blocks, as written."""
    prose = FENCE.sub("", text)
    found = []
    for m in QUOTED.finditer(prose):
        found += [n for n in (m[1], m[2]) if n]
    return found


def result_values() -> list[float]:
    """Every number in results/*.json: numeric fields and numbers written inside text fields."""
    values = []

    def walk(v):
        if isinstance(v, bool):
            return
        if isinstance(v, (int, float)):
            values.append(float(v))
        elif isinstance(v, str):
            values.extend(float(n.replace(",", "")) for n in re.findall(NUM, v))
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for path in sorted(RESULTS.rglob("*.json")):
        walk(json.loads(path.read_text(encoding="utf-8")))
    return values


def in_results(quoted: str, values: list[float]) -> bool:
    """A quoted number is in results/ when some value there rounds to it at its written precision."""
    decimals = len(quoted.partition(".")[2])
    target = float(quoted.replace(",", ""))
    return any(abs(round(v, decimals) - target) < 1e-9 for v in values)


def test_quoted_numbers_finds_percentages_ratios_and_rates_and_spares_shapes():
    text = ("int8 1.29-1.34x, 98.17% top-1, 0.87 to 0.99% of it, 71,423 images/s; a conv3x3 on 22x52\n"
            "```\nfoldcnn bench --max-drop 5%\n```\nversion 0.2.0, 4 folds")
    assert quoted_numbers(text) == ["1.29", "1.34", "98.17", "0.87", "0.99", "71,423"]
    assert in_results("1.3", [1.29]) and in_results("71,423", [71423.0]) and not in_results("1.30", [1.29])


def test_every_results_file_names_its_command_date_cpu_commit_and_load():
    files = sorted(RESULTS.glob("*.json"))
    assert files
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        for key in ("what", "command", "date", "cpu", "machine", "commit", "load", "columns", "rows"):
            assert doc.get(key), f"{path.name}: no {key}"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", doc["date"]), path.name
        assert doc["commit"] in path.stem, f"{path.name}: the name should end with the commit {doc['commit']}"


def test_rendered_tables_are_current():
    render = load_render()
    assert render.MARKER.search((ROOT / "README.md").read_text(encoding="utf-8")), "README.md has no results table"
    assert render.stale() == [], "run python docs/render.py"


def test_a_changed_number_in_a_rendered_table_is_caught():
    render = load_render()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = render.MARKER.search(text)
    body = m["body"]
    number = re.search(r"\d+\.\d\dx", body)[0]
    edited = text[:m.start("body")] + body.replace(number, "9.99x", 1) + text[m.end("body"):]
    assert render.rendered(edited) == text


def test_every_number_the_readme_quotes_is_in_results():
    values = result_values()
    missing = [n for n in quoted_numbers((ROOT / "README.md").read_text(encoding="utf-8")) if not in_results(n, values)]
    assert not missing, f"README.md quotes numbers that no results/*.json holds: {missing}"


# ------------------------------------------------------------------ citations a reader can open
# A design document outside the repository ("DESIGN section 3") or a tracker's issue number.
UNOPENABLE = re.compile(r"(?-i:\bDESIGN\b)|\bissues?[\s#-]*\d", re.IGNORECASE)
# A date, a machine or a core count in the package's comments and docstrings (a dated notebook
# file's name is a pointer, not a measurement).
MACHINE_SPECIFIC = re.compile(r"(?<!notebook/)\b20\d\d-\d\d-\d\d|\b\d+[- ]cores?\b|\bEPYC\b|\bXeon\b|\bZen \d")
DOC_PATH = re.compile(r"\bdocs/[\w./-]+\.md\b")


def repository_texts(*, with_tests: bool) -> dict[str, str]:
    files = checked_files()
    if with_tests:
        files += [p for p in sorted((ROOT / "tests").glob("*.py")) if p.name != Path(__file__).name]
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in files}


def test_the_citation_patterns_catch_what_they_should():
    for bad in ("(DESIGN section 3)", "DESIGN 5", "issue 22's report", "Issue #18", "issues 5 and 6"):
        assert UNOPENABLE.search(bad), bad
    for fine in ("docs/design.md, \"Layout\"", "a known issue with swscale", "the issue's reader"):
        assert not UNOPENABLE.search(fine), fine
    for bad in ("AMD EPYC, 2026-12-07", "on 2 cores", "a 2-core machine", "Intel Xeon (AMX)", "AMD Zen 5"):
        assert MACHINE_SPECIFIC.search(bad), bad
    for fine in ("docs/notebook/2026-12-07-end-to-end.md", "AVX512-BF16 or AMX", "all cores"):
        assert not MACHINE_SPECIFIC.search(fine), fine


def test_nothing_cites_a_document_or_issue_a_reader_cannot_open():
    found = {name: sorted({m[0] for m in UNOPENABLE.finditer(text)})
             for name, text in repository_texts(with_tests=True).items() if UNOPENABLE.search(text)}
    assert not found, f"cite docs/design.md or a docs section instead: {found}"


def test_the_package_names_no_machine_date_or_core_count():
    found = {name: [m[0] for m in MACHINE_SPECIFIC.finditer(text)]
             for name, text in repository_texts(with_tests=False).items()
             if name.startswith("src/") and MACHINE_SPECIFIC.search(text)}
    assert not found, f"measurements belong in results/ and docs/, the code points there: {found}"


def test_every_docs_file_the_repository_names_exists():
    missing = {name: sorted({p for p in DOC_PATH.findall(text) if not (ROOT / p).is_file()})
               for name, text in repository_texts(with_tests=True).items()}
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"these files name docs that do not exist: {missing}"
