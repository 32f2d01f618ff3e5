"""The project names a measurement by date, machine and commit, never by a working session."""
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
