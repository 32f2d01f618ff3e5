"""foldcnn.errors and the CLI's contract: a user error is one sentence and exit status 2; a bug
inside foldcnn keeps its traceback."""

from __future__ import annotations

import pytest

from foldcnn import cli
from foldcnn.errors import FoldcnnError, MissingInputError, UnknownNameError, UsageError, UsageTypeError


def test_user_errors_keep_the_builtin_class_callers_catch():
    assert issubclass(UsageError, ValueError) and issubclass(UsageTypeError, TypeError)
    assert issubclass(MissingInputError, FileNotFoundError)
    assert str(UnknownNameError("unknown model 'x'; known: a, b")) == "unknown model 'x'; known: a, b"
    for cls in (UsageError, UsageTypeError, MissingInputError, UnknownNameError):
        assert issubclass(cls, FoldcnnError)


def _run_with(monkeypatch, error: BaseException, argv=("models",)):
    def boom(args):
        raise error

    parser = cli.build_parser()
    original = parser.parse_args

    def parse(argv=None):
        ns = original(argv)
        ns.func = boom
        return ns

    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", parse)
    return cli.main(list(argv))


@pytest.mark.parametrize("error", [UsageError("--batch-size must be >= 1, got 0"),
                                   MissingInputError("no such file: x.png"),
                                   FileNotFoundError(2, "No such file or directory", "/nope/x")])
def test_user_errors_print_one_sentence_and_exit_2(monkeypatch, capsys, error):
    assert _run_with(monkeypatch, error) == 2
    err = capsys.readouterr().err
    assert err.startswith("foldcnn models: error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("error", [TypeError("unsupported operand"), ValueError("inside torch"),
                                   KeyError("weight")])
def test_bugs_keep_their_traceback(monkeypatch, error):
    with pytest.raises(type(error)):
        _run_with(monkeypatch, error)


def test_unknown_model_name_is_a_user_error(capsys):
    assert cli.main(["analyze", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and err.count("\n") == 1
