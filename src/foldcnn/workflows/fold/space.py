"""The search space of `foldcnn fold --search` and the rule that abandons a learning curve.

Pure functions: no training, no timing, no files. A candidate is one (fold f, width multiplier w,
channel multiple) build of the user's CNN; w is relative to the original's widths, so (1, 1) is the
original itself, (f, sqrt f) the paper's point and (1, w < 1) a narrower CNN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEFAULT_WIDTHS", "Candidate", "search_space", "rung_epochs", "abandon_reason"]

# Widths every fold gets unless --widths says otherwise (sqrt(f) is added for each f > 1): half
# width and 1/sqrt(2) of it are where the narrower CNNs matched the original in docs/accuracy.md.
DEFAULT_WIDTHS = (0.5, 0.71, 1.0)
# Fractions of a candidate's epochs at which its curve is checked (successive halving's rungs,
# reduction factor 2); the last rung is the full budget, where the candidate meets or misses.
RUNG_FRACTIONS = (0.25, 0.5)
# The share of its remaining validation error a candidate may still close after each rung. Folded
# models learn late (a 200-epoch one-cycle run, fold-slot tying): after a quarter of their epochs
# the f=4 runs measured here went on to close 0.69-0.91 of their remaining error (apex-squad-count
# on 8,000 images 0.72, the demo's sot-coin-count 0.69, lol-gold-fraction 0.82, sot-coin-count
# 0.86, sot-timer 0.91), after half of them 0.35-0.62, while an original, trained 60 epochs, has
# mostly converged by then. So a curve is judged by its own remaining error, not only by what the
# original still gained: these are the upper ends of what was measured, rounded up.
LATER_SHARE = {0.25: 0.9, 0.5: 0.65}


@dataclass(frozen=True)
class Candidate:
    fold: int
    width_mult: float
    channel_multiple: int | None = None  # None: the default rounding; no meaning at width 1

    @property
    def name(self) -> str:
        """Its stage directory: f4-w1, f1-w0.5, f4-w2-c32."""
        cm = "" if self.channel_multiple is None else f"-c{self.channel_multiple}"
        return f"f{self.fold}-w{self.width_mult:.3g}{cm}"

    @property
    def kind(self) -> str:
        if self.fold == 1:
            return "original" if self.width_mult == 1.0 else "narrower" if self.width_mult < 1 else "wider"
        return "paper" if math.isclose(self.width_mult, math.sqrt(self.fold)) else "folded"

    @property
    def key(self) -> tuple:
        """What the throughput sweep tells apart: the width rounding matters only where widths change."""
        return self.fold, round(self.width_mult, 6), None if self.width_mult == 1.0 else self.channel_multiple


ORIGINAL = Candidate(1, 1.0)


def search_space(folds: tuple[int, ...], widths: tuple[float, ...] | None,
                 channel_multiples: tuple[int | None, ...]) -> list[Candidate]:
    """Every (fold, width, channel multiple) but the original; (f, sqrt f) is always in."""
    out: dict[Candidate, None] = {}
    for f in folds:
        ws = list(widths if widths is not None else DEFAULT_WIDTHS)
        if f > 1:
            ws.append(math.sqrt(f))
        for w in ws:
            if f == 1 and w == 1.0:
                continue
            for cm in channel_multiples:
                out[Candidate(f, float(w), None if w == 1.0 else cm)] = None
    return list(out)


def rung_epochs(epochs: int) -> tuple[int, ...]:
    """The epochs (1-based) after which a candidate trained for ``epochs`` is checked."""
    return tuple(sorted({max(1, math.ceil(fr * epochs)) for fr in RUNG_FRACTIONS} - {epochs}))


def abandon_reason(curve: list[float], epochs: int, reference: list[float], target: float,
                   margin_points: float) -> str | None:
    """Why a candidate should stop now, or None. ``curve``: its validation top-1 per epoch so far;
    ``reference``: the original's per epoch (its whole run). At a rung, the candidate's best so
    far, plus the larger of what the original still gained after the same fraction of its own
    epochs and the share of its own remaining error a folded run may still close there
    (``LATER_SHARE``), plus the margin, must reach ``target``; a curve that cannot is abandoned."""
    e = len(curve)
    if not reference or e not in rung_epochs(epochs):
        return None
    seen = max(1, math.ceil(e / epochs * len(reference)))
    still = max(reference) - max(reference[:seen])
    best = max(curve)
    fraction = max(fr for fr in RUNG_FRACTIONS if math.ceil(fr * epochs) <= e)
    own = LATER_SHARE[fraction] * (1 - best)
    reach = best + max(still, own) + margin_points / 100
    if reach >= target - 1e-12:
        return None
    return (f"after epoch {e} of {epochs} its validation top-1 is {best:.2%}; closing {LATER_SHARE[fraction]:.0%} "
            f"of its remaining error ({100 * own:.2f} points; the original gained {100 * still:.2f} after the same "
            f"share of its epochs) with a {margin_points:g}-point margin it reaches {reach:.2%}, below the budget "
            f"{target:.2%}")
