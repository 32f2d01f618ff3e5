"""Readings -> events: a region's value counts once it holds for ``hold`` consecutive readings.

One :class:`EventTracker` per (source, region) sees that region's readings in frame order
(sampled frames only: with ``--stride 5`` "consecutive" means 5 frames apart). A class becomes
an event once it is the answer ``hold`` readings in a row; the event starts at the first of
them and lasts until the reading changes (the end is the last frame that still read it). An
``other`` reading (no valid readout) ends an event and starts none. Streams end their events
with :meth:`EventTracker.close`.
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


class EventTracker:
    """Events of one (source, region), fed reading by reading in frame order."""

    def __init__(self, source: str, region: str, hold: int = 3) -> None:
        if isinstance(hold, bool) or not isinstance(hold, int) or hold < 1:
            raise ValueError(f"hold must be an int >= 1, got {hold!r}")
        self.source, self.region, self.hold = source, region, hold
        self._value: str | None = None  # the class of the current run (None: other / nothing yet)
        self._run = 0
        self._start = self._last = None  # (frame, time_s) of the run's first and latest reading
        self._min_conf = 1.0

    def add(self, frame: int, time_s: float, value: str, confidence: float) -> Event | None:
        """One reading; returns the event it ends, if any."""
        if value == self._value:
            self._run += 1
            self._last = (frame, time_s)
            self._min_conf = min(self._min_conf, confidence)
            return None
        ended = self.close()
        if value != OTHER:
            self._value, self._run = value, 1
            self._start = self._last = (frame, time_s)
            self._min_conf = confidence
        return ended

    def close(self) -> Event | None:
        """End the current run: its event if it held long enough."""
        event = None
        if self._value is not None and self._run >= self.hold:
            event = Event(self.source, self.region, self._value, self._start[0], self._last[0],
                          round(self._start[1], 6), round(self._last[1], 6), round(float(self._min_conf), 6))
        self._value, self._run = None, 0
        return event
