"""What `foldcnn fold` does, as one validated, frozen object saved in report.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from foldcnn.errors import UsageError
from foldcnn.models.spec import ModelSpec
from foldcnn.options import option
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

    model: ModelSpec = option(cli=False)  # the original (its fold is 1; a name alone is taken as ModelSpec(name))
    data: DataSpec = option(cli=False)
    folds: tuple[int, ...] = option((4,), "several folds to try, e.g. 2,3,4 (with --search 1 adds the narrower CNNs; "
                                    "default there 1,2,4)", parse="ints")
    max_accuracy_drop: float = option(1.0, "points of top-1 a model may lose against the original to be chosen (test "
                                      "top-1; validation top-1 with --search)")
    # KL distillation with temperature, as docs/accuracy.md's f=4 rows used; cross_slot_decay acts on
    # the folded stages only; slot_diagonal_init None: on for CNNs by import path.
    train: TrainConfig = option(cli=False, default_factory=lambda: TrainConfig(distill="kl"))
    # The folded models' (and a search's candidates') epochs and weight decay; None: by fold. On the
    # command line they are TrainConfig's --epochs and --weight-decay.
    epochs: int | None = option(None, cli=False)
    original_epochs: int | None = option(None, "epochs of the original when it is trained (default: by fold, as "
                                         "--epochs: 60, raised on small sets)")
    weight_decay: float | None = option(None, cli=False)
    bench_batch_sizes: tuple[int, ...] = option((256, 1024), "batch sizes (images) to time; each model keeps its "
                                                "best", flag="--batch-sizes", parse="ints")
    bench_backends: tuple[tuple[str, str], ...] | None = option(
        None, "engines to time, as backend/precision pairs (default: every CPU engine here except torch.compile)",
        flag="--backends", parse="pairs")
    precisions: tuple[str, ...] | None = option(
        None, "the engines' precisions to time and choose from, comma-separated, e.g. fp32 (for a deployment that "
        "cannot quantize) or fp32,int8 (default: every precision here)", flag="--precision", parse="names")
    bench_trials: int = option(3, "interleaved timing trials (--search: its first sweep, which only "
                               "orders the training, takes half as many at the largest batch size; its confirming "
                               "sweep at least 5)", flag="--trials")
    bench_min_seconds: float = option(0.3, "length of each timed block", flag="--min-seconds")
    search: bool = option(False, "find the fastest model on this machine within the budget: every fold x width "
                          "multiplier (narrower fold-1 CNNs too), timed first with random weights, trained fastest "
                          "first, hopeless learning curves abandoned (docs/search.md)")
    widths: tuple[float, ...] | None = option(None, "--search: width multipliers relative to the original's, "
                                              "comma-separated (default 0.5,0.71,1 and sqrt(f) for each fold f; "
                                              "sqrt(f), the paper's point, is always in)", parse="width_mults")
    channel_multiples: tuple[int, ...] | None = option(None, "--search: width roundings to try, e.g. 8,32 (default: "
                                                       "--channel-multiple)", parse="ints")
    max_flip_rate: float | None = option(None, "--search: the largest share of validation images whose class may "
                                         "change with their fold-mates (default: no limit)")
    invariant: bool = option(False, "--search: train the folded candidates with --cross-slot-decay inf, so answers "
                             "cannot depend on fold-mates")
    abandon_margin: float = option(1.0, "--search: points of validation top-1 granted beyond what a candidate's "
                                   "curve may still gain (docs/search.md) before it is abandoned at 1/4 or 1/2 of "
                                   "its epochs")
    engine: str = option("local", "--search: ray trains the candidates as Ray Tune trials side by side, stopped by "
                         "its ASHA scheduler (one trial per candidate)", choices=("local", "ray"))
    address: str | None = option(None, "--engine ray: the Ray cluster to join (default: a local one, started and "
                                 "stopped)")

    def __post_init__(self):
        if isinstance(self.model, str):
            object.__setattr__(self, "model", ModelSpec(self.model))
        if not isinstance(self.model, ModelSpec) or self.model.fold != 1 or self.model.name is None:
            raise UsageError(f"model is the original CNN: a ModelSpec with a name and fold 1, got {self.model!r}")
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
                raise UsageError(f"precisions must be among {', '.join(BYTES_PER_ELEMENT)}; got {', '.join(self.precisions) or 'none'}")
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

    def model_spec(self, fold: int, width_mult: float | None = None,
                   channel_multiple: int | None = None) -> ModelSpec:
        """The CNN of a stage: the original (fold 1, from the given weights if any), a folded model
        at the paper's width, or a search candidate (``width_mult``, ``channel_multiple``)."""
        if width_mult is not None:
            return self.model.replace(fold=fold, width_mult=width_mult, channel_multiple=channel_multiple,
                                      weights=None)
        return self.model.replace(channel_multiple=None) if fold == 1 else self.model.replace(fold=fold, weights=None)

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
