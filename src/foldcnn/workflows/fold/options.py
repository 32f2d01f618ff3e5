"""What `foldcnn fold` does, as one validated, frozen object saved in report.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from foldcnn.errors import UsageError
from foldcnn.precision import BYTES_PER_ELEMENT
from foldcnn.train.config import BY_FOLD, TrainConfig
from foldcnn.train.sources import DataSpec

__all__ = ["FoldOptions"]


@dataclass(frozen=True)
class FoldOptions:
    """What `foldcnn fold` does; saved in report.json. ``train`` is the training recipe every stage
    uses (its epochs and weight decay are replaced by the fold's budget, ``recommended_budget``,
    unless ``epochs`` / ``original_epochs`` / ``weight_decay`` are given); bench fields set the
    interleaved throughput sweep of step d.

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
    # KL distillation with temperature, as docs/accuracy.md's f=4 rows used; cross_slot_decay acts on
    # the folded stages only; slot_diagonal_init None: on for CNNs by import path.
    train: TrainConfig = field(default_factory=lambda: TrainConfig(distill="kl"))
    epochs: int | None = None  # the folded models' (and a search's candidates'); None: by fold
    original_epochs: int | None = None
    weight_decay: float | None = None  # None: by fold
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
        if not isinstance(self.train, TrainConfig):
            raise UsageError(f"train must be a TrainConfig, got {type(self.train).__name__}")
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
        if self.invariant and self.train.cross_slot_decay not in (0.0, float("inf")):
            raise UsageError(f"invariant trains the folded candidates with cross_slot_decay inf; "
                             f"cross_slot_decay {self.train.cross_slot_decay:g} contradicts it")
        if not self.abandon_margin >= 0:
            raise UsageError(f"abandon_margin is points of validation top-1 (>= 0), got {self.abandon_margin!r}")

    def _recipe(self, budget_fold: int, epochs: int | None, **changes) -> TrainConfig:
        """``train`` with the budget of ``budget_fold`` (epochs, weight decay, the floor of steps)
        where not given, and ``changes``."""
        given = {f.name: getattr(self.train, f.name) for f in fields(TrainConfig) if f.name not in BY_FOLD}
        budget = {k: v for k, v in (("epochs", epochs), ("weight_decay", self.weight_decay)) if v is not None}
        return TrainConfig.for_fold(budget_fold, **{**given, **budget, **changes})

    def candidate_config(self, fold: int) -> TrainConfig:
        """A search candidate's recipe: distilled from the original; a fold-1 candidate (a narrower
        CNN) gets the f=4 budget, which made narrower CNNs match the original (docs/accuracy.md)."""
        decay = float("inf") if self.invariant else self.train.cross_slot_decay
        return self._recipe(4 if fold == 1 else fold, self.epochs, cross_slot_decay=decay if fold > 1 else 0.0)

    def train_config(self, fold: int, teacher: bool) -> TrainConfig:
        """The recipe of the original (fold 1) or of a folded stage."""
        return self._recipe(fold, self.original_epochs if fold == 1 else self.epochs,
                            distill=self.train.distill if teacher else "none",
                            cross_slot_decay=self.train.cross_slot_decay if fold > 1 else 0.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"] = asdict(self.data)
        return d
