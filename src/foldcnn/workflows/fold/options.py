"""What `foldcnn fold` does, as one validated, frozen object saved in report.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from foldcnn.errors import UsageError
from foldcnn.precision import BYTES_PER_ELEMENT
from foldcnn.train.config import TrainConfig
from foldcnn.train.sources import DataSpec

__all__ = ["FoldOptions"]


@dataclass(frozen=True)
class FoldOptions:
    """What `foldcnn fold` does; saved in report.json. ``epochs`` None: the budget by fold
    (``recommended_budget``); bench fields set the interleaved throughput sweep of step d.

    ``search`` (foldcnn.workflows.fold.search) explores every (fold, width multiplier, channel
    multiple) of ``folds`` x ``widths`` x ``channel_multiples``; fold 1 is then allowed in ``folds``
    (below width 1: the narrower peers). ``widths`` None: 0.5, 0.71, 1 and sqrt(f) for each f."""

    model: str
    data: DataSpec
    folds: tuple[int, ...] = (4,)
    model_kwargs: dict = field(default_factory=dict)
    weights: str | None = None
    max_accuracy_drop: float = 1.0  # points of top-1 (test; validation in a search)
    channel_multiple: int | None = None
    epochs: int | None = None
    original_epochs: int | None = None
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    threads: int = 0
    train_precision: str = "auto"
    # KL with temperature, as docs/accuracy.md's f=4 rows used (`foldcnn train`'s tip says the same).
    distill: str = "kl"
    slot_diagonal_init: bool | None = None  # None: TrainConfig's default (on for CNNs by import path)
    cross_slot_decay: float = 0.0  # folded stages only (TrainConfig.cross_slot_decay)
    bench_batch_sizes: tuple[int, ...] = (256, 1024)
    bench_backends: tuple[tuple[str, str], ...] | None = None  # None: every CPU engine here (no compile)
    precisions: tuple[str, ...] | None = None  # the engines' precisions allowed (None: all); foldcnn.precision names
    bench_trials: int = 3
    bench_min_seconds: float = 0.3
    search: bool = False
    widths: tuple[float, ...] | None = None
    channel_multiples: tuple[int, ...] | None = None  # search only; None: (channel_multiple,)
    max_flip_rate: float | None = None  # share of validation images whose class changes with their fold-mates
    invariant: bool = False  # search only candidates trained with cross_slot_decay inf
    abandon_margin: float = 2.0  # points of validation top-1 a learning curve may trail before it is abandoned
    engine: str = "local"  # search only: "ray" trains the candidates as Ray Tune trials under ASHA
    address: str | None = None  # the Ray cluster (None: a local one, started and stopped)

    def __post_init__(self):
        folds = tuple(self.folds)
        low = 1 if self.search else 2
        if not folds or any(isinstance(f, bool) or not isinstance(f, int) or f < low for f in folds):
            raise UsageError(f"folds must be ints >= {low} " + ("(1: the narrower peers) " if self.search else
                             "(fold 1 is the original, always measured) ") + f"got {','.join(map(str, folds)) or 'none'}")
        self._check_search()
        object.__setattr__(self, "folds", tuple(sorted(set(folds))))
        if not (isinstance(self.max_accuracy_drop, (int, float)) and 0 <= self.max_accuracy_drop <= 100):
            raise UsageError(f"max_accuracy_drop is in points of top-1 (0-100), got {self.max_accuracy_drop!r}")
        if self.distill not in ("mse", "kl", "none"):
            raise UsageError(f"distill must be mse, kl or none, got {self.distill!r}")
        TrainConfig(cross_slot_decay=self.cross_slot_decay)  # a bad value fails here, not after the original trained
        if self.bench_trials < 1 or not self.bench_batch_sizes:
            raise UsageError("the throughput sweep needs bench_trials >= 1 and at least one batch size")
        if self.precisions is not None:
            bad = [p for p in self.precisions if p not in BYTES_PER_ELEMENT]
            if bad or not self.precisions:
                raise UsageError(f"precisions are {', '.join(BYTES_PER_ELEMENT)}; got {', '.join(self.precisions) or 'none'}")
            object.__setattr__(self, "precisions", tuple(dict.fromkeys(self.precisions)))

    def _check_search(self) -> None:
        if self.engine not in ("local", "ray"):
            raise UsageError(f"engine is local or ray, got {self.engine!r}")
        if self.address is not None and self.engine != "ray":
            raise UsageError("an address names a Ray cluster: it goes with engine ray (--engine ray)")
        if self.engine == "ray" and not self.search:
            raise UsageError("engine ray trains the candidates of a search: add search=True (--search)")
        if not self.search:
            given = [n for n, v in (("widths", self.widths), ("channel_multiples", self.channel_multiples),
                                    ("max_flip_rate", self.max_flip_rate)) if v is not None]
            if self.invariant:
                given.append("invariant")
            if given:
                raise UsageError(f"{', '.join(given)} apply to a search; add search=True (--search)")
            return
        if self.widths is not None:
            if not self.widths or any(not (isinstance(w, (int, float)) and 0 < w < float("inf")) for w in self.widths):
                raise UsageError(f"widths are positive width multipliers like 0.5,1,2; got {self.widths!r}")
            object.__setattr__(self, "widths", tuple(sorted(set(float(w) for w in self.widths))))
        if self.channel_multiples is not None and (not self.channel_multiples or any(
                isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.channel_multiples)):
            raise UsageError(f"channel_multiples are ints >= 1 like 8,32; got {self.channel_multiples!r}")
        if self.max_flip_rate is not None and not 0 <= self.max_flip_rate <= 1:
            raise UsageError(f"max_flip_rate is a share of images (0-1), got {self.max_flip_rate!r}")
        if self.invariant and self.cross_slot_decay not in (0.0, float("inf")):
            raise UsageError(f"invariant trains the folded candidates with cross_slot_decay inf; "
                             f"cross_slot_decay {self.cross_slot_decay:g} contradicts it")
        if not self.abandon_margin >= 0:
            raise UsageError(f"abandon_margin is points of validation top-1 (>= 0), got {self.abandon_margin!r}")

    def candidate_config(self, fold: int) -> TrainConfig:
        """A search candidate's recipe: distilled from the original; a fold-1 candidate (a narrower
        CNN) gets the f=4 budget, which made narrower CNNs match the original (docs/accuracy.md)."""
        over = {"epochs": self.epochs} if self.epochs is not None else {}
        decay = float("inf") if self.invariant else self.cross_slot_decay
        return TrainConfig.for_fold(4 if fold == 1 else fold, **over, batch_size=self.batch_size,
                                    lr=self.lr, seed=self.seed, threads=self.threads, precision=self.train_precision,
                                    distill=self.distill, slot_diagonal_init=self.slot_diagonal_init,
                                    cross_slot_decay=decay if fold > 1 else 0.0)

    def train_config(self, fold: int, teacher: bool) -> TrainConfig:
        epochs = self.original_epochs if fold == 1 else self.epochs
        over = {"epochs": epochs} if epochs is not None else {}
        return TrainConfig.for_fold(fold, **over, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                                    threads=self.threads, precision=self.train_precision,
                                    distill=self.distill if teacher else "none",
                                    slot_diagonal_init=self.slot_diagonal_init,
                                    cross_slot_decay=self.cross_slot_decay if fold > 1 else 0.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"] = asdict(self.data)
        return d
