"""Rules of the code's shape that a reader relies on, checked on the source so that a regression fails:

- no function in src/ is longer than 60 lines (def to end, docstring included): a longer one is a
  workflow whose steps have no names yet;
- an option is declared once: a field name two user-facing config classes both declare (fields made
  with ``foldcnn.options.option``) is allowed only where the two mean different things, listed below
  with why; a copied field (the same option in two configs) fails;
- every command's flags come from the config fields where one exists: a command has no
  hand-written flag for a field of the configs it builds;
- no run of six identical lines stands in two places in src/ (the project's ``duplicates`` tool
  also finds runs of the same shape; this guard needs nothing but the source).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

import foldcnn

SRC = Path(__file__).resolve().parents[1] / "src" / "foldcnn"
MAX_FUNCTION_LINES = 60


def _long_functions(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_is_longer_than_60_lines():
    assert _long_functions(SRC) == []


def test_the_length_rule_catches_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert [s.split()[-3] for s in _long_functions(tmp_path)] == ["long"]


# Field names that two user-facing configs both declare, with what tells them apart. Anything else
# declared twice is a copy: compose the config that owns it instead.
SAME_NAME_DIFFERENT_OPTION = {
    "batch_size": "images per training step (TrainConfig) vs per inference call (PredictOptions)",
    "threads": "torch threads while training (TrainConfig) vs the inference engine's threads (PredictOptions) vs "
               "the threads a load test starts each server with (ServeBenchConfig)",
    "device": "where training runs (TrainConfig) vs where inference runs (PredictOptions) vs where a bench sweep "
              "times (Preset, whose default is the preset's)",
    "precision": "training autocast, --train-precision (TrainConfig) vs inference precision (PredictOptions)",
    "seed": "the training seed (TrainConfig) vs the data seed, --data-seed (DataSpec)",
    "on_error": "unreadable training images are skipped by default (DataSpec); inference inputs raise by default "
                "(PredictOptions)",
    "fold": "a model's fold (ModelSpec) vs the folded model the demo or a load test compares with the original "
            "(DemoConfig, ServeBenchConfig)",
    "epochs": "every stage's epochs (TrainConfig) vs the folded stages' own, None = by fold (FoldOptions)",
    "weight_decay": "every stage's (TrainConfig) vs the folded stages' own, None = by fold (FoldOptions)",
    "name": "the model's name (ModelSpec) vs a bench preset's name (Preset)",
    "folds": "the folds a fold run trains and chooses from (FoldOptions) vs the folds a bench sweep times (Preset)",
    "channel_multiples": "the roundings a search trains (FoldOptions) vs those a bench sweep times (Preset)",
    "command": "what a training run's run.json records (RunOptions) vs what a load test's results record "
               "(ServeBenchConfig); neither is a flag",
    "max_wait_ms": "how long a live stream's partial fold waits (ScrapeOptions, default 100) vs how long the server "
                   "holds a batch for more requests (ServeConfig, default 5)",
}


def _user_configs() -> dict[str, type]:
    """Every dataclass in the package that declares a field with foldcnn.options.option."""
    found = {}
    for info in pkgutil.walk_packages(foldcnn.__path__, "foldcnn."):
        if info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra (ray, fastapi, ...) not installed here
            continue
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and is_dataclass(obj) and obj.__module__ == module.__name__ and any(
                    "cli" in f.metadata for f in fields(obj)):
                found[name] = obj
    return found


def test_no_option_is_declared_in_two_configs():
    configs = _user_configs()
    assert {"TrainConfig", "DataSpec", "ModelSpec", "RunOptions", "PredictOptions", "FoldOptions"} <= set(configs)
    owners: dict[str, list[str]] = {}
    for name, cls in configs.items():
        for f in fields(cls):
            if str(f.type).split(" ")[0] not in configs:  # a composed config (data: DataSpec) is not a copy
                owners.setdefault(f.name, []).append(name)
    copied = {k: v for k, v in owners.items() if len(v) > 1 and k not in SAME_NAME_DIFFERENT_OPTION}
    assert copied == {}, f"declared in two configs: {copied}; compose the config that owns each"


# Flags a command spells like a config field but means otherwise, with what it means there.
OWN_MEANING = {
    ("fold", "--fold"): "the one fold to try, a shorthand of --folds (FoldOptions.folds)",
    ("bench", "--precision"): "a comma list of precisions for bare --backends names",
}


@pytest.mark.parametrize("command, complete, partial", [
    ("train", ("ModelSpec", "DataSpec", "TrainConfig", "RunOptions"), ()),
    ("fold", ("FoldOptions", "TrainConfig"), ("ModelSpec", "DataSpec")),
    ("predict", ("PredictOptions",), ()),
    ("bench", (), ("Preset", "PredictOptions")),
    ("serve", ("ServeConfig",), ("PredictOptions",)),
    ("scrape", ("ScrapeOptions",), ("PredictOptions",)),
    ("serve-bench", ("ServeBenchConfig",), ()),
])
def test_a_command_takes_its_configs_flags_from_them(command, complete, partial):
    """A flag of the command that spells a config field is the one the field generates (its help is
    the field's, not a hand-written copy); the ``complete`` configs give the command every flag."""
    from foldcnn.cli import build_parser
    from foldcnn.options import flag_of, is_cli_option

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[command]
    helps = {s: a.help for a in sub._actions for s in a.option_strings}
    found = _user_configs()
    declared: dict[str, set] = {}  # flag -> the help texts the listed configs declare for it
    for name in complete + partial:
        for f in fields(found[name]):
            if is_cli_option(f):
                declared.setdefault(flag_of(f), set()).add(f.metadata["help"])
    for name in complete + partial:
        for f in fields(found[name]):
            if not is_cli_option(f) or (name in partial and flag_of(f) not in helps) \
                    or (command, flag_of(f)) in OWN_MEANING:
                continue
            assert flag_of(f) in helps, f"{command} lacks {flag_of(f)} ({name}.{f.name})"
            assert helps[flag_of(f)] in declared[flag_of(f)], f"{command} {flag_of(f)} is declared by hand"


def test_every_listed_name_is_still_declared_twice():
    """A stale entry of SAME_NAME_DIFFERENT_OPTION would excuse a future copy: each must still be used."""
    owners: dict[str, int] = {}
    configs = _user_configs()
    for cls in configs.values():
        for f in fields(cls):
            if str(f.type).split(" ")[0] not in configs:
                owners[f.name] = owners.get(f.name, 0) + 1
    assert sorted(k for k in SAME_NAME_DIFFERENT_OPTION if owners.get(k, 0) < 2) == []


_IMPORT_LINE = re.compile(r"^(from |import |[A-Za-z_][A-Za-z0-9_]*,?$|\)$)")


def _copied_runs(root: Path, width: int = 6) -> dict[tuple, list[str]]:
    """Runs of ``width`` identical lines (stripped; blank and comment lines skipped) found in two
    places or more, except import lists."""
    seen: dict[tuple, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        lines = [(i + 1, t.strip()) for i, t in enumerate(path.read_text().splitlines())]
        kept = [(i, t) for i, t in lines if t and not t.startswith("#")]
        for k in range(len(kept) - width + 1):
            run = tuple(t for _, t in kept[k:k + width])
            if all(_IMPORT_LINE.match(t) for t in run) or sum(len(t) > 3 for t in run) < width:
                continue
            seen.setdefault(run, []).append(f"{path.relative_to(root.parent)}:{kept[k][0]}")
    return {run: where for run, where in seen.items() if len(where) > 1}


def test_no_six_lines_are_copied_in_src():
    assert [where for where in _copied_runs(SRC).values()] == []


def test_the_copy_rule_catches_a_copy(tmp_path):
    body = "\n".join(f"    total = total + {i} * weight" for i in range(6))
    for name in ("a", "b"):
        (tmp_path / f"{name}.py").write_text(f"def {name}(total, weight):\n{body}\n    return total\n")
    found = _copied_runs(tmp_path)
    assert [f"{tmp_path.name}/a.py:2", f"{tmp_path.name}/b.py:2"] in found.values()
    (tmp_path / "b.py").write_text("def b(total, weight):\n    return total\n")  # the copy gone: nothing found
    assert _copied_runs(tmp_path) == {}


def _command_helps() -> dict[str, str]:
    from foldcnn.cli import build_parser

    out = {}

    def walk(parser, name):
        out[name] = parser.format_help()
        for a in parser._actions:
            if a.__class__.__name__ == "_SubParsersAction":
                for sub_name, sub in a.choices.items():
                    walk(sub, f"{name} {sub_name}".strip())

    walk(build_parser(), "")
    return out


def test_help_shows_a_default_only_where_it_says_something():
    """No command's --help says '(default: None)' or '(default: False)', nor names a default twice;
    a real default (e.g. scrape's --hold 3) is still shown."""
    import re

    helps = _command_helps()
    assert len(helps) > 15
    for name, text in helps.items():
        flat = " ".join(text.split())
        assert "(default: None)" not in flat and "(default: False)" not in flat, name
        for entry in re.split(r"\s(?=--?\w)", flat):
            assert entry.count("(default") <= 1, f"{name}: {entry[:160]}"
    assert "(default: 3)" in " ".join(helps["scrape"].split())
