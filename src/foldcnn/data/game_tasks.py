"""The six game-text tasks of the FoldedCNNs paper: text structure, classified field, class list.

docs/design.md, "Data tasks and classes": each task's readout follows a fixed structure, one field of it is the class,
and an ``other`` class holds crops with no valid readout. Crop sizes and class counts come from
``foldcnn.models.game.GAME_TASKS`` (docs/design.md, "The paper's models") and are checked against it at import.

A text maker takes (class index, random ints) and returns a ``Readout``: the string, the span of
characters that is the class (``field``) and the span that must stay fully inside the crop
(``keep``, the field plus anything needed to read it unambiguously). Characters outside ``keep``
may be clipped by the crop edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

from foldcnn.errors import UnknownNameError
from foldcnn.models.game import GAME_TASKS

OTHER = "other"


class Readout(NamedTuple):
    text: str
    field: tuple[int, int]  # characters [i0, i1) that are the class
    keep: tuple[int, int]  # characters [i0, i1) that must be fully visible


@dataclass(frozen=True)
class GameTextTask:
    name: str
    classes: tuple[str, ...]  # the last one is OTHER
    size: tuple[int, int]  # (H, W)
    text_format: str
    class_field: str
    make: Callable[[int, Sequence[int]], Readout]  # a valid readout of class c (c < K - 1)
    out_of_range: Callable[[Sequence[int]], Readout] | None  # parses, but its value has no class
    placeholders: tuple[str, ...]  # what the HUD shows without a value
    fit: str  # widest keep span ("8" = any digit): the font size must let it fit the crop width
    palette: str  # colour style key (backgrounds.PALETTES)
    examples: tuple[str, ...]  # for the docs
    icon: bool = False  # the HUD shows a coin icon left of the number

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _digits(a: int, b: int) -> list[str]:
    return [str(i) for i in range(a, b + 1)]


# --------------------------------------------------------------------------- text makers
def _gold_int_part(r: Sequence[int]) -> str:
    v = r[0] % 100
    return f"{v:02d}" if r[1] % 3 == 0 else str(v)  # "04.8k" occurs (docs/design.md, "Data tasks and classes" example)


def _gold_fraction(c: int, r: Sequence[int]) -> Readout:
    ip = _gold_int_part(r)
    z = len(ip) + 1
    return Readout(f"{ip}.{c}k", (z, z + 1), (z, z + 1))


def _gold_int(c: int, r: Sequence[int]) -> Readout:
    ip = str(c) if c < 10 else f"{c - 10:02d}"  # classes '0'..'9' then '00'..'99'
    return Readout(f"{ip}.{r[2] % 10}k", (0, len(ip)), (0, len(ip)))


def _gold_int_oor(r: Sequence[int]) -> Readout:
    ip = str(100 + r[0] % 900)  # three integer digits: no class
    return Readout(f"{ip}.{r[2] % 10}k", (0, 3), (0, 3))


def _lol_timer(c: int, r: Sequence[int]) -> Readout:
    return Readout(f"{c:02d}:{r[0] % 60:02d}", (0, 2), (0, 2))


def _lol_timer_oor(r: Sequence[int]) -> Readout:
    return _lol_timer(61 + r[1] % 39, r)  # 61..99 minutes


def _apex(c: int, r: Sequence[int]) -> Readout:
    n = str(c)
    if r[1] % 3 == 0:  # the number after the label: the label is what gets clipped
        text = "SQUADS LEFT " + n
        return Readout(text, (len(text) - len(n), len(text)), (len(text) - len(n), len(text)))
    return Readout(n + " SQUADS LEFT", (0, len(n)), (0, len(n)))


def _apex_oor(r: Sequence[int]) -> Readout:
    return _apex(21 + r[2] % 10, r)  # 21..30 squads (larger modes): no class


def _coin(value: int) -> Readout:
    text = f"{value:,}"
    # hundreds = every digit but the last two. Reading them needs the digit count, so the
    # whole number stays visible: a clipped '753' would look exactly like the value '75'
    return Readout(text, (0, len(text) - 2), (0, len(text)))


def _sot_coin(c: int, r: Sequence[int]) -> Readout:
    return _coin((c + 1) * 100 + r[0] % 100)  # class index 0 is '1'


def _sot_coin_oor(r: Sequence[int]) -> Readout:
    if r[1] % 2:
        v = str(r[0] % 100)  # under 100: no hundreds digit at all
        return Readout(v, (0, 0), (0, len(v)))
    return _coin(1500 + r[0] % 8500)


def _sot_timer(c: int, r: Sequence[int]) -> Readout:
    m = str(c)
    return Readout(f"{m}:{r[0] % 60:02d}", (0, len(m)), (0, len(m)))


def _sot_timer_oor(r: Sequence[int]) -> Readout:
    return _sot_timer(26 + r[1] % 34, r)  # 26..59 minutes


_SPECS = [
    GameTextTask(
        "lol-gold-fraction", tuple(_digits(0, 9)) + (OTHER,), GAME_TASKS["lol-gold-fraction"][1],
        'gold "XY.Zk" or "Y.Zk"', "Z, the digit after the point",
        _gold_fraction, None, ("--.-k", "-.-k", "?.?k", "k"), "8", "lol",
        ("67.8k -> 8", "04.8k -> 8", "9.0k -> 0"), icon=True,
    ),
    GameTextTask(
        "lol-gold-int", tuple(_digits(0, 9)) + tuple(f"{i:02d}" for i in range(100)) + (OTHER,),
        GAME_TASKS["lol-gold-int"][1],
        'gold "XY.Zk" or "Y.Zk"', "the integer part as written ('5' and '05' are different classes)",
        _gold_int, _gold_int_oor, ("--.-k", "-.-k", "?.?k", "k"), "88", "lol",
        ("67.8k -> 67", "04.8k -> 04", "9.0k -> 9", "123.4k -> other"), icon=True,
    ),
    GameTextTask(
        "lol-timer-minutes", tuple(f"{i:02d}" for i in range(61)) + (OTHER,),
        GAME_TASKS["lol-timer-minutes"][1],
        'clock "MM:SS"', "MM, 00-60",
        _lol_timer, _lol_timer_oor, ("--:--", "??:??", ":"), "88", "lol",
        ("07:42 -> 07", "60:00 -> 60", "63:10 -> other"),
    ),
    GameTextTask(
        "apex-squad-count", tuple(_digits(0, 20)) + (OTHER,), GAME_TASKS["apex-squad-count"][1],
        '"N SQUADS LEFT" (or "SQUADS LEFT N")', "N, 0-20",
        _apex, _apex_oor, ("-- SQUADS LEFT", "SQUADS LEFT", "SQUADS LEFT --"), "88", "apex",
        ("14 SQUADS LEFT -> 14", "SQUADS LEFT 3 -> 3", "27 SQUADS LEFT -> other"),
    ),
    GameTextTask(
        "sot-coin-count", tuple(_digits(1, 14)) + (OTHER,), GAME_TASKS["sot-coin-count"][1],
        'coin count, 3-4 digits ("1,234")', "hundreds, value // 100: 1-14",
        _sot_coin, _sot_coin_oor, ("-", "---", "-,---"), "8,888", "sot",
        ("1,234 -> 12", "807 -> 8", "45 -> other", "2,345 -> other"), icon=True,
    ),
    GameTextTask(
        "sot-timer", tuple(_digits(0, 25)) + (OTHER,), GAME_TASKS["sot-timer"][1],
        'countdown "M:SS" / "MM:SS"', "minutes, 0-25",
        _sot_timer, _sot_timer_oor, ("-:--", "--:--", ":"), "88", "sot",
        ("4:05 -> 4", "25:00 -> 25", "31:20 -> other"),
    ),
]
GAME_TEXT_TASKS: dict[str, GameTextTask] = {t.name: t for t in _SPECS}

for _t in _SPECS:  # the class lists must match the models' heads and input sizes exactly
    _k, _size, _ = GAME_TASKS[_t.name]
    assert _t.num_classes == _k and _t.size == _size and len(set(_t.classes)) == _k, _t.name
assert set(GAME_TEXT_TASKS) == set(GAME_TASKS)


def list_game_tasks() -> list[str]:
    return list(GAME_TEXT_TASKS)


def game_task(task: str) -> GameTextTask:
    try:
        return GAME_TEXT_TASKS[task]
    except KeyError:
        raise UnknownNameError(f"unknown game task {task!r}; known tasks: {', '.join(GAME_TEXT_TASKS)}") from None


def game_task_classes(task: str) -> list[str]:
    """Class names in label order; the last is 'other'."""
    return list(game_task(task).classes)
