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
    (``recommended_budget``); bench fields set the interleaved throughput sweep of step d."""

    model: str
    data: DataSpec
    folds: tuple[int, ...] = (4,)
    model_kwargs: dict = field(default_factory=dict)
    weights: str | None = None
    max_accuracy_drop: float = 1.0  # points of test top-1
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

    def __post_init__(self):
        folds = tuple(self.folds)
        if not folds or any(isinstance(f, bool) or not isinstance(f, int) or f < 2 for f in folds):
            raise UsageError(f"folds must be ints >= 2 (fold 1 is the original, always measured), got "
                             f"{','.join(map(str, folds)) or 'none'}")
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
