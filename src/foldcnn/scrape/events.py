"""Readings -> events: a region's value counts once it holds for ``hold`` consecutive readings,
and ends only when another reading holds as long.

One :class:`EventTracker` per (source, region) sees that region's readings in frame order
(sampled frames only: with ``--stride 5`` "consecutive" means 5 frames apart). A class becomes
an event once it is the answer ``hold`` readings in a row; the event starts at the first of
them. It ends only when another reading (another class, or ``other``: no valid readout) is the
answer ``hold`` readings in a row: its end is then the last frame that still read the event's
value, and readings of fewer than ``hold`` frames in between (a misread frame, a brief flicker)
neither end it nor start anything. An ``other`` reading that holds ends an event and starts none.
Streams end their events with :meth:`EventTracker.close`. With ``hold=1`` every change of
reading ends the current event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["EVENT_COLUMNS", "Event", "EventTracker", "OTHER"]

OTHER = "other"
EVENT_COLUMNS = ("source", "region", "value", "start_frame", "end_frame", "start_s", "end_s", "min_confidence")


@dataclass(frozen=True)
class Event:
    source: str
    region: str
    value: str
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    min_confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Run:
    """Consecutive readings of one class: its first and latest (frame, time_s), count, lowest confidence."""

    value: str
    start: tuple[int, float]
    last: tuple[int, float]
    n: int
    min_conf: float

    def extend(self, frame: int, time_s: float, confidence: float) -> None:
        self.last, self.n = (frame, time_s), self.n + 1
        self.min_conf = min(self.min_conf, confidence)


class EventTracker:
    """Events of one (source, region), fed reading by reading in frame order."""

    def __init__(self, source: str, region: str, hold: int = 3) -> None:
        if isinstance(hold, bool) or not isinstance(hold, int) or hold < 1:
            raise ValueError(f"hold must be an int >= 1, got {hold!r}")
        self.source, self.region, self.hold = source, region, hold
        self._event: _Run | None = None  # the value that holds now (None: other / nothing yet)
        self._next: _Run | None = None  # a different reading that has not held yet

    def add(self, frame: int, time_s: float, value: str, confidence: float) -> Event | None:
        """One reading; returns the event it ends, if any."""
        if self._event is not None and value == self._event.value:
            self._event.extend(frame, time_s, confidence)
            self._next = None  # a flicker shorter than hold: the event goes on
            return None
        if self._next is not None and value == self._next.value:
            self._next.extend(frame, time_s, confidence)
        else:
            self._next = _Run(value, (frame, time_s), (frame, time_s), 1, confidence)
        if self._next.n < self.hold:
            return None
        held = self._next
        ended = self.close()  # another reading holds: it ends the event and, unless other, is the next
        self._event = held if held.value != OTHER else None
        return ended

    def close(self) -> Event | None:
        """End the current event (the stream ended, or another reading held); None if there is none."""
        run, self._event, self._next = self._event, None, None
        if run is None:
            return None
        return Event(self.source, self.region, run.value, run.start[0], run.last[0], round(run.start[1], 6),
                     round(run.last[1], 6), round(float(run.min_conf), 6))
