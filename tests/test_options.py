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
        assert not {"--dtype", "--dtypes", "--int8", "--force", "--batch", "--size", "--train"} & set(flags), name
        if "--json" in flags:  # a PATH everywhere, never a bare switch ('-' or no value: stdout)
            assert flags["--json"].nargs in (None, "?") and not isinstance(flags["--json"], argparse._StoreTrueAction)
            assert flags["--json"].metavar == "PATH" or name == "bench", name


@pytest.mark.parametrize("old", [
    ["analyze", "--dtype", "fp32"], ["export", "ck", "--out", "m.onnx", "--int8"], ["bench", "--dtypes", "fp32,int8"],
    ["tune", "m", "--dtypes", "bf16"], ["export", "ck", "--out", "m.onnx", "--force"], ["analyze", "--batch", "8"],
    ["data", "game", "sot-timer", "--out", "d", "--train", "5"], ["data", "video", "--out", "d", "--frames", "20", "--size", "8x8"],
    ["train", "--task", "sot-timer", "--out", "o", "--precision", "fp32"],
])
def test_old_spellings_are_gone(capsys, old):
    """0.2.0 removed the deprecated aliases and renamed drifting flags (CHANGELOG.md)."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(old)
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("command, flag", [("train", "--train-precision"), ("fold", "--train-precision"),
                                           ("analyze", "--precision"), ("export", "--precision")])
def test_training_and_inference_precision_are_two_flags(command, flag):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert flag in _visible_flags(sub.choices[command])


def test_json_path_or_stdout_for_models_and_analyze(tmp_path, capsys):
    import json

    from foldcnn.cli import main

    assert main(["models", "--family", "game", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert main(["models", "--family", "game", "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text()) == rows
    assert "lol-gold-fraction" in capsys.readouterr().out  # with a PATH the table is printed too
    assert main(["analyze", "apex-squad-count", "--folds", "1", "--precision", "fp32", "--json", "-"]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    assert rec["bytes_per_element"] == 4 and rec["fold"] == 1


@pytest.mark.parametrize("command", ["train", "fold"])
def test_training_flags_are_generated_from_train_config(command):
    """Each TrainConfig field the command line takes has one flag, made from the field (its help text
    and spelling live in foldcnn/train/config.py only)."""
    from dataclasses import fields

    from foldcnn.options import flag_of, is_cli_option
    from foldcnn.train.config import TrainConfig

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    actions = sub.choices[command]._actions
    for f in fields(TrainConfig):
        mine = [a for a in actions if flag_of(f) in a.option_strings]
        if not is_cli_option(f):
            assert not mine, f.name
            continue
        assert len(mine) == 1 and flag_of(f) in mine[0].option_strings, f.name
        assert mine[0].help == f.metadata["help"], f.name


def test_train_config_from_flags_matches_the_python_defaults():
    """Flags left alone give TrainConfig.for_fold's config (the fold's budget, no distillation)."""
    from foldcnn.cli.train import train_config_from_args
    from foldcnn.train.config import TrainConfig

    args = build_parser().parse_args(["train", "--task", "sot-timer", "--out", "o", "--fold", "4"])
    assert train_config_from_args(args, 4) == TrainConfig.for_fold(4)
    args = build_parser().parse_args(["train", "--task", "sot-timer", "--out", "o", "--fold", "4", "--epochs", "7",
                                      "--teacher", "t", "--no-tie-slots", "--ema", "0.9", "--train-precision", "fp32"])
    cfg = train_config_from_args(args, 4)
    assert (cfg.epochs, cfg.weight_decay, cfg.distill, cfg.tie_slots, cfg.ema_decay, cfg.precision) == \
        (7, 0.05, "kl", False, 0.9, "fp32")
