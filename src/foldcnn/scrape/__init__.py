"""The production job: read game streams once, cut every screen region, read each with its folded CNN.

    from foldcnn.scrape import Event, load_layout, scrape
    for item in scrape(["match.mp4"], "layout.json", hold=3):
        if isinstance(item, Event):
            print(item.region, item.value, item.start_s, item.end_s)
        else:                                    # a row: index, source, frame, class_name,
            print(item["region"], item["class_name"])  # class_index, confidence, region, time_s

``foldcnn scrape VIDEO... --layout L --out OUT`` is the command (docs/scrape.md).
"""

from foldcnn.scrape.events import EVENT_COLUMNS, Event, EventTracker
from foldcnn.scrape.layout import Layout, LayoutError, Region, load_layout, parse_layout
from foldcnn.scrape.pipeline import SCRAPE_COLUMNS, ScrapeOptions, Scraper, ScrapeStats, StreamBrokenError, scrape

__all__ = ["EVENT_COLUMNS", "SCRAPE_COLUMNS", "Event", "EventTracker", "Layout", "LayoutError", "Region",
           "ScrapeOptions", "ScrapeStats", "Scraper", "StreamBrokenError", "load_layout", "parse_layout", "scrape"]
