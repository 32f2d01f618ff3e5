"""PredictOptions and the flags generated from it: one option set for every entry point."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from foldcnn.cli import build_parser
from foldcnn.cli.options import add_predict_options, predict_options
from foldcnn.cli.common import CLIError
from foldcnn.errors import UsageError
from foldcnn.infer.options import PredictOptions, check_supported


def test_defaults_validate_and_replace():
    o = PredictOptions()
    assert o.partial_mode == "pad" and o.non_default() == {}
    assert o.replace(batch_size=8).batch_size == 8 and o.batch_size == 1024  # frozen: a copy
    with pytest.raises(UsageError, match="batch_size"):
        o.replace(batch_size=0)
    with pytest.raises(UsageError, match="unknown prediction option"):
        o.replace(batchsize=8)
    with pytest.raises(UsageError, match="precision"):
        PredictOptions(precision="fp8")
    with pytest.raises(UsageError, match="--fallback"):
        PredictOptions(partial="fallback")
    assert PredictOptions(fallback="ck").partial_mode == "fallback"
    with pytest.raises(UsageError, match="only used with partial='fallback'"):
        PredictOptions(partial="pad", fallback="ck")


def test_check_supported_refuses_what_an_engine_cannot_honour():
    check_supported(PredictOptions(), {"stride": "no video"}, "engine")  # defaults pass
    with pytest.raises(UsageError, match="engine cannot honour stride .*no video"):
        check_supported(PredictOptions(stride=2), {"stride": "no video"}, "engine")


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


@pytest.mark.parametrize("command, table", [("predict", {}), ("serve", "foldcnn.cli.serve:UNSUPPORTED"),
                                            ("eval", "foldcnn.cli.train:EVAL_UNSUPPORTED")])
def test_every_option_is_a_flag_or_refused_with_a_reason(command, table):
    """A new PredictOptions field must reach each command as a flag or be listed with a reason."""
    import importlib

    if isinstance(table, str):
        module, name = table.split(":")
        table = getattr(importlib.import_module(module), name)
    dests = {a.dest for a in _subparser(command)._actions}
    for f in fields(PredictOptions):
        assert (f.name in dests) != (f.name in table), f"{command}: {f.name}"
        if f.name in table:
            assert len(table[f.name]) > 10  # a reason, not a placeholder


def test_ray_engine_lists_a_reason_for_each_option_it_refuses():
    from foldcnn.scaleout.ray_engine import UNSUPPORTED

    names = {f.name for f in fields(PredictOptions)}
    assert set(UNSUPPORTED) <= names and all(len(why) > 10 for why in UNSUPPORTED.values())


def test_generated_flags_round_trip_to_options():
    p = argparse.ArgumentParser()
    add_predict_options(p)
    args = p.parse_args(["--backend", "ort", "--precision", "int8", "--batch-size", "64", "--threads", "1",
                         "--workers", "0", "--no-resize", "--resize-mode", "nearest", "--stride", "3",
                         "--on-error", "skip"])
    o = predict_options(args)
    assert (o.backend, o.precision, o.batch_size, o.threads, o.workers, o.resize, o.resize_mode, o.stride,
            o.on_error) == ("ort", "int8", 64, 1, 0, False, "nearest", 3, "skip")
    assert predict_options(p.parse_args([])) == PredictOptions()
    with pytest.raises(CLIError, match="^--batch-size must be"):
        predict_options(p.parse_args(["--batch-size", "0"]))


# ------------------------------------------------------------------- flags named once
def _visible_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


def test_every_command_spells_precision_and_json_one_way():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        flags = _visible_flags(parser)
        assert not {"--dtype", "--dtypes", "--int8"} & set(flags), name  # only as hidden deprecated aliases
        if "--json" in flags:  # a PATH everywhere, never a bare switch ('-' or no value: stdout)
            assert flags["--json"].nargs in (None, "?") and not isinstance(flags["--json"], argparse._StoreTrueAction)
            assert flags["--json"].metavar == "PATH" or name == "bench", name


@pytest.mark.parametrize("flag, old, new, value", [
    ("--dtype", ["analyze", "--dtype", "fp32"], ["analyze", "--precision", "fp32"], "fp32"),
    ("--int8", ["export", "ck", "--out", "m.onnx", "--int8"],
     ["export", "ck", "--out", "m.onnx", "--precision", "int8"], "int8"),
    ("--dtypes", ["bench", "--dtypes", "fp32,int8"], ["bench", "--precision", "fp32,int8"], "fp32,int8"),
    ("--dtypes", ["tune", "m", "--dtypes", "bf16"], ["tune", "m", "--precision", "bf16"], "bf16"),
])
def test_old_spellings_are_deprecated_aliases_of_precision(capsys, flag, old, new, value):
    assert build_parser().parse_args(new).precision == value
    assert capsys.readouterr().err == ""
    assert build_parser().parse_args(old).precision == value
    err = capsys.readouterr().err
    assert f"{flag} is deprecated" in err and "use --precision" in err


def test_deprecated_alias_checks_choices(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["analyze", "--dtype", "fp8"])
    assert "invalid choice" in capsys.readouterr().err


def test_json_path_or_stdout_for_models_and_analyze(tmp_path, capsys):
    import json

    from foldcnn.cli import main

    assert main(["models", "--family", "game", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert main(["models", "--family", "game", "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text()) == rows
    assert "lol-gold-fraction" in capsys.readouterr().out  # with a PATH the table is printed too
    assert main(["analyze", "apex-squad-count", "--fold", "1", "--precision", "fp32", "--json", "-"]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    assert rec["bytes_per_element"] == 4 and rec["fold"] == 1
