"""One plot per region: its reading over time, and the truth where a truth.csv is given."""

from __future__ import annotations

import csv
from pathlib import Path

from foldcnn.errors import MissingExtraError

__all__ = ["ReadingsPlot", "read_truth"]


def read_truth(path: str | Path) -> dict[tuple[int, str], str]:
    """``truth.csv`` (frame, region, class; as 'foldcnn data screens' writes) -> {(frame, region): class}."""
    with open(path, newline="") as f:
        return {(int(r["frame"]), r["region"]): r["class"] for r in csv.DictReader(f)}


class ReadingsPlot:
    """Gathers (frame, time, class) per region as rows pass, then draws a PNG per region."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[int, float | None, str]]] = {}

    def add(self, row: dict) -> None:
        self.rows.setdefault(row["region"], []).append((row["frame"], row["time_s"], row["class_name"]))

    def write(self, stem: str | Path, truth: dict | None = None) -> list[Path]:
        """``STEM.REGION.png`` per region; returns the paths."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise MissingExtraError("--plots needs matplotlib: pip install 'foldcnn[plots]'") from None
        out = []
        for region, rows in self.rows.items():
            frames = [f for f, _, _ in rows]
            x = [t if t is not None else f for f, t, _ in rows]
            names = sorted({c for _, _, c in rows} | ({truth[(f, region)] for f in frames if (f, region) in truth}
                                                       if truth else set()), key=_order)
            y = {c: i for i, c in enumerate(names)}
            fig, ax = plt.subplots(figsize=(10, 3.2))
            if truth:
                tx = [xv for xv, f in zip(x, frames) if (f, region) in truth]
                ty = [y[truth[(f, region)]] for f in frames if (f, region) in truth]
                ax.step(tx, ty, where="post", color="0.6", lw=3, label="truth")
            ax.step(x, [y[c] for _, _, c in rows], where="post", color="C0", lw=1, label="reading")
            ax.set_yticks(range(len(names)), names, fontsize=7 if len(names) > 20 else 9)
            ax.set_xlabel("time (s)" if rows and rows[0][1] is not None else "frame")
            ax.set_title(f"region {region}")
            ax.legend(loc="upper right", fontsize=8)
            fig.tight_layout()
            path = Path(f"{stem}.{region}.png")
            fig.savefig(path, dpi=110)
            plt.close(fig)
            out.append(path)
        return out


def _order(name: str):
    return (1, 0, name) if not name.lstrip("-").isdigit() else (0, int(name), name)
