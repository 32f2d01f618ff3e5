import io

from foldcnn.progress import LOG_INTERVAL_S, progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def redraws(stream) -> int:
    return stream.getvalue().count("\r")


def test_off_a_terminal_the_bar_prints_rarely():
    log = io.StringIO()
    bar = progress_bar(total=5000, file=log)
    assert bar.mininterval == LOG_INTERVAL_S
    for _ in range(5000):
        bar.update(1)
    bar.close()
    assert redraws(log) <= 3  # the start, perhaps one timed line, and the final state
    assert "5000/5000" in log.getvalue()  # the last state is still written


def test_on_a_terminal_and_when_asked_tqdm_is_unchanged():
    term = progress_bar(total=10, file=FakeTerminal())
    assert term.mininterval == 0.1  # tqdm's default
    term.close()
    asked = progress_bar(total=10, file=io.StringIO(), mininterval=2.0)
    assert asked.mininterval == 2.0
    asked.close()
    assert list(progress_bar(range(4), file=io.StringIO())) == [0, 1, 2, 3]
